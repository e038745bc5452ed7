"""Sweep param spaces: overrides by dotted key, and names checked before any trial runs."""

import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

import search_spaces
from orchestrator.space import apply_overrides, check_space, count_trials, describe, max_epochs, varying_keys
from trainables.errors import UserError


def test_every_registered_sweep_builds_and_checks_in_every_mode():
    for name in search_spaces.names():
        for real in (False, True):
            for smoke in (False, True):
                sweep = search_spaces.get(name)(real_data=real, smoke=smoke)
                assert sweep.name == name and sweep.question
                if sweep.runner == "train":
                    check_space(sweep.param_space)


def test_celeba_backbones_covers_the_seed_families():
    demo = search_spaces.get("celeba_backbones")(real_data=False, smoke=False).param_space["model.name"]
    names = " ".join(demo["grid_search"])
    for family in ("seresnet", "skresnet", "gcresne", "densenet", "efficientnet", "resnet18"):
        assert family in names
    real = search_spaces.get("celeba_backbones")(real_data=True, smoke=False).param_space["model.name"]
    assert {"resnet101", "resnet152", "legacy_seresnet101", "densenet121", "cbam_resnet101"} <= set(real["grid_search"])


def test_overrides_replace_values_and_comma_lists_become_grids():
    space = {"task": "attributes", "model.name": tune.grid_search(["a", "b"]), "optim.lr": 0.1}
    out = apply_overrides(space, ["optim.lr=0.5", "model.name=resnet18,seresnet18", "data.augment=hflip,cutout"])
    assert out["optim.lr"] == 0.5 and out["model.name"] == {"grid_search": ["resnet18", "seresnet18"]}
    assert out["data.augment"] == ["hflip", "cutout"]  # a list key keeps its commas
    assert space["optim.lr"] == 0.1  # the sweep's own space is untouched
    assert varying_keys(out) == ["model.name"] and count_trials(out, 2) == 4
    assert describe({"model.name": "resnet18", "optim.lr": 0.001}, ["model.name", "optim.lr"]) == "resnet18 lr=0.001"
    assert max_epochs({"optim.epochs": tune.grid_search([2, 5])}) == 5


def test_a_trial_is_named_without_the_keys_that_do_not_act_on_it():
    """celeba_losses draws loss.gamma for every trial, but only focal reads it: its demo's table said
    `asl gamma=2 lr=0.00192` (and bce trials differed only by a gamma they ignore)."""
    keys = ["loss.name", "loss.gamma", "optim.lr"]
    assert describe({"loss.name": "focal", "loss.gamma": 2.0, "optim.lr": 0.00192}, keys, "attributes") == \
        "focal gamma=2 lr=0.00192"
    assert describe({"loss.name": "asl", "loss.gamma": 2.0, "optim.lr": 0.00192}, keys, "attributes") == "asl lr=0.00192"
    assert describe({"loss.gamma": 1.0, "optim.lr": 0.01}, keys[1:], "attributes") == "lr=0.01"  # bce by default
    assert describe({"loss.name": "asl", "loss.clip": 0.1}, ["loss.name", "loss.clip"], "attributes") == "asl clip=0.1"
    assert describe({"loss.name": "asl", "loss.gamma": 2.0}, keys[:2]) == "asl gamma=2"  # no task: every key


@pytest.mark.parametrize("override,fragment", [
    ("model.name=resnet1999", "unknown backbone 'resnet1999'"),
    ("loss.name=hinge", "unknown loss 'hinge'"),
    ("optim.name=adamz", "unknown optimizer 'adamz'"),
    ("data.augment=hflip,mixupp", "unknown augmentation 'mixupp'"),
    ("optim.lr=fast", "expects float"),
    ("model.nam=resnet18", "did you mean model.name"),
    ("optim.lr", "expects key=value"),
    ("optim.epochs=0", "at least 1"),
])
def test_bad_overrides_are_caught_before_any_trial(override, fragment):
    space = search_spaces.get("celeba_backbones")(real_data=False, smoke=True).param_space
    with pytest.raises(UserError, match=fragment):
        check_space(apply_overrides(space, [override]))


def test_overrides_of_a_section_the_task_ignores_are_refused():
    import search_spaces

    sweep = search_spaces.get("face_recognition_losses")(real_data=False, smoke=True)
    with pytest.raises(UserError, match="does not read"):
        apply_overrides(sweep.param_space, ["loss.gamma=3"])


