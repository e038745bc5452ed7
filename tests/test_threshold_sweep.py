"""The threshold-policy sweep scores every policy in this process, without Ray, and records each policy as a
child run whose numbers anyone can recompute from the source trial's stored files."""

from types import SimpleNamespace

import mlflow
import pytest
from ray import tune

from orchestrator.policy_sweep import run_policy_sweep
import search_spaces
from search_spaces import Sweep
from trainables.config import TrainConfig
from trainables.data.demo.celeba import write_demo_celeba
from trainables.tasks.attributes.thresholds import evaluate_policy, load_predictions
from task_harness import build, evaluate, one_epoch


@pytest.fixture(scope="module")
def source_trial(tmp_path_factory):
    """A finished attribute trial's run in a sqlite MLflow: its params and its stored files, as a sweep leaves them."""
    tmp = tmp_path_factory.mktemp("thresholds")
    root = write_demo_celeba(tmp / "celeba", num_images=240, seed=5)
    cfg = TrainConfig.from_dict({"task": "attributes", "data.root": str(root), "data.image_size": 32, "model.name": "resnet18",
                                 "optim.batch_size": 16, "optim.epochs": 1, "data.cache_dir": str(tmp / "cache")})
    task = build(cfg)
    one_epoch(task, cfg, 16)
    files = tmp / "files"
    evaluate(task).write_files(files)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("celeba_backbones", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"orchestrator.kind": "sweep"}).info.run_id
    run = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "orchestrator.kind": "trial"}).info.run_id
    client.log_param(run, "task", "attributes")
    client.log_artifacts(run, str(files))
    client.set_terminated(run)
    return SimpleNamespace(uri=uri, client=client, run=run, parent=parent, files=files)


def options(source_trial, tmp_path):
    return SimpleNamespace(from_run=source_trial.run, overrides=[], tracking_uri=source_trial.uri,
                           address="ray://unreachable.invalid:10001", storage=str(tmp_path))


