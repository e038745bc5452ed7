"""`sweep fairface_multitask --smoke` on a local Ray: Tune -> Train DDP -> MLflow, with group metrics."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.ray

TASKS = ("race", "gender", "age")
EPOCH_METRICS = ["train/loss", "val/loss", "val/mean_task_accuracy", "val/age/mae_years",
                 *(f"val/{t}/{k}" for t in TASKS for k in ("accuracy", "balanced_accuracy", "worst_group_accuracy",
                                                           "group_gap")),
                 "val/race/group_accuracy/race/White", "val/age/group_accuracy/gender/Female",
                 *(f"train/weight/{t}" for t in TASKS)]


# Actors of each Ray Train class started while the module's sweep ran (the GCS keeps finished ones too).
STARTED: dict[str, int] = {}
COUNTED = ("TrainController", "RayTrainWorker", "DatasetManager", "PreemptionWatcher", "PlacementGroupCleaner")


def _actors() -> dict[str, int]:
    """Counted in this process's Ray from the GCS's actor table, which keeps finished actors too (the state API
    would need the dashboard, which the tests' Ray, like a command's, does not start)."""
    from collections import Counter

    from orchestrator.placement import read_actors

    started = Counter(actor.class_name for actor in read_actors().values())
    return {name: started[name] for name in COUNTED}


COORDINATOR = {"name": "AutoscalingCoordinator", "namespace": "AutoscalingCoordinator"}  # Ray Data's, detached
COORDINATOR_ALIVE: list[bool] = []


def _coordinator():
    """Ray Data's AutoscalingCoordinator actor if one is alive in this Ray, else None."""
    import ray

    try:
        return ray.get_actor(**COORDINATOR)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def smoke_sweep(local_ray, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fairface-smoke")
    uri = f"sqlite:///{tmp}/mlflow.db"
    # The demo set, `prepare`d as a user would and given as a relative --data path: every trial must
    # still find it (a trial's working directory is not the driver's).
    from trainables.data.demo.fairface import ensure_demo_fairface
    from trainables.data.prepare import prepare
    from trainables.data.sources import cache_dir

    raw, _ = ensure_demo_fairface(cache_dir(), num_images=3600, seed=0)
    prepare("fairface", raw, str(tmp / "shards"))
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(tmp)
    before = _actors()
    import ray

    found = _coordinator()
    if found is not None:  # a stock TorchTrainer of another test in this Ray made it: start without it
        ray.kill(found, no_restart=True)
    try:
        # One worker per trial, both trials at once: the two Ray Train start-ups overlap (the CelebA smoke
        # sweep covers two-worker DDP). The demo's settings, not those for real data.
        summary = run_sweep(SweepOptions("fairface_multitask", data="shards", smoke=True, storage=str(tmp / "runs"),
                                         tracking_uri=uri, num_workers=1,
                                         overrides=["data.image_size=48", "optim.lr=3e-3", "optim.batch_size=32"]))
    finally:
        monkeypatch.undo()
    STARTED.update({name: count - before[name] for name, count in _actors().items()})
    COORDINATOR_ALIVE.append(_coordinator() is not None)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fairface_multitask").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return summary, client, parent, children


def test_a_trial_starts_only_the_actors_its_training_needs(smoke_sweep):
    """Ray Train 2.60 would also start a DatasetManager (Ray Data's, for datasets we never give it), a
    PlacementGroupCleaner (the driver removes an ended trial's groups itself) and, on a local Ray, a
    PreemptionWatcher for every trial: three more processes per trial start (runners.TrialTrainer,
    cluster.local_ray_env). On a local Ray the trials also send no autoscaler requests, so the first one does
    not wait for Ray Data's AutoscalingCoordinator to start (orchestrator/local_scaling.py)."""
    assert STARTED == {"TrainController": 2, "RayTrainWorker": 2, "DatasetManager": 0, "PreemptionWatcher": 0,
                       "PlacementGroupCleaner": 0}
    assert COORDINATOR_ALIVE == [False]


def test_child_runs_record_group_metrics_every_epoch(smoke_sweep):
    summary, client, parent, children = smoke_sweep
    assert summary["trials"] == 2 and summary["failed"] == 0
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params["multitask.formulation"] for c in children} == {"multihead", "onehot18"}
    assert {c.data.params["task"] for c in children} == {"fairface"}
    # The relative --data reached every trial as one absolute path, and only FairFace's sections are params.
    roots = {c.data.params["data.root"] for c in children}
    assert len(roots) == 1 and roots.pop().endswith("/shards") and parent.data.params["data.root"].startswith("/")
    assert not any(k.startswith(("loss.", "head.")) for c in children for k in c.data.params)
    # eval is shared only for its schedule (eval.every_steps); the attribute and recognition keys stay theirs.
    assert {k for c in children for k in c.data.params if k.startswith("eval.")} == {"eval.every_steps"}
    for child in children:
        epochs = int(child.data.metrics["epoch"])
        for key in EPOCH_METRICS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (key, steps)
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "predictions" in files
        # The result files beside the trial's checkpoint.
        checkpoint = Path(child.data.tags["checkpoint"])
        table = pd.read_csv(checkpoint / "per_group.csv")
        assert list(table.columns) == ["kind", "group", "n", "race_accuracy", "gender_accuracy", "age_accuracy"]
        assert table.loc[table["kind"] == "race", "n"].sum() == 600
        assert (checkpoint / "group_accuracy.png").is_file()
        assert len(pd.read_parquet(checkpoint / "predictions" / "val.parquet")) == 600


