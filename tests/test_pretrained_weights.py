"""Pretrained weights, offline: timm's weights from a Hugging Face cache laid out as timm reads it
(written here from random tensors, see hf_cache.py), a local file, and a timm `local-dir:` folder.

Every test runs with the network cut (a socket that connects fails the test) and HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from ray import tune

from hf_cache import COMMIT, random_weights, write_hub_repo
from orchestrator.space import check_space
from trainables.config import TrainConfig
from trainables.config_sections import ModelConfig
from trainables.config_values import absolute
from trainables.errors import UserError
from trainables.models import build_model, load_backbone_weights
from trainables.models.weights import hub_cache_dir, locate, report_of, report_tags, source_of

REPOS = {"resnet18": "timm/resnet18.a1_in1k", "efficientnet_b0": "timm/efficientnet_b0.ra_in1k"}
CLASSIFIER = {"resnet18": ["fc.bias", "fc.weight"], "efficientnet_b0": ["classifier.bias", "classifier.weight"]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """$HF_HOME with resnet18's and efficientnet_b0's default-tag repos in its hub cache."""
    home = tmp_path_factory.mktemp("hf-home")
    tensors = {name: write_hub_repo(home / "hub", repo, random_weights(name, seed=i))
               for i, (name, repo) in enumerate(REPOS.items())}
    return home, tensors


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network; HF_HUB_* as a user of an offline machine sets them."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)


def assert_loaded(model: torch.nn.Module, expected: dict[str, torch.Tensor], skip: list[str]) -> None:
    own = model.state_dict()
    compared = [k for k in own if k not in skip]
    assert compared and all(torch.equal(own[k], expected[k]) for k in compared)


@pytest.mark.parametrize("name", list(REPOS))
def test_pretrained_true_loads_exactly_the_cached_tensors(name, hub, monkeypatch):
    home, tensors = hub
    monkeypatch.setenv("HF_HOME", str(home))
    model = build_model(ModelConfig(name=name, pretrained=True), num_outputs=3)
    report = report_of(model)
    assert report["source"] == f"timm:{REPOS[name].split('/')[1]}"
    assert report["file"] == str(home / "hub" / f"models--{REPOS[name].replace('/', '--')}" / "snapshots" / COMMIT
                                 / "model.safetensors")
    # The classifier is replaced for our 3 outputs (and the file's 1000-class one unused); nothing else.
    assert sorted(report["not_loaded"]) == sorted(report["unused"]) == CLASSIFIER[name]
    assert report["loaded"] == len(model.state_dict()) - 2
    assert_loaded(model, tensors[name], skip=CLASSIFIER[name])
    assert model.get_classifier().out_features == 3


def test_timm_itself_reads_that_cache_and_gets_the_same_tensors(hub, monkeypatch):
    """The layout is the one timm reads: timm.create_model(pretrained=True), offline, loads what we load."""
    import huggingface_hub.constants as hf
    import timm

    home, _ = hub
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))  # HF_HUB_CACHE alone points at the hub cache
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(home / "hub"))  # huggingface_hub read the env at import
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    theirs = timm.create_model("resnet18", pretrained=True, num_classes=3).state_dict()
    ours = build_model(ModelConfig(name="resnet18", pretrained=True), num_outputs=3).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("fc."))


def test_a_grid_backbone_missing_from_the_cache_fails_before_any_trial(hub, tmp_path, monkeypatch):
    home, _ = hub
    monkeypatch.setenv("HF_HOME", str(home))
    space = {"task": "attributes", "model.name": tune.grid_search(["resnet18", "efficientnet_b0", "resnet34"]), "model.pretrained": True}
    with pytest.raises(UserError) as err:
        check_space(space)
    message = str(err.value)
    assert "\n" not in message and "resnet34" in message and "HF_HOME" in message and "model.weights" in message
    assert str(home / "hub" / "models--timm--resnet34.a1_in1k") in message
    check_space({**space, "model.name": tune.grid_search(["resnet18", "efficientnet_b0"])})  # both are there
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: the first backbone is named
    with pytest.raises(UserError, match=rf"resnet18 .*{tmp_path / 'hub' / 'models--timm--resnet18.a1_in1k'}"):
        check_space(space)


def test_a_model_without_pretrained_weights_is_named_in_one_line():
    for space in ({"task": "recognition", "model.name": "mobilefacenet", "data.image_size": 112},
                  {"task": "attributes", "model.name": tune.grid_search(["seresnet18"])}):
        with pytest.raises(UserError) as err:
            check_space({**space, "model.pretrained": True})
        name = "mobilefacenet" if space["task"] == "recognition" else "seresnet18"
        assert str(err.value).startswith(f"{name} has no pretrained weights in timm") and "\n" not in str(err.value)
    from trainables.tasks.recognition import build_embedding_model

    cfg = TrainConfig.from_dict({"task": "recognition", "model.name": "mobilefacenet", "model.pretrained": True,
                                 "data.image_size": 112})
    with pytest.raises(UserError, match="^mobilefacenet has no pretrained weights"):
        build_embedding_model(cfg)


def test_cbam_resnet_starts_from_the_resnet_weights_with_fresh_attention(hub, monkeypatch):
    home, tensors = hub
    monkeypatch.setenv("HF_HOME", str(home))
    model = build_model(ModelConfig(name="cbam_resnet18", pretrained=True), num_outputs=2)
    report = report_of(model)
    assert report["source"] == "timm:resnet18.a1_in1k"
    attention = [k for k in report["not_loaded"] if not k.startswith("fc.")]
    assert attention and all(".se." in k for k in attention)  # timm names a block's attention `se`
    assert_loaded(model, tensors["resnet18"], skip=report["not_loaded"])


def test_the_recognition_backbone_loads_and_its_new_head_is_its_own(hub, monkeypatch):
    from trainables.tasks.recognition import build_embedding_model

    home, tensors = hub
    monkeypatch.setenv("HF_HOME", str(home))
    cfg = TrainConfig.from_dict({"task": "recognition", "model.name": "resnet18", "model.pretrained": True,
                                 "data.image_size": 64})
    model = build_embedding_model(cfg)
    report = report_of(model)
    assert report["not_loaded"] == [] and report["unused"] == ["fc.bias", "fc.weight"]
    assert_loaded(model.backbone, tensors["resnet18"], skip=[])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_local_file_loads(suffix, tmp_path):
    from safetensors.torch import save_file

    tensors = random_weights("resnet18", seed=7, num_classes=5).state_dict()
    file = tmp_path / f"weights{suffix}"
    if suffix == ".pth":  # a training checkpoint: timm's reader takes its state_dict entry
        torch.save({"epoch": 3, "state_dict": tensors}, file)
    else:
        save_file(tensors, str(file))
    cfg = ModelConfig(name="resnet18", weights=str(file))
    assert source_of(cfg) == f"file:{file}" and locate(cfg).file == file
    model = build_model(cfg, num_outputs=5)  # same outputs: the file's classifier loads too
    assert report_of(model)["not_loaded"] == [] and report_of(model)["unused"] == []
    assert_loaded(model, tensors, skip=[])


def test_a_local_dir_folder_in_timms_layout_loads(tmp_path, monkeypatch):
    import timm
    from timm.models import save_for_hf

    source = random_weights("resnet18", seed=3, num_classes=4)
    save_for_hf(source, tmp_path / "exported", safe_serialization=True)
    assert timm.create_model(f"local-dir:{tmp_path / 'exported'}", pretrained=True).num_classes == 4  # timm reads it
    monkeypatch.chdir(tmp_path)
    weights = absolute("local-dir:exported")  # the driver makes the folder absolute, keeping the scheme
    assert weights == f"local-dir:{tmp_path / 'exported'}"
    cfg = ModelConfig(name="resnet18", weights=weights)
    check_space({"task": "attributes", "model.weights": weights})
    model = build_model(cfg, num_outputs=2)
    report = report_of(model)
    assert report["source"] == weights and sorted(report["not_loaded"]) == report["unused"] == ["fc.bias", "fc.weight"]
    assert_loaded(model, source.state_dict(), skip=["fc.bias", "fc.weight"])
    with pytest.raises(UserError, match="holds weights of resnet18.*model.name=efficientnet_b0"):
        locate(ModelConfig(name="efficientnet_b0", weights=weights))
    (tmp_path / "exported" / "config.json").unlink()
    with pytest.raises(UserError, match="has no config.json"):
        check_space({"task": "attributes", "model.weights": weights})


def test_a_file_missing_a_backbone_tensor_is_an_error_not_a_skip(tmp_path):
    from safetensors.torch import save_file

    tensors = random_weights("resnet18", seed=1).state_dict()
    del tensors["layer2.0.conv1.weight"]
    save_file(tensors, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UserError, match=r"1 backbone tensors are missing.*layer2\.0\.conv1\.weight") as err:
        build_model(ModelConfig(name="resnet18", weights=str(tmp_path / "partial.safetensors")), num_outputs=3)
    assert "\n" not in str(err.value)
    tensors = random_weights("resnet18", seed=1).state_dict()
    tensors["layer1.0.bn1.weight"] = torch.ones(3)
    save_file(tensors, str(tmp_path / "wrong.safetensors"))
    model = timm_resnet18()
    with pytest.raises(UserError, match=r"layer1\.0\.bn1\.weight \(3,\) vs \(64,\)"):
        load_backbone_weights(model, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(UserError, match="model.weights file not found"):
        check_space({"task": "attributes", "model.weights": str(tmp_path / "nowhere.safetensors")})


def test_the_report_becomes_tags_and_the_source_a_param(hub, monkeypatch):
    from orchestrator.sweep import trial_params

    home, _ = hub
    monkeypatch.setenv("HF_HOME", str(home))
    model = build_model(ModelConfig(name="resnet18", pretrained=True), num_outputs=3)
    tags = report_tags(json.loads(json.dumps(report_of(model))))  # as the worker writes and the driver reads it
    assert tags["weights.source"] == "timm:resnet18.a1_in1k" and tags["weights.not_loaded"] == "fc.weight, fc.bias"
    assert tags["weights.unused"] == "fc.bias, fc.weight" and int(tags["weights.loaded"]) > 100
    assert report_tags(report_of(timm_resnet18())) == {"weights.source": "scratch"}
    long = report_tags({"source": "x", "not_loaded": [f"t{i}" for i in range(1000)]}, limit=50)["weights.not_loaded"]
    assert len(long) < 80 and long.endswith("more") and f"and {1000 - long.count(', ') - 1} more" in long
    assert trial_params({"task": "attributes", "model.name": "resnet18", "model.pretrained": True})["weights.source"] == "timm:resnet18.a1_in1k"
    assert trial_params({"task": "attributes", "model.name": "resnet18"})["weights.source"] == "scratch"
    assert hub_cache_dir() == home / "hub"


def test_log_trial_files_tags_the_child_run_from_the_checkpoint(tmp_path):
    from orchestrator.report import log_trial_files
    from trainables.artifacts import WEIGHTS_REPORT

    class Tracking:
        def __init__(self):
            self.tags, self.files = {}, []

        def log(self, run_id, tags=None, **kwargs):
            self.tags.update(tags or {})

        def log_files(self, run_id, folder, names):
            self.files += [n for n in names if (folder / n).exists()]

    class Task:
        trial_files, render = (), None

    report = {"source": "file:/w.safetensors", "file": "/w.safetensors", "loaded": 60,
              "not_loaded": ["fc.weight", "fc.bias"], "unused": []}
    (tmp_path / WEIGHTS_REPORT).write_text(json.dumps(report))
    tracking = Tracking()
    log_trial_files(tracking, Task(), "run", {}, str(tmp_path))
    assert tracking.tags["weights.source"] == "file:/w.safetensors"
    assert tracking.tags["weights.not_loaded"] == "fc.weight, fc.bias" and tracking.tags["weights.unused"] == "none"
    assert tracking.files == [WEIGHTS_REPORT]


def timm_resnet18() -> torch.nn.Module:
    import timm

    return timm.create_model("resnet18", num_classes=3)
