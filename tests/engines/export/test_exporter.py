import json

import pytest
import torch
from helpers import (annotation_config, require_runtime, segmentation_config, write_model, write_phantom_datalist,
                     write_pool)

from engines.config.model import load_model_config
from engines.errors import ConfigError
from engines.export import exporter as export
from engines.export.exporter import ExportOptions, export_model
from engines.serving.pool import EnginePool
from server.cli.main import main

REPORT_KEYS = {"model", "format", "precision", "passed", "speedup_vs_pytorch", "hardware", "versions", "options",
               "members", "validation"}
MEMBER_KEYS = {"artifact", "max_abs_diff", "mask_dice_min", "latency_ms", "pytorch_latency_ms"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantom_datalist(tmp_path_factory.mktemp("data"), n=3)


def _ensemble(tmp_path, cfg, name="model"):
    for seed, member in enumerate(("a", "b")):
        write_model(tmp_path, f"{name}_{member}", {**cfg, "model_path": f"{member}.pt"}, seed=seed)
    ensemble = {k: v for k, v in cfg.items() if k != "model_path"}
    ensemble["ensemble"] = [{"model_path": "a.pt"}, {"model_path": "b.pt"}]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(ensemble))
    return path


@pytest.mark.parametrize("fmt", ["openvino", "onnx", "torchscript"])
def test_export_round_trip_writes_one_artifact_per_member_and_a_passing_report(tmp_path, dataset, fmt):
    require_runtime(fmt)
    config = _ensemble(tmp_path, annotation_config())
    out = tmp_path / "exports" / fmt
    report = export_model(config, ExportOptions(format=fmt, repeats=2), datalist=dataset, output=out,
                          progress=lambda _: None)
    assert REPORT_KEYS <= set(report) and report["passed"] is True
    assert json.loads((out / "export_report.json").read_text()) == report
    assert len(report["members"]) == 2
    for member in report["members"]:
        assert MEMBER_KEYS <= set(member)
        assert (out / member["artifact"]).is_file()
        assert member["mask_dice_min"] >= 0.999 and member["max_abs_diff"] < 1e-3
        assert member["latency_ms"] > 0 and member["pytorch_latency_ms"] > 0
    assert report["validation"]["cases"] == 1 and abs(report["validation"]["dice_delta"]) < 1e-3
    assert report["options"]["opt_shape"] == [1, 2, 32, 32, 32]


def test_auto_serves_the_passing_export_and_health_says_which(tmp_path, dataset):
    require_runtime("openvino")
    config_path = write_model(tmp_path, "seg", segmentation_config())
    export_model(config_path, ExportOptions(format="openvino", repeats=2), datalist=dataset,
                 output=tmp_path / "exports" / "ov", progress=lambda _: None)
    cfg = json.loads(config_path.read_text())
    cfg.update(model_format="auto", exports=["exports/ov"])
    config_path.write_text(json.dumps(cfg))
    pool_path = write_pool(tmp_path, [{"name": "seg", "class": "SegmentationEngine",
                                       "module": "medical.aas.segmentation", "config_file": "seg.json"}])
    pool = EnginePool.from_file(pool_path)
    served = pool.records()[0].summary()["backend"]
    report = json.loads((tmp_path / "exports" / "ov" / "export_report.json").read_text())
    if torch.cuda.is_available() or report["speedup_vs_pytorch"] < 1:  # a CPU export; or slower than PyTorch
        assert served["runtime"] == "pytorch"
    else:
        assert served == {"runtime": "openvino", "precision": "fp32", "device": "cpu"}
    assert load_model_config(config_path).model_format == "auto"


class _Negated:
    """An artifact that went wrong: every logit has the wrong sign."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, x):
        return -self.backend(x)

    def close(self):
        self.backend.close()


def test_a_failing_parity_check_exits_non_zero_and_auto_does_not_serve_it(tmp_path, dataset, monkeypatch, capsys):
    config_path = write_model(tmp_path, "ann", annotation_config())
    real = export.load_artifact
    monkeypatch.setattr(export, "load_artifact", lambda *a, **k: _Negated(real(*a, **k)))
    out = tmp_path / "exports" / "onnx"
    code = main(["export", "--config", str(config_path), "--format", "onnx", "--datalist", str(dataset),
                 "--output", str(out), "--repeats", "2"])
    assert code == 1
    line = capsys.readouterr().out
    assert "FAILED" in line and "mask Dice" in line
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] is False and report["failures"]
    cfg = json.loads(config_path.read_text())
    cfg.update(model_format="auto", exports=["exports/onnx"])
    config_path.write_text(json.dumps(cfg))
    pool_path = write_pool(tmp_path, [{"name": "ann", "class": "Dextr3dCroppedEngine",
                                       "module": "medical.aas.dextr3dcropped", "config_file": "ann.json"}])
    assert EnginePool.from_file(pool_path).records()[0].summary()["backend"]["runtime"] == "pytorch"


def test_export_refuses_bad_options_with_a_message(tmp_path, dataset, capsys):
    config_path = write_model(tmp_path, "ann", annotation_config())
    assert main(["export", "--config", str(config_path), "--format", "onnx", "--precision", "int8",
                 "--datalist", str(dataset)]) == 2
    assert "onnx exports are built at fp32, fp16" in capsys.readouterr().err
    assert main(["export", "--config", str(config_path), "--format", "openvino"]) == 2
    assert "--datalist" in capsys.readouterr().err
    assert main(["export", "--config", str(config_path), "--format", "tensorrt", "--datalist", str(dataset)]) == 2
    assert "install extra tensorrt" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        export_model(config_path, ExportOptions(format="onnx", min_shape=(64, 64, 64)), datalist=dataset,
                     output=tmp_path / "x", progress=lambda _: None)


def test_a_failed_export_closes_every_backend_it_opened(tmp_path, dataset, monkeypatch):
    from engines.backends import TorchBackend

    closed = []
    original = TorchBackend.close
    monkeypatch.setattr(TorchBackend, "close", lambda self: closed.append(self) or original(self))

    def broken_converter(*args, **kwargs):
        raise ConfigError("the converter failed")

    monkeypatch.setattr(export, "write_artifact", broken_converter)
    config = _ensemble(tmp_path, annotation_config())
    with pytest.raises(ConfigError, match="converter failed"):
        export_model(config, ExportOptions(format="torchscript", repeats=1), datalist=dataset,
                     output=tmp_path / "out", progress=lambda _: None)
    assert len(closed) == 1  # the first network's PyTorch reference, opened before the failure


def test_the_default_output_is_under_runs_never_beside_the_weights(tmp_path):
    config_path = write_model(tmp_path / "models" / "seg", "seg", segmentation_config())
    out = export.default_output_dir(config_path, "openvino", "fp32")
    assert out == export.DEFAULT_ROOT / "seg" / "openvino_fp32" and str(out).startswith("runs")
    assert not out.resolve().is_relative_to((tmp_path / "models").resolve())
