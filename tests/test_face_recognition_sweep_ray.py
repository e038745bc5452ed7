"""`sweep face_recognition_losses --smoke` on a local Ray: recognition trials, verified and recorded in MLflow."""

import time

import pandas as pd
import pytest
from mlflow import MlflowClient

import search_spaces
from orchestrator.sweep import SweepOptions, run_sweep
from trainables.tasks.recognition.verification import recompute_accuracy

pytestmark = pytest.mark.ray

SWEEP = "face_recognition_losses"
MARGIN_OVER_UNTRAINED = 0.03  # verification accuracy points
VERIFICATION = ["val/lfw/accuracy", "val/lfw/accuracy_std", "val/lfw/tar_at_far_1e-3",
                "val/mean_verification_accuracy", "train/loss"]


@pytest.fixture(scope="module")
def recognition_sweep(local_ray, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recognition")
    uri = f"sqlite:///{tmp}/mlflow.db"
    started = time.time()
    # From a prepared folder given as a file:// URI (the training set of the demo faces), as on a cluster,
    # trained as `--smoke` trains the demo set: its workers per trial (one, both trials at once), batch and
    # learning rate, which --data would set for real data. With the smoke's former two DDP workers the
    # trials ended at chance, which the test of learning below refuses.
    from trainables.data.demo.faces import ensure_demo_faces
    from trainables.data.prepare import prepare
    from trainables.data.sources import cache_dir

    raw, _ = ensure_demo_faces(cache_dir(), seed=0)
    prepare("faces", raw / "train", str(tmp / "faces-shards"))
    demo = search_spaces.get(SWEEP)(real_data=False, smoke=True)
    summary = run_sweep(SweepOptions(SWEEP, data=f"file://{tmp / 'faces-shards'}", smoke=True,
                                     storage=str(tmp / "runs"), tracking_uri=uri, num_workers=demo.workers_per_trial,
                                     overrides=[f"{key}={demo.param_space[key]}" for key in ("optim.batch_size", "optim.lr")]))
    print(f"\n{SWEEP} --smoke: {time.time() - started:.0f}s, best {summary.get('best_value')}")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(SWEEP).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return summary, client, parents, children


def test_every_trial_logs_verification_metrics_and_files(recognition_sweep):
    summary, client, parents, children = recognition_sweep
    assert summary["trials"] == 2 and summary["failed"] == 0
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.params["head.center_lambda"] for c in children} == {"0.0", "0.03"}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.params["task"] == "recognition"
        assert child.data.params["data.root"].startswith("file://") and "loss.name" not in child.data.params
        epochs = int(child.data.metrics["epoch"])
        for key in VERIFICATION:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (key, steps)
        files = {a.path for a in client.list_artifacts(child.info.run_id, "verification")}
        assert {"verification/lfw.parquet", "verification/roc.png"} <= files, files


def test_logged_accuracy_is_recomputed_from_the_artifact(recognition_sweep, tmp_path):
    from mlflow.artifacts import download_artifacts

    _, client, _, children = recognition_sweep
    for child in children:
        path = download_artifacts(run_id=child.info.run_id, artifact_path="verification/lfw.parquet",
                                  dst_path=str(tmp_path / child.info.run_id), tracking_uri=client.tracking_uri)
        table = pd.read_parquet(path)
        assert len(table) == 600 and sorted(table["fold"].unique()) == list(range(10))
        # One epoch: the checkpoint's files and the logged numbers come from the same evaluation.
        logged = child.data.metrics
        assert recompute_accuracy(table) == pytest.approx(logged["val/lfw/accuracy"], abs=1e-9)
        assert logged["val/mean_verification_accuracy"] == pytest.approx(logged["val/lfw/accuracy"], abs=1e-9)


def _untrained_accuracy(config: dict) -> float:
    """The verification accuracy of a trial's net with no weight update: the same seed (the worker seeds
    torch before building the task), the same pairs, the same evaluation, and the BatchNorm statistics the
    trial's epoch gathers (its training batches through the net in train mode, no optimizer step: an
    epoch at learning rate 0). With its initial statistics (mean 0, variance 1) the untrained net scores
    0.8867 on the demo pairs, but no trained net keeps those: after the smoke's 12 batches the running
    means are 1 - 0.9**12 = 72% of the way there, the leftover mean dominates every embedding (all point one
    way) and the untrained weights score 0.5."""
    import torch

    from task_harness import build, evaluate, pipe_for
    from trainables.config import TrainConfig

    cfg = TrainConfig.from_dict(config)
    torch.manual_seed(cfg.seed)
    task = build(cfg)
    pipe = pipe_for(task)
    task.model.train()
    with torch.no_grad():
        for images, _ in task.train_loader(0, 0, 1, cfg.optim.batch_size, 0):
            task.model(pipe(images))
    return evaluate(task, batch=32).metrics["val/mean_verification_accuracy"]


def test_best_trial_clearly_beats_the_untrained_net(recognition_sweep):
    """Training must have taught the net something: a collapsed embedding, a broken verification path and
    an epoch whose steps change nothing all score no better than the untrained net."""
    summary, _, parents, _ = recognition_sweep
    parent = parents[0].data.metrics
    assert 0.5 <= parent["val/chance_accuracy"] < summary["best_value"]
    assert parent["best/val/mean_verification_accuracy"] == pytest.approx(summary["best_value"])
    untrained = _untrained_accuracy(summary["best_metrics"]["config"])
    print(f"untrained {untrained:.4f}, best trial {summary['best_value']:.4f}")
    assert summary["best_value"] >= untrained + MARGIN_OVER_UNTRAINED, (summary["best_value"], untrained)
