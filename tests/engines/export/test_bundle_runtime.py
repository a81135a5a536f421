"""A MONAI bundle's network exported to ONNX with our parity report, and served by its pool entry."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from bundle_helpers import SPLEEN_INFERENCE, SPLEEN_METADATA, ct_image, entry, write_bundle
from helpers import write_phantom_datalist

from engines.backends import describe
from engines.backends.selection import file_sha256
from engines.export.bundle_runtime import export_bundle_network
from engines.export.exporter import ExportOptions
from engines.serving.pool import EnginePool

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_export")
    bundle = write_bundle(root / "spleen", copy.deepcopy(SPLEEN_INFERENCE), SPLEEN_METADATA)
    datalist = write_phantom_datalist(root / "data", n=2)
    report = export_bundle_network(bundle, ExportOptions("onnx", repeats=2), datalist, root / "onnx",
                                   progress=lambda _: None)
    return bundle, root / "onnx", report


def test_the_export_report_proves_parity_through_the_bundles_pipeline(exported):
    bundle, folder, report = exported
    assert report["passed"] and report["format"] == "onnx" and report["mask_dice_min"] >= 0.999
    [member] = report["members"]
    assert member["max_abs_diff"] < 1e-2 and member["input_shape"] == [1, 1, 96, 96, 96]  # logits of +-100s
    assert member["weights_sha256"] == file_sha256(bundle / "models" / "model.pt")
    assert (folder / member["artifact"]).is_file() and (folder / "export_report.json").is_file()


def test_a_bundle_entry_serves_its_verified_export_and_never_one_of_other_weights(exported, tmp_path):
    bundle, folder, _ = exported
    volume = ct_image()
    pool = EnginePool()
    plain = pool.load(entry(bundle), tmp_path, warmup=False).engine
    served = pool.load(entry(bundle, model_format="onnx", exports=[str(folder)]), tmp_path, warmup=False).engine
    assert describe(served.backend)["runtime"] == "onnxruntime"
    assert describe(plain.backend)["runtime"] == "pytorch"
    np.testing.assert_array_equal(served.infer(volume, {}).mask, plain.infer(volume, {}).mask)

    retrained = tmp_path / "spleen"
    shutil.copytree(bundle, retrained)
    state = torch.load(retrained / "models" / "model.pt", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, retrained / "models" / "model.pt")
    auto = pool.load(entry(retrained, model_format="auto", exports=[str(folder)]), tmp_path, warmup=False)
    assert describe(auto.engine.backend)["runtime"] == "pytorch"  # the export was made from other weights
    named = pool.load(entry(retrained, model_format="onnx", exports=[str(folder)]), tmp_path, warmup=False)
    assert named.status == "unavailable" and "no folder in 'exports' holds a passed onnx export" in named.error
