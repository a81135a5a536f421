"""Training volumes of an interactive run, in memory and packed into one file to train where the data isn't.

An interactive training run reads every training case of its datalists, normalises it and keeps
it in memory as :class:`Source` (:func:`load_sources`). A *sources pack* is that memory written
down small enough to travel to a training machine that cannot see the datasets (a rented GPU):
each volume cropped around its labels (the training crops only look near the objects), its
normalised intensities quantised to 8 bits over the volume's own range (about 0.03 standard
deviations a step, below MR noise and far below the training's intensity augmentation), labels as
8-bit values, each array LZMA-compressed. ``aiaa pack-sources`` writes one; a train config names
it as ``sources_pack``. The file is an ``.npz`` of byte arrays and one JSON index, read without pickle.
"""

from __future__ import annotations

import json
import lzma
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import ConfigError
from engines.evaluation.interactive import InteractiveDatalist, case_images, case_name, read_case, structures_of

__all__ = ["Source", "crop_around_labels", "load_sources", "load_sources_pack", "save_sources_pack"]


@dataclass
class Source:
    """One training volume in memory: the normalised image, the labels and the structures present."""

    dataset: str
    case: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    structures: dict[str, tuple[int, ...]]
    _masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def mask(self, structure: str) -> np.ndarray:
        """The structure's mask (cached)."""
        if structure not in self._masks:
            self._masks[structure] = np.isin(self.label, self.structures[structure])
        return self._masks[structure]


def load_sources(datalists: Sequence[InteractiveDatalist], min_voxels: int = 20, max_cases: int | None = None,
                 progress: Callable[[str], None] = print) -> list[Source]:
    """Read every training case of the datalists (images given as lists: one source per modality)."""
    sources = []
    for dl in datalists:
        start = time.time()
        for case in dl.training[:max_cases]:
            for path in case_images(case):
                image, label, spacing = read_case(path, case["label"])
                structures = structures_of(label, dl.structures, min_voxels)
                if structures:
                    sources.append(Source(dl.dataset, case_name({"image": path}), image, label, spacing, structures))
        progress(f"{dl.dataset}: {sum(s.dataset == dl.dataset for s in sources)} volumes in {time.time() - start:.0f} s")
    return sources


FORMAT = "aiaa-interactive-sources/1"


def crop_around_labels(label: np.ndarray, spacing: Sequence[float], fraction: float = 0.5,
                       margin_mm: float = 30.0) -> tuple[slice, ...]:
    """The volume's region around all its labels: their box widened by ``fraction`` of its extent plus ``margin_mm`` a side.

    The default keeps every crop a training sample takes of a structure (up to 1.5x its extent,
    zoomed out by up to 1.8x) inside the region, unless the volume's own border is nearer.
    """
    found = np.argwhere(label > 0)
    if len(found) == 0:
        return tuple(slice(0, n) for n in label.shape)
    lo, hi = found.min(0), found.max(0) + 1
    spacing_a = np.asarray(spacing, dtype=np.float64)
    pad = np.ceil((fraction * (hi - lo) * spacing_a + margin_mm) / spacing_a).astype(np.int64)
    return tuple(slice(int(max(a - p, 0)), int(min(b + p, n))) for a, b, p, n in zip(lo, hi, pad, label.shape))


def _compressed(array: np.ndarray) -> np.ndarray:
    return np.frombuffer(lzma.compress(np.ascontiguousarray(array).tobytes(), preset=6), dtype=np.uint8)


def save_sources_pack(path: str | Path, sources: Sequence, fraction: float = 0.5, margin_mm: float = 30.0) -> dict:
    """Write ``sources`` (:class:`Source`) to ``path``; returns the index written."""
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for n, source in enumerate(sources):
        if int(source.label.max(initial=0)) > 255 or int(source.label.min(initial=0)) < 0:
            raise ConfigError(f"{source.case}: label values outside 0..255 cannot be packed")
        region = crop_around_labels(source.label, source.spacing, fraction, margin_mm)
        image = source.image[region]
        lo, hi = float(source.image.min()), float(source.image.max())
        quantised = np.rint((image - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
        arrays[f"image_{n}"] = _compressed(quantised)
        arrays[f"label_{n}"] = _compressed(source.label[region].astype(np.uint8))
        entries.append({"dataset": source.dataset, "case": source.case, "shape": list(image.shape),
                        "spacing": list(source.spacing), "range": [lo, hi],
                        "structures": {k: list(v) for k, v in source.structures.items()},
                        "region": [[s.start, s.stop] for s in region]})
    index = {"format": FORMAT, "sources": entries}
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return index


def load_sources_pack(path: str | Path, datasets: Sequence[str] | None = None) -> list:
    """The sources of a pack (of ``datasets`` only, if given)."""
    try:
        pack = np.load(path, allow_pickle=False)
        index = json.loads(pack["index"].tobytes())
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a sources pack ({exc})") from None
    if index.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a sources pack (format {index.get('format')!r}, expected {FORMAT!r})")
    sources = []
    for n, entry in enumerate(index["sources"]):
        if datasets is not None and entry["dataset"] not in datasets:
            continue
        shape = tuple(entry["shape"])
        quantised = np.frombuffer(lzma.decompress(pack[f"image_{n}"].tobytes()), dtype=np.uint8).reshape(shape)
        label = np.frombuffer(lzma.decompress(pack[f"label_{n}"].tobytes()), dtype=np.uint8).reshape(shape)
        lo, hi = entry["range"]
        image = (quantised.astype(np.float32) * np.float32((hi - lo) / 255) + np.float32(lo))
        sources.append(Source(entry["dataset"], entry["case"], image, label.astype(np.int16),
                              tuple(float(s) for s in entry["spacing"]),
                              {k: tuple(v) for k, v in entry["structures"].items()}))
    return sources
