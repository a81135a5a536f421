"""TensorRT: everything that runs without it here; the engine itself only on a GPU with TensorRT."""

import numpy as np
import pytest
import torch

from engines.backends.base import has_module
from engines.backends.tensorrt import ShapeProfile, engine_cache_path, parse_shape
from engines.config.model import ComponentSpec
from engines.errors import ConfigError
from engines.export.exporter import ExportOptions, write_artifact
from engines.networks import build_network


def test_shapes_parse_and_profiles_complete_around_the_typical_input():
    assert parse_shape("1x2x48x48x48") == (1, 2, 48, 48, 48) == parse_shape("1,2,48,48,48")
    with pytest.raises(ConfigError):
        parse_shape("1x0x4")
    profile = ShapeProfile.build((1, 2, 48, 48, 48), max_batch=4)
    assert profile.min == (1, 2, 48, 48, 48) and profile.max == (4, 2, 48, 48, 48)
    assert profile.dynamic_axes == [0]
    spatial = ShapeProfile.build((2, 1, 64, 64, 64), min_shape=(32, 32, 32), max_shape=(96, 96, 96), max_batch=2)
    assert spatial.min == (1, 1, 32, 32, 32) and spatial.max == (2, 1, 96, 96, 96)
    assert spatial.dynamic_axes == [0, 2, 3, 4]
    assert spatial.contains((1, 1, 40, 80, 96)) and not spatial.contains((3, 1, 64, 64, 64))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile.build((1, 1, 64, 64, 64), min_shape=(80, 80, 80))


def test_engine_cache_key_changes_with_gpu_version_and_options(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    profile = ShapeProfile.build((1, 2, 48, 48, 48))
    base = engine_cache_path(onnx, tmp_path, "NVIDIA H100", "10.3.0", "fp16", profile, 1024)
    assert base != engine_cache_path(onnx, tmp_path, "NVIDIA A100", "10.3.0", "fp16", profile, 1024)
    assert base != engine_cache_path(onnx, tmp_path, "NVIDIA H100", "11.0.0", "fp16", profile, 1024)
    assert base != engine_cache_path(onnx, tmp_path, "NVIDIA H100", "10.3.0", "fp32", profile, 1024)
    assert base == engine_cache_path(onnx, tmp_path, "NVIDIA H100", "10.3.0", "fp16", profile, 1024)


def _network():
    torch.manual_seed(0)
    return build_network(ComponentSpec(name="UNet", args={"spatial_dims": 3, "in_channels": 2, "out_channels": 1,
                                                          "channels": [4, 8], "strides": [2]})).eval()


@pytest.mark.parametrize("half", [False, True])
def test_the_onnx_graph_tensorrt_consumes_has_the_profile_axes_and_matches_eager(tmp_path, half):
    import onnx
    import onnxruntime as ort

    from engines.export.exporter import _write_onnx

    network = _network()
    profile = ShapeProfile.build((1, 2, 32, 32, 32), max_batch=4)
    path = tmp_path / "member1.onnx"
    _write_onnx(network, torch.rand(1, 2, 32, 32, 32), profile, path, opset=18, half=half)
    graph = onnx.load(str(path))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [2, 32, 32, 32]  # batch dynamic only
    expected_type = onnx.TensorProto.FLOAT16 if half else onnx.TensorProto.FLOAT
    assert graph.graph.input[0].type.tensor_type.elem_type == expected_type  # TensorRT 11 builds fp16 from this
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(4, 2, 32, 32, 32)
    with torch.no_grad():
        expected = network.float()(x).numpy()
    out = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float16 if half else np.float32)})[0]
    np.testing.assert_allclose(out.astype(np.float32), expected, atol=0.05 if half else 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and has_module("tensorrt")), reason="needs a CUDA GPU and TensorRT")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_eager_on_the_gpu(tmp_path, precision):
    from engines.backends import load_artifact

    network = _network().cuda()
    example = torch.rand(1, 2, 32, 32, 32, device="cuda")
    options = ExportOptions(format="tensorrt", precision=precision, max_batch=2)
    path = write_artifact(options, network, example, ShapeProfile.build(example.shape, max_batch=2), tmp_path, "m")
    report = {"options": {"min_shape": [1, 2, 32, 32, 32], "opt_shape": [1, 2, 32, 32, 32],
                          "max_shape": [2, 2, 32, 32, 32], "workspace_mb": 1024}}
    backend = load_artifact("tensorrt", path, torch.device("cuda"), precision, report=report)
    x = torch.rand(2, 2, 32, 32, 32, device="cuda")
    with torch.no_grad():
        expected = network(x)
    torch.testing.assert_close(backend(x), expected.float(), atol=0.05 if precision == "fp16" else 1e-3, rtol=0)