def check_children(source_trial, summary, expected: int):
    """Every policy is a FINISHED child run under the sweep's parent, its numbers recomputed from the files."""
    client = source_trial.client
    best_run = client.get_run(summary["best_run_id"])
    parent_id = best_run.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent_id).data.tags["mlflow.parentRunId"] == source_trial.parent
    children = client.search_runs([best_run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(children) == expected and {c.info.status for c in children} == {"FINISHED"}
    stored = load_predictions(source_trial.files)
    for child in children:
        p = child.data.params
        again = evaluate_policy(stored, p["policy.strategy"], float(p["policy.smoothing"]), float(p["policy.offset"]))
        for key in ("val/macro_f1", "test/macro_f1", "val/mean_accuracy"):
            assert child.data.metrics[key] == pytest.approx(again[key], abs=1e-6)
    best = max(children, key=lambda c: c.data.metrics["val/macro_f1"])
    assert summary["best_value"] == pytest.approx(best.data.metrics["val/macro_f1"], abs=1e-9)
    assert client.get_run(parent_id).data.metrics["best/val/macro_f1"] == pytest.approx(summary["best_value"])
    assert client.get_run(parent_id).info.status == "FINISHED"
    return children


def test_optuna_policies_run_in_this_process_without_ray(source_trial, tmp_path, capsys, monkeypatch):
    import ray

    from orchestrator import cluster

    def no_ray(*args, **kwargs):
        raise AssertionError("a policy sweep must not start or join Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(cluster, "connect", no_ray)
    sweep = search_spaces.get("celeba_thresholds")(real_data=False, smoke=True)
    # --address names a cluster that does not exist: a policy sweep never connects to one.
    summary = run_policy_sweep(options(source_trial, tmp_path), sweep)
    assert summary["trials"] == 8 and summary["failed"] == 0
    children = check_children(source_trial, summary, 8)
    assert len({c.data.params["policy.strategy"] + c.data.params["policy.offset"] for c in children}) == 8
    out = capsys.readouterr().out
    assert "policy 8/8" in out and "A new study created" not in out


def test_a_grid_of_policies_is_drawn_once_per_sample(source_trial, tmp_path):
    sweep = Sweep(name="grid_thresholds", question="?", task="attributes", metric="val/macro_f1", runner="policies", grace_period=0,
                  num_samples=2, param_space={"policy.strategy": tune.grid_search(["fixed", "f1_opt"]),
                                              "policy.smoothing": tune.uniform(0.0, 1.0), "policy.offset": 0.0})
    summary = run_policy_sweep(options(source_trial, tmp_path), sweep)
    children = check_children(source_trial, summary, 4)
    assert sorted(c.data.params["policy.strategy"] for c in children) == ["f1_opt", "f1_opt", "fixed", "fixed"]


def test_the_command_shows_each_policys_test_numbers_and_no_download_bars(source_trial, tmp_path, capsys,
                                                                          monkeypatch):
    """`sweep celeba_thresholds --from-run` as a user runs it: the policy is chosen on validation and reported on
    test, so the table has the test columns (and none of a trained trial's), and a policy's name leaves out the
    smoothing that a fixed threshold ignores; MLflow's `Downloading artifacts: 100%|...` bars (one per download of
    the stored scores) no longer reach the console."""
    from orchestrator.__main__ import main

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")  # as in a user's shell; undone after the test
    monkeypatch.chdir(tmp_path)
    status = main(["sweep", "celeba_thresholds", "--smoke", "--from-run", source_trial.run, "--tracking-uri",
                   source_trial.uri, "--storage", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert "Downloading artifacts" not in out + err, err
    # A policy is scored once, not trained: its row has no status or epochs column (they read 'done 1').
    header = next(line for line in out.splitlines() if line.lstrip().startswith("best ") and "config" in line)
    assert header.split() == ["best", "policy", "config", "val/macro_f1", "test/macro_f1", "val/mean_accuracy",
                              "test/mean_accuracy"], header
    assert out.splitlines()[-1].startswith("8 policies in "), out
    # A fixed 0.5 threshold has nothing to smooth toward 0.5: its policies are named without smoothing.
    fixed = [line.split("| best")[0] for line in out.splitlines() if "strategy=fixed" in line.split("| best")[0]]
    assert fixed and not [line for line in fixed if "smoothing=" in line], "\n".join(fixed)
    assert any("strategy=prior smoothing=" in line for line in out.splitlines()), out
    # The last progress line's best so far is the policy the sweep picks.
    last = next(line for line in out.splitlines() if "policy 8/8" in line)
    picked = next(line for line in out.splitlines() if line.startswith("best: "))
    assert last.split("| best ", 1)[1].split(" (", 1)[1].rstrip(")") == picked[6:].split("  ")[0], (last, picked)


def test_smoothing_changes_no_fixed_policy_and_every_other_one():
    """What leaves `smoothing` out of a fixed policy's name (policy_keys_inert) holds: with thresholds at 0.5,
    smoothing toward 0.5 changes no metric; with calibrated thresholds it does."""
    import numpy as np

    from trainables.tasks.attributes.thresholds import StoredPredictions, policy_keys_inert

    rng = np.random.default_rng(0)
    split = lambda: (rng.random((200, 4)), (rng.random((200, 4)) < [0.1, 0.3, 0.5, 0.8]).astype(int))  # noqa: E731
    stored = StoredPredictions(["a", "b", "c", "d"], split(), split(), np.array([0.1, 0.3, 0.5, 0.8]))
    for strategy in ("fixed", "prior", "f1_opt", "acc_opt"):
        same = evaluate_policy(stored, strategy, 0.0, 0.02) == evaluate_policy(stored, strategy, 0.7, 0.02)
        inert = "policy.smoothing" in policy_keys_inert({"policy.strategy": strategy})
        assert same == inert, strategy
