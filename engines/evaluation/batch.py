"""Batch inference over many cases (``aiaa infer``, as Clara's ``tlt-infer``).

The engine is built exactly as the server's pool builds it (``load_backend`` and the
engine class of the config's type), so a batch result equals a served one. Extreme-point
models get the six extreme points of each case's label, optionally jittered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends import load_backend
from engines.config.model import WriterSpec, load_model_config
from engines.data.io import SUFFIXES, Volume, read_modalities, read_volume, write_volume_file
from engines.errors import InvalidInputError
from engines.tasks.base import Engine, InferenceResult
from engines.tasks.registry import engine_for_type
from engines.transforms.points import simulated_params

__all__ = [
    "IMAGE_SUFFIXES",
    "Progress",
    "case_name",
    "find_images",
    "infer_cases",
    "load_engine",
    "run_case",
    "strip_suffix",
]

Progress = Callable[[int, int, str], None]  # (done, total, name) after each case
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
DEFAULT_WRITER = WriterSpec(name="WriteNifti")


def load_engine(config_path: str | Path, name: str | None = None, device: str | None = None) -> Engine:
    """The engine of a model config, built as the server's pool builds it (``device`` overrides the config's)."""
    config_path = Path(config_path)
    config = load_model_config(config_path)
    if device is not None and device != "auto":
        config = config.model_copy(update={"device": device})
    backend = load_backend(config, config_path.parent.resolve())
    return engine_for_type(config.type)(name or config_path.stem, config, backend)


def strip_suffix(name: str) -> str:
    """A file name without its image suffix (``case.nii.gz`` -> ``case``)."""
    lower = name.lower()
    for suffix in sorted(set(IMAGE_SUFFIXES + SUFFIXES + (".dcm",)), key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_name(image: str | Sequence[str]) -> str:
    """A case's name: the image file's name, or for several modalities the folder of the first."""
    if isinstance(image, (str, Path)):
        return strip_suffix(Path(image).name)
    return Path(image[0]).parent.name


def find_images(folder: str | Path) -> list[dict[str, Any]]:
    """Every image file directly in ``folder`` as a case without label, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise InvalidInputError(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return [{"image": str(p)} for p in images]


def run_case(engine: Engine, case: dict[str, Any], rng: np.random.RandomState | None = None,
             perturbation: float = 0.0) -> tuple[Volume, np.ndarray | None, InferenceResult]:
    """Read one case (image, and its label rounded to integers when it has one) and run the engine.

    An annotation model gets the label's extreme points (:func:`~engines.transforms.points.simulated_params`).
    """
    volume = read_modalities(case["image"])
    truth = np.rint(read_volume(case["label"]).array).astype(np.uint8) if case.get("label") else None
    if truth is None and engine.type == "annotation":
        raise InvalidInputError(
            f"{case_name(case['image'])}: extreme-point model '{engine.name}' needs a label to simulate the "
            "clicks from (use a datalist, not --images)"
        )
    params = simulated_params(engine.type, truth, rng, perturbation) if truth is not None else {}
    return volume, truth, engine.infer(volume, params)


def infer_cases(
    config_path: str | Path,
    cases: Sequence[dict[str, Any]],
    output_dir: str | Path,
    *,
    perturbation: float = 0.0,
    seed: int = 0,
    overwrite: bool = True,
    progress: Progress | None = None,
) -> list[Path]:
    """Run a model over cases and write each mask as the config's ``writers`` say.

    Masks lie on each input's grid and are named after the input (:func:`case_name`).

    Returns:
        The written files, in case order.
    """
    engine = load_engine(config_path)
    writers = engine.config.writers or [DEFAULT_WRITER]
    output_dir = Path(output_dir)
    rng = np.random.RandomState(seed) if perturbation > 0 else None
    written: list[Path] = []
    try:
        for n, case in enumerate(cases, 1):
            name = case_name(case["image"])
            targets = [output_dir / f"{name}{w.args.suffix}" for w in writers]
            if not overwrite and all(t.exists() for t in targets):
                written += targets
            else:
                volume, _, result = run_case(engine, case, rng, perturbation)
                for writer, target in zip(writers, targets):
                    written.append(write_volume_file(Volume(result.mask, volume.geometry), target,
                                                     dtype=writer.args.dtype))
            if progress:
                progress(n, len(cases), name)
    finally:
        engine.close()
    return written

