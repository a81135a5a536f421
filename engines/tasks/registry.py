"""The one registry of engine kinds: Clara ``class``/``module`` names and model ``type`` -> engine class.

A new engine kind is one module in this package and one line here.
"""

from __future__ import annotations

from engines.config.model import BUNDLE_ENGINE
from engines.errors import UnknownComponentError
from engines.tasks.base import Engine
from engines.tasks.bundle import BundleEngine
from engines.tasks.dextr3d import Dextr3dEngine
from engines.tasks.interactive import InteractiveEngine
from engines.tasks.segmentation import SegmentationEngine

__all__ = ["ENGINE_CLASSES", "engine_class", "engine_for_type", "model_types"]

# (class, module) pairs of the Clara annotation server and our own short names.
ENGINE_CLASSES: dict[tuple[str, str], type[Engine]] = {
    ("Dextr3dCroppedEngine", "medical.aas.dextr3dcropped"): Dextr3dEngine,
    ("Dextr3dEngine", "engines.dextr3d"): Dextr3dEngine,
    ("Dextr3dEngine", "engines.tasks.dextr3d"): Dextr3dEngine,
    ("InteractiveEngine", "engines.tasks.interactive"): InteractiveEngine,
    ("DeepgrowEngine", "medical.aas.deepgrow"): InteractiveEngine,
    ("SegmentationEngine", "medical.aas.segmentation"): SegmentationEngine,
    ("SegmentationEngine", "engines.segmentation"): SegmentationEngine,
    ("SegmentationEngine", "engines.tasks.segmentation"): SegmentationEngine,
    # MONAI bundle folders (pool entries with "bundle"); last, so our own engines serve their types.
    BUNDLE_ENGINE: BundleEngine,
}


def engine_class(class_name: str, module: str) -> type[Engine]:
    """Resolve a Clara ``class``/``module`` pair."""
    try:
        return ENGINE_CLASSES[(class_name, module)]
    except KeyError:
        known = ", ".join(f"{c}/{m}" for c, m in ENGINE_CLASSES)
        raise UnknownComponentError(f"unknown engine class/module '{class_name}'/'{module}': use one of {known}") from None


def engine_for_type(model_type: str) -> type[Engine]:
    """The engine class that serves a model config's ``type``."""
    for cls in ENGINE_CLASSES.values():
        if cls.type == model_type:
            return cls
    raise UnknownComponentError(f"no engine serves models of type '{model_type}'")


def model_types() -> list[str]:
    """Every model ``type`` some engine kind serves."""
    return sorted({cls.type for cls in ENGINE_CLASSES.values()})
