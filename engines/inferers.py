"""Inferers: how a volume is fed to a backend (whole, or by sliding window).

MONAI's inferers take any callable as the network, so every backend works with them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer

from engines.config.model import ComponentSpec
from engines.errors import ConfigError, UnknownComponentError

__all__ = ["INFERERS", "FlipAveraged", "build_inferer", "flip_averaged"]

INFERERS: dict[str, Callable[..., Inferer]] = {
    "SimpleInferer": SimpleInferer,
    "SlidingWindowInferer": SlidingWindowInferer,
}


def build_inferer(spec: ComponentSpec, batch_size: int = 1) -> Inferer:
    """Instantiate the configured inferer; ``batch_size`` feeds sliding-window batches."""
    if spec.name not in INFERERS:
        raise UnknownComponentError(f"unknown inferer '{spec.name}': choose one of {', '.join(INFERERS)}")
    args = dict(spec.args)
    if spec.name == "SlidingWindowInferer":
        args.setdefault("sw_batch_size", batch_size)
    try:
        return INFERERS[spec.name](**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inferer '{spec.name}': bad arguments {sorted(args)}: {exc}") from None


class FlipAveraged:
    """Test-time augmentation: the mean of a network's outputs over flipped copies of its input.

    ``flips`` lists spatial axes (0..2) of a ``(B, C, X, Y, Z)`` input; each output is flipped
    back before averaging, so the result stays on the input's grid.
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], flips: list[list[int]]) -> None:
        self.network = network
        self.dims = [[axis + 2 for axis in axes] for axes in flips]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total = self.network(x).float()
        for dims in self.dims:
            total = total + torch.flip(self.network(torch.flip(x, dims)).float(), dims)
        return total / (len(self.dims) + 1)


def flip_averaged(network: Callable[[torch.Tensor], torch.Tensor],
                  flips: list[list[int]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` with a config's ``tta_flips`` applied (:class:`FlipAveraged`), or itself when there are none."""
    return FlipAveraged(network, flips) if flips else network
