"""Sweep param spaces: overrides by dotted key, and names checked before any trial runs."""

import pytest
from ray import tune

import search_spaces
from orchestrator.space import apply_overrides, check_space, count_trials, describe, max_epochs, varying_keys
from trainables.errors import UserError


def test_every_registered_sweep_builds_and_checks_in_every_mode():
    for name in search_spaces.names():
        for real in (False, True):
            for smoke in (False, True):
                sweep = search_spaces.get(name)(real_data=real, smoke=smoke)
                assert sweep.name == name and sweep.question
                if sweep.runner == "train":
                    check_space(sweep.param_space)


def test_celeba_backbones_covers_the_seed_families():
    demo = search_spaces.get("celeba_backbones")(real_data=False, smoke=False).param_space["model.name"]
    names = " ".join(demo["grid_search"])
    for family in ("seresnet", "skresnet", "gcresne", "densenet", "efficientnet", "resnet18"):
        assert family in names
    real = search_spaces.get("celeba_backbones")(real_data=True, smoke=False).param_space["model.name"]
    assert {"resnet101", "resnet152", "seresnet101", "densenet121", "cbam_resnet101"} <= set(real["grid_search"])


def test_overrides_replace_values_and_comma_lists_become_grids():
    space = {"model.name": tune.grid_search(["a", "b"]), "optim.lr": 0.1}
    out = apply_overrides(space, ["optim.lr=0.5", "model.name=resnet18,seresnet18", "data.augment=hflip,cutout"])
    assert out["optim.lr"] == 0.5 and out["model.name"] == {"grid_search": ["resnet18", "seresnet18"]}
    assert out["data.augment"] == ["hflip", "cutout"]  # a list key keeps its commas
    assert space["optim.lr"] == 0.1  # the sweep's own space is untouched
    assert varying_keys(out) == ["model.name"] and count_trials(out, 2) == 4
    assert describe({"model.name": "resnet18", "optim.lr": 0.001}, ["model.name", "optim.lr"]) == "resnet18 lr=0.001"
    assert max_epochs({"optim.epochs": tune.grid_search([2, 5])}) == 5


@pytest.mark.parametrize("override,fragment", [
    ("model.name=resnet1999", "unknown backbone 'resnet1999'"),
    ("loss.name=hinge", "unknown loss 'hinge'"),
    ("optim.name=adamz", "unknown optimizer 'adamz'"),
    ("data.augment=hflip,mixupp", "unknown augmentation 'mixupp'"),
    ("optim.lr=fast", "expects float"),
    ("model.nam=resnet18", "did you mean model.name"),
    ("optim.lr", "expects key=value"),
    ("optim.epochs=0", "at least 1"),
])
def test_bad_overrides_are_caught_before_any_trial(override, fragment):
    space = search_spaces.get("celeba_backbones")(real_data=False, smoke=True).param_space
    with pytest.raises(UserError, match=fragment):
        check_space(apply_overrides(space, [override]))


def test_overrides_of_a_section_the_task_ignores_are_refused():
    import search_spaces

    sweep = search_spaces.get("face_recognition_losses")(real_data=False, smoke=True)
    with pytest.raises(UserError, match="does not read"):
        apply_overrides(sweep.param_space, ["loss.gamma=3"])


def test_relative_paths_become_absolute_in_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = apply_overrides({"task": "recognition", "data.root": "shards"},
                            ["eval.targets=lfw,cfp_fp.bin", "model.weights=w.safetensors"])
    assert space["data.root"] == str(tmp_path / "shards")
    assert space["eval.targets"] == [str(tmp_path / "lfw"), str(tmp_path / "cfp_fp.bin")]
    assert space["model.weights"] == str(tmp_path / "w.safetensors")
    uri = apply_overrides({"data.root": "file:///data/shards"}, ["model.name=resnet18,seresnet18"])
    assert uri["data.root"] == "file:///data/shards"  # a URI is left as it is


def test_a_batch_larger_than_a_workers_share_is_refused_with_the_largest_that_fits():
    from types import SimpleNamespace

    from orchestrator.preflight import Preflight

    pre = Preflight(SimpleNamespace())
    pre.space = {"optim.batch_size": tune.grid_search([16, 48])}
    pre.check_batch(train_rows=100, workers=2)  # 50 rows each: both fit
    pre.space = {"optim.batch_size": tune.grid_search([16, 64])}
    with pytest.raises(UserError, match="largest batch that fits is 50"):
        pre.check_batch(train_rows=100, workers=2)
