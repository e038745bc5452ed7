"""MobileFaceNet as the paper describes it, registered into timm, and the embedding network."""

import timm
import torch

import trainables.models.mobilefacenet  # noqa: F401  (registers mobilefacenet into timm)
from trainables.models.embedding import EmbeddingNet
from trainables.models.mobilefacenet import Bottleneck, MobileFaceNet


def test_timm_name_and_embedding_shape():
    model = timm.create_model("mobilefacenet", pretrained=False).eval()
    assert isinstance(model, MobileFaceNet)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 128)


def test_parameter_count_matches_the_paper():
    model = timm.create_model("mobilefacenet")
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 0.99e6) / 0.99e6 < 0.10, params


def test_architecture_follows_table_1():
    model = timm.create_model("mobilefacenet").eval()
    blocks = [m for m in model.blocks if isinstance(m, Bottleneck)]
    assert len(blocks) == 5 + 1 + 6 + 1 + 2
    # A residual wherever stride is 1 and the width is kept: stages 3 and 5 start at 128 with s=1.
    assert sum(b.use_residual for b in blocks) == 4 + 0 + 6 + 0 + 2
    assert sum(isinstance(m, torch.nn.PReLU) for m in model.modules()) > 0
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 112, 112))
    assert features.shape == (1, 512, 7, 7)  # what the 7x7 GDC expects


def test_timm_kwargs_num_classes_is_embedding_size():
    with torch.no_grad():
        wide = timm.create_model("mobilefacenet", num_classes=256, drop_rate=0.2).eval()
        assert wide(torch.randn(1, 3, 112, 112)).shape == (1, 256)
        gray = timm.create_model("mobilefacenet", num_classes=0, in_chans=1).eval()
        assert gray(torch.randn(1, 1, 112, 112)).shape == (1, 512)  # no head: the GDC features


def test_data_config_is_112_with_half_mean_std():
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("mobilefacenet"))
    assert cfg["input_size"] == (3, 112, 112)
    assert tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and tuple(cfg["std"]) == (0.5, 0.5, 0.5)


def test_embedding_net_uses_mobilefacenet_directly_and_adds_the_e_head_elsewhere():
    face = EmbeddingNet("mobilefacenet", embedding_size=64).eval()
    assert isinstance(face.head, torch.nn.Identity)
    generic = EmbeddingNet("resnet18", embedding_size=64, drop_rate=0.1).eval()
    kinds = [type(m) for m in generic.head]
    assert kinds == [torch.nn.BatchNorm1d, torch.nn.Dropout, torch.nn.Linear, torch.nn.BatchNorm1d]
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert face(x).shape == (2, 64) and generic(x).shape == (2, 64)
    assert timm.data.resolve_data_config({}, model=face)["mean"] == (0.5, 0.5, 0.5)
