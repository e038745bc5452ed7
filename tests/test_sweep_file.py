"""A sweep file outside the package: read into a `Sweep` in every mode, every mistake in it one line that
names the file, the field or key and the fix, and `doctor FILE.yaml` through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

import search_spaces
from orchestrator.__main__ import main
from orchestrator.preflight import Preflight
from orchestrator.sweep import SweepOptions
from trainables.errors import UserError

SWEEP = """\
question: Which backbone and learning rate predict my attributes best?
task: attributes
metric: val/macro_f1
mode: max
search: optuna
scheduler: asha
grace_period: 2
samples: 6
workers_per_trial: 1
report: [val/mean_accuracy]
space:
  model.name: {grid: [resnet18, seresnet18]}
  optim.lr: {loguniform: [1e-4, 1e-2]}
  loss.name: {choice: [bce, focal]}
  loss.gamma: uniform(1.0, 3.0)
  optim.warmup_epochs: {randint: [0, 2]}
  optim.epochs: 4
  optim.batch_size: 16
  data.image_size: 48
  data.augment: [hflip]
  data.demo_images: 300
  data.cache_dir: cache
real_data:
  optim.epochs: 12
  data.image_size: 128
smoke:
  samples: 2
  scheduler: none
  optim.epochs: 1
"""


def write(tmp_path: Path, text: str, name: str = "my_sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_sweep_file_reads_into_a_sweep_in_every_mode(tmp_path):
    path = write(tmp_path, SWEEP)
    sweep = search_spaces.get(path)(real_data=False, smoke=False)
    assert (sweep.name, sweep.metric, sweep.mode, sweep.search) == ("my_sweep", "val/macro_f1", "max", "optuna")
    assert (sweep.num_samples, sweep.grace_period, sweep.workers_per_trial) == (6, 2, 1)
    assert sweep.report == ["val/mean_accuracy"] and sweep.source == path
    space = sweep.param_space
    assert space["task"] == "attributes" and space["model.name"] == {"grid_search": ["resnet18", "seresnet18"]}
    lr = space["optim.lr"]
    assert isinstance(lr, Float) and isinstance(lr.get_sampler(), LogUniform) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert isinstance(space["loss.name"], Categorical) and space["loss.name"].categories == ["bce", "focal"]
    assert isinstance(space["loss.gamma"], Float)  # --set's call syntax works in a file too
    assert isinstance(space["optim.warmup_epochs"], Integer)
    assert space["optim.epochs"] == 4 and space["data.augment"] == ["hflip"]
    assert space["data.cache_dir"] == str(tmp_path / "cache")  # relative to the file, not the working folder

    real = search_spaces.get(path)(real_data=True, smoke=False)
    assert real.param_space["optim.epochs"] == 12 and real.param_space["data.image_size"] == 128
    smoke = search_spaces.get(path)(real_data=True, smoke=True)
    assert smoke.param_space["optim.epochs"] == 1 and smoke.param_space["data.image_size"] == 128  # smoke last
    assert smoke.num_samples == 2 and smoke.grace_period == 0  # scheduler: none turns ASHA off


def test_a_minimal_sweep_file_takes_the_defaults(tmp_path):
    path = write(tmp_path, "question: Does a smaller lr help?\ntask: recognition\nspace:\n  optim.lr: 0.01\n",
                 name="lr.yml")
    sweep = search_spaces.get(path)(real_data=False, smoke=False)
    assert (sweep.name, sweep.search, sweep.num_samples, sweep.grace_period) == ("lr", "", 1, 1)
    assert sweep.metric == "val/mean_verification_accuracy"  # the task's usual objective


FIRST = "first:\n  - {model.name: resnet18, optim.lr: 1e-3, loss.name: focal, loss.gamma: 2.0, optim.warmup_epochs: 0}\n"


def test_a_sweep_files_first_points_are_the_first_trials_optuna_runs(tmp_path):
    """`first:` sets Optuna's first points, as a built-in sweep's `first_points` (celeba_losses): read to the keys'
    types, kept in order, and each a whole point of the searched keys, so they reach Optuna as they are."""
    from orchestrator.space import grids_as_choices, search_algorithm, starting_points

    second = "  - {model.name: seresnet18, optim.lr: 0.003, loss.name: bce, loss.gamma: 1.0, optim.warmup_epochs: 1}\n"
    path = write(tmp_path, SWEEP + FIRST + second)
    sweep = search_spaces.get(path)(real_data=False, smoke=True)
    assert sweep.first_points == [
        {"model.name": "resnet18", "optim.lr": 1e-3, "loss.name": "focal", "loss.gamma": 2.0, "optim.warmup_epochs": 0},
        {"model.name": "seresnet18", "optim.lr": 3e-3, "loss.name": "bce", "loss.gamma": 1.0, "optim.warmup_epochs": 1}]
    space = grids_as_choices(sweep.param_space, "optuna")
    first = starting_points(space, sweep.first_points)
    assert first == sweep.first_points
    search = search_algorithm(sweep.search, sweep.seed, first=first)
    assert search.set_search_properties(sweep.metric, sweep.mode, space)
    drawn = [search.suggest(f"t{i}") for i in range(2)]
    assert [{k: c[k] for k in first[0]} for c in drawn] == first


def _edit(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


# (id, edit of the valid file, fragments the one-line error must hold besides the file's path)
BAD = [
    ("unknown field", _edit("scheduler: asha", "schedular: asha"), ["unknown field `schedular`", "did you mean `scheduler`"]),
    ("config key at the top", _edit("samples: 6", "samples: 6\noptim.lr: 0.1"), ["`optim.lr`", "`space:` block"]),
    ("unknown task", _edit("task: attributes", "task: atributes"), ["task:", "unknown task 'atributes'", "did you mean 'attributes'"]),
    ("unknown key", _edit("optim.epochs: 4", "optim.epoch: 4"), ["space:", "'optim.epoch'", "did you mean optim.epochs"]),
    ("key of another task", _edit("optim.epochs: 4", "head.m: 0.5"), ["'head.m'", "does not read"]),
    ("wrong type", _edit("optim.epochs: 4", "optim.epochs: many"), ["space: optim.epochs", "expects a whole number", "'many'"]),
    ("wrong type in real_data", _edit("optim.epochs: 12", "optim.epochs: [12]"), ["real_data: optim.epochs", "expects a whole number"]),
    ("low >= high", _edit("{loguniform: [1e-4, 1e-2]}", "{uniform: [0.1, 0.01]}"), ["space: optim.lr", "low < high", "{uniform: [0, 1]}"]),
    ("loguniform from 0", _edit("{loguniform: [1e-4, 1e-2]}", "{loguniform: [0, 0.01]}"), ["space: optim.lr", "above 0"]),
    ("one bound", _edit("{loguniform: [1e-4, 1e-2]}", "{loguniform: [0.01]}"), ["space: optim.lr", "two bounds"]),
    ("bound not a number", _edit("{loguniform: [1e-4, 1e-2]}", "{loguniform: [small, 0.01]}"), ["optim.lr", "'small' is not a number"]),
    ("empty grid", _edit("{grid: [resnet18, seresnet18]}", "{grid: []}"), ["space: model.name", "at least one value"]),
    ("grid of a scalar", _edit("{grid: [resnet18, seresnet18]}", "{grid: resnet18}"), ["space: model.name", "takes a list"]),
    ("unknown distribution", _edit("{loguniform: [1e-4, 1e-2]}", "{logunifrom: [1e-4, 1e-2]}"), ["'logunifrom'", "did you mean loguniform"]),
    ("two kinds in one value", _edit("{choice: [bce, focal]}", "{choice: [bce], grid: [focal]}"), ["space: loss.name", "one distribution"]),
    ("uniform of an integer", _edit("optim.epochs: 4", "optim.epochs: {uniform: [1, 5]}"), ["optim.epochs", "use randint"]),
    ("uniform of a name", _edit("{choice: [bce, focal]}", "{uniform: [0, 1]}"), ["loss.name", "draws numbers"]),
    ("a choice of a wrong type", _edit("optim.batch_size: 16", "optim.batch_size: {choice: [16, big]}"), ["optim.batch_size", "'big'"]),
    ("unknown search", _edit("search: optuna", "search: hyperopt"), ["search:", "'hyperopt'", "basic, optuna"]),
    ("unknown scheduler", _edit("scheduler: asha", "scheduler: pbt"), ["scheduler:", "'pbt'", "asha, none"]),
    ("grace period without ASHA", _edit("scheduler: asha", "scheduler: none"), ["grace_period", "scheduler: asha"]),
    ("no samples", _edit("samples: 6", "samples: 0"), ["samples:", "at least 1"]),
    ("unknown mode", _edit("mode: max", "mode: maximize"), ["mode:", "'maximize'", "max, min"]),
    ("a metric that is not a validation one", _edit("metric: val/macro_f1", "metric: macro_f1"), ["metric:", "val/mean_accuracy"]),
    ("a field smoke cannot change", _edit("  samples: 2", "  metric: val/mean_accuracy"), ["smoke:", "`metric` cannot change"]),
    ("the task in the space", _edit("  optim.epochs: 4", "  task: fairface"), ["space: task", "top-level field `task:`"]),
    ("a key written twice", _edit("  optim.epochs: 4", "  optim.epochs: 4\n  optim.epochs: 5"), [":18: 'optim.epochs' appears twice"]),
    ("YAML syntax", _edit("  loss.name: {choice: [bce, focal]}", "  loss.name: {choice: [bce, focal]"), [":15:", "not valid YAML", "flow mapping from line 14"]),
    ("no question", _edit("question: Which backbone and learning rate predict my attributes best?\n", ""), ["`question:` missing"]),
    ("no task", _edit("task: attributes\n", ""), ["`task:` missing", "task: attributes", "attributes, fairface, recognition"]),
    ("optuna with nothing to search", lambda t: "question: q?\ntask: attributes\nsearch: optuna\nspace:\n  optim.lr: 0.1\n", ["search: optuna", "nothing to search"]),
    ("not a mapping", lambda t: "- question: q?\n", ["a mapping of fields", "got a list"]),
    ("first points without optuna", lambda t: t.replace("search: optuna", "search: basic") + FIRST,
     ["first:", "Optuna search", "search is basic", "write search: optuna, or remove first"]),
    ("first points not a list", lambda t: t + "first: {optim.lr: 1e-3}\n", ["first: expects a list of points"]),
    ("a first point missing a key", lambda t: t + FIRST.replace(", optim.warmup_epochs: 0", ""),
     ["first: point 1: optim.warmup_epochs missing", "every key that space: searches", "add optim.warmup_epochs: ..."]),
    ("a first point setting a fixed key", lambda t: t + FIRST.replace("}", ", optim.epochs: 2}"),
     ["first: point 1: optim.epochs is fixed in space:", "only the keys that space: searches"]),
    ("a first point outside the space", lambda t: t + FIRST.replace("optim.lr: 1e-3", "optim.lr: 0.5"),
     ["first: point 1: optim.lr: 0.5 is not one that space: can draw (0.0001 to 0.01)"]),
    ("a first point's value of a wrong type", lambda t: t + FIRST.replace("optim.warmup_epochs: 0", "optim.warmup_epochs: x"),
     ["first: point 1: optim.warmup_epochs", "expects a whole number"]),
]


@pytest.mark.parametrize("edit,fragments", [pytest.param(e, f, id=i) for i, e, f in BAD])
def test_each_mistake_in_a_sweep_file_is_one_line_naming_the_file_and_key(tmp_path, edit, fragments):
    path = write(tmp_path, edit(SWEEP))
    with pytest.raises(UserError) as err:
        search_spaces.get(path)(real_data=False, smoke=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(path), message
    for fragment in fragments:
        assert fragment in message, message


def test_a_missing_file_and_an_unknown_name_are_told_apart(tmp_path):
    with pytest.raises(UserError, match="sweep file not found: .*nowhere/my.yaml: check the path"):
        search_spaces.get(str(tmp_path / "nowhere" / "my.yaml"))(real_data=False, smoke=False)
    with pytest.raises(UserError, match="built-in sweep without a path: `celeba_backbones`"):
        search_spaces.get("celeba_backbones.yaml")(real_data=False, smoke=False)
    with pytest.raises(UserError, match="unknown sweep 'celeba_backbonez' .*did you mean 'celeba_backbones'"):
        search_spaces.get("celeba_backbonez")
    with pytest.raises(UserError, match="is a folder"):
        search_spaces.get(str(tmp_path) + "/")(real_data=False, smoke=False)


def test_the_files_own_backbone_typo_names_the_file_in_the_pre_run_checks(tmp_path):
    path = write(tmp_path, SWEEP.replace("seresnet18]", "seresnet1999]"))
    with pytest.raises(UserError) as err:
        Preflight(SweepOptions(name=path)).check_sweep()
    assert str(err.value).startswith(f"{path}: ") and "unknown backbone 'seresnet1999'" in str(err.value)


def test_the_pre_run_checks_take_a_sweep_file_and_say_optuna_draws_its_grid(tmp_path):
    path = write(tmp_path, SWEEP)
    pre = Preflight(SweepOptions(name=path, smoke=True, overrides=["optim.lr=loguniform(1e-3,1e-2)"]))
    line = pre.check_sweep()
    assert line.startswith("sweep my_sweep: every backbone") and "draws model.name from resnet18, seresnet18" in line
    assert pre.space["optim.lr"].lower == 1e-3 and pre.base.optim.epochs == 1


def test_bad_sweep_files_through_the_command_line_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, SWEEP.replace("optim.epochs: 4", "optim.epochs: many"))
    for argv, fragment in [(["sweep", "my_sweep.yaml"], "my_sweep.yaml: space: optim.epochs: expects a whole number"),
                           (["sweep", "missing.yaml"], "sweep file not found: missing.yaml"),
                           (["sweep", "celeba_backbones", "--set", "optim.lr=loguniform(0,1)"], "above 0")]:
        assert main(argv + ["--storage", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1 and fragment in err, err


def test_doctor_on_a_sweep_file_passes_its_sweep_check(tmp_path, capsys, monkeypatch, demo_cache):
    """Every check runs on the file's sweep; Ray is refused at an address where none answers, so no Ray starts."""
    import ray

    monkeypatch.chdir(tmp_path)
    write(tmp_path, SWEEP.replace("  data.cache_dir: cache\n", ""))
    # A `ray` test earlier in this session may have left the shared local Ray up in this process: the
    # address is then not dialled at all, and the Ray check passes.
    ray_up = ray.is_initialized()
    code = main(["doctor", "my_sweep.yaml", "--smoke", "--address", "127.0.0.1:1", "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    out = capsys.readouterr().out
    assert code == (0 if ray_up else 2), out
    lines = out.splitlines()
    assert any(line.startswith("✓ sweep my_sweep: every backbone") for line in lines), out
    assert any(line.startswith("✓ storage") and "runs/my_sweep" in line for line in lines), out
    assert any(line.startswith("✓ data at") for line in lines), out
    assert any(line.startswith("✓ Ray" if ray_up else "✗ Ray") for line in lines), out


def readme_sweep_file() -> str:
    """The sweep file shown in README.md, exactly as printed there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return readme.split("**Your own sweep file.**", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "full"])
def test_the_readmes_sweep_file_as_printed_passes_doctor(smoke, tmp_path, capsys, monkeypatch, demo_cache):
    """Copied from the README as shown, the example passes every check of `doctor my_sweep.yaml` that needs
    no Ray (Ray is refused at an address where none answers)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_sweep.yaml").write_text(readme_sweep_file())
    main(["doctor", "my_sweep.yaml", *(["--smoke"] if smoke else []), "--address", "127.0.0.1:1",
          "--storage", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("✗") and not line.startswith("✗ Ray")]
    assert not failed, lines
    assert any(line.startswith("✓ sweep my_sweep") for line in lines), lines
    assert any(line.startswith("✓ data at") for line in lines), lines


@pytest.mark.parametrize("space,overrides,key", [
    ("  optim.epochs: many\n", [], "optim.epochs"),                    # a wrong type, read from the file
    ("  optim.ema: 1.5\n", [], "optim.ema"),                           # out of range, found when configs are built
    ("  model.drop_rate: {uniform: [0, 2]}\n", [], "model.drop_rate"),  # a draw out of range
    ("  optim.lr: 0.01\n", ["optim.epochs=x"], "optim.epochs"),       # --set of a wrong type
    ("  optim.lr: 0.01\n", ["optim.ema=2"], "optim.ema"),             # --set out of range
], ids=["file type", "file range", "file draw", "--set type", "--set range"])
def test_a_bad_value_of_a_known_key_quotes_the_keys_help(tmp_path, space, overrides, key):
    from trainables.config_keys import key_help

    path = write(tmp_path, f"question: q?\ntask: attributes\nmetric: val/macro_f1\nspace:\n{space}")
    with pytest.raises(UserError) as err:
        Preflight(SweepOptions(name=path, overrides=overrides)).check_sweep()
    message, help = str(err.value), key_help(key, "attributes")
    assert help and message.endswith(f"; {key}: {help}") and "\n" not in message, message
