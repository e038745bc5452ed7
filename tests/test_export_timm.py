"""The export in timm's own format: plain timm loads it with the trial's weights and preprocessing, and
a finished sweep logs its best model into its parent run."""

from __future__ import annotations

import dataclasses

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from trainables.config import TrainConfig
from trainables.data.formats.celeba import ATTRIBUTE_NAMES
from trainables.data.demo.celeba import write_demo_celeba



from trial_fixtures import fake_trial, one_line_error


# ---- timm's own format, and the sweep's parent run -----------------------------------------------

PLAIN_TIMM = """
import sys
import timm, torch
from safetensors.torch import load_file, save_file
folder, inputs, out = sys.argv[1:]
model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
with torch.no_grad():
    logits = model(load_file(inputs)["x"])
save_file({"logits": logits.contiguous()}, out)
print(model.num_classes, model.pretrained_cfg["label_names"][0], "trainables" in sys.modules)
"""


def test_plain_timm_loads_the_export_with_predicts_weights_and_outputs(exported, tmp_path):
    """Another person's Python, with timm only: `timm.create_model("local-dir:…")` gives the model predict uses."""
    from safetensors.torch import load_file, save_file

    from trainables import inference

    out, _ = exported
    ours = inference.load_exported(out, device="cpu")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    script = tmp_path / "load.py"
    script.write_text(PLAIN_TIMM)
    result = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "x.safetensors"),
                             str(tmp_path / "y.safetensors")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(len(ATTRIBUTE_NAMES)), ATTRIBUTE_NAMES[0], "False"]
    with torch.no_grad():
        expected = ours.model(x)
    assert torch.allclose(load_file(str(tmp_path / "y.safetensors"))["logits"], expected, atol=1e-5)


def test_timm_loads_the_exported_weights_and_the_trials_preprocessing(exported, celeba_trial):
    """timm loads model.safetensors as saved, and config.json's pretrained_cfg gives timm's transform the
    trial's preprocessing: a squash resize to 32 px (CelebA's 178x218 is not centre-cropped) and the
    backbone's mean and std."""
    import timm

    from trainables import inference

    from safetensors.torch import load_file

    out, _ = exported
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    saved = load_file(str(out / "model.safetensors"))
    state = model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(v, saved[k]) for k, v in state.items())
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    ours = inference.load_exported(out, device="cpu")
    paths = inference.find_images(f"{celeba_trial['root']}/img_align_celeba")[:4]
    with Image.open(paths[0]) as image:
        assert image.size == (178, 218)
    theirs = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    mine = ours.pipe(inference.load_faces(ours, paths))
    # torch's and PIL's antialiased bilinear resizes differ by a grey level or two
    assert theirs.shape == mine.shape and (theirs - mine).abs().max() < 3 / 255 / min(ours.pipe.std)
    with torch.no_grad():
        assert torch.allclose(model(theirs).sigmoid(), ours.model(mine).sigmoid(), atol=0.05)


def _resnet_with_unrecorded_attention():
    """A timm name whose entrypoint adds CBAM without recording it (as a hand-registered variant may):
    timm writes a config for a plain ResNet, which cannot take these weights."""
    import timm
    from timm.models import register_model
    from timm.models.resnet import BasicBlock, _create_resnet

    name = "test_unrecorded_cbam_resnet18"
    if not timm.is_model(name):
        def build(pretrained=False, **kwargs):
            return _create_resnet("resnet18", pretrained, block=BasicBlock, layers=[2, 2, 2, 2],
                                  block_args={"attn_layer": "cbam"}, **kwargs)
        build.__name__ = name
        register_model(build)
    return name


@pytest.mark.parametrize("model", [{"model.name": "resnet18", "model.attn_layer": "cbam"}, "unrecorded"])
def test_attention_variants_export_for_predict_and_the_card_says_whether_timm_loads_them(
        tmp_path, mlflow_uri, model):
    """`attn_layer` is a recorded timm argument, so timm rebuilds CBAM by itself; a model whose config
    timm cannot write faithfully still exports for predict, without a config.json that would mislead."""
    import timm

    from orchestrator.export import export_run
    from orchestrator.predict import run_predict
    from trainables import inference

    if model == "unrecorded":
        model = {"model.name": _resnet_with_unrecorded_attention()}
    root = write_demo_celeba(tmp_path / "celeba", num_images=40, seed=6)
    trial = fake_trial(tmp_path, mlflow_uri, {"data.root": str(root), "data.image_size": 32, **model}, 1,
                       f"attention-{model['model.name']}")
    out = tmp_path / "model"
    summary = export_run(trial["child"], out, tracking_uri=trial["uri"])
    ours = inference.load_exported(out, device="cpu")
    assert any(".se." in k or "attn" in k for k in ours.model.state_dict())  # the attention is really there
    card = (out / "MODEL_CARD.md").read_text()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    if "model.attn_layer" in model:
        assert summary["timm"].ok and not summary["timm"].needs_import
        config = json.loads((out / "config.json").read_text())
        assert config["architecture"] == "resnet18" and config["model_args"]["block_args"] == {"attn_layer": "cbam"}
        loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        with torch.no_grad():
            assert torch.allclose(loaded(x), ours.model(x), atol=1e-5)
        assert f'timm.create_model("local-dir:{out}", pretrained=True)' in card
    else:
        assert not summary["timm"].ok and "Unexpected key" in summary["timm"].reason
        assert not (out / "config.json").exists()
        assert "does **not** work" in card and "load_exported" in card
    run_predict(out, f"{root}/img_align_celeba/000001.jpg", tmp_path / "pred")
    assert len(pd.read_csv(tmp_path / "pred" / "predictions.csv")) == 1


