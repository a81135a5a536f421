import json

import numpy as np
import pytest
from helpers import annotation_config, phantom, segmentation_config, write_model

from engines.config.model import ModelConfig
from engines.data.io import Volume, read_volume, write_volume_file
from engines.errors import ConfigError, InvalidInputError
from engines.evaluation.batch import case_name, find_images, infer_cases
from engines.evaluation.scoring import evaluate_model


def dataset(folder, n=2):
    items = []
    for i in range(n):
        volume, mask = phantom(center=(18 + i, 25, 15))
        write_volume_file(Volume(volume.array, volume.geometry), folder / "images" / f"case{i}.nii.gz")
        write_volume_file(Volume(mask, volume.geometry), folder / "labels" / f"case{i}.nii.gz")
        items.append({"image": f"images/case{i}.nii.gz", "label": f"labels/case{i}.nii.gz"})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": items[:1], "validation": items}))
    return path


def test_masks_are_written_on_each_input_grid_and_named_after_it(tmp_path):
    config = write_model(tmp_path / "model", "seg", segmentation_config(
        writers=[{"name": "WriteNifti"}, {"name": "WriteImage", "args": {"suffix": ".mha", "dtype": "uint16"}}]))
    dataset(tmp_path / "data")
    cases = find_images(tmp_path / "data" / "images")
    done = []
    written = infer_cases(config, cases, tmp_path / "out", progress=lambda n, total, name: done.append((n, total, name)))
    assert [p.name for p in written] == ["case0.nii.gz", "case0.mha", "case1.nii.gz", "case1.mha"]
    assert done == [(1, 2, "case0"), (2, 2, "case1")]
    source = read_volume(tmp_path / "data" / "images" / "case0.nii.gz")
    nifti, mha = read_volume(written[0]), read_volume(written[1])
    assert nifti.shape == source.shape and nifti.array.dtype == np.uint8 and mha.array.dtype == np.uint16
    np.testing.assert_allclose(nifti.geometry.direction, source.geometry.direction, atol=1e-6)
    np.testing.assert_array_equal(nifti.array, mha.array)


def test_writers_are_validated():
    with pytest.raises(ValueError, match="writes NIfTI"):
        ModelConfig.model_validate(segmentation_config(writers=[{"name": "WriteNifti", "args": {"suffix": ".mha"}}]))
    with pytest.raises(ValueError):
        ModelConfig.model_validate(segmentation_config(writers=[{"name": "WritePng"}]))


def test_extreme_point_models_get_points_from_the_labels(tmp_path):
    datalist = dataset(tmp_path / "data")
    config = write_model(tmp_path / "model", "ann", annotation_config())
    summary = evaluate_model(config, datalist, tmp_path / "report", perturbation=2.0)
    assert list(summary) == ["hippocampus"] and summary["hippocampus"]["n"] == 2
    assert (tmp_path / "report" / "raw.csv").read_text().count("\n") == 3
    with pytest.raises(InvalidInputError, match="needs a label"):
        infer_cases(config, find_images(tmp_path / "data" / "images"), tmp_path / "out")


def test_case_names_and_folders():
    assert case_name("/a/b/hippocampus_001.nii.gz") == "hippocampus_001"
    assert case_name(["/d/brats_pat1/flair.nii.gz", "/d/brats_pat1/t1c.nii.gz"]) == "brats_pat1"
    with pytest.raises(ConfigError):
        infer_cases("/nonexistent/model.json", [], "/tmp/unused")
