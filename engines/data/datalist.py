"""Clara-format datalists: ``training`` and ``validation`` lists of cases, paths made absolute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.config.model import load_json
from engines.errors import ConfigError

__all__ = ["load_datalist", "resolve_dataset_refs"]


def load_datalist(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A Clara datalist with ``training`` and ``validation`` lists; paths made absolute.

    A case's ``image`` may list several files (modalities), stacked as channels in that order.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise ConfigError(f"{path}: a datalist needs a 'training' list")
    resolve = lambda p: str((path.parent / p).resolve())  # noqa: E731
    resolved: dict[str, list[dict[str, Any]]] = {}
    for split in ("training", "validation"):
        items = []
        for n, item in enumerate(data.get(split, [])):
            if not isinstance(item, dict) or "image" not in item or "label" not in item:
                raise ConfigError(f"{path}: {split}[{n}] needs 'image' and 'label'")
            image = item["image"]
            if isinstance(image, list) and image and all(isinstance(p, str) for p in image):
                image = [resolve(p) for p in image]
            elif isinstance(image, str):
                image = resolve(image)
            else:
                raise ConfigError(f"{path}: {split}[{n}]: 'image' must be a path or a non-empty list of paths")
            items.append({"image": image, "label": resolve(item["label"])})
        resolved[split] = items
    return resolved


def resolve_dataset_refs(datasets: Any, folder: Path) -> list[Any]:
    """The ``datasets`` of an interactive train config (``[{"datalist": path, "weight": w}, ...]``) with each
    datalist path resolved against ``folder``, where the train config lives; other entries as they are."""
    if not isinstance(datasets, list):
        return []
    return [{**d, "datalist": str((folder / d["datalist"]).resolve())}
            if isinstance(d, dict) and isinstance(d.get("datalist"), str) else d for d in datasets]
