"""export and predict end to end, without Ray: a tiny trial (tests/trial_fixtures.py) is exported and
predicted on again, with the trial's own labels, Grad-CAM and one-line errors."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.entities import Metric
from PIL import Image

from trainables.config import TrainConfig
from trainables.data.formats.celeba import ATTRIBUTE_NAMES, read_celeba

from orchestrator.tracking import SWEEP_KEY


from trial_fixtures import best_epoch, fake_trial, one_line_error


def test_export_picks_the_best_epoch_and_writes_a_safe_model_folder(celeba_trial, exported):
    from safetensors.torch import load_file

    out, summary = exported
    expected = best_epoch(celeba_trial["history"], "val/mean_accuracy")
    assert summary["epoch"] == expected and summary["epochs"] == [1, 2]
    chosen = celeba_trial["folders"][expected - 1]
    saved = load_file(str(out / "model.safetensors"))
    original = torch.load(chosen / "model.pt", weights_only=True)
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)
    cfg = TrainConfig.from_dict(json.loads((out / "trial_config.json").read_text()))
    assert cfg.model.name == "resnet18" and cfg.data.image_size == 32
    timm_config = json.loads((out / "config.json").read_text())  # timm's schema, not ours
    assert timm_config["architecture"] == "resnet18" and timm_config["num_classes"] == len(ATTRIBUTE_NAMES)
    assert timm_config["label_names"] == list(ATTRIBUTE_NAMES)
    assert timm_config["pretrained_cfg"]["input_size"] == [3, 32, 32] and summary["timm"].ok
    assert timm_config["pretrained_cfg"]["license"] is None  # not timm's ImageNet weights' licence
    assert json.loads((out / "labels.json").read_text())["outputs"] == list(ATTRIBUTE_NAMES)
    assert json.loads((out / "thresholds.json").read_text()) == json.loads((chosen / "thresholds.json").read_text())
    card = (out / "MODEL_CARD.md").read_text()
    assert celeba_trial["child"] in card and f"epoch {expected}" in card and "f1_opt" in card and "32x32" in card


def test_model_card_says_when_the_data_was_synthetic():
    from types import SimpleNamespace

    from orchestrator.export import model_card
    from trainables.inference import model_from_state
    from trainables.models import build_model

    cfg = TrainConfig.from_dict({"task": "attributes", "model.name": "resnet18", "data.image_size": 48})
    model = model_from_state(cfg, build_model(cfg.model, 40).state_dict())
    run = SimpleNamespace(info=SimpleNamespace(run_id="abc", run_name="calm-cat"))
    chosen = {"epoch": 2, "out": "model", "metric": "val/mean_accuracy", "mode": "max", "epochs": [2, 3],
              "checkpoint": "s3://user:secret@bucket/runs/train-1/checkpoint_x"}
    from trainables.tasks import get_task

    lines = get_task("attributes").outputs.card_lines(["fixed", "f1_opt"], "f1_opt")
    card = model_card(cfg=cfg, title="CelebA attributes", card_lines=lines, model=model, run=run,
                      tracking_uri="sqlite:///m.db", chosen=chosen, metrics={"val/mean_accuracy": 0.9},
                      decision="f1_opt", num_outputs=40)
    assert "synthetic demo data" in card and "48x48" in card and "| val/mean_accuracy | 0.9000 |" in card
    assert "secret" not in card and "maximised F1" in card


def test_the_card_of_a_model_trained_on_the_demos_prepared_shards_says_they_were_synthetic(tmp_path):
    """A sweep on the demo hands its trials the demo's prepared shards, never an empty data.root: the card
    said only "`/root/.cache/.../celeba-celeba_demo-...` (format )"."""
    from orchestrator.export import training_data

    def shards(name: str, **more) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metadata.json").write_text(json.dumps({"format": "celeba", "splits": {}, **more}))
        return str(tmp_path / name)

    def line(root: str, fmt: str = "") -> str:
        return training_data(TrainConfig.from_dict({"task": "attributes", "data.root": root, "data.format": fmt}))

    demo = line(shards("demo", demo={"num_images": 4000, "seed": 0, "version": "v1"}))
    assert demo.startswith("**synthetic demo data** (4000 generated celeba-format images, prepared at")
    assert "say nothing about real faces" in demo
    real = line(shards("real", demo=None))
    assert real == f"`{tmp_path / 'real'}` (format celeba)" and "synthetic" not in real
    assert line(str(tmp_path / "elsewhere")) == f"`{tmp_path / 'elsewhere'}`"  # not readable here: named as it is
    assert line(str(tmp_path / "elsewhere"), "celeba") == f"`{tmp_path / 'elsewhere'}` (format celeba)"


def test_export_follows_metric_and_mode_and_resolves_a_sweep_run(celeba_trial, tmp_path):
    from orchestrator.export import export_run

    client, child = celeba_trial["client"], celeba_trial["child"]
    # An earlier epoch that is best proves the choice is not simply the last checkpoint.
    client.log_batch(child, metrics=[Metric("val/custom", 0.9, 0, 1), Metric("val/custom", 0.1, 0, 2)])
    assert export_run(child, tmp_path / "a", celeba_trial["uri"], metric="val/custom")["epoch"] == 1
    expected = best_epoch(celeba_trial["history"], "val/loss", "min")
    assert export_run(child, tmp_path / "b", celeba_trial["uri"], metric="val/loss")["epoch"] == expected
    assert export_run(celeba_trial["parent"], tmp_path / "c", celeba_trial["uri"])["run_id"] == child


def test_export_reads_checkpoints_through_a_pyarrow_uri(celeba_trial, tmp_path):
    """Ray records a remote checkpoint without its scheme; the sweep's storage URI names the filesystem."""
    from orchestrator.export import export_run

    client, folder = celeba_trial["client"], celeba_trial["folders"][-1]
    run = client.create_run(celeba_trial["experiment_id"], tags={
        SWEEP_KEY: f"file://{folder.parents[2]}", "checkpoint": str(folder)}).info.run_id
    client.log_batch(run, metrics=[Metric("val/mean_accuracy", 0.5, 0, 1), Metric("val/mean_accuracy", 0.4, 0, 2)])
    assert export_run(run, tmp_path / "m", celeba_trial["uri"])["epoch"] == 1


