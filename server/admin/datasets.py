"""Where jobs may read data: datalists inside the data roots, and datasets uploaded to the server."""

from __future__ import annotations

import errno
import json
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from engines.data.io import check_image_file
from engines.errors import InvalidImageError
from server.admin.validate import inside
from server.errors import BadRequest, Forbidden, InsufficientStorage, NotFound

__all__ = ["DATASET_ID", "remove_partial_datasets", "resolve_datalist", "save_dataset"]

DATASET_ID = re.compile(r"^ds-[0-9a-f]{12}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}$")
_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")


def _paths_of(items: list[Any]) -> list[str]:
    """Every string value of the datalist's items (image, label, or lists of them)."""
    found = []
    for item in items:
        values = item.values() if isinstance(item, dict) else [item]
        for value in values:
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, list):
                found += [v for v in value if isinstance(v, str)]
    return found


def resolve_datalist(value: str, roots: list[Path], datasets_dir: Path) -> Path:
    """The datalist file a job may read: a dataset id, or a path whose file and listed files are in a root.

    Symbolic links and ``..`` are resolved before the check, so neither escapes a root.

    Raises:
        Forbidden: the datalist or a file it lists lies outside every data root.
        NotFound / BadRequest: no such dataset or file, or not a datalist.
    """
    if DATASET_ID.match(value):
        path = datasets_dir / value / "datalist.json"
        if not path.is_file():
            raise NotFound(f"no dataset {value!r} (POST /admin/datasets uploads one)")
        return path
    path = Path(value).resolve()
    if not inside(path, roots):
        raise Forbidden(f"datalist {value!r} is outside the data roots; the server reads data only under "
                        f"AIAA_DATA_ROOTS ({':'.join(str(r) for r in roots[:-1]) or 'none configured'})")
    if not path.is_file():
        raise NotFound(f"datalist {value!r} not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"datalist {value!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise BadRequest(f"datalist {value!r} needs a 'training' list")
    for split in ("training", "validation"):
        items = data.get(split, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) and "image" in i for i in items):
            raise BadRequest(f"datalist {value!r}: '{split}' must be a list of objects with an 'image'")
    for listed in _paths_of(data.get("training", []) + data.get("validation", [])):
        if not inside((path.parent / listed).resolve(), roots):
            raise Forbidden(f"datalist {value!r} lists {listed!r}, which is outside the data roots")
    for item in data.get("training", []) + data.get("validation", []):
        images = item["image"] if isinstance(item["image"], list) else [item["image"]]
        for image in images:
            _check_listed_image(value, path.parent / str(image))
    return path


def _check_listed_image(datalist: str, file: Path) -> None:
    if not file.is_file():
        raise BadRequest(f"datalist {datalist!r} lists {file.name!r}, which does not exist")
    try:
        check_image_file(file)
    except InvalidImageError as exc:
        raise BadRequest(f"datalist {datalist!r} lists {file.name!r}, which is not an image: {exc}") from None


def _check_name(name: str | None) -> str:
    name = name or ""
    if not _FILE_NAME.match(name) or ".." in name or not name.lower().endswith(_SUFFIXES):
        raise BadRequest(f"file name {name!r} is not accepted: plain names ending in {', '.join(_SUFFIXES)}")
    return name


def _check_uploaded_image(file: Path, kind: str) -> None:
    try:
        check_image_file(file)
    except InvalidImageError as exc:
        raise BadRequest(f"{kind}/{file.name} is not an image: {exc}") from None


def remove_partial_datasets(datasets_dir: Path) -> list[str]:
    """Delete the ``.<id>.part`` folders of uploads that a crash (kill -9, power loss) interrupted; their names.

    Run at start-up only, under the state folder's lock: no other upload can be writing them then.
    """
    removed = []
    for partial in sorted(datasets_dir.glob(".ds-*.part")) if datasets_dir.is_dir() else []:
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial.name)
    return removed


def save_dataset(images: list[tuple[str | None, bytes]], labels: list[tuple[str | None, bytes]], datasets_dir: Path,
                 validation: int | None) -> dict[str, Any]:
    """Store uploaded image/label pairs (paired in upload order) with a datalist; returns its summary.

    The last ``validation`` pairs (default: a fifth, at least one) form the validation split.
    """
    if len(images) != len(labels) or len(images) < 2:
        raise BadRequest(f"send at least two cases as the same number of 'images' and 'labels' parts "
                         f"(got {len(images)} images, {len(labels)} labels)")
    validation = max(1, len(images) // 5) if validation is None else validation
    if not 1 <= validation < len(images):
        raise BadRequest(f"validation must be between 1 and {len(images) - 1}")
    names = {}
    for kind, parts in (("images", images), ("labels", labels)):
        names[kind] = [_check_name(name) for name, _ in parts]
        if len(set(names[kind])) != len(names[kind]):
            raise BadRequest(f"duplicate file names among the {kind}")
    dataset_id = f"ds-{secrets.token_hex(6)}"
    folder = datasets_dir / dataset_id
    partial = datasets_dir / f".{dataset_id}.part"  # renamed onto ``folder`` once complete
    items = []
    try:
        for kind, parts in (("images", images), ("labels", labels)):
            (partial / kind).mkdir(parents=True, exist_ok=True)
            for name, (_, data) in zip(names[kind], parts):
                (partial / kind / name).write_bytes(data)
                _check_uploaded_image(partial / kind / name, kind)
            items.append([f"{kind}/{n}" for n in names[kind]])
        pairs = [{"image": i, "label": lab} for i, lab in zip(*items)]
        datalist = {"training": pairs[:-validation], "validation": pairs[-validation:]}
        (partial / "datalist.json").write_text(json.dumps(datalist, indent=2))
        partial.rename(folder)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(f"the server's disk is full: the dataset of {len(images)} cases was not "
                                      f"saved (nothing of it was kept); free space and upload again") from None
        raise
    return {"dataset_id": dataset_id, "training": len(datalist["training"]), "validation": validation}
