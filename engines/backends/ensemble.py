"""Several backends behind one call: the mean of their logits."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from engines.backends.base import Backend, describe, max_concurrency

__all__ = ["MeanEnsemble"]


class MeanEnsemble:
    """The mean of the members' raw outputs (logits), on the first member's device."""

    name: ClassVar[str] = "ensemble"

    def __init__(self, members: list[Backend]) -> None:
        self.members = list(members)
        self.device = getattr(self.members[0], "device", torch.device("cpu"))
        limits = [limit for m in self.members if (limit := max_concurrency(m))]
        self.max_concurrency: int | None = min(limits) if limits else None

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = [member(inputs).float() for member in self.members]
        return torch.stack([o.to(outputs[0].device) for o in outputs]).mean(dim=0)

    def describe(self) -> dict[str, Any]:
        """The members' runtime (shared by all of them when loaded from one export)."""
        parts = [describe(m) for m in self.members]
        out = dict(parts[0])
        for key in ("runtime", "precision", "device"):
            values = sorted({str(p.get(key)) for p in parts})
            out[key] = values[0] if len(values) == 1 else "/".join(values)
        out["members"] = len(parts)
        return out

    def close(self) -> None:
        """Release every member."""
        for member in self.members:
            member.close()
