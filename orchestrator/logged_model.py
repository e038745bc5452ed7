"""The best model as an MLflow 3 LoggedModel, registered under `--register NAME` with the alias `champion`.

An export folder (export.py) becomes `mlflow.pytorch.log_model` of `trainables.served.ServedModel`:
an RGB image tensor (N, 3, H, W) float32 in [0, 1] in, the task's scores out (the columns of
labels.json's `outputs`, also in the model's metadata). MLflow 3.17 saves it as a traced graph
(torch.export, "pt2"), so loading it runs no pickle and needs none of our code: torch, pinned at this
environment's version (with timm's, which built it), is all `mlflow.pyfunc.load_model` and `mlflow models
serve` need, and nothing is fetched at load time. The model is linked to its trial's run, carries the
run's params and the metrics of the chosen epoch (`model_id` on those metrics), and is found again by
its checkpoint tag, so a replay (outbox.py) logs it once.

`--register-if 'val/race/group_gap<0.05'` registers only when the chosen epoch's value of the metric
satisfies the condition; `parse_condition` reads it before any training starts.
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import dataclass
from pathlib import Path

from trainables.errors import UserError

ALIAS = "champion"
CHECKPOINT_TAG = "orchestrator.checkpoint"  # finds a model logged before (a replay logs it once)
OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}
_CONDITION = re.compile(r"^\s*([A-Za-z0-9_.\-/]+?)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.value)


def parse_condition(text: str) -> Condition:
    """`<metric><op><number>` with op one of < <= > >= ==; a UserError line otherwise."""
    found = _CONDITION.match(text or "")
    if not found:
        raise UserError(f"--register-if '{text}' is not a condition: write METRIC OP NUMBER with OP one of "
                        "< <= > >= ==, e.g. --register-if 'val/race/group_gap<0.05'")
    return Condition(found.group(1), found.group(2), float(found.group(3)))


@dataclass(frozen=True)
class Registration:
    name: str
    condition: Condition | None = None

    def as_dict(self) -> dict:  # for a record kept in the spool
        return {"register": self.name, "register_if": str(self.condition) if self.condition else None}


def registration(name: str | None, condition: str | None) -> Registration | None:
    """What --register and --register-if ask for, checked now (before any training)."""
    if condition is not None and not name:
        raise UserError("--register-if needs --register NAME: pass the registered model's name too")
    if name is None:
        return None
    if not name.strip() or any(c in name for c in "/:@"):
        raise UserError(f"--register '{name}' is not a usable model name: `models:/NAME@{ALIAS}` needs one "
                        "without '/', ':' or '@', e.g. --register faces")
    return Registration(name, parse_condition(condition) if condition is not None else None)


def check_registrable(runner, task) -> None:
    """A sweep that yields no servable model cannot register one: said before it starts. `runner`: the sweep's
    `runners.Runner`; `task`: its task, or None when its runner trains no model."""
    if not runner.trains_models:
        raise UserError(f"--register applies to sweeps that train models; {runner.what}, and trains none: "
                        "register its source run with `export --run RUN_ID --out DIR --register NAME`")
    if task.outputs is None:
        raise UserError(f"--register: task '{task.name}' has no outputs to serve (its models produce embeddings): "
                        "drop --register")


def from_record(record: dict) -> Registration | None:
    return registration(record.get("register"), record.get("register_if"))


def log_model(tracking, folder: Path, chosen: dict) -> str:
    """Log the export `folder` (chosen by export.export_run) as a LoggedModel of the trial's run; its id."""
    from importlib.metadata import version

    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from trainables import inference
    from trainables.served import ServedModel

    client, run_id, epoch = tracking.client, chosen["run_id"], chosen["epoch"]
    existing = logged_models(tracking, run_id, chosen["checkpoint"])
    if existing and str(existing[0].status) == "READY":
        return existing[0].model_id
    exported = inference.load_exported(folder, device="cpu")
    names, size, pipe = exported.output_names, exported.cfg.data.image_size, exported.pipe
    served = ServedModel(exported.model, pipe.mean, pipe.std, exported.outputs.score_groups(exported.cfg, exported.labels))
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(names)))]))
    example = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)  # batch 2: a dynamic batch size
    title = f"{exported.cfg.model.name}-{exported.cfg.task}"
    run = client.get_run(run_id)
    model = existing[0] if existing else client.create_logged_model(
        experiment_id=run.info.experiment_id, name=title, source_run_id=run_id,
        params={k: str(v)[:6000] for k, v in run.data.params.items()},
        tags={CHECKPOINT_TAG: chosen["checkpoint"], "epoch": str(epoch), "metric": chosen["metric"]})
    with torch.no_grad():
        mlflow.pytorch.log_model(
            # step: links the checkpoint's metrics (its epoch, or its optimizer step with eval.every_steps)
            served.eval(), name=title, model_id=model.model_id, run_id=run_id, step=chosen.get("step", epoch),
            signature=signature, input_example=example,
            pip_requirements=[f"{name}=={version(name)}" for name in ("torch", "timm", "mlflow", "numpy")],
            metadata={"task": exported.cfg.task, "outputs": names, "labels": exported.labels,
                      "input": f"RGB (N, 3, {size}, {size}) float32 in [0, 1]: the image resized to {size}x{size} "
                               "and divided by 255; normalisation is inside the model"})
    if str(client.get_logged_model(model.model_id).status) != "READY":
        client.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def logged_models(tracking, run_id: str, checkpoint: str) -> list:
    """The LoggedModels already made from this checkpoint (a replay, or `export --register` again)."""
    run = tracking.client.get_run(run_id)
    found = tracking.client.search_logged_models([run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{run_id}'")
    return [m for m in found if m.tags.get(CHECKPOINT_TAG) == checkpoint]


def register(tracking, model_id: str, chosen: dict, wanted: Registration) -> tuple[str, bool]:
    """(the line that says what was registered or why not, whether it is a user's error). The condition
    reads the chosen epoch's value of its metric; the alias `champion` moves to the new version."""
    from mlflow.exceptions import MlflowException

    client, run_id, epoch = tracking.client, chosen["run_id"], chosen["epoch"]
    if wanted.condition is not None:
        metric = wanted.condition.metric
        value = tracking.metric_by_step(run_id, metric).get(chosen.get("step", epoch))
        if value is None:
            known = sorted(k for k in client.get_run(run_id).data.metrics if "/" in k)
            prefix = metric.split("/", 1)[0] + "/"  # close names first, then those of the same split
            hint = list(dict.fromkeys(difflib.get_close_matches(metric, known, n=4, cutoff=0.4)
                                      + [k for k in known if k.startswith(prefix)] + known))[:8]
            return (f"--register-if names '{metric}', which run {run_id} did not log at epoch {epoch}: pass one of "
                    f"{', '.join(hint) or 'none logged'}{', ...' if len(known) > len(hint) else ''}; the model "
                    f"is logged as {model_id}, not registered", True)
        if not wanted.condition.holds(value):
            return (f"model: not registered as '{wanted.name}': {metric} is {value:.4g} at epoch {epoch}, and "
                    f"--register-if asks {wanted.condition}", False)
    try:
        client.create_registered_model(wanted.name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"models:/{model_id}"  # a version's source (its model_id field is not always filled in)
    versions = [v for v in client.search_model_versions(f"name = '{wanted.name}'") if v.source == source]
    version = versions[0] if versions else client.create_model_version(wanted.name, source=source, run_id=run_id,
                                                                       model_id=model_id)
    client.set_registered_model_alias(wanted.name, ALIAS, version.version)
    why = f" ({wanted.condition.metric} {value:.4g} satisfies {wanted.condition})" if wanted.condition else ""
    return (f"model: registered as '{wanted.name}' version {version.version}, alias {ALIAS}{why}: "
            f"models:/{wanted.name}@{ALIAS}", False)


def publish(tracking, folder: Path, chosen: dict, wanted: Registration | None) -> tuple[list[str], str | None]:
    """Log the LoggedModel and register it as asked: (the lines to print, a user's error line or None)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking.uri):  # MLflow's model logging and registry read the global URI
        model_id = log_model(tracking, folder, chosen)
        lines = [f"model: LoggedModel {model_id} of run {chosen['run_id']} (epoch {chosen['epoch']}): models:/{model_id}"]
        if wanted is None:
            return lines, None
        line, error = register(tracking, model_id, chosen, wanted)
    return (lines, line) if error else (lines + [line], None)
