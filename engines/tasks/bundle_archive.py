"""Unpacking a zipped MONAI bundle safely: nothing outside its folder, no links, bounded size.

Every entry is checked before anything is written: absolute paths, ``..`` parts, drive names,
symbolic links and other special files refuse the whole archive, as does an archive that
declares more bytes or files than allowed; the bytes written are counted again while
unpacking (a declared size can lie).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from engines.errors import InputTooLargeError, InvalidInputError

__all__ = ["unpack_bundle"]

_CHUNK = 1 << 20


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        raise InvalidInputError(f"the archive entry {info.filename!r} points outside the bundle folder")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise InvalidInputError(f"the archive entry {info.filename!r} is a link; bundles may hold plain files only")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise InvalidInputError(f"the archive entry {info.filename!r} is not a plain file or folder")
    return path


def unpack_bundle(archive: str | Path, dest: str | Path, max_bytes: int = 2 << 30, max_files: int = 10_000) -> Path:
    """Unpack the zipped bundle ``archive`` into the new folder ``dest``; return the bundle's folder.

    The bundle's folder is ``dest`` itself, or the one folder the archive holds everything in
    (model-zoo zips have ``<bundle name>/configs/...``); either must hold ``configs/``.

    Raises:
        InvalidInputError: not a zip, an unsafe entry, or no ``configs/`` folder (``dest`` is removed).
        InputTooLargeError: more than ``max_bytes`` unpacked or ``max_files`` entries.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"the upload is not a zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise InputTooLargeError(f"the archive holds {len(infos)} entries; the limit is {max_files}")
        paths = [_member_path(info) for info in infos]
        declared = sum(info.file_size for info in infos)
        if declared > max_bytes:
            raise InputTooLargeError(f"the archive unpacks to {declared} bytes; the limit is {max_bytes}")
        dest.mkdir(parents=True)
        try:
            _extract(zf, infos, paths, dest, max_bytes)
            return _bundle_root(dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _extract(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], paths: list[PurePosixPath], dest: Path,
             max_bytes: int) -> None:
    root = dest.resolve()
    written = 0
    for info, path in zip(infos, paths):
        target = (root / path).resolve()
        if root not in target.parents and target != root:
            raise InvalidInputError(f"the archive entry {info.filename!r} points outside the bundle folder")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise InvalidInputError(f"the archive holds {info.filename!r} twice")
        with zf.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise InputTooLargeError(f"the archive unpacks to more than {max_bytes} bytes")
                out.write(chunk)


def _bundle_root(dest: Path) -> Path:
    if (dest / "configs").is_dir():
        return dest
    children = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(children) == 1 and (children[0] / "configs").is_dir():
        return children[0]
    raise InvalidInputError("the archive holds no MONAI bundle (a configs/ folder, at the top or in its one folder)")
