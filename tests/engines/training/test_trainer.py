import json
import math

import numpy as np
import pytest
import torch
from helpers import annotation_config, phantom, segmentation_config, write_phantom_datalist, write_pool

from engines.config.model import ModelConfig
from engines.data.datalist import load_datalist
from engines.errors import ConfigError
from engines.serving.pool import EnginePool
from engines.training.trainer import TrainConfig, _train_pipeline, train


def test_datalist_paths_are_relative_to_the_datalist(tmp_path):
    datalist = write_phantom_datalist(tmp_path)
    data = load_datalist(datalist)
    assert len(data["training"]) == 2 and data["validation"][0]["image"] == str(tmp_path / "images/c2.nii.gz")


def test_training_keeps_the_best_checkpoint_that_the_pool_then_serves(tmp_path):
    datalist = write_phantom_datalist(tmp_path / "data")
    for name, cfg, extra in [
        ("ann", annotation_config(), {"augment_before": "transforms.AddExtremePointsChannel",
                                      "augmentations": [{"name": "RandShiftIntensityd",
                                                         "args": {"keys": "image", "offsets": 0.1, "prob": 0.5}}]}),
        ("seg", segmentation_config(), {"augmentations": [
            {"name": "SpatialPadd", "args": {"keys": ["image", "label"], "spatial_size": [32, 32, 32]}},
            {"name": "RandSpatialCropd", "args": {"keys": ["image", "label"], "roi_size": [32, 32, 32],
                                                  "random_size": False}}]}),
    ]:
        cfg_path = tmp_path / f"{name}.json"
        cfg_path.write_text(json.dumps(cfg))
        train_cfg = tmp_path / f"{name}_train.json"
        train_cfg.write_text(json.dumps({"epochs": 2, "batch_size": 2, "val_interval": 1, **extra}))
        out = tmp_path / f"out_{name}"
        metrics = train(cfg_path, datalist, train_cfg, out, device="cpu", progress=lambda _: None)
        assert (out / "model.pt").is_file() and (out / "metrics.json").is_file()
        assert len(metrics["history"]) == 2 and metrics["best"]["epoch"] in (1, 2)
        n_labels = len(ModelConfig.model_validate(cfg).labels)
        assert len(metrics["final"]["val_dice"]) == n_labels
        assert all(0.0 <= d <= 1.0 for d in metrics["final"]["val_dice"])
        state = torch.load(out / "model.pt", weights_only=True)
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
        # the saved checkpoint loads in the pool exactly as it was scored
        (out / f"{name}.json").write_text(json.dumps(cfg))
        cls = ("Dextr3dCroppedEngine", "medical.aas.dextr3dcropped") if name == "ann" else (
            "SegmentationEngine", "medical.aas.segmentation")
        pool = EnginePool.from_file(write_pool(out, [
            {"name": name, "class": cls[0], "module": cls[1], "config_file": f"{name}.json"}]))
        assert pool.records()[0].status == "ready"
        volume, _ = phantom()
        assert np.asarray(pool.get(name).infer(volume, {"points": [[10, 25, 15], [26, 25, 15], [18, 15, 15],
                                                                      [18, 35, 15], [18, 25, 9], [18, 25, 21]]}
                                               ).mask).shape == volume.shape


def test_fine_tuning_starts_from_given_weights(tmp_path):
    datalist = write_phantom_datalist(tmp_path / "data")
    cfg_path = tmp_path / "seg.json"
    cfg_path.write_text(json.dumps(segmentation_config()))
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"epochs": 1, "batch_size": 2}))
    train(cfg_path, datalist, first, tmp_path / "a", device="cpu", progress=lambda _: None)
    second = tmp_path / "second.json"
    second.write_text(json.dumps({"epochs": 1, "batch_size": 2, "learning_rate": 1e-12, "init_weights": "a/model.pt"}))
    messages = []
    train(cfg_path, datalist, second, tmp_path / "b", device="cpu", progress=messages.append)
    assert any("initialised from" in m for m in messages)
    a = torch.load(tmp_path / "a/model.pt", weights_only=True)
    b = torch.load(tmp_path / "b/model.pt", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a if a[k].is_floating_point())


def test_augmentations_last_run_after_every_pre_transform(tmp_path):
    datalist = write_phantom_datalist(tmp_path / "data")
    config = ModelConfig.model_validate(segmentation_config())
    case = load_datalist(datalist)["training"][0]
    plain = _train_pipeline(config, TrainConfig(epochs=1))(dict(case))
    flip = {"name": "RandFlipd", "args": {"keys": ["image", "label"], "spatial_axis": 0, "prob": 1.0}}
    flipped = _train_pipeline(config, TrainConfig(epochs=1, augmentations_last=[flip]))(dict(case))
    for key in ("image", "label"):
        assert torch.equal(torch.as_tensor(flipped[key]), torch.flip(torch.as_tensor(plain[key]), [1]))


def test_one_member_of_an_ensemble_is_trained_on_its_own(tmp_path):
    datalist = write_phantom_datalist(tmp_path / "data")
    base = segmentation_config()
    cfg = {k: v for k, v in base.items() if k not in ("model_path", "network")}
    wide = json.loads(json.dumps(base["network"]))
    wide["args"]["channels"] = [8, 16]
    cfg["ensemble"] = [{"model_path": "small.pt", "network": base["network"]}, {"model_path": "wide.pt", "network": wide}]
    cfg_path = tmp_path / "seg.json"
    cfg_path.write_text(json.dumps(cfg))
    train_cfg = tmp_path / "train.json"
    train_cfg.write_text(json.dumps({"epochs": 2, "lr_schedule_epochs": 4, "learning_rate": 1e-3, "batch_size": 2}))
    with pytest.raises(ConfigError, match="member 1..2"):
        train(cfg_path, datalist, train_cfg, tmp_path / "out", device="cpu", progress=lambda _: None)
    with pytest.raises(ConfigError, match="not 3"):
        train(cfg_path, datalist, train_cfg, tmp_path / "out", device="cpu", progress=lambda _: None, member=3)
    metrics = train(cfg_path, datalist, train_cfg, tmp_path / "out", device="cpu", progress=lambda _: None, member=2)
    state = torch.load(tmp_path / "out/wide.pt", weights_only=True)
    assert any(v.shape[0] == 16 for v in state.values() if v.ndim == 5)  # the wide member's weights
    # the first half of a 4-epoch cosine schedule: 1e-3, then 1e-3 * (1 + cos(pi/4)) / 2
    assert [round(h["lr"], 7) for h in metrics["history"]] == [1e-3, round(1e-3 * (1 + math.cos(math.pi / 4)) / 2, 7)]