def test_relative_paths_become_absolute_in_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = apply_overrides({"task": "recognition", "data.root": "shards"},
                            ["eval.targets=lfw,cfp_fp.bin", "model.weights=w.safetensors"])
    assert space["data.root"] == str(tmp_path / "shards")
    assert space["eval.targets"] == [str(tmp_path / "lfw"), str(tmp_path / "cfp_fp.bin")]
    assert space["model.weights"] == str(tmp_path / "w.safetensors")
    uri = apply_overrides({"task": "attributes", "data.root": "file:///data/shards"}, ["model.name=resnet18,seresnet18"])
    assert uri["data.root"] == "file:///data/shards"  # a URI is left as it is


def test_a_batch_larger_than_a_workers_share_is_refused_with_the_largest_that_fits():
    from types import SimpleNamespace

    from orchestrator.preflight import Preflight

    pre = Preflight(SimpleNamespace(smoke=False))
    pre.space = {"optim.batch_size": tune.grid_search([16, 48])}
    pre.check_batch(train_rows=100, workers=2)  # 50 rows each: both fit
    pre.space = {"optim.batch_size": tune.grid_search([16, 64])}
    with pytest.raises(UserError, match="largest batch that fits is 50"):
        pre.check_batch(train_rows=100, workers=2)


@pytest.mark.parametrize("override,domain,expect", [
    ("optim.lr=loguniform(1e-4,1e-2)", Float, lambda d: (d.lower, d.upper) == (1e-4, 1e-2) and isinstance(d.get_sampler(), LogUniform)),
    ("loss.gamma=uniform(0, 1)", Float, lambda d: (d.lower, d.upper) == (0.0, 1.0) and isinstance(d.get_sampler(), Uniform)),
    ("optim.epochs=randint(1,5)", Integer, lambda d: (d.lower, d.upper) == (1, 5)),
    ("loss.name=choice(bce,focal)", Categorical, lambda d: d.categories == ["bce", "focal"]),
    ("optim.batch_size=choice(16,32)", Categorical, lambda d: d.categories == [16, 32]),  # parsed to the key's type
    ("loss.gamma=choice(1,2)", Categorical, lambda d: d.categories == [1.0, 2.0] and isinstance(d.categories[0], float)),
    ("data.augment=choice([hflip],[hflip,cutout])", Categorical, lambda d: d.categories == [["hflip"], ["hflip", "cutout"]]),
    ("model.name=grid(resnet18,seresnet18)", dict, lambda d: d == {"grid_search": ["resnet18", "seresnet18"]}),
])
def test_set_takes_distributions_as_tune_domains(override, domain, expect):
    out = apply_overrides({"task": "attributes", "optim.lr": 0.1}, [override])
    value = out[override.split("=")[0]]
    assert isinstance(value, domain) and expect(value), value
    check_space(out)


@pytest.mark.parametrize("override,fragment", [
    ("optim.lr=loguniform(0,1)", "loguniform needs bounds above 0"),
    ("optim.lr=uniform(0.5,0.1)", "needs low < high"),
    ("optim.epochs=randint(3,3)", "high is excluded"),
    ("optim.lr=uniform(1)", "two bounds"),
    ("optim.epochs=uniform(1,5)", "use randint, e.g. --set optim.epochs=randint(1,5)"),
    ("loss.name=loguniform(1,2)", "draws numbers, but loss.name holds text"),
    ("optim.lr=normal(0,1)", "unknown distribution 'normal'"),
    ("optim.lr=logunif(1e-4,1e-2)", "did you mean loguniform"),
    ("optim.lr=choice()", "at least one value"),
    ("optim.lr=choice(fast,slow)", "'fast' is not a number, as optim.lr needs"),
])
def test_bad_set_distributions_name_the_set_and_the_fix(override, fragment):
    with pytest.raises(UserError) as err:
        apply_overrides({"task": "attributes"}, [override])
    assert str(err.value).startswith(f"--set {override}: ") and fragment in str(err.value), err.value


def test_a_choice_of_paths_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = apply_overrides({"task": "attributes"}, ["model.weights=choice(a.pth,/w/b.pth)"])
    assert out["model.weights"].categories == [str(tmp_path / "a.pth"), "/w/b.pth"]


def test_a_grid_on_an_optuna_sweep_becomes_a_categorical_choice_that_optuna_takes():
    from orchestrator.space import grid_note, grids_as_choices, search_algorithm

    sweep = search_spaces.get("celeba_losses")(real_data=False, smoke=True)
    space = apply_overrides(sweep.param_space, ["loss.name=bce,focal,asl"])
    with pytest.raises(ValueError, match="Grid search parameters cannot be automatically converted"):
        search_algorithm(sweep.search, sweep.seed).set_search_properties(sweep.metric, sweep.mode, space)  # what Tune calls

    converted = grids_as_choices(space, sweep.search)
    assert isinstance(converted["loss.name"], Categorical) and converted["loss.name"].categories == ["bce", "focal", "asl"]
    assert count_trials(converted, sweep.num_samples) == sweep.num_samples and "loss.name" in varying_keys(converted)
    assert grid_note(converted) == ("Optuna takes no grid, so each trial draws loss.name from bce, focal, asl "
                                    "(a categorical choice)")
    search = search_algorithm(sweep.search, sweep.seed)
    assert search.set_search_properties(sweep.metric, sweep.mode, converted)
    assert search.suggest("trial_1")["loss.name"] in ("bce", "focal", "asl")

    basic = {"model.name": tune.grid_search(["resnet18", "seresnet18"])}
    assert grids_as_choices(basic, "") is basic and grid_note(basic) == ""  # Tune's own grid stays a grid


