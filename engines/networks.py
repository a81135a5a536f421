"""Network registry: the architectures a PyTorch checkpoint may be loaded into."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks import nets

from engines.config.model import ComponentSpec
from engines.errors import ConfigError, UnknownComponentError

__all__ = ["NETWORKS", "build_network"]

NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {
    "UNet": nets.UNet,
    "BasicUNet": nets.BasicUNet,
    "DynUNet": nets.DynUNet,
    "SegResNet": nets.SegResNet,
    "AttentionUnet": nets.AttentionUnet,
    "UNETR": nets.UNETR,
    "SwinUNETR": nets.SwinUNETR,
}


def build_network(spec: ComponentSpec) -> torch.nn.Module:
    """Instantiate the network a config describes (weights are loaded separately)."""
    if spec.name not in NETWORKS:
        raise UnknownComponentError(f"unknown network '{spec.name}': choose one of {', '.join(sorted(NETWORKS))}")
    try:
        return NETWORKS[spec.name](**spec.args)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"network '{spec.name}': bad arguments {sorted(spec.args)}: {exc}") from None
