"""A trial's best checkpoint as a self-contained model folder (what `orchestrator export` writes; its command
line is orchestrator/commands/export.py).

The trial's MLflow run names (tag `checkpoint`) the checkpoint of its last report; that folder's
parent is the trial's Ray Train run, which keeps the best checkpoint by the sweep's metric and the
latest one. Each checkpoint's meta.json gives its epoch, and the run's metric history gives that
epoch's value, so the best can be chosen without asking Ray. The folder written holds only safe,
portable files, in timm's own layout: model.safetensors and config.json (timm's schema, so
`timm.create_model("local-dir:DIR", pretrained=True)` loads it), then trial_config.json, labels.json,
MODEL_CARD.md and the files the task declares for its outputs (such as its decision rules), which
`orchestrator predict` reads. At the end of a sweep, `log_best_model` puts its best trial's folder
into the parent run's artifacts.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from trainables import storage_fs
from trainables.errors import UserError

LOWER_IS_BETTER = ("loss", "mae", "error", "gap")  # metric name parts for which the minimum is best


@dataclass
class Checkpoint:
    path: str
    epoch: int          # epochs finished when it was taken
    config: dict
    step: int = 0       # the MLflow step of its metrics: the epoch, or the optimizer step (eval.every_steps)


def export_run(run_id: str, out, tracking_uri: str | None = None, metric: str | None = None,
               mode: str | None = None, *, tracking=None, logged_to: str | None = None,
               checkpoint: str | None = None) -> dict:
    """Write the export folder; returns what was chosen (run_id, epoch, metric, value, epochs, out, checkpoint,
    timm: a TimmLoad, whether `timm.create_model("local-dir:…")` loads it). `tracking` (an open store) stands for
    `tracking_uri`; `logged_to` names the run whose artifacts the folder is going to, for the model card;
    `checkpoint` (a path as `chosen["checkpoint"]` gives it) exports that checkpoint instead of the best."""
    from orchestrator.tracking import SWEEP_KEY, Tracking
    from trainables.config import TrainConfig
    from trainables.inference import task_outputs
    from trainables.tasks import get_task

    tracking = tracking or Tracking(tracking_uri)
    run = tracking.trial_run(run_id)  # a sweep's parent run stands for its best trial
    run_id = run.info.run_id
    tag = run.data.tags.get("checkpoint")
    if not tag:
        raise UserError(f"run {run_id} has no 'checkpoint' tag (it is set when a trial finishes): pass a finished "
                        "trial's run id, or its sweep's parent run id")
    fs, checkpoint_path = filesystem(tag, run.data.tags.get(SWEEP_KEY, ""))
    checkpoints = list_checkpoints(fs, checkpoint_path.rstrip("/").rsplit("/", 1)[0])
    task = TrainConfig.from_dict(checkpoints[-1].config).task
    outputs = task_outputs(task, "export")
    metric = metric or get_task(task).metric
    mode = mode or ("min" if any(part in metric.rsplit("/", 1)[-1] for part in LOWER_IS_BETTER) else "max")
    history = tracking.metric_by_step(run_id, metric)
    scored = [(history[c.step], c) for c in checkpoints if c.step in history]
    if not scored:
        known = sorted(k for k in run.data.metrics if "/" in k)[:12]
        raise UserError(f"run {run_id} has no '{metric}' for the steps {[c.step for c in checkpoints]} of its "
                        f"checkpoints: pass --metric, one of {', '.join(known) or 'none logged'}")
    if checkpoint is not None:  # a LoggedModel's own checkpoint (logged_model.CHECKPOINT_TAG)
        scored = [(v, c) for v, c in scored if c.path == checkpoint]
        if not scored:
            raise UserError(f"run {run_id} no longer has the checkpoint {checkpoint}, which its model was made "
                            "from (was the sweep's storage moved?): restore it, or serve --run RUN_ID")
    sign = 1 if mode == "max" else -1
    value, best = max(scored, key=lambda vc: (sign * vc[0], vc[1].step))  # a tie goes to the later checkpoint
    out = Path(out).expanduser()
    check_writable(out)
    chosen = {"run_id": run_id, "epoch": best.epoch, "step": best.step, "metric": metric, "mode": mode,
              "value": value, "epochs": [c.epoch for c in checkpoints], "out": str(out), "checkpoint": best.path}
    chosen["timm"] = write_export(fs, best, outputs, tracking, run, chosen, out, logged_to)
    return chosen


def log_best_model(tracking, parent_id: str, summary: dict, task, metric: str, mode: str,
                   completed: bool = True, wanted=None) -> str | None:
    """After a train sweep: export its best trial (`summary["best_run_id"]`, by the sweep's own metric) into
    the parent run's artifacts `model/`, so the MLflow UI links the sweep to its model, and log it as a
    LoggedModel of that trial's run, registered as `wanted` (a logged_model.Registration) asks. Skipped for a
    task without outputs, an interrupted sweep (a resume finishes it) or one whose every trial failed. Returns
    the line it printed; a failure is that one line, never an exception: the sweep's results are stored. A
    --register-if naming a metric the trial did not log is printed as an `error:` line and left in
    `summary["register_error"]` (the exit status says it)."""
    from trainables.artifacts import SWEEP_MODEL

    best_run = summary.get("best_run_id")
    if task.outputs is None or not completed or not best_run or summary.get("failed", 0) >= summary.get("trials", 0):
        if wanted is not None and task.outputs is not None and completed:
            print(f"model: not registered as '{wanted.name}': no trial of this sweep left a model", flush=True)
        return None
    outbox = getattr(tracking, "outbox", None)  # a server that is down: the export is kept for when it is back
    kept = {"op": "best_model", "run": parent_id, "best_run": best_run, "metric": metric, "mode": mode,
            **(wanted.as_dict() if wanted is not None else {})}
    then = " and becomes a LoggedModel" + (f" registered as '{wanted.name}'" if wanted is not None else "")
    later = (f"model: the best trial goes into the artifacts {SWEEP_MODEL}/ of parent run {parent_id}{then} when "
             f"MLflow is back" + (f" (kept in {outbox.where})" if outbox is not None else ""))
    if outbox is not None and (outbox.down or outbox.pending):
        done = f"model: the best trial is in the artifacts {SWEEP_MODEL}/ of parent run {parent_id}{then}"
        line = done if outbox.submit(kept) else later
        print(line, flush=True)
        return line
    try:
        chosen = log_model_files(tracking, parent_id, best_run, metric, mode, wanted)
        line = (f"model: the best trial's epoch {chosen['epoch']} is in the artifacts {SWEEP_MODEL}/ of parent run "
                f"{parent_id}" + ("; timm loads it (see its MODEL_CARD.md)" if chosen["timm"].ok else ""))
        line = "\n".join([line, *chosen["published"][0]])
        if chosen["published"][1]:
            summary["register_error"] = chosen["published"][1]
    except Exception as err:  # noqa: BLE001  the sweep is done and stored; the model can be exported later
        if outbox is not None and outbox.keep_if_down(kept, err):
            line = later
        else:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            choose = f" --metric {metric} --mode {mode}" if metric != task.metric else ""
            register = f" --register {wanted.name}" if wanted is not None else ""
            line = (f"warning: the best model was not fully logged to MLflow ({reason}); export it with: "
                    f"python -m orchestrator export --run {parent_id} --out DIR{choose}{register}")
    print(line, flush=True)
    if summary.get("register_error"):
        print(f"error: {summary['register_error']}", file=sys.stderr, flush=True)
    return line


def log_model_files(tracking, parent_id: str, best_run: str, metric: str, mode: str, wanted=None) -> dict:
    """Export `best_run`'s best checkpoint into `parent_id`'s artifacts `model/`, then as a LoggedModel of
    `best_run`, registered as `wanted` asks; returns what was chosen, with `published`: (lines, error line)."""
    from orchestrator import logged_model
    from trainables.artifacts import SWEEP_MODEL

    with tempfile.TemporaryDirectory() as tmp:
        chosen = export_run(best_run, Path(tmp) / SWEEP_MODEL, metric=metric, mode=mode, tracking=tracking,
                            logged_to=parent_id)
        tracking.log_files(parent_id, Path(tmp), [SWEEP_MODEL])
        tracking.log(parent_id, tags={"model": f"{SWEEP_MODEL}/ = run {best_run} epoch {chosen['epoch']}"})
        chosen["published"] = logged_model.publish(tracking, Path(tmp) / SWEEP_MODEL, chosen, wanted)
    return chosen


def write_export(fs: pafs.FileSystem, best: Checkpoint, outputs, tracking, run, chosen: dict, out: Path,
                 logged_to: str | None = None):
    """model.safetensors, config.json, trial_config.json, labels.json, the task's export files and MODEL_CARD.md;
    returns whether (and how) timm loads the folder, a `TimmLoad`."""
    import torch
    from safetensors.torch import save_file

    from orchestrator.timm_folder import write_timm_config
    from trainables.artifacts import MODEL_CARD, MODEL_WEIGHTS
    from trainables.config import TrainConfig
    from trainables.inference import CONFIG_FILE, LABELS_FILE, MODEL_FILE, model_from_state
    from trainables.tasks import get_task

    def read(name: str) -> bytes | None:
        return read_bytes(fs, f"{best.path}/{name}")

    cfg = TrainConfig.from_dict(best.config)
    weights = read(MODEL_WEIGHTS)
    if weights is None:
        raise UserError(f"checkpoint {best.path} has no {MODEL_WEIGHTS}: the storage copy is incomplete; "
                        "export another run or restore the folder")
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    # channels_last (GPU) tensors are strided; safetensors stores plain contiguous ones
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    model = model_from_state(cfg, state)  # proves predict can rebuild it before anything is written
    labels = outputs.output_names(cfg, read)

    save_file(state, str(out / MODEL_FILE), metadata={"run_id": chosen["run_id"], "epoch": str(best.epoch)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out / MODEL_FILE, 0o666 & ~umask)  # safetensors writes 0600; the folder is meant to be shared
    timm_load = write_timm_config(model, out, cfg.data.image_size, labels["outputs"])
    (out / CONFIG_FILE).write_text(json.dumps(cfg.to_flat_dict(), indent=1))
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=1))
    for name in outputs.export_files:  # e.g. the decision rules predict labels with
        data = read(name)
        if data is not None:
            (out / name).write_bytes(data)
        else:  # a previous export into the same folder must not lend its files to this model
            (out / name).unlink(missing_ok=True)
    decisions = list(outputs.decisions.rules(read)) if outputs.decisions else []
    decision = outputs.decisions.default(decisions) if outputs.decisions else ""
    run_id, metric = chosen["run_id"], chosen["metric"]
    card_values = {m: v for m in dict.fromkeys([metric] + outputs.card_metrics(decision))
                   if (v := tracking.metric_by_step(run_id, m).get(best.step)) is not None}
    (out / MODEL_CARD).write_text(model_card(
        cfg=cfg, title=get_task(cfg.task).title, card_lines=outputs.card_lines(decisions, decision), model=model,
        run=run, tracking_uri=tracking.uri, chosen=chosen,
        metrics=card_values, decision=decision, num_outputs=len(labels["outputs"]), timm_load=timm_load,
        logged_to=logged_to))
    return timm_load


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to {out} ({err.strerror or err}): pass --out a writable folder") from None


def filesystem(checkpoint: str, sweep_path: str) -> tuple[pafs.FileSystem, str]:
    """The checkpoint's filesystem and path in it. Ray records a remote checkpoint without its scheme
    (`bucket/runs/...`), so the sweep's storage URI says which filesystem it lives on."""
    if "://" in checkpoint:
        return storage_fs.resolve(checkpoint)
    if "://" in sweep_path:
        return storage_fs.resolve(sweep_path)[0], checkpoint
    return pafs.LocalFileSystem(), checkpoint


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        return storage_fs.read_all(fs, path)
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as err:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        raise UserError(f"cannot read {path} ({err}): check the storage's permissions and credentials") from None


def list_checkpoints(fs: pafs.FileSystem, train_run: str) -> list[Checkpoint]:
    """The Train run's checkpoint_* folders that have a meta.json, by epoch."""
    from trainables.artifacts import CHECKPOINT_META

    if fs.get_file_info(train_run).type != pafs.FileType.Directory:
        raise UserError(f"checkpoint folder {train_run} not found (was the sweep's storage deleted or moved?): "
                        "restore it, or export another run")
    found = []
    for info in fs.get_file_info(pafs.FileSelector(train_run)):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        meta = read_bytes(fs, f"{info.path}/{CHECKPOINT_META}")
        if meta is not None:  # a checkpoint Ray was still writing when the trial stopped has none
            record = json.loads(meta)
            found.append(Checkpoint(info.path, int(record["epoch"]), record["config"],
                                    int(record.get("step", record["epoch"]))))
    if not found:
        raise UserError(f"no checkpoints (checkpoint_*/meta.json) in {train_run}: the storage copy is incomplete; "
                        "export another run")
    return sorted(found, key=lambda c: c.step)


def training_data(cfg) -> str:
    """The card's line on what the model trained on. A sweep on the demo trains on the demo's prepared shards,
    so the shards' metadata.json (which records a demo set) says whether the data was synthetic; a root not
    readable from here (another machine's disk, a store that does not answer) is named as it is."""
    from trainables.data.shards import load_metadata
    from trainables.errors import UserError

    found: dict = {}
    if cfg.data.root:
        try:
            found = load_metadata(cfg.data.root)
        except (UserError, OSError, ValueError):  # unreadable from here: the card still names the root
            found = {}
    fmt = cfg.data.format or found.get("format", "")
    demo = found.get("demo") if cfg.data.root else {"num_images": cfg.data.demo_images}
    if demo:
        where = f", prepared at `{cfg.data.root}`" if cfg.data.root else "; data.root was empty"
        kind = f"{fmt}-format " if fmt else ""
        return (f"**synthetic demo data** ({demo.get('num_images', '?')} generated {kind}images{where}). "
                "The numbers below say nothing about real faces.")
    return f"`{cfg.data.root}`" + (f" (format {fmt})" if fmt else "")


def model_card(*, cfg, title: str, card_lines: list[str], model, run, tracking_uri: str, chosen: dict,
               metrics: dict[str, float], decision: str, num_outputs: int, timm_load=None,
               logged_to: str | None = None) -> str:
    """A short, honest MODEL_CARD.md: what it predicts, from what input, how good, where it came from, and
    whether timm loads it. `logged_to`: the run whose `model/` artifacts hold this folder."""
    from orchestrator.tracking import redact
    from trainables.artifacts import SWEEP_MODEL
    from trainables.models import input_normalization

    epoch = chosen["epoch"]
    out = SWEEP_MODEL if logged_to else chosen["out"]  # a sweep's copy is read after downloading it
    mean, std = input_normalization(model)
    size = cfg.data.image_size
    data = training_data(cfg)
    params = sum(p.numel() for p in model.parameters())
    attention = f" (attn_layer {cfg.model.attn_layer})" if cfg.model.attn_layer else ""
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items())
    lines = [
        f"# {cfg.model.name} for {cfg.task}",
        "",
        f"- **Task:** {title}.",
        f"- **Backbone:** timm `{cfg.model.name}`{attention}, {params / 1e6:.1f} M parameters, {num_outputs} outputs "
        "(names in labels.json).",
        f"- **Input:** an RGB image resized (bilinear) to {size}x{size} px, scaled to [0, 1] and normalised with "
        f"mean {tuple(round(m, 4) for m in mean)}, std {tuple(round(s, 4) for s in std)}. Faces should be aligned "
        "and cropped as in the training data.",
        f"- **Training data:** {data}",
        f"- **Checkpoint:** epoch {epoch} of {cfg.optim.epochs}, chosen by `{chosen['metric']}` ({chosen['mode']}) "
        f"among the kept epochs {chosen['epochs']}.",
    ]
    if cfg.optim.ema:
        lines.append(f"- **Weights:** an exponential moving average of the training weights (timm ModelEmaV3, "
                     f"decay optim.ema={cfg.optim.ema:g}); these are the weights that were evaluated.")
    lines += card_lines
    lines += [
        f"- **Source:** MLflow run `{run.info.run_id}` ({run.info.run_name}), tracking URI `{redact(tracking_uri)}`; "
        f"checkpoint `{redact(chosen['checkpoint'])}`.",
    ]
    if logged_to:
        lines.append(f"- **In MLflow:** the artifacts `{SWEEP_MODEL}/` of sweep run `{logged_to}`; download them with "
                     f"`mlflow artifacts download --run-id {logged_to} --artifact-path {SWEEP_MODEL} --dst-path .` "
                     f"(MLFLOW_TRACKING_URI={redact(tracking_uri)}), which writes the folder `{out}`.")
    lines += [
        "",
        f"## Metrics at epoch {epoch}",
        "",
        "| metric | value |",
        "|---|---|",
        rows or "| (none logged) | |",
        "",
        "## Predict",
        "",
        "```",
        f"python -m orchestrator predict --model {out} --images PATH --out DIR"
        + (" [--decision NAME]" if decision else "") + " [--explain OUTPUT_NAME]",
        "```",
        "",
        *timm_section(timm_load, out, model),
        "## Limitations",
        "",
        "- Scores are only as good as the match between your images and the training data (alignment, crop, "
        "resolution); validation and test splits came from the same source as training.",
        "- Labels such as perceived attributes, gender or race are annotators' judgements, not facts about a "
        "person. Do not use this model to make decisions about people.",
        "",
    ]
    return "\n".join(lines)


def timm_section(timm_load, out: str, model) -> list[str]:
    """The card's "Load with timm" section: the lines to type, or why timm cannot rebuild this model."""
    if timm_load is None:
        return []
    head = ["## Load with timm", ""]
    if not timm_load.ok:
        return head + [
            f"`timm.create_model(\"local-dir:{out}\")` does **not** work for this folder: timm cannot rebuild this "
            f"model from a config ({timm_load.reason}), so the folder has no config.json. Use `orchestrator predict`, "
            f"or `trainables.inference.load_exported(\"{out}\").model` in Python.", ""]
    registers = ([f"import {timm_load.needs_import}  # registers `{model.pretrained_cfg.get('architecture')}`, "
                  "which plain timm does not know"] if timm_load.needs_import else [])
    return head + [
        "config.json is timm's own (architecture, num_classes, label_names, and this preprocessing in "
        "pretrained_cfg), so timm loads the same weights and gives the same raw outputs as `predict`:", "",
        "```python", "import timm", *registers,
        f"model = timm.create_model(\"local-dir:{out}\", pretrained=True).eval()",
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
        "logits = model(transform(pil_image)[None])  # raw outputs, in the order of label_names",
        "```", ""]
