import torch
from helpers import segmentation_config, write_model

from engines.backends import MeanEnsemble, load_backend
from engines.config import ModelConfig


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
    backend.close()
    assert all(member.module is None for member in backend.members)
