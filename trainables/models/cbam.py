"""Backbones of the seeds that timm has no name for, registered into timm's model registry.

After this module is imported, `timm.create_model("cbam_resnet50")` (or "mobilefacenet") works like any timm name,
so that sweeps list backbones by name and nothing branches on them.
"""

from timm.models import register_model
from timm.models._input import update_model_args
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, _create_resnet

import trainables.models.mobilefacenet  # noqa: F401  (registers `mobilefacenet`)

_CBAM = {"attn_layer": "cbam"}


def _cbam_resnet(variant: str, block: type, layers: list[int], pretrained: bool, **kwargs) -> ResNet:
    """A timm ResNet with CBAM attention in every block (seed 002's CBAMnet)."""
    kwargs["block_args"] = {**_CBAM, **kwargs.get("block_args", {})}
    model = _create_resnet(variant, pretrained, block=block, layers=layers, **kwargs)
    # Recorded in timm's model args, so an exported config.json rebuilds the CBAM blocks with plain timm.
    update_model_args(model, block_args=kwargs["block_args"])
    return model


@register_model
def cbam_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    return _cbam_resnet("resnet18", BasicBlock, [2, 2, 2, 2], pretrained, **kwargs)


@register_model
def cbam_resnet50(pretrained: bool = False, **kwargs) -> ResNet:
    return _cbam_resnet("resnet50", Bottleneck, [3, 4, 6, 3], pretrained, **kwargs)


@register_model
def cbam_resnet101(pretrained: bool = False, **kwargs) -> ResNet:
    return _cbam_resnet("resnet101", Bottleneck, [3, 4, 23, 3], pretrained, **kwargs)
