import json

import pytest
from helpers import segmentation_config

from engines.backends.selection import MAX_DICE_DELTA, choose_export, file_sha256
from engines.config.model import ModelConfig
from engines.hardware import Hardware

CASCADE_LAKE = Hardware("Intel Xeon (Cascade Lake)", frozenset({"avx2", "avx512f", "avx512_vnni"}), 2)
SAPPHIRE_RAPIDS = Hardware("Intel Xeon (Sapphire Rapids)", frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), 2)


def _export(root, name, fmt="openvino", precision="fp32", passed=True, dice_delta=0.0, cpu="elsewhere",
            latency=10.0, members=1):
    folder = root / name
    folder.mkdir()
    weights = root / "model.pt"  # what segmentation_config() names
    if not weights.exists():
        weights.write_bytes(b"weights")
    for i in range(members):
        (folder / f"member{i + 1}.bin").write_bytes(b"x")
    report = {"format": fmt, "precision": precision, "passed": passed, "device": "cpu",
              "hardware": {"cpu": cpu, "gpu": None}, "validation": {"dice_delta": dice_delta},
              "members": [{"artifact": f"member{i + 1}.bin", "latency_ms": latency, "weights_sha256": file_sha256(weights)}
                          for i in range(members)]}
    (folder / "export_report.json").write_text(json.dumps(report))
    return name


def _config(exports):
    return ModelConfig.model_validate(segmentation_config(model_format="auto", exports=exports))


def test_auto_takes_native_bf16_only_where_the_cpu_has_it(tmp_path):
    exports = [_export(tmp_path, "ov32"), _export(tmp_path, "ov16", precision="bf16", dice_delta=0.0004)]
    assert choose_export(_config(exports), tmp_path, SAPPHIRE_RAPIDS, "cpu").folder.name == "ov16"
    assert choose_export(_config(exports), tmp_path, CASCADE_LAKE, "cpu").folder.name == "ov32"  # bf16 emulated


def test_auto_skips_failed_reports_large_dice_shifts_missing_files_and_runtimes(tmp_path):
    exports = [_export(tmp_path, "failed", passed=False),
               _export(tmp_path, "shifted", precision="bf16", dice_delta=-MAX_DICE_DELTA),
               _export(tmp_path, "notrt", fmt="tensorrt"),
               _export(tmp_path, "twonets", members=2)]
    assert choose_export(_config(exports), tmp_path, SAPPHIRE_RAPIDS, "cpu") is None
    good = _export(tmp_path, "good", fmt="onnx")
    (tmp_path / good / "member1.bin").unlink()
    assert choose_export(_config([*exports, good]), tmp_path, SAPPHIRE_RAPIDS, "cpu") is None


def test_latency_measured_on_this_cpu_decides_otherwise_openvino_first(tmp_path):
    here = SAPPHIRE_RAPIDS.cpu_model
    exports = [_export(tmp_path, "ov", latency=30.0), _export(tmp_path, "ort", fmt="onnx", latency=50.0)]
    assert choose_export(_config(exports), tmp_path, SAPPHIRE_RAPIDS, "cpu").folder.name == "ov"
    measured = [_export(tmp_path, "ov_here", latency=30.0, cpu=here),
                _export(tmp_path, "ort_here", fmt="onnx", latency=12.0, cpu=here)]
    assert choose_export(_config(exports + measured), tmp_path, SAPPHIRE_RAPIDS, "cpu").folder.name == "ort_here"


def test_exports_belong_to_auto_configs_only():
    with pytest.raises(ValueError, match="model_format 'auto'"):
        ModelConfig.model_validate(segmentation_config(exports=["x"]))


def test_an_export_of_other_weights_is_never_served(tmp_path):
    exports = [_export(tmp_path, "ov")]
    assert choose_export(_config(exports), tmp_path, CASCADE_LAKE, "cpu") is not None
    (tmp_path / "model.pt").write_bytes(b"fine-tuned weights")  # a new version in place of the exported one
    assert choose_export(_config(exports), tmp_path, CASCADE_LAKE, "cpu") is None


def _with_speed(root, name, speedup, pytorch_ms=None, **kwargs):
    _export(root, name, **kwargs)
    report_path = root / name / "export_report.json"
    report = json.loads(report_path.read_text())
    report["speedup_vs_pytorch"] = speedup
    if pytorch_ms is not None:
        for member in report["members"]:
            member["pytorch_latency_ms"] = pytorch_ms
    report_path.write_text(json.dumps(report))
    return name


def test_auto_serves_the_fastest_engine_not_the_one_timed_on_this_machine(tmp_path):
    # The reported case: ONNX exported here ran 0.75x PyTorch (376 vs 282 ms); OpenVINO, exported on
    # another machine, ran 4.12x PyTorch there. Serving ONNX made a click twice as slow.
    here = SAPPHIRE_RAPIDS.cpu_model
    exports = [_with_speed(tmp_path, "ov_elsewhere", 4.12, latency=55.0),
               _with_speed(tmp_path, "ort_here", 0.75, pytorch_ms=282.0, fmt="onnx", latency=376.0, cpu=here)]
    assert choose_export(_config(exports), tmp_path, SAPPHIRE_RAPIDS, "cpu").folder.name == "ov_elsewhere"
    # A faster export timed here still beats a slower one timed elsewhere (282 / 2.0 = 141 ms estimated).
    exports = [_with_speed(tmp_path, "ov_slow_elsewhere", 2.0),
               _with_speed(tmp_path, "ort_fast_here", 3.0, pytorch_ms=282.0, fmt="onnx", latency=94.0, cpu=here)]
    assert choose_export(_config(exports), tmp_path, SAPPHIRE_RAPIDS, "cpu").folder.name == "ort_fast_here"


def test_an_export_slower_than_pytorch_is_never_served(tmp_path):
    exports = [_with_speed(tmp_path, "slow", 0.75, fmt="onnx", cpu=SAPPHIRE_RAPIDS.cpu_model)]
    assert choose_export(_config(exports), tmp_path, SAPPHIRE_RAPIDS, "cpu") is None


def test_the_formats_a_config_accepts_are_the_registered_export_formats():
    from engines.backends.formats import FORMATS
    from engines.config.model import ARTIFACT_FORMATS
    from engines.export.exporter import ExportOptions
    from server.jobs.commands import export_formats

    assert set(ARTIFACT_FORMATS) == set(FORMATS) == set(export_formats())
    for name, spec in FORMATS.items():
        for precision in spec.precisions:
            ExportOptions(format=name, precision=precision).validate()
