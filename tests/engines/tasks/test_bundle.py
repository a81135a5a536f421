"""Serving MONAI bundle folders: served masks equal MONAI's own runner, and broken bundles are refused clearly.

The bundles are written here with tiny networks and random weights, mirroring the public model-zoo
configs: ``spleen_ct_segmentation`` (current ``initialize``/``run`` ids, Orientationd + Spacingd
+ sliding window + Invertd, JSON and YAML) and ``brats_mri_segmentation`` 0.3.0 (legacy
``evaluating`` id, a list of modality files, sigmoid + threshold + a Lambdad giving labels 1, 2, 4).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import (
    BRATS_INFERENCE,
    BRATS_METADATA,
    SPLEEN_INFERENCE,
    SPLEEN_METADATA,
    SPLEEN_NET,
    ct_image,
    entry,
    mr_channels,
    only_file,
    run_monai,
    write_bundle,
)

from engines.config.model import PoolEntry
from engines.data.io import read_modalities, read_volume, write_volume_file
from engines.errors import BackendUnavailableError, ConfigError, InvalidImageError
from engines.serving.pool import EnginePool
from engines.tasks.bundle import BundleEngine, load_bundle_engine

# -- served masks equal MONAI's own runner ---------------------------------------------------------


@pytest.mark.parametrize("yaml_config", [False, True], ids=["json", "yaml"])
def test_spleen_layout_serves_what_monai_writes(tmp_path, yaml_config):
    inference = copy.deepcopy(SPLEEN_INFERENCE)
    bundle = write_bundle(tmp_path / "spleen", inference, SPLEEN_METADATA, yaml_config=yaml_config)
    images = tmp_path / "data" / "imagesTs"
    images.mkdir(parents=True)
    write_volume_file(ct_image(), images / "case_001.nii.gz", dtype=np.float32)
    # A CPU-sized window, given to both runs the same way.
    run_monai(bundle, None, tmp_path / "eval", dataset_dir=str(tmp_path / "data"), **{"inferer#roi_size": "[32,32,32]"})
    expected = read_volume(only_file(tmp_path / "eval")).array

    engine = load_bundle_engine(entry(bundle, overrides={"inferer#roi_size": [32, 32, 32]}), Path("/"))
    result = engine.infer(read_volume(images / "case_001.nii.gz"), {})

    assert isinstance(engine, BundleEngine)
    assert engine.info()["labels"] == ["spleen"] and engine.info()["type"] == "segmentation"
    assert engine.version == "0.2.0"
    assert result.mask.shape == expected.shape
    assert set(np.unique(result.mask)) == {0, 1}  # both labels present: the comparison means something
    np.testing.assert_array_equal(result.mask, expected.astype(np.uint8))


def test_legacy_brats_layout_with_two_modalities_serves_what_monai_writes(tmp_path):
    bundle = write_bundle(tmp_path / "brats", copy.deepcopy(BRATS_INFERENCE), BRATS_METADATA, seed=3)
    data = tmp_path / "data"
    data.mkdir()
    names = []
    for index, volume in enumerate(mr_channels()):
        names.append(f"case_{index}.nii.gz")
        write_volume_file(volume, data / names[-1], dtype=np.float32)
    (bundle / "configs" / "datalist.json").write_text(json.dumps({"testing": [{"image": names}]}))
    run_monai(bundle, "evaluating", tmp_path / "eval", dataset_dir=str(data), **{"inferer#roi_size": "[32,32,32]"})
    expected = read_volume(only_file(tmp_path / "eval")).array

    engine = load_bundle_engine(entry(bundle, overrides={"inferer#roi_size": [32, 32, 32]}), Path("/"))
    result = engine.infer(read_modalities([data / n for n in names]), {})

    assert engine.input_channels() == 2
    assert engine.labels == ["Tumor core", "Whole tumor", "Enhancing tumor"]
    assert set(np.unique(result.mask)) - {0} and set(np.unique(result.mask)) <= {0, 1, 2, 4}
    np.testing.assert_array_equal(result.mask, expected.astype(np.uint8))
    with pytest.raises(InvalidImageError, match="2 image channels"):
        engine.infer(mr_channels()[0], {})


# -- refused at load with what is wrong ------------------------------------------------------------


def _broken(tmp_path: Path, inference: dict | None = None, metadata: dict | None = None, **options) -> Path:
    return write_bundle(tmp_path / "broken", inference or copy.deepcopy(SPLEEN_INFERENCE),
                        metadata or copy.deepcopy(SPLEEN_METADATA), **options)


@pytest.mark.parametrize("ids", [["network_def"], ["preprocessing", "inferer"]])
def test_a_bundle_without_what_serving_needs_is_refused_with_what_is_missing(tmp_path, ids):
    inference = copy.deepcopy(SPLEEN_INFERENCE)
    weights_net = inference["network_def"]
    for key in ids:
        del inference[key]
    bundle = _broken(tmp_path, inference, weights_net=weights_net)
    with pytest.raises(ConfigError, match=f"lacks {', '.join(ids)}"):
        load_bundle_engine(entry(bundle), Path("/"))


def test_a_newer_monai_version_is_refused_comparing_versions_not_strings(tmp_path):
    # "1.10.0" < "1.6.1" as strings, but it is the newer release.
    bundle = _broken(tmp_path, metadata={**SPLEEN_METADATA, "monai_version": "1.10.0"})
    with pytest.raises(ConfigError, match=r"needs MONAI 1\.10\.0 .*upgrade monai"):
        load_bundle_engine(entry(bundle), Path("/"))


def test_weights_that_do_not_match_network_def_are_refused(tmp_path):
    bundle = _broken(tmp_path, weights_net={**SPLEEN_NET, "out_channels": 3})
    with pytest.raises(ConfigError, match=r"weights do not match network_def \(UNet\)"):
        load_bundle_engine(entry(bundle), Path("/"))


def test_a_missing_package_says_install_extra_bundle(tmp_path):
    inference = copy.deepcopy(SPLEEN_INFERENCE)
    inference["network_def"] = {**SPLEEN_NET, "_target_": "aiaa_not_installed_pkg.Net"}
    bundle = _broken(tmp_path, inference, weights_net=SPLEEN_NET)
    with pytest.raises(BackendUnavailableError, match=r"install extra bundle"):
        load_bundle_engine(entry(bundle), Path("/"))


@pytest.mark.parametrize("overrides", [
    {"inferer#roi_size": "$[8] * 3"},
    {"network_def#channels": ["@device"]},
    {"inferer": {"_target_": "os.system", "command": "true"}},
    {"network_def#_target_": "os.system"},
    {"inferer#roi_size": "%configs/other.json#roi"},
])
def test_overrides_take_literal_values_only(overrides):
    with pytest.raises(ValueError, match="not allowed"):
        PoolEntry.model_validate({"name": "b", "bundle": "somewhere", "overrides": overrides})


def test_an_override_of_an_id_the_config_lacks_is_refused(tmp_path):
    bundle = _broken(tmp_path)
    with pytest.raises(ConfigError, match="override 'nothing#here': no such id"):
        load_bundle_engine(entry(bundle, overrides={"nothing#here": 1}), Path("/"))


def test_a_broken_bundle_leaves_the_others_serving(tmp_path):
    write_bundle(tmp_path / "good", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA)
    bad = copy.deepcopy(SPLEEN_INFERENCE)
    del bad["inferer"]
    write_bundle(tmp_path / "bad", bad, SPLEEN_METADATA)
    pool_file = tmp_path / "engine_pool.json"
    pool_file.write_text(json.dumps([
        {"name": "good", "bundle": "good", "overrides": {"inferer#roi_size": [32, 32, 32]}},
        {"name": "bad", "bundle": "bad"},
    ]))
    pool = EnginePool.from_file(pool_file, warmup=True)
    assert pool.record("good").status == "ready"
    assert pool.record("bad").status == "unavailable" and "lacks inferer" in pool.record("bad").error
    assert isinstance(pool.get("good"), BundleEngine)


def test_swin_unetr_btcv_layout_needs_no_itk_to_serve(tmp_path):
    # swin_unetr_btcv_segmentation reads with ITKReader (itk is not installed here): serving drops LoadImaged.
    inference = copy.deepcopy(SPLEEN_INFERENCE)
    inference["preprocessing"]["transforms"][0]["reader"] = "ITKReader"
    inference["preprocessing"]["transforms"][4].update(a_min=-175, a_max=250, b_min=0.0, b_max=1.0)
    inference["network_def"]["out_channels"] = 14
    organs = ["spleen", "rkid", "lkid", "gall", "eso", "liver", "sto", "aorta", "IVC", "veins", "pancreas", "rad",
              "lad"]
    metadata = copy.deepcopy(SPLEEN_METADATA)
    metadata["network_data_format"]["outputs"]["pred"]["channel_def"] = {
        "0": "background", **{str(i + 1): name for i, name in enumerate(organs)}}
    bundle = write_bundle(tmp_path / "swin_unetr_btcv_segmentation", inference, metadata)
    engine = load_bundle_engine(entry(bundle, overrides={"inferer#roi_size": [32, 32, 32]}), Path("/"))
    mask = engine.infer(ct_image(), {}).mask
    assert engine.labels == organs
    assert mask.shape == ct_image().shape and mask.max() <= 13


def test_transform_lists_built_by_expressions_lose_their_loader_and_writer_too(tmp_path):
    literal = write_bundle(tmp_path / "literal", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA, seed=5)
    built = copy.deepcopy(SPLEEN_INFERENCE)
    built["preprocessing_transforms"] = built["preprocessing"]["transforms"]
    built["preprocessing"]["transforms"] = "$@preprocessing_transforms + []"
    built["postprocessing_transforms"] = built["postprocessing"]["transforms"]
    built["postprocessing"]["transforms"] = "$list(@postprocessing_transforms)"
    expression = write_bundle(tmp_path / "expression", built, SPLEEN_METADATA, seed=5)
    overrides = {"inferer#roi_size": [32, 32, 32]}
    volume = ct_image()
    expected = load_bundle_engine(entry(literal, overrides=overrides), Path("/")).infer(volume, {}).mask
    served = load_bundle_engine(entry(expression, overrides=overrides), Path("/")).infer(volume, {}).mask
    np.testing.assert_array_equal(served, expected)
    assert not (tmp_path / "expression" / "eval").exists()  # SaveImaged never ran
