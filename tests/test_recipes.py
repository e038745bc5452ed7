"""The seeds' training recipes (issue 22), each trained in-process on tiny models: timm's weight decay
groups, frozen backbones, gradient accumulation, an EMA of the weights and patience."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from trainables.config import TrainConfig
from trainables.config_sections import OptimConfig
from trainables.errors import UserError
from trainables.loop import InputPipe, TrainModule, train_one_epoch
from trainables.models.freeze import freeze
from trainables.optim import build_optimizer


def _tiny_vit(num_classes: int = 3) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, num_heads=1,
                             embed_dim=16, num_classes=num_classes)


def _decay_of(optimizer) -> dict[int, float]:
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_a_vits_position_embedding_norms_and_biases_are_not_decayed():
    model = _tiny_vit()
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, _ = build_optimizer(OptimConfig(weight_decay=0.05), module, 4)
    decay = _decay_of(optimizer)
    named = dict(model.named_parameters())
    assert decay[id(named["pos_embed"])] == 0.0 and decay[id(named["cls_token"])] == 0.0
    assert decay[id(named["norm.weight"])] == 0.0 and decay[id(named["head.bias"])] == 0.0
    assert decay[id(named["head.weight"])] == 0.05 and decay[id(named["patch_embed.proj.weight"])] == 0.05
    assert len(decay) == len(named)  # every parameter in exactly one group

    # And the optimizer acts on it: with no gradient, AdamW's decoupled decay alone moves a decayed tensor.
    before = {n: p.detach().clone() for n, p in named.items()}
    for p in named.values():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.equal(named["pos_embed"], before["pos_embed"])
    assert not torch.equal(named["head.weight"], before["head.weight"])


def test_extra_groups_keep_their_own_settings():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    centers = nn.Parameter(torch.zeros(3, 4))
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    module.criterion = nn.Module()
    module.criterion.centers = centers
    optimizer, _ = build_optimizer(OptimConfig(), module, 4, [{"params": [centers], "lr": 0.5, "weight_decay": 0.0}])
    owners = [g for g in optimizer.param_groups if any(p is centers for p in g["params"])]
    assert len(owners) == 1 and owners[0]["lr"] == 0.5


def _images(n=32, seed=0, size=16, outputs=3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127).float().unsqueeze(1).repeat(1, outputs)
    return images, labels


def _batches(n=32, batch=8, seed=0, **kwargs):
    images, labels = _images(n, seed, **kwargs)
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


PIPE = InputPipe(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)


def _train(model, freeze_value="none", epochs=2, **optim):
    trainable = freeze(model, freeze_value)
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=epochs, **optim), module, 4)
    for epoch in range(epochs):
        train_one_epoch(module, _batches(seed=epoch), optimizer, PIPE, scheduler, epoch * 4)
    return trainable, optimizer


def test_freeze_backbone_keeps_every_backbone_tensor_and_trains_the_head():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable, optimizer = _train(model, "backbone")
    assert trainable == sum(p.numel() for p in model.fc.parameters())
    after = model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)  # BN buffers are among what is compared
    assert [k for k in backbone if not torch.equal(before[k], after[k])] == []
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not model.bn1.training and model.fc.training  # also after train_one_epoch's model.train()
    stateful = {id(p) for p in optimizer.state}
    assert stateful == {id(model.fc.weight), id(model.fc.bias)}  # frozen parameters have no optimizer state
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))


def test_freeze_stages_keeps_the_stem_and_the_first_stages_only():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, "stages:1")
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"layer2", "layer3", "layer4", "fc"}


def test_bad_freeze_values_are_one_line_errors_naming_the_key():
    with pytest.raises(UserError, match=r"model\.freeze='stages:x'.*--set model\.freeze=stages:2"):
        TrainConfig.from_dict({"task": "attributes", "model.freeze": "stages:x"})
    with pytest.raises(UserError, match=r"ResNet has 4 stages.*stages:4"):
        freeze(timm.create_model("resnet18", num_classes=3), "stages:5")


def test_accumulation_counts_optimizer_steps_and_bad_values_are_one_line_errors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=2), module, 2)  # a cosine over 4 updates
    stats = train_one_epoch(module, _batches(n=40, batch=8), optimizer, PIPE, scheduler, accum_steps=3)
    assert stats.updates == 2 and stats.examples == 40  # 5 batches: one update of 3, a short one of 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # half-way: it counted 2 updates, not 5 batches
    with pytest.raises(UserError, match=r"optim\.accum_steps=-1 is out of range.*--set optim\.accum_steps=1"):
        TrainConfig.from_dict({"task": "attributes", "optim.accum_steps": -1})


def test_ema_is_what_is_evaluated_and_checkpointed_and_equals_a_hand_computed_ema(tmp_path):
    from types import SimpleNamespace

    from timm.utils import ModelEmaV3

    from trainables.artifacts import MODEL_WEIGHTS, TRAIN_STATE
    from trainables.loop import train_and_evaluate
    from trainables.position import Position
    from trainables.tasks import EvalResult
    from trainables.worker import _save

    torch.manual_seed(0)
    decay = 0.7
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    module = TrainModule(model, nn.BCEWithLogitsLoss())
    optimizer, scheduler = build_optimizer(OptimConfig(lr=0.05, epochs=2), module, 2)
    ema = ModelEmaV3(model, decay=decay)
    by_hand = {k: v.clone().double() for k, v in model.state_dict().items()}

    def after_step(*_):  # the hand-made EMA of every float tensor, parameters and BN statistics alike
        for k, v in model.state_dict().items():
            by_hand[k] = by_hand[k] * decay + v.double() * (1 - decay) if v.is_floating_point() else v.clone().double()
    optimizer.register_step_post_hook(after_step)

    evaluated = []
    task = SimpleNamespace(model=model, evaluate=lambda m, ctx: (evaluated.append(m), EvalResult({}, lambda _: None))[1])
    for epoch in range(2):
        stats, _ = train_and_evaluate(module, task, _batches(n=32, batch=8, seed=epoch), optimizer, PIPE, None,
                                      scheduler, epoch * 2, accum_steps=2, ema=ema)
        assert stats.updates == 2
    assert all(m is ema.module for m in evaluated)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v.double(), by_hand[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ema.module[3].weight, model[3].weight)  # not simply the training weights

    cfg = TrainConfig.from_dict({"task": "attributes", "optim.ema": decay})
    _save(tmp_path, model, nn.Module(), optimizer, scheduler, Position(epoch=2, updates=4, evaluations=2), cfg, {}, ema)
    saved = torch.load(tmp_path / MODEL_WEIGHTS, weights_only=True)
    assert torch.equal(saved["3.weight"], ema.module[3].weight)  # export and predict read the EMA's weights
    assert torch.equal(torch.load(tmp_path / TRAIN_STATE, weights_only=True)["model"]["3.weight"], model[3].weight)


def test_the_model_card_says_the_weights_are_an_ema():
    from types import SimpleNamespace

    from orchestrator.export import model_card

    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3))
    model.pretrained_cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    run = SimpleNamespace(info=SimpleNamespace(run_id="abc", run_name="calm-cat"))
    chosen = {"epoch": 2, "out": "model", "metric": "m", "mode": "max", "epochs": [2], "checkpoint": "/c"}
    card = lambda cfg: model_card(cfg=cfg, title="t", card_lines=[], model=model, run=run, tracking_uri="sqlite:///m.db",
                                  chosen=chosen, metrics={}, decision="", num_outputs=3)
    assert "ModelEmaV3, decay optim.ema=0.999" in card(TrainConfig.from_dict({"task": "attributes", "optim.ema": 0.999}))
    assert "moving average" not in card(TrainConfig.from_dict({"task": "attributes", "task": "attributes"}))


def test_patience_stops_at_the_evaluation_that_exhausts_it_and_resumes_its_count():
    from trainables.patience import Patience

    def stop_at(values, evaluations, mode="max"):
        watch = Patience(evaluations, mode)
        return next((i + 1 for i, v in enumerate(values) if watch.update(v)), None)

    # best at evaluation 2 (0.6); 3, 4 and 5 do not beat it (an equal value is no improvement)
    values = [0.5, 0.6, 0.6, 0.55, float("nan"), 0.9]
    assert stop_at(values, 3) == 5 and stop_at(values, 2) == 4 and stop_at(values, 4) is None
    assert stop_at(values, 0) is None  # off
    assert stop_at([3.0, 2.0, 2.5, 2.4, 1.0], 2, mode="min") == 4  # a loss: lower is better

    watch = Patience(3)
    for v in values[:3]:
        watch.update(v)
    resumed = Patience(3)
    resumed.load(watch.state())  # what a checkpoint carries
    assert [resumed.update(v) for v in values[3:5]] == [False, True]


def test_a_trial_stopped_by_patience_is_shown_so():
    from types import SimpleNamespace

    from orchestrator.report import results_table
    from trainables.artifacts import STOPPED

    grid = [SimpleNamespace(metrics={"trial_id": "a", "epoch": 4, "m": 0.7, STOPPED: "patience"}, config={}, error=None),
            SimpleNamespace(metrics={"trial_id": "b", "epoch": 8, "m": 0.6}, config={}, error=None)]
    table = results_table(grid, "m", "max", describe=lambda c: "", status_of=lambda trial: "done")
    assert dict(zip(table["trial"], table["status"])) == {"a": "patience", "b": "done"}


def test_a_trial_asha_stopped_is_shown_stopped_early_not_done():
    """The recognition demo's table said `done` for its two trials ASHA stopped after 2 of 4 epochs."""
    from types import SimpleNamespace

    from orchestrator.report import STOPPED_EARLY, results_table

    grid = [SimpleNamespace(metrics={"trial_id": "a", "epoch": 4, "m": 0.97}, config={"optim.epochs": 4}, error=None),
            SimpleNamespace(metrics={"trial_id": "b", "epoch": 2, "m": 0.95}, config={"optim.epochs": 4}, error=None),
            SimpleNamespace(metrics={"trial_id": "c", "epoch": 2, "m": 0.94}, config={}, error=None),
            SimpleNamespace(metrics={"trial_id": "d", "epoch": 1, "m": 0.90}, config={}, error=None)]
    status = {"a": "done", "b": "done", "c": "done", "d": "unfinished"}
    table = results_table(grid, "m", "max", describe=lambda c: "", status_of=status.get, full_epochs=2)
    assert dict(zip(table["trial"], table["status"])) == {"a": "done", "b": STOPPED_EARLY, "c": "done",
                                                          "d": "unfinished"}