def test_the_pre_run_checks_convert_an_optuna_grid_and_say_so():
    from orchestrator.preflight import Preflight
    from orchestrator.sweep import SweepOptions

    pre = Preflight(SweepOptions(name="celeba_losses", smoke=True, overrides=["loss.name=bce,focal,asl"]))
    assert "each trial draws loss.name from bce, focal, asl" in pre.check_sweep()
    everything_fixed = ["loss.name=bce", "loss.gamma=2", "optim.lr=0.001"]
    with pytest.raises(UserError, match="nothing left to search"):
        Preflight(SweepOptions(name="celeba_losses", smoke=True, overrides=everything_fixed)).check_sweep()


def test_an_unknown_search_is_a_user_error():
    from orchestrator.space import search_algorithm

    with pytest.raises(UserError, match="unknown search 'hyperopt'"):
        search_algorithm("hyperopt", 0)


def test_the_losses_sweep_trains_each_loss_first_then_optuna_draws():
    """The celeba_losses demo asked "BCE, focal or ASL?" and never trained BCE: seed 0's six Optuna draws were four
    focal and two ASL. Its set first points (one per loss) come first; Optuna draws after them."""
    from orchestrator.space import first_points_note, grids_as_choices, search_algorithm, starting_points

    sweep = search_spaces.get("celeba_losses")(real_data=False, smoke=False)
    first = starting_points(sweep.param_space, sweep.first_points)
    assert [p["loss.name"] for p in first] == ["bce", "focal", "asl"]
    search = search_algorithm(sweep.search, sweep.seed, first=first)
    assert search.set_search_properties(sweep.metric, sweep.mode, sweep.param_space)
    drawn = []
    for i in range(sweep.num_samples):
        config = search.suggest(f"t{i}")
        drawn.append(config)
        search.on_trial_complete(f"t{i}", {sweep.metric: 0.5 + i / 100, "training_iteration": 1})
    assert [c["loss.name"] for c in drawn[:3]] == ["bce", "focal", "asl"] and drawn[0]["optim.lr"] == 3e-3
    assert len({c["optim.lr"] for c in drawn[3:]} - {3e-3}) == 3  # then Optuna's own draws

    # After --set: a narrowed choice drops the point it no longer holds, a fixed key leaves the points' other
    # keys, and a key the points do not set drops them all (Optuna would refuse a point without it).
    narrowed = grids_as_choices(apply_overrides(sweep.param_space, ["loss.name=bce,focal"]), "optuna")
    assert [p["loss.name"] for p in starting_points(narrowed, sweep.first_points)] == ["bce", "focal"]
    fixed = apply_overrides(sweep.param_space, ["optim.lr=0.01"])
    assert starting_points(fixed, sweep.first_points)[0] == {"loss.name": "bce", "loss.gamma": 2.0}
    added = apply_overrides(sweep.param_space, ["optim.weight_decay=loguniform(1e-5,1e-2)"])
    assert starting_points(added, sweep.first_points) == []
    assert starting_points({"optim.lr": tune.loguniform(1e-4, 1e-3)}, [{"optim.lr": 3e-3}]) == []  # out of range

    name = lambda point: describe(point, ["loss.name", "loss.gamma", "optim.lr"], "attributes")  # noqa: E731
    assert first_points_note(first, 6, name) == ("the first 3 trials are set: bce lr=0.003, focal gamma=2 lr=0.003, "
                                                 "asl lr=0.003; Optuna draws the rest")
    assert first_points_note(first[:2], 2, name).endswith("focal gamma=2 lr=0.003")  # --smoke: nothing left to draw
    assert first_points_note([], 6, name) == ""
    # Points that a --set, --data or --smoke put outside the space are said to be left out.
    assert first_points_note(first[:2], 6, name, left_out=1).endswith(
        "Optuna draws the rest; 1 of the sweep's set first points is left out, outside this space (changed by --set, "
        "--data or --smoke)")
    assert first_points_note([], 6, name, left_out=3) == ("the sweep's set first points are left out, outside this "
                                                          "space (changed by --set, --data or --smoke)")
