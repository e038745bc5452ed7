"""The MLflow records a sweep keeps while its tracking server is down (orchestrator/spool.py) and replays
(orchestrator/outbox.py): kept durably, never raised into Tune, said once, and written exactly once when
the store answers again."""

from __future__ import annotations

from types import SimpleNamespace

from mlflow import MlflowClient

from mlflow_server import free_port
from orchestrator.outbox import Outbox, keep_records
from orchestrator.spool import SPOOL_FILE, Spool
from orchestrator.tracking import Tracking
from orchestrator.trial_runs import MlflowTrialCallback


def unconnected(uri: str) -> Tracking:
    """A Tracking on a server that is not there (the constructor refuses one, as a preflight should)."""
    tracking = Tracking.__new__(Tracking)
    tracking.__setstate__({"uri": uri})
    return tracking


class Untouchable:
    """A client that counts every use: a server known to be down must not be asked on every event."""
    calls = 0

    def __getattr__(self, name):
        Untouchable.calls += 1
        raise ConnectionError("asked a server known to be down")


def trial(trial_id: str, epoch: int = 0, checkpoint=None):
    return SimpleNamespace(trial_id=trial_id, config={"model.name": "resnet18"}, error_file=None,
                           last_result={"epoch": epoch, "checkpoint_path": checkpoint} if epoch else {})


def result(epoch: int) -> dict:
    return {"epoch": epoch, "val/mean_accuracy": 0.5 + epoch / 100, "train/loss": 1.0 / epoch}


def epochs(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "epoch"))


def test_the_spool_keeps_every_whole_line_and_skips_a_torn_one(tmp_path):
    spool = Spool(str(tmp_path))
    spool.append({"op": "log", "trial": "a", "step": 1})
    with open(tmp_path / SPOOL_FILE, "ab") as handle:  # a driver killed in the middle of an append
        handle.write(b'{"op": "log", "tri')
    spool.append({"op": "log", "trial": "a", "step": 2})
    spool.append({"op": "terminate", "trial": "a", "status": "FINISHED"})
    assert [(op["op"], op.get("step")) for op in spool.ops()] == [("log", 1), ("log", 2), ("terminate", None)]
    spool.rewrite(spool.ops()[2:])
    assert [op["op"] for op in Spool(str(tmp_path)).ops()] == ["terminate"]
    spool.rewrite([])
    assert not (tmp_path / SPOOL_FILE).exists() and Spool(str(tmp_path)).ops() == []


def test_a_server_that_is_down_costs_no_epoch_and_is_said_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    store = f"sqlite:///{tmp_path}/mlflow.db"
    live = Tracking(store)
    experiment = live.experiment_id("outage")
    parent, _ = live.find_or_create_run(experiment, {"orchestrator.sweep_path": "sweep"}, "sweep", {})

    down = unconnected(f"http://127.0.0.1:{free_port()}")  # nothing listens there: refused
    keep_records(down, str(tmp_path / "storage"), experiment, "sweep")
    callback = MlflowTrialCallback(down, experiment, parent, "sweep", describe=lambda c: c["model.name"],
                                   params_of=lambda c: c, on_finish=lambda *a: None)
    callback.on_trial_start(0, [], trial("t1"))
    callback.on_trial_result(0, [], trial("t1"), result(1))
    assert callback.outbox.down
    callback.outbox._wait = 3600.0  # the next probe is an hour away
    down.client = Untouchable()  # known down: later events must not touch the client (no retry wait per event)
    callback.on_trial_result(0, [], trial("t1"), result(2))
    callback.on_trial_result(0, [], trial("t1"), result(2))  # a repeated step (a restart) is not kept twice
    callback.on_trial_result(0, [], trial("t1"), result(3))
    assert Untouchable.calls == 0
    out = capsys.readouterr().out
    assert out.count("is not answering") == 1 and "training continues" in out and "warning" not in out, out
    kept = Spool(str(tmp_path / "storage")).ops()
    assert [op["op"] for op in kept] == ["open", "log", "log", "log"]

    # The store answers again (here: the same records go to a store that is up): the next event writes
    # everything kept first, in order, then its own record; the console says so once.
    down.uri, down.client = store, MlflowClient(store)
    callback.outbox._wait = 0.0  # the next probe is due
    callback.on_trial_result(0, [], trial("t1"), result(4))
    callback.on_trial_complete(0, [], trial("t1", epoch=4))
    out = capsys.readouterr().out
    assert out.count("answers again") == 1 and "4 kept record(s) written" in out, out
    (child,) = [r for r in live.client.search_runs([experiment]) if r.data.tags.get("orchestrator.trial_id") == "t1"]
    assert epochs(live.client, child.info.run_id) == [1, 2, 3, 4]
    assert child.info.status == "FINISHED" and child.data.params["model.name"] == "resnet18"
    assert not (tmp_path / "storage" / SPOOL_FILE).exists()


