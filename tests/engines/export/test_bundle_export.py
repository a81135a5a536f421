"""``aiaa export --format bundle``: MONAI's own runner and our bundle engine give our server's masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import ct_image, entry, only_file, run_monai
from helpers import annotation_config, segmentation_config, write_model

from engines.data.io import read_volume, write_volume_file
from engines.errors import ConfigError
from engines.evaluation.batch import load_engine
from engines.export.bundle import export_bundle
from engines.tasks.bundle import load_bundle_engine
from server.cli.main import main


def _model(tmp_path: Path, **overrides) -> Path:
    """A tiny 2-label model with our hippocampus pipeline (percentiles, z-score, Gaussian sliding window)."""
    cfg = segmentation_config(batch_size=2, **overrides)
    path = write_model(tmp_path / "model", "tiny_seg", cfg)
    weights = path.parent / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({k: v * 3.0 if v.is_floating_point() else v for k, v in state.items()}, weights)  # every label shows
    return path


def test_an_exported_bundle_gives_our_masks_under_monai_and_back_here(tmp_path):
    config = _model(tmp_path, post_transforms=[
        {"name": "KeepLargestConnectedComponentd", "args": {"keys": "pred", "applied_labels": [1]}}])
    images = tmp_path / "images"
    images.mkdir()
    write_volume_file(ct_image(), images / "case.nii.gz", dtype=np.float32)
    volume = read_volume(images / "case.nii.gz")
    ours = load_engine(config).infer(volume, {}).mask
    assert set(np.unique(ours)) == {0, 1, 2}

    assert main(["export", "--config", str(config), "--format", "bundle", "--output", str(tmp_path / "bundle")]) == 0
    bundle = tmp_path / "bundle"
    for name in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (bundle / name).is_file(), name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "anterior", "2": "posterior"}
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert [t["_target_"] for t in inference["preprocessing"]["transforms"]] == [
        "LoadImaged", "EnsureChannelFirstd", "ScaleIntensityRangePercentilesd", "NormalizeIntensityd"]
    assert [t["_target_"] for t in inference["postprocessing"]["transforms"]] == [
        "AsDiscreted", "KeepLargestConnectedComponentd", "SaveImaged"]

    run_monai(bundle, None, tmp_path / "eval", dataset_dir=str(images))
    np.testing.assert_array_equal(read_volume(only_file(tmp_path / "eval")).array, ours)

    back = load_bundle_engine(entry(bundle), Path("/"))
    assert back.labels == ["anterior", "posterior"]
    np.testing.assert_array_equal(back.infer(volume, {}).mask, ours)


def test_models_a_bundle_cannot_reproduce_are_refused(tmp_path):
    annotation = write_model(tmp_path / "a", "annotation", annotation_config())
    with pytest.raises(ConfigError, match="only segmentation models"):
        export_bundle(annotation, tmp_path / "out_a")
    cropped = _model(tmp_path / "c", pre_transforms=[
        {"name": "transforms.LoadNifti", "args": {"fields": "image"}},
        {"name": "transforms.VolumeTo4dArray", "args": {"fields": "image"}},
        {"name": "CropForegroundResized", "args": {"keys": "image", "source_key": "image", "roi": [32, 32, 32]}},
    ])
    with pytest.raises(ConfigError, match="'CropForegroundResized' is our own"):
        export_bundle(cropped, tmp_path / "out_c")
    assert not (tmp_path / "out_c").exists()
    flipped = _model(tmp_path / "f", tta_flips=[[0]])
    with pytest.raises(ConfigError, match="tta_flips"):
        export_bundle(flipped, tmp_path / "out_f")
