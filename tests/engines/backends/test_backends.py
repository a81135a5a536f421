import importlib

import numpy as np
import pytest
import torch
from helpers import TINY_UNET, require_runtime, segmentation_config, write_model, write_pool

from engines.backends import MeanEnsemble, TorchBackend, describe, load_artifact, load_backend
from engines.backends.tensorrt import ShapeProfile
from engines.config.model import ComponentSpec, ModelConfig
from engines.errors import BackendUnavailableError, ConfigError
from engines.export.exporter import ExportOptions, write_artifact
from engines.networks import build_network
from engines.serving.pool import EnginePool


def test_an_ensemble_config_loads_one_backend_that_averages_its_members(tmp_path):
    cfg = segmentation_config()
    singles = []
    for seed, name in enumerate(("a", "b")):
        write_model(tmp_path, name, {**cfg, "model_path": f"{name}.pt"}, seed=seed)
        singles.append(load_backend(ModelConfig.model_validate({**cfg, "model_path": f"{name}.pt"}), tmp_path))
    ensemble_cfg = {k: v for k, v in cfg.items() if k != "model_path"}
    ensemble_cfg["ensemble"] = [{"model_path": "a.pt"}, {"model_path": "b.pt"}]
    backend = load_backend(ModelConfig.model_validate(ensemble_cfg), tmp_path)
    assert isinstance(backend, MeanEnsemble) and len(backend.members) == 2
    x = torch.rand(1, 1, 16, 16, 16)
    a, b = singles[0](x), singles[1](x)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(backend(x), (a + b) / 2)
    assert describe(backend) == {"runtime": "pytorch", "precision": "fp32", "device": "cpu", "members": 2}
    backend.close()
    assert all(member.module is None for member in backend.members)


def _random_network(in_channels=2, out_channels=2, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = dict(TINY_UNET, args={**TINY_UNET["args"], "in_channels": in_channels, "out_channels": out_channels,
                                 "num_res_units": 1, "norm": "instance"})
    return build_network(ComponentSpec.model_validate(spec)).eval()


@pytest.mark.parametrize("fmt", ["openvino", "onnx", "torchscript"])
def test_each_runtime_matches_eager_pytorch_on_a_random_network(tmp_path, fmt):
    require_runtime(fmt)
    network = _random_network()
    example = torch.rand(1, 2, 24, 32, 16)
    profile = ShapeProfile.build(example.shape, max_batch=3)
    path = write_artifact(ExportOptions(format=fmt), network, example, profile, tmp_path, "net")
    backend = load_artifact(fmt, path, torch.device("cpu"))
    for batch in (1, 3):  # the batch axis stays dynamic up to --max-batch
        x = torch.rand(batch, 2, 24, 32, 16)
        with torch.no_grad():
            expected = network(x)
        np.testing.assert_allclose(backend(x).numpy(), expected.numpy(), atol=2e-4)
    assert describe(backend)["precision"] == "fp32"
    backend.close()


def test_openvino_bf16_is_a_runtime_hint_on_the_same_ir(tmp_path):
    require_runtime("openvino")
    network = _random_network()
    example = torch.rand(1, 2, 16, 16, 16)
    path = write_artifact(ExportOptions(format="openvino"), network, example, ShapeProfile.build(example.shape),
                          tmp_path, "net")
    bf16 = load_artifact("openvino", path, torch.device("cpu"), precision="bf16")
    with torch.no_grad():
        expected = network(example)
    out = bf16(example)
    assert describe(bf16) == {"runtime": "openvino", "precision": "bf16", "device": "cpu"}
    assert float((out - expected).abs().max()) < 0.5  # bf16 keeps ~3 significant digits


def test_concurrent_calls_on_one_openvino_backend_give_the_right_answers(tmp_path):
    require_runtime("openvino")
    from concurrent.futures import ThreadPoolExecutor

    network = _random_network()
    example = torch.rand(1, 2, 16, 16, 16)
    path = write_artifact(ExportOptions(format="openvino"), network, example, ShapeProfile.build(example.shape),
                          tmp_path, "net")
    backend = load_artifact("openvino", path, torch.device("cpu"))
    inputs = [torch.rand(1, 2, 16, 16, 16) for _ in range(6)]
    with torch.no_grad():
        expected = [network(x) for x in inputs]
    with ThreadPoolExecutor(3) as pool:
        outputs = list(pool.map(backend, inputs))
    for out, ref in zip(outputs, expected):
        np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=2e-4)


