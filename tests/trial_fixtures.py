"""A tiny attribute trial as a sweep leaves it, without Ray: checkpoint folders laid out as the worker
writes them and an MLflow child run as the sweep records it; shared by the export and predict tests."""

from __future__ import annotations

import json
import time

import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric

from trainables.config import TrainConfig
from trainables.errors import UserError
from task_harness import build, evaluate, pipe_for
from trainables.loop import TrainModule, train_one_epoch
from trainables.optim import build_optimizer

from orchestrator.tracking import KIND_KEY, SWEEP_KEY, TRIAL_KEY



def fake_trial(tmp, uri: str, config: dict, epochs: int, experiment: str) -> dict:
    """Train `epochs` short epochs, writing checkpoint folders as train.py does and an MLflow child
    run (metric history per epoch, `checkpoint` tag = the last checkpoint) as a sweep does."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict({"task": "attributes", "optim.batch_size": 16, **config, "optim.epochs": epochs,
                                 "data.cache_dir": str(tmp / "cache")})
    batch = cfg.optim.batch_size
    task = build(cfg)
    module = TrainModule(task.model, task.criterion)
    pipe = pipe_for(task)
    steps = task.train_rows(1) // batch
    optimizer, scheduler = build_optimizer(cfg.optim, module, steps)
    storage = tmp / "runs" / experiment
    train_run = storage / "train_runs" / "train-abc_00000"
    history, folders = [], []
    for epoch in range(epochs):
        train_one_epoch(module, task.train_loader(epoch, 0, 1, batch, 0), optimizer, pipe, scheduler, epoch * steps)
        result = evaluate(task)
        folder = train_run / f"checkpoint_2026-01-01_00-00-0{epoch}.000000"
        folder.mkdir(parents=True)
        torch.save(task.model.state_dict(), folder / "model.pt")
        (folder / "meta.json").write_text(json.dumps({"epoch": epoch + 1, "config": cfg.to_flat_dict()}))
        result.write_files(folder)
        history.append({**result.metrics, "epoch": epoch + 1})
        folders.append(folder)

    client = MlflowClient(uri)
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, tags={KIND_KEY: "sweep", SWEEP_KEY: str(storage)}).info.run_id
    child = client.create_run(experiment_id, tags={KIND_KEY: "trial", SWEEP_KEY: str(storage), TRIAL_KEY: "abc_00000",
                                                   "mlflow.parentRunId": parent}).info.run_id
    now = int(time.time() * 1000)
    for metrics in history:
        client.log_batch(child, metrics=[Metric(k, float(v), now, metrics["epoch"]) for k, v in metrics.items()])
    client.set_tag(child, "checkpoint", str(folders[-1]))
    client.set_tag(parent, "best_run_id", child)
    return {"uri": uri, "client": client, "experiment_id": experiment_id, "parent": parent, "child": child,
            "history": history, "folders": folders, "root": cfg.data.root, "tmp": tmp}


def best_epoch(history: list[dict], metric: str, mode: str = "max") -> int:
    sign = 1 if mode == "max" else -1
    return max(history, key=lambda m: (sign * m[metric], m["epoch"]))["epoch"]


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message