def test_a_trial_interrupted_before_its_first_report_is_named_by_its_config():
    """Ctrl-C during a smoke sweep's second trial: its table row read `None` where the backbone's name belongs
    (the grid keeps no config for a trial without a result; Tune's trial keeps it)."""
    from types import SimpleNamespace

    from orchestrator.report import results_table
    from orchestrator.space import describe

    class Grid(list):
        pass

    grid = Grid([SimpleNamespace(metrics={"trial_id": "a", "epoch": 2, "m": 0.9}, config={"model.name": "resnet18"},
                                 error=None),
                 SimpleNamespace(metrics={}, config={}, error=None)])
    grid._experiment_analysis = SimpleNamespace(trials=[
        SimpleNamespace(trial_id="a", status="TERMINATED", config={"model.name": "resnet18"}),
        SimpleNamespace(trial_id="b", status="TERMINATED", config={"model.name": "legacy_seresnet18"})])
    status = {"a": "done", "b": "unfinished"}
    table = results_table(grid, "m", "max", lambda c: describe(c, ["model.name"]), status_of=status.get)
    assert dict(zip(table["trial"], table["config"])) == {"a": "resnet18", "b": "legacy_seresnet18"}


def test_every_trial_reports_its_best_evaluations_numbers_and_step():
    from trainables.patience import Patience

    evaluations = [{"val/acc": 0.5, "val/loss": 0.9, "train/loss": 1.0, "epoch": 1, "timing/x_s": 3.0},
                   {"val/acc": 0.8, "val/loss": 0.7, "train/loss": 0.8, "epoch": 2},
                   {"val/acc": 0.7, "val/loss": 0.6, "train/loss": 0.6, "epoch": 3}]
    watch, logged = Patience(0, "max"), {}
    reports = [watch.observe(m, "val/acc", step=m["epoch"]) for m in evaluations]
    for report in reports:  # MLflow keeps each metric's last value: what its table would show
        logged.update({k: v for k, v in report.items() if k.startswith("best/")})
    assert logged == {"best/val/acc": 0.8, "best/val/loss": 0.7, "best/train/loss": 0.8, "best/step": 2.0}
    assert "best/val/acc" not in reports[2]  # only an improvement reports them