def test_write_timm_config_names_the_module_a_registered_architecture_needs(tmp_path):
    """A backbone registered by this package (not timm) loads after importing the module that registers it."""
    from safetensors.torch import save_file

    from orchestrator.timm_folder import write_timm_config
    from trainables.models import build_model

    cfg = TrainConfig.from_dict({"task": "attributes", "model.name": "mobilefacenet", "data.image_size": 112})
    model = build_model(cfg.model, 3).eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    result = write_timm_config(model, tmp_path, 112, ["a", "b", "c"])
    assert result.ok and result.needs_import == "trainables.models.mobilefacenet"
    assert json.loads((tmp_path / "config.json").read_text())["label_names"] == ["a", "b", "c"]


def test_predict_reads_a_folder_exported_before_timms_schema(exported, celeba_trial, tmp_path):
    from orchestrator.predict import run_predict

    old = tmp_path / "old"
    shutil.copytree(exported[0], old)
    (old / "trial_config.json").replace(old / "config.json")  # the earlier layout: our config as config.json
    result = run_predict(old, f"{celeba_trial['root']}/img_align_celeba/000001.jpg", tmp_path / "p")
    assert result["images"] == 1
    (old / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 40}))
    assert "trial_config.json" in one_line_error(run_predict, old, tmp_path, tmp_path / "p")


def test_log_best_model_puts_the_best_trial_into_the_sweep_runs_artifacts(celeba_trial, tmp_path, capsys):
    from orchestrator.export import log_best_model
    from orchestrator.predict import run_predict
    from orchestrator.tracking import Tracking
    from trainables.tasks import get_task

    tracking, client = Tracking(celeba_trial["uri"]), celeba_trial["client"]
    parent, child = celeba_trial["parent"], celeba_trial["child"]
    summary = {"trials": 1, "failed": 0, "best_run_id": child}
    line = log_best_model(tracking, parent, summary, get_task("attributes"), "val/mean_accuracy", "max")
    assert line and parent in line and "model/" in line and line in capsys.readouterr().out
    logged = {f.path for f in client.list_artifacts(parent, "model")}
    assert {"model/config.json", "model/model.safetensors", "model/trial_config.json", "model/labels.json",
            "model/thresholds.json", "model/MODEL_CARD.md"} <= logged
    assert child in client.get_run(parent).data.tags["model"]

    folder = tmp_path / "downloaded"
    folder.mkdir()
    model = Path(client.download_artifacts(parent, "model", str(folder)))
    card = (model / "MODEL_CARD.md").read_text()
    assert f"mlflow artifacts download --run-id {parent} --artifact-path model" in card
    assert 'timm.create_model("local-dir:model", pretrained=True)' in card and str(tmp_path) not in card
    result = run_predict(model, f"{celeba_trial['root']}/img_align_celeba/000001.jpg", tmp_path / "p")
    assert result["images"] == 1


def test_log_best_model_skips_what_has_no_model_and_never_raises(celeba_trial, capsys):
    from orchestrator.export import log_best_model
    from orchestrator.tracking import Tracking
    from trainables.tasks import get_task

    tracking, client = Tracking(celeba_trial["uri"]), celeba_trial["client"]
    parent = client.create_run(celeba_trial["experiment_id"]).info.run_id
    attributes, ok = get_task("attributes"), {"trials": 2, "failed": 0, "best_run_id": celeba_trial["child"]}
    no_outputs = dataclasses.replace(get_task("recognition"), outputs=None)  # a task whose models export nothing
    assert log_best_model(tracking, parent, ok, no_outputs, "val/accuracy", "max") is None
    assert log_best_model(tracking, parent, ok, attributes, "val/mean_accuracy", "max", completed=False) is None
    assert log_best_model(tracking, parent, {**ok, "failed": 2}, attributes, "val/mean_accuracy", "max") is None
    assert log_best_model(tracking, parent, {"trials": 0, "failed": 0}, attributes, "val/mean_accuracy", "max") is None
    assert not client.list_artifacts(parent) and not capsys.readouterr().out

    line = log_best_model(tracking, parent, {**ok, "best_run_id": "0123456789abcdef"}, attributes, "val/f1", "max")
    assert line.startswith("warning: ") and "\n" not in line and "no MLflow run" in line
    assert f"export --run {parent} --out DIR --metric val/f1 --mode max" in line
    assert not client.list_artifacts(parent)