def test_predict_gives_the_trials_own_test_labels(celeba_trial, exported, tmp_path):
    from orchestrator.predict import run_predict

    out, summary = exported
    root = celeba_trial["root"]
    result = run_predict(out, f"{root}/img_align_celeba", tmp_path / "pred")
    assert result["decision"] == "f1_opt" and not result["skipped"]
    table = pd.read_csv(tmp_path / "pred" / "predictions.csv").set_index("file")
    index = read_celeba(root)
    test_files = [index.files[i] for i in index.indices("test")]
    trial = pd.read_parquet(celeba_trial["folders"][summary["epoch"] - 1] / "predictions" / "test.parquet")
    thresholds = json.loads((out / "thresholds.json").read_text())["f1_opt"]
    for name in ATTRIBUTE_NAMES:
        ours = table.loc[test_files, f"score/{name}"].to_numpy()
        theirs = trial[f"score/{name}"].to_numpy().astype(np.float64)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        labels = (theirs >= thresholds[name]).astype(int)
        clear = np.abs(theirs - thresholds[name]) > 1e-5  # a score within float noise of its threshold may flip
        assert (table.loc[test_files, f"label/{name}"].to_numpy()[clear] == labels[clear]).all(), name
    with Image.open(tmp_path / "pred" / "grid.png") as grid:
        assert grid.size[0] > 128 and grid.size[1] > 128