def test_replaying_the_spool_twice_writes_each_record_once(tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = Tracking(store)
    experiment = tracking.experiment_id("replay")
    parent, _ = tracking.find_or_create_run(experiment, {"orchestrator.sweep_path": "sweep"}, "sweep", {})
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "trials.csv").write_text("trial,score\nt1,0.5\n")
    folder = str(tmp_path / "storage")
    outbox = Outbox(tracking, Spool(folder), experiment, "sweep")
    ops = [
        {"op": "open", "trial": "t1", "name": "t1 resnet18", "tags": {"orchestrator.kind": "trial"},
         "params": {"lr": "0.01"}, "dataset": None},
        *({"op": "log", "trial": "t1", "step": e, "metrics": {"epoch": float(e), "val/acc": e / 10}, "tags": {},
           "time": 1000 + e} for e in (1, 2)),
        {"op": "log", "run": parent, "step": 0, "metrics": {"best/val/acc": 0.2},
         "tags": {"best_run_id": "run-of-trial:t1"}, "time": 5000},
        {"op": "files", "run": parent, "folder": str(tmp_path / "tmp"), "names": ["trials.csv"], "time": 6000},
        {"op": "terminate", "trial": "t1", "status": "FINISHED", "time": 7000},
        {"op": "terminate", "run": parent, "status": "FINISHED", "time": 8000},
    ]
    for op in ops:
        outbox._keep(op)
    assert outbox.flush()
    for op in ops:  # kept again: a replay that crashed before clearing the spool, or a trial that restarted
        again = {**op, "time": op["time"] + 1, "metrics": {k: v + 1 for k, v in op["metrics"].items()}} \
            if op.get("trial") and op.get("metrics") else op  # from scratch and reports its epochs anew
        outbox._keep(again)
    assert len(Spool(folder).ops()) == len(ops)
    assert outbox.flush()
    child = tracking.find_run(experiment, {"orchestrator.sweep_path": "sweep", "orchestrator.trial_id": "t1"})
    assert epochs(tracking.client, child) == [1, 2]
    assert [m.step for m in tracking.client.get_metric_history(parent, "best/val/acc")] == [0]
    run = tracking.client.get_run(parent)
    assert run.data.tags["best_run_id"] == child and run.info.status == "FINISHED"
    assert [a.path for a in tracking.client.list_artifacts(parent)] == ["trials.csv"]
    assert tracking.client.get_run(child).data.params == {"lr": "0.01"}
    assert capsys.readouterr().out.count("answers again") == 2


def test_a_failure_that_is_no_outage_is_one_line_and_never_reaches_tune(tmp_path, capsys):
    """As seen with an object store down: copying a trial's files raised inside on_trial_error, and Tune's
    controller crashed on it. The server answers, so it is no outage: one line, and the run still ends."""
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracking.experiment_id("errors")
    parent, _ = tracking.find_or_create_run(experiment, {"orchestrator.sweep_path": "sweep"}, "sweep", {})

    def copy_files(run_id, result, checkpoint):
        raise OSError(f"When getting information for key '{checkpoint}': AWS Error NETWORK_CONNECTION")

    callback = MlflowTrialCallback(tracking, experiment, parent, "sweep", describe=lambda c: c["model.name"],
                                   params_of=lambda c: c, on_finish=copy_files)
    callback.on_trial_start(0, [], trial("t1"))
    callback.on_trial_result(0, [], trial("t1"), result(1))
    callback.on_trial_error(0, [], trial("t1", epoch=1, checkpoint="s3://bucket/ckpt"))
    out = capsys.readouterr().out
    assert out.count("warning") == 1 and "trial_files of t1" in out and "NETWORK_CONNECTION" in out, out
    assert "is not answering" not in out
    run = tracking.client.get_run(callback.run_ids["t1"])
    assert run.info.status == "FAILED" and "error" in run.data.tags and epochs(tracking.client, run.info.run_id) == [1]


def test_a_trial_evaluating_every_n_steps_is_logged_at_its_optimizer_steps(tmp_path):
    """eval.every_steps: the MLflow step is the optimizer step, so curves of trials line up; epoch is a fraction."""
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracking.experiment_id("steps")
    parent, _ = tracking.find_or_create_run(experiment, {"orchestrator.sweep_path": "sweep"}, "sweep", {})
    callback = MlflowTrialCallback(tracking, experiment, parent, "sweep", describe=lambda c: c["model.name"],
                                   params_of=lambda c: c, on_finish=lambda *a: None)
    callback.on_trial_start(0, [], trial("t1"))
    for step, epoch in [(5, 0.8333), (10, 1.6667), (12, 2.0)]:
        callback.on_trial_result(0, [], trial("t1"), {**result(1), "epoch": epoch, "step": step, "evaluation": 1})
    callback.on_trial_result(0, [], trial("t1"), {**result(1), "epoch": 0.8333, "step": 5})  # a restart's repeat
    history = tracking.client.get_metric_history(callback.run_ids["t1"], "val/mean_accuracy")
    assert sorted(m.step for m in history) == [5, 10, 12]
    assert [m.value for m in sorted(tracking.client.get_metric_history(callback.run_ids["t1"], "epoch"),
                                    key=lambda m: m.step)] == [0.8333, 1.6667, 2.0]


def test_a_sweep_saved_before_the_outbox_moved_still_unpickles_it():
    """Tune's saved state of a sweep interrupted before outbox.py existed names orchestrator.spool.Outbox;
    `--resume` unpickles it, so that name must still give the class."""
    import pickle

    from orchestrator.outbox import Outbox

    assert pickle.loads(b"corchestrator.spool\nOutbox\n.") is Outbox
