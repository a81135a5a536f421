"""One target object's interaction loop: prompts so far, the current mask, exact undo.

No HTTP and no backend here: :func:`predict_step` takes any ``network`` callable that maps an
input ``(C, *roi)`` float32 array (:func:`engines.transforms.prompts.encode`) to the object's
logits ``(*roi)``. Serving wraps a backend into that callable; training and the interactive
evaluation protocol pass a PyTorch module. So training, evaluation and every door run the very
same crop, encode, predict, zoom-out and paste-back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from engines.errors import InvalidInputError
from engines.transforms.prompts import Prompt, crop_box, encode, to_crop, touches_border

__all__ = ["InteractionState", "StepResult", "autocast_in", "keep_click_change", "logit_threshold", "network_callable",
           "predict_step"]

Network = Callable[[np.ndarray], np.ndarray]


def autocast_in(device: torch.device | str, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` (e.g. ``torch.bfloat16``) on ``device``'s type; a no-op context for ``None``."""
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def network_callable(module: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str = "cpu",
                     autocast: torch.dtype | None = None) -> Network:
    """A torch module (or a wrapper of one, e.g. :class:`engines.inferers.FlipAveraged`) as :func:`predict_step`'s
    network: ``(C, *roi)`` float32 -> logits ``(*roi)`` float32, without autograd; with ``autocast`` (e.g.
    ``torch.bfloat16``) the module computes in that precision where autocast allows."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast_in(device, autocast):
            return module(torch.from_numpy(np.ascontiguousarray(x))[None].to(device))[0, 0].float().cpu().numpy()

    return run


def logit_threshold(thresh: float) -> float:
    """The logit above which the probability exceeds ``thresh`` (0 for 0.5): subtracted so masks are ``logits > 0``."""
    return math.log(thresh / (1.0 - thresh))


@dataclass
class StepResult:
    """A prediction: the full-volume mask and the box ``[lo, hi)`` where it may have changed."""

    mask: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    zooms: int = 0


def predict_step(network: Network, image: np.ndarray, spacing: Sequence[float], prompts: Sequence[Prompt],
                 mask: np.ndarray | None, roi: Sequence[int], *, margin: float = 0.25, min_size_mm: float = 40.0,
                 max_zooms: int = 2, zoom_factor: float = 1.6, local_corrections: bool = False) -> StepResult:
    """Crop around the prompts and mask, predict at the ROI, paste back; zoom out while the object reaches the border.

    ``image`` is the normalised full volume. The returned mask equals ``mask`` outside ``[lo, hi)``.
    Test-time flips, where a model has them, live in ``network`` (the engine's ``tta_flips``). With
    ``local_corrections`` a click on an existing mask changes only what :func:`keep_click_change` keeps.
    """
    current = np.zeros(image.shape, bool) if mask is None else mask
    zoom, zooms = 1.0, 0
    while True:
        lo, hi = crop_box(image.shape, spacing, prompts, current, margin=margin, min_size_mm=min_size_mm, zoom=zoom)
        logits = network(encode(image, current, prompts, lo, hi, roi))
        crop = to_crop(np.asarray(logits, dtype=np.float32).reshape(tuple(roi)), lo, hi)
        if zooms >= max_zooms or not touches_border(crop, lo, hi, image.shape):
            break
        zoom *= zoom_factor
        zooms += 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    if local_corrections and mask is not None and prompts[-1].kind == "point":
        crop = keep_click_change(current[box], crop, prompts[-1].voxels - lo)
    out = current.copy()
    out[box] = crop
    return StepResult(out, lo, hi, zooms)


def keep_click_change(before: np.ndarray, after: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """``after`` where it differs from ``before`` in a 26-connected region holding one of ``clicks``, else ``before``.

    A corrective click then edits the mask where it was placed and leaves the rest as the annotator
    accepted it. When the prediction did not change a clicked voxel at all, the whole of ``after``
    stands (keeping ``before`` would answer the click with no change).
    """
    changed, _ = ndimage.label(before != after, structure=np.ones((3, 3, 3), bool))
    inside = ((clicks >= 0) & (clicks < np.asarray(before.shape))).all(1)
    hit = changed[tuple(clicks[inside].T)]
    hit = hit[hit > 0]
    if not len(hit):
        return after
    return np.where(np.isin(changed, hit), after, before)


@dataclass
class _Step:
    prompts: tuple[Prompt, ...]
    mask: np.ndarray | None


@dataclass
class InteractionState:
    """The prompts and mask of one target object, with every earlier step kept for exact undo.

    Masks are stored packed (1 bit per voxel) so a long undo stack stays small; the current mask
    is also kept unpacked (read-only), because every step reads it and unpacking a whole volume
    costs more than the rest of a step outside the network.
    """

    shape: tuple[int, int, int]
    prompts: tuple[Prompt, ...] = ()
    _mask_bits: np.ndarray | None = None
    _history: list[_Step] = field(default_factory=list)
    _current: np.ndarray | None = None  # _mask_bits unpacked, or None when not unpacked yet

    @property
    def mask(self) -> np.ndarray | None:
        """The current mask (bool, full volume, read-only), or None before the first prediction."""
        if self._mask_bits is None:
            return None
        if self._current is None:
            n = int(np.prod(self.shape))
            self._current = np.unpackbits(self._mask_bits, count=n).reshape(self.shape).astype(bool)
            self._current.flags.writeable = False
        return self._current

    @property
    def steps(self) -> int:
        """How many steps can be undone."""
        return len(self._history)

    def nbytes(self) -> int:
        """Memory held by the mask and the undo stack (for the sessions' memory budget)."""
        masks = [self._mask_bits, self._current] + [s.mask for s in self._history]
        prompts = sum(p.voxels.nbytes for p in self.prompts)
        return sum(m.nbytes for m in masks if m is not None) + prompts

    def _push(self) -> None:
        self._history.append(_Step(self.prompts, self._mask_bits))

    def _set(self, mask: np.ndarray, copy: bool = True) -> None:
        if mask.shape != self.shape:
            raise InvalidInputError(f"mask shape {list(mask.shape)} differs from the image's {list(self.shape)}")
        current = mask.astype(bool, copy=copy)  # a copy unless the array is ours (a prediction's)
        current.flags.writeable = False
        self._mask_bits, self._current = np.packbits(current.ravel()), current

    def apply(self, prompt: Prompt, predict: Callable[[Sequence[Prompt], np.ndarray | None], StepResult]) -> StepResult:
        """Add a prompt and predict; on any error nothing changes."""
        prompt.check(self.shape)
        prompts = self.prompts + (prompt,)
        result = predict(prompts, self.mask)
        self._push()
        self.prompts = prompts
        self._set(result.mask, copy=False)  # predict_step made it; it becomes read-only here
        return result

    def set_mask(self, mask: np.ndarray) -> None:
        """Start from an existing mask (an undoable step; prompts so far are kept)."""
        if mask.shape != self.shape:
            raise InvalidInputError(f"mask shape {list(mask.shape)} differs from the image's {list(self.shape)}")
        self._push()
        self._set(mask)

    def undo(self) -> None:
        """Go back one step, exactly."""
        if not self._history:
            raise InvalidInputError("nothing to undo")
        step = self._history.pop()
        self.prompts, self._mask_bits, self._current = step.prompts, step.mask, None

    def reset(self) -> None:
        """Forget every prompt, the mask and the undo stack (a new object)."""
        self.prompts, self._mask_bits, self._history, self._current = (), None, [], None