def test_the_parent_run_takes_the_best_trials_metrics_once_without_its_own_best_summary():
    """The parent's best/<key> is the winner's last value; the winner's best/* stays on its own run
    (copied, it showed in MLflow as best/best/val/mean_accuracy and 30 more)."""
    from types import SimpleNamespace

    from orchestrator.report import close_sweep

    logged = {}
    tracking = SimpleNamespace(log=lambda run, metrics=None, tags=None: logged.update(metrics or {}),
                               set_terminated=lambda run, status: logged.update(status=status))
    winner = {"val/acc": 0.7, "epoch": 3, "best/val/acc": 0.8, "best/step": 2.0, "trial_id": "a"}
    close_sweep(tracking, "parent", {"best_metrics": winner, "trials": 1, "failed": 0})
    assert logged == {"best/val/acc": 0.7, "best/epoch": 3, "status": "FINISHED"}


def test_the_printed_table_shows_metrics_to_four_decimals_and_speed_to_one():
    from types import SimpleNamespace

    from orchestrator.report import printed, results_table

    grid = [SimpleNamespace(metrics={"trial_id": "a", "epoch": 2, "m": 0.912345, "train/images_per_sec": 48.0558},
                            config={}, error=None)]
    lines = printed(results_table(grid, "m", "max", describe=lambda c: "x", status_of=lambda t: "done")).splitlines()
    assert lines[0].split()[-1] == "img/s" and lines[1].split()[-2:] == ["0.9123", "48.1"], lines


def test_the_recipe_keys_are_listed_with_their_help_and_default_to_doing_nothing(capsys):
    from argparse import Namespace

    from orchestrator.commands.list import cmd_list

    cmd_list(Namespace(keys=True))
    lines = [line for line in capsys.readouterr().out.splitlines() if "model.freeze" in line or "optim." in line]
    for key, default in (("model.freeze", "'none'"), ("optim.ema", "0.0"), ("optim.patience", "0"),
                         ("optim.accum_steps", "1")):
        line = next(line for line in lines if line.split()[0] == key)
        assert line.split()[1] == default and "  # " in line  # one line of help beside the default
    cfg = TrainConfig.from_dict({"task": "attributes", "model.freeze": "stages:2", "optim.ema": "0.999", "optim.patience": "3",
                                 "optim.accum_steps": "4"})  # as --set and sweep files give them
    assert (cfg.model.freeze, cfg.optim.ema, cfg.optim.patience, cfg.optim.accum_steps) == ("stages:2", 0.999, 3, 4)
