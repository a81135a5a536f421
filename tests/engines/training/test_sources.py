"""Training sources packed: the volumes cropped, quantised and compressed, read back as training sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import deepgrow_config, packed_phantom_train_config, phantom

from engines.errors import ConfigError
from engines.training.interactive import train_interactive
from engines.training.sources import Source, crop_around_labels, load_sources_pack, save_sources_pack


def source(dataset: str, shape=(60, 50, 20), spacing=(1.0, 1.0, 3.0)) -> Source:
    volume, mask = phantom(shape=shape, center=(30, 25, 10), radii=(6, 5, 3))
    label = mask.astype(np.int16)
    label[:30] *= 2
    image = np.asarray(volume.array, np.float32)
    image = (image - image.mean()) / image.std()
    return Source(dataset, f"{dataset}_case", image, label, spacing, {"a": (1,), "b": (2,), "both": (1, 2)})


def test_crop_keeps_the_labels_and_a_margin_in_millimetres():
    label = np.zeros((100, 100, 30), np.uint8)
    label[40:60, 45:55, 10:20] = 1
    region = crop_around_labels(label, (1.0, 2.0, 5.0), fraction=0.5, margin_mm=10.0)
    # x: 20 voxels of 1 mm -> 10 + 10 mm a side; y: 10 of 2 mm -> (10 + 10) / 2 voxels; z: 10 of 5 mm -> (25 + 10) / 5
    assert region == (slice(20, 80), slice(35, 65), slice(3, 27))
    assert crop_around_labels(np.zeros((5, 5, 5), np.uint8), (1, 1, 1)) == (slice(0, 5),) * 3


def test_a_pack_reads_back_the_labels_exactly_and_the_intensities_within_a_quantisation_step(tmp_path):
    sources = [source("hippo"), source("heart", spacing=(1.5, 1.5, 8.0))]
    index = save_sources_pack(tmp_path / "pack.npz", sources, fraction=0.5, margin_mm=5.0)
    assert [e["dataset"] for e in index["sources"]] == ["hippo", "heart"]
    back = load_sources_pack(tmp_path / "pack.npz")
    for original, entry, packed in zip(sources, index["sources"], back):
        region = tuple(slice(a, b) for a, b in entry["region"])
        assert packed.image.shape == original.image[region].shape != original.image.shape  # cropped
        assert np.array_equal(packed.label, original.label[region])
        assert original.label[region].sum() == original.label.sum()  # every labelled voxel kept
        step = (original.image.max() - original.image.min()) / 255
        assert np.abs(packed.image - original.image[region]).max() <= step / 2 + 1e-5
        assert packed.spacing == original.spacing and packed.structures == original.structures
        assert packed.dataset == original.dataset and packed.case == original.case
    assert [s.dataset for s in load_sources_pack(tmp_path / "pack.npz", ["heart"])] == ["heart"]


def test_a_file_that_is_not_a_pack_is_refused(tmp_path):
    (tmp_path / "other.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a sources pack"):
        load_sources_pack(tmp_path / "other.npz")
    np.savez(tmp_path / "foreign.npz", index=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(ConfigError, match="not a sources pack"):
        load_sources_pack(tmp_path / "foreign.npz")
    wide = source("ct")
    wide.label[0, 0, 0] = 300
    with pytest.raises(ConfigError, match="0..255"):
        save_sources_pack(tmp_path / "wide.npz", [wide])


def test_pack_a_train_configs_volumes_then_train_from_the_pack_alone(tmp_path):
    config = deepgrow_config(tmp_path)
    train_config = packed_phantom_train_config(tmp_path, max_steps=2)

    # The images are gone: the run trains from the pack (validation, which reads files, is off).
    for image in (tmp_path / "data" / "images").iterdir():
        image.unlink()
    messages: list[str] = []
    metrics = train_interactive(config, train_config, None, tmp_path / "run", progress=messages.append)
    assert metrics["steps"] == 2 and metrics["train_volumes"] == 2  # the datalist's two training cases
    assert any("from the sources pack" in m for m in messages)
