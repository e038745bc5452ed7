"""Reproducible search: the same sweep with the same seed draws the same configs (Optuna's sampler,
Tune's random draws, the in-process policy sweep), and another seed draws others. No Ray trials."""

import logging

import pytest
from ray import tune
from ray.tune.experiment import Experiment

import search_spaces
from orchestrator.space import search_algorithm
from search_spaces import DEFAULT_SEED, Sweep, with_options

SPACE = {"optim.lr": tune.loguniform(1e-4, 1e-2), "loss.name": tune.choice(["bce", "focal", "asl"])}
TWO = [("val/macro_f1", "max"), ("val/loss", "min")]


def optuna_draws(seed: int, objectives=None, n: int = 4) -> list[dict]:
    search = search_algorithm("optuna", seed, objectives)
    assert search.set_search_properties("val/macro_f1", "max", SPACE)  # what Tune calls, with its one metric
    configs = []
    for i in range(n):  # the results feed the sampler, as in a sweep
        config = search.suggest(f"t{i}")
        configs.append(config)
        search.on_trial_complete(f"t{i}", {"val/macro_f1": config["optim.lr"] * 10, "val/loss": 1 - config["optim.lr"]})
    return configs


@pytest.mark.parametrize("objectives", [None, TWO], ids=["one objective", "two objectives"])
def test_optuna_with_the_same_seed_draws_the_same_configs(objectives):
    assert optuna_draws(7, objectives) == optuna_draws(7, objectives)
    assert optuna_draws(7, objectives) != optuna_draws(8, objectives)


def test_several_objectives_stay_a_multi_objective_study_through_tunes_set_up():
    search = search_algorithm("optuna", 0, TWO)
    search.set_search_properties("val/macro_f1", "max", SPACE)
    assert search.metric == ["val/macro_f1", "val/loss"]
    assert [d.name for d in search._ot_study.directions] == ["MAXIMIZE", "MINIMIZE"]


def basic_draws(seed: int) -> list[dict]:
    generator = search_algorithm("", seed)
    space = {**SPACE, "model.name": tune.grid_search(["resnet18", "seresnet18"])}
    generator.add_configurations([Experiment("seeded", lambda config: None, config=space, num_samples=2)])
    return [generator.next_trial().config for _ in range(4)]


def test_tunes_random_draws_with_the_same_seed_are_the_same():
    assert basic_draws(3) == basic_draws(3)
    assert basic_draws(3) != basic_draws(4)


def test_the_policy_sweep_draws_the_same_policies_for_the_same_seed():
    from orchestrator.policy_sweep import PolicyDraws

    def policies(seed: int, search: str) -> list[dict]:
        k = tune.grid_search(["a", "b"]) if not search else tune.choice(["a", "b"])  # Optuna takes no grid
        sweep = Sweep("s", "q", {"t": tune.uniform(0.1, 0.9), "k": k}, task="attributes", metric="val/mean_accuracy",
                      num_samples=2, search=search, seed=seed)
        draws = PolicyDraws(sweep)
        out = []
        for i in range(3):
            out.append(draws.next(f"p{i}"))
            draws.tell(f"p{i}", {"val/mean_accuracy": out[-1]["t"]})
        return out

    for search in ("", "optuna"):
        assert policies(1, search) == policies(1, search)
        assert policies(1, search) != policies(2, search)


def test_the_seed_comes_from_the_sweep_file_or_the_command_line(tmp_path):
    from search_spaces import loader

    sweep = search_spaces.get("celeba_losses")(real_data=False, smoke=True)
    assert sweep.seed == DEFAULT_SEED == 0
    assert with_options(sweep, seed=11).seed == 11 and with_options(sweep) is sweep
    file = tmp_path / "s.yaml"
    file.write_text("question: q?\ntask: attributes\nseed: 5\nspace:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    assert loader.load(str(file)).seed == 5
    file.write_text("question: q?\ntask: attributes\nseed: -1\nspace:\n  optim.epochs: 1\n")
    with pytest.raises(search_spaces.UserError, match="seed: expects a whole number"):
        loader.load(str(file))


def test_an_optuna_sweep_prints_no_study_created_line():
    """Optuna logged `[I ...] A new study created in memory with name: optuna` among a sweep's console lines
    (seen on the celeba_losses demo): the search is made quiet where it is made, for sweeps and policy sweeps."""
    records: list[logging.LogRecord] = []
    seen = logging.Handler()
    seen.emit = records.append
    optuna_logger = logging.getLogger("optuna")  # Optuna's own handler writes these to stderr
    optuna_logger.setLevel(logging.INFO)  # as in a fresh process
    optuna_logger.addHandler(seen)
    try:
        search = search_algorithm("optuna", 0)
        assert search.set_search_properties("val/macro_f1", "max", SPACE)
        assert search.suggest("t0")
    finally:
        optuna_logger.removeHandler(seen)
    assert not [r.getMessage() for r in records if r.levelno >= optuna_logger.getEffectiveLevel()]