def test_pytorch_reduced_precision_is_refused_on_the_cpu():
    with pytest.raises(BackendUnavailableError, match="CUDA GPU only"):
        TorchBackend(_random_network(), "cpu", precision="fp16")


def _hide(monkeypatch, package):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            raise ImportError(f"No module named '{package}'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)


def test_a_missing_runtime_names_the_extra_and_the_pool_keeps_serving_the_others(tmp_path, monkeypatch):
    network = _random_network(1, 3)
    example = torch.rand(1, 1, 32, 32, 32)
    write_artifact(ExportOptions(format="openvino"), network, example, ShapeProfile.build(example.shape),
                   tmp_path, "net")
    cfg = segmentation_config()
    write_model(tmp_path, "torch_model", cfg)
    ov_cfg = {k: v for k, v in cfg.items() if k != "network"}
    (tmp_path / "ov_model.json").write_text(__import__("json").dumps({**ov_cfg, "model_format": "openvino",
                                                                      "model_path": "net.xml"}))
    entry = {"class": "SegmentationEngine", "module": "medical.aas.segmentation", "labels": ["a", "b"]}
    pool_path = write_pool(tmp_path, [{**entry, "name": "plain", "config_file": "torch_model.json"},
                                      {**entry, "name": "optimized", "config_file": "ov_model.json"}])
    _hide(monkeypatch, "openvino")
    pool = EnginePool.from_file(pool_path, warmup=True)
    status = {r.name: r.summary() for r in pool.records()}
    assert status["plain"]["status"] == "ready"
    assert status["plain"]["backend"]["runtime"] == "pytorch"
    assert status["optimized"]["status"] == "unavailable"
    assert "install extra openvino" in status["optimized"]["error"]


def test_clara_trtmodel_is_tensorrt_and_unknown_formats_are_refused():
    cfg = segmentation_config(model_format="trtmodel", model_path="model.engine")
    cfg.pop("network")
    assert ModelConfig.model_validate(cfg).model_format == "tensorrt"
    with pytest.raises(ValueError, match="model_format"):
        ModelConfig.model_validate({**cfg, "model_format": "caffe"})


def test_an_artifact_whose_report_failed_is_not_served(tmp_path):
    network = _random_network(1, 3)
    example = torch.rand(1, 1, 32, 32, 32)
    write_artifact(ExportOptions(format="onnx"), network, example, ShapeProfile.build(example.shape), tmp_path, "net")
    (tmp_path / "export_report.json").write_text('{"passed": false}')
    cfg = {k: v for k, v in segmentation_config(model_format="onnx", model_path="net.onnx").items() if k != "network"}
    with pytest.raises(ConfigError, match="parity check failed"):
        load_backend(ModelConfig.model_validate(cfg), tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_pytorch_on_cuda_in_reduced_precision_with_compile_matches_fp32(precision):
    network = _random_network()
    x = torch.rand(2, 2, 32, 32, 32)
    with torch.no_grad():
        expected = network(x)
    backend = TorchBackend(network, "cuda", precision=precision, compile=True)
    out = backend(x).cpu()
    assert describe(backend) == {"runtime": "pytorch+compile", "precision": precision, "device": "cuda"}
    assert float((out - expected).abs().max()) < 0.1


class _StaticBuffer(torch.nn.Module):
    """Stands in for a CUDA graph: every call writes its result into the same output tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.out = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.out.copy_(x.flatten()[:1])
        return self.out


def test_a_graphed_backend_hands_out_copies_and_takes_one_call_at_a_time():
    backend = TorchBackend(_StaticBuffer())
    assert backend.max_concurrency is None  # eager: any number of calls at once
    backend.graphed, backend.max_concurrency = True, 1  # what compile=True on CUDA sets
    first = backend(torch.full((1,), 1.0))
    second = backend(torch.full((1,), 2.0))
    assert float(first) == 1.0 and float(second) == 2.0  # the second call did not overwrite the first's output
    assert MeanEnsemble([backend, TorchBackend(_StaticBuffer())]).max_concurrency == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_pytorch_on_cuda_returns_an_output_of_its_own_per_call():
    network = _random_network()
    backend = TorchBackend(network, "cuda", compile=True)
    assert backend.max_concurrency == 1
    x1, x2 = torch.rand(1, 2, 32, 32, 32), torch.rand(1, 2, 32, 32, 32)
    for _ in range(3):  # CUDA graphs are recorded after a few calls
        backend(x1)
    out1 = backend(x1)
    expected = out1.clone()
    backend(x2)
    assert torch.equal(out1, expected)  # not overwritten by the next call's replay
