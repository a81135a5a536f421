"""Zipped bundles are unpacked inside their folder only: no ``../``, no absolute paths, no links, bounded size."""

from __future__ import annotations

import stat
import zipfile

import pytest

from engines.errors import InputTooLargeError, InvalidInputError
from engines.tasks.bundle_archive import unpack_bundle


def _zip(path, entries: dict[str, bytes], links: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_a_model_zoo_zip_unpacks_to_its_one_folder(tmp_path):
    archive = _zip(tmp_path / "b.zip", {"spleen/configs/inference.json": b"{}", "spleen/models/model.pt": b"w"})
    root = unpack_bundle(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "spleen"
    assert (root / "configs" / "inference.json").read_bytes() == b"{}"


def test_a_flat_zip_is_the_bundle_itself(tmp_path):
    archive = _zip(tmp_path / "b.zip", {"configs/inference.yaml": b"a: 1", "models/model.pt": b"w"})
    assert unpack_bundle(archive, tmp_path / "out") == tmp_path / "out"


@pytest.mark.parametrize("name", ["../evil.py", "configs/../../evil.py", "/etc/evil", "C:/evil", "..\\evil.py"])
def test_entries_outside_the_folder_refuse_the_whole_archive(tmp_path, name):
    archive = _zip(tmp_path / "b.zip", {"configs/inference.json": b"{}", name: b"x"})
    with pytest.raises(InvalidInputError, match="outside the bundle folder"):
        unpack_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.py").exists()


def test_links_are_refused(tmp_path):
    archive = _zip(tmp_path / "b.zip", {"configs/inference.json": b"{}"}, links={"models/model.pt": "/etc/passwd"})
    with pytest.raises(InvalidInputError, match="is a link"):
        unpack_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_size_and_content_limits(tmp_path):
    big = _zip(tmp_path / "big.zip", {"configs/inference.json": b"0" * 5000})
    with pytest.raises(InputTooLargeError, match="limit is 1000"):
        unpack_bundle(big, tmp_path / "out", max_bytes=1000)
    with pytest.raises(InvalidInputError, match="not a zip"):
        (tmp_path / "not.zip").write_bytes(b"plain text")
        unpack_bundle(tmp_path / "not.zip", tmp_path / "out")
    with pytest.raises(InvalidInputError, match="no MONAI bundle"):
        unpack_bundle(_zip(tmp_path / "none.zip", {"a/readme.md": b"hi", "b/x": b"y"}), tmp_path / "out")
    assert not (tmp_path / "out").exists()