def test_best_trial_beats_the_majority_baseline(smoke_sweep):
    summary, client, parent, _ = smoke_sweep
    baseline = parent.data.metrics["val/majority_task_accuracy"]
    best = parent.data.metrics["best/val/mean_task_accuracy"]
    assert best > baseline + 0.05, (best, baseline)
    assert summary["best_value"] == pytest.approx(best)
    assert "best/val/race/group_gap" in parent.data.metrics


def test_logged_accuracies_are_recomputed_from_the_best_runs_predictions(smoke_sweep, tmp_path):
    from mlflow.artifacts import download_artifacts
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    summary, client, _, _ = smoke_sweep
    run_id = summary["best_run_id"]
    folder = download_artifacts(run_id=run_id, artifact_path="predictions", dst_path=str(tmp_path),
                                tracking_uri=client.tracking_uri)
    val = pd.read_parquet(Path(folder) / "val.parquet")
    logged = client.get_run(run_id).data.metrics
    accuracies = []
    for task, column in zip(TASKS, ("race", "gender", "age_bin")):
        accuracies.append(accuracy_score(val[f"true_{column}"], val[f"pred_{column}"]))
        assert logged[f"val/{task}/accuracy"] == pytest.approx(accuracies[-1], abs=1e-9)
        assert logged[f"val/{task}/balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(val[f"true_{column}"], val[f"pred_{column}"]), abs=1e-9)
    assert logged["val/mean_task_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-9)


def test_the_fair_frontier_smoke_sweep_tags_exactly_its_non_dominated_trials(local_ray, tmp_path, monkeypatch, capsys):
    """`sweep fairface_fair_frontier --smoke` from the command line (one weighting: 2 trials of 1 epoch): the
    `pareto=true` runs are exactly the non-dominated ones by the children's own metrics in MLflow."""
    from orchestrator.__main__ import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    status = main(["sweep", "fairface_fair_frontier", "--smoke", "--num-workers", "1", "--storage", str(tmp_path / "runs"),
                   "--tracking-uri", uri, "--set", "multitask.weighting=fixed", "--seed", "3"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "objectives val/race/accuracy (max), val/race/group_gap (min): a Pareto front" in out
    assert "  2 trials, 1 epoch each;" in out, out  # it said "1 epochs"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fairface_fair_frontier").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    points = {c.info.run_id: (c.data.metrics["val/race/accuracy"], c.data.metrics["val/race/group_gap"])
              for c in children if int(c.data.metrics["epoch"]) == int(c.data.params["optim.epochs"])}

    def dominated(p):  # accuracy up, gap down
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points.values())

    front = {run_id for run_id, p in points.items() if not dominated(p)}
    assert front and front == {c.info.run_id for c in children if c.data.tags["pareto"] == "true"}
    assert {c.data.tags["pareto"] for c in children} <= {"true", "false"}
    assert parent.data.tags["best_run_id"] in front and parent.data.params["seed"] == "3"
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.png", "trials.csv"} <= files