def test_explain_writes_grad_cam_overlays(exported, tmp_path, celeba_trial):
    from orchestrator.predict import run_predict

    out, _ = exported
    images = f"{celeba_trial['root']}/img_align_celeba"
    result = run_predict(out, images, tmp_path / "pred", explain="Smiling", limit=3)
    folder = tmp_path / "pred" / "explain" / "Smiling"
    assert result["explain_dir"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["000001.png", "000002.png", "000003.png", "grid.png"]
    for png in folder.iterdir():
        with Image.open(png) as image:
            image.verify()


def test_a_photo_named_grid_keeps_its_overlay_beside_the_grid(exported, tmp_path, celeba_trial):
    """The overlays are named by their photos, beside grid.png: a photo named grid.jpg must not lose its own."""
    from orchestrator.pictures import TILE
    from orchestrator.predict import run_predict

    out, _ = exported
    photos = tmp_path / "photos"
    photos.mkdir()
    source = sorted(Path(f"{celeba_trial['root']}/img_align_celeba").iterdir())[:2]
    shutil.copy(source[0], photos / "grid.jpg")
    shutil.copy(source[1], photos / "friend.jpg")
    result = run_predict(out, str(photos), tmp_path / "pred", explain="Smiling", limit=2)
    folder = Path(result["explain_dir"])
    assert sorted(p.name for p in folder.iterdir()) == ["friend.png", "grid.png", "grid_jpg.png"]
    with Image.open(folder / "grid_jpg.png") as overlay, Image.open(folder / "grid.png") as grid:
        assert overlay.size == (TILE, TILE)  # the photo's overlay, not the grid of both
        assert grid.size[0] > TILE


def test_grad_cam_equals_cam_for_a_pooled_linear_head(exported, celeba_trial):
    """With global average pooling and a linear head, Grad-CAM's weights are the head's weights / HW,
    so the map is Zhou et al.'s CAM (Selvaraju et al., section 3.1)."""
    import torch.nn.functional as F

    from trainables import inference

    model = inference.load_exported(exported[0], device="cpu")
    paths = inference.find_images(f"{celeba_trial['root']}/img_align_celeba")[:4]
    faces = inference.load_faces(model, paths, size=128)  # fully convolutional: a 4x4 map at 128 px
    column = list(ATTRIBUTE_NAMES).index("Smiling")
    cams, grid = inference.grad_cam(model, faces, column)
    with torch.no_grad():
        features = model.model.forward_features(model.pipe(faces))
        cam = F.relu(torch.einsum("bchw,c->bhw", features, model.model.fc.weight[column]))[:, None]
        low, high = cam.amin(dim=(2, 3), keepdim=True), cam.amax(dim=(2, 3), keepdim=True)
        cam = (cam - low) / (high - low)
        expected = F.interpolate(cam, size=(128, 128), mode="bilinear", align_corners=False)[:, 0].numpy()
    assert grid == features.shape[-2:] == (4, 4) and cams.shape == (4, 128, 128)
    np.testing.assert_allclose(cams, expected, atol=1e-4)
    assert cams.min() >= 0 and cams.max() <= 1 and (cams.reshape(4, -1).max(axis=1) > 0.9).all()



def test_export_errors_are_one_line(celeba_trial, tmp_path):
    from orchestrator.export import export_run

    uri, client = celeba_trial["uri"], celeba_trial["client"]
    assert "no MLflow run" in one_line_error(export_run, "0123456789abcdef", tmp_path / "a", uri)
    untagged = client.create_run(celeba_trial["experiment_id"]).info.run_id
    assert "checkpoint" in one_line_error(export_run, untagged, tmp_path / "b", uri)
    gone = client.create_run(celeba_trial["experiment_id"], tags={"checkpoint": str(tmp_path / "gone/checkpoint_1")})
    assert "not found" in one_line_error(export_run, gone.info.run_id, tmp_path / "c", uri)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot write" in one_line_error(export_run, celeba_trial["child"], blocker / "out", uri)
    assert "--metric" in one_line_error(export_run, celeba_trial["child"], tmp_path / "d", uri, metric="val/nope")


def test_predict_errors_are_one_line_and_corrupt_images_are_skipped(exported, celeba_trial, tmp_path, capsys):
    from orchestrator.predict import run_predict

    out, _ = exported
    assert "not an exported model" in one_line_error(run_predict, tmp_path / "nothing", tmp_path, tmp_path / "o")
    (tmp_path / "empty").mkdir()
    assert "no images" in one_line_error(run_predict, out, tmp_path / "empty", tmp_path / "o")
    images = f"{celeba_trial['root']}/img_align_celeba"
    assert "Smiling" in one_line_error(run_predict, out, images, tmp_path / "o", explain="smilling")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(f"{images}/000001.jpg", mixed / "a.jpg")
    (mixed / "b.jpg").write_bytes(b"not a jpeg")
    result = run_predict(out, mixed, tmp_path / "o")
    assert result["images"] == 1 and [p.name for p in result["skipped"]] == ["b.jpg"]
    assert "warning: skipped" in capsys.readouterr().err
    assert list(pd.read_csv(tmp_path / "o" / "predictions.csv")["file"]) == ["a.jpg"]
    (mixed / "a.jpg").write_bytes(b"also broken")
    assert "could be decoded" in one_line_error(run_predict, out, mixed, tmp_path / "o")

    recognition = tmp_path / "recognition"
    shutil.copytree(out, recognition)
    config = json.loads((recognition / "trial_config.json").read_text())
    recognition_config = {k: v for k, v in config.items() if not k.startswith(("loss.", "eval."))}
    (recognition / "trial_config.json").write_text(json.dumps({**recognition_config, "task": "recognition"}))
    # attribute weights under a recognition config: the embedding network they do not fit is named, in one line
    assert "do not fit embedding network resnet18" in one_line_error(run_predict, recognition, images, tmp_path / "o")


def test_inference_needs_neither_tune_nor_mlflow():
    code = ("import sys, trainables.inference; "
            "print([m for m in ('ray.tune', 'mlflow', 'orchestrator') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_cli_parsers_run_both_commands(celeba_trial, tmp_path):
    from orchestrator.commands.export import add_export_parser, cmd_export
    from orchestrator.commands.predict import add_predict_parser, cmd_predict

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    add_export_parser(commands)
    add_predict_parser(commands)
    model = tmp_path / "model"
    args = parser.parse_args(["export", "--run", celeba_trial["child"], "--out", str(model),
                              "--tracking-uri", celeba_trial["uri"]])
    assert cmd_export(args) == 0
    args = parser.parse_args(["predict", "--model", str(model), "--images",
                              f"{celeba_trial['root']}/img_align_celeba/000001.jpg", "--out", str(tmp_path / "p"),
                              "--decision", "fixed", "--limit", "1"])
    assert cmd_predict(args) == 0
    table = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert list(table["file"]) == ["000001.jpg"] and table.shape[1] == 1 + 2 * len(ATTRIBUTE_NAMES)


def test_an_unknown_decision_is_one_line_naming_the_valid_ones(exported, celeba_trial, tmp_path, capsys):
    """`predict --decision NAME` is checked by the model's task against the rules its export holds."""
    from orchestrator.__main__ import main
    from orchestrator.predict import run_predict

    out, _ = exported
    valid = list(json.loads((out / "thresholds.json").read_text()))
    code = main(["predict", "--model", str(out), "--images", f"{celeba_trial['root']}/img_align_celeba/000001.jpg",
                 "--out", str(tmp_path / "p"), "--decision", "bogus"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "unknown decision 'bogus'" in err and f"has {', '.join(valid)};" in err and "--decision" in err, err
    assert set(valid) == {"fixed", "prior", "f1_opt", "acc_opt"}
    assert not (tmp_path / "p").exists()  # refused before anything is written

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "thresholds.json").write_text("[0.5]")
    assert "cannot read thresholds.json" in one_line_error(run_predict, broken, tmp_path / "nothing", tmp_path / "p")


def test_predict_says_how_many_images_it_labelled_in_words_that_fit_the_count(exported, celeba_trial, tmp_path, capsys):
    from orchestrator.__main__ import main

    out, _ = exported
    code = main(["predict", "--model", str(out), "--images", f"{celeba_trial['root']}/img_align_celeba/000001.jpg",
                 "--out", str(tmp_path / "p")])
    assert code == 0 and capsys.readouterr().out.strip().splitlines()[-1].startswith("1 image -> ")


@pytest.mark.parametrize("formulation, age_mode", [("multihead", "regression"), ("onehot18", "bins")])
def test_fairface_export_and_predict_match_the_trial(tmp_path, mlflow_uri, formulation, age_mode):
    pytest.importorskip("trainables.tasks.fairface")
    from orchestrator.export import export_run
    from orchestrator.predict import run_predict
    from trainables.data.demo.fairface import write_demo_fairface

    root = write_demo_fairface(tmp_path / "fairface", num_images=60, seed=5)
    trial = fake_trial(tmp_path, mlflow_uri, {"task": "fairface", "data.root": str(root),
                                  "data.image_size": 32, "model.name": "resnet18",
                                  "multitask.formulation": formulation, "age.mode": age_mode}, 1,
                       f"fairface-{formulation}")
    summary = export_run(trial["child"], tmp_path / "model", tracking_uri=trial["uri"])
    assert summary["metric"] == "val/mean_task_accuracy" and summary["epoch"] == 1
    labels = json.loads((tmp_path / "model" / "labels.json").read_text())
    assert set(labels["heads"]) == {"race", "gender", "age"} and len(labels["outputs"]) in (10, 18)
    assert not (tmp_path / "model" / "thresholds.json").exists()
    assert summary["timm"].ok  # timm's config.json names the heads' outputs in order
    assert json.loads((tmp_path / "model" / "config.json").read_text())["label_names"] == labels["outputs"]

    assert "makes no named decisions" in one_line_error(run_predict, tmp_path / "model", root / "val",
                                                         tmp_path / "pred", decision="f1_opt")
    run_predict(tmp_path / "model", root / "val", tmp_path / "pred")
    ours = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    ours.index = "val/" + ours["file"]
    theirs = pd.read_parquet(trial["folders"][0] / "predictions" / "val.parquet").set_index("file")
    ours = ours.loc[theirs.index]
    for column in ("race", "gender", "age_bin"):
        assert list(ours[column]) == list(theirs[f"pred_{column}"]), column
    np.testing.assert_allclose(ours["age_years"], theirs["pred_age_years"], atol=1e-3)
    with Image.open(tmp_path / "pred" / "grid.png") as grid:
        grid.verify()
