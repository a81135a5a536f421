"""The lent-GPU training script, dry-run on the CPU: it trains the model config it is given from a pack alone."""

from __future__ import annotations

import importlib.util
import json
import sys

import torch
from helpers import REPO, deepgrow_config, packed_phantom_train_config

from engines.backends.pytorch import load_state_dict
from engines.config.model import load_model_config
from engines.networks import build_network

spec = importlib.util.spec_from_file_location("run_on_device", REPO / "models" / "interactive_any" / "gpu" / "run_on_device.py")
run_on_device = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_on_device)


def test_trains_the_given_model_config_from_a_pack_and_hands_back_weights_metrics_and_latency(tmp_path, monkeypatch):
    config = deepgrow_config(tmp_path)  # ROI 16^3, not the shipped model's
    train_config = packed_phantom_train_config(tmp_path, max_steps=3)

    out = tmp_path / "out"
    monkeypatch.setenv("OUT", str(out))
    monkeypatch.setattr(sys, "argv", ["run_on_device.py", "--train-config", str(train_config),
                                      "--model-config", str(config), "--device", "cpu", "--workers", "0"])
    assert run_on_device.main() == 0

    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    network = build_network(load_model_config(config).network)
    network.load_state_dict(load_state_dict(out / "last_fp16.pt"))  # the given config's network, not the shipped one
    assert all(v.dtype == torch.float16 for v in torch.load(out / "last_fp16.pt").values() if v.is_floating_point())
    latency = json.loads((out / "latency.json").read_text())
    assert latency["device"] == "cpu"
    assert {row["object"] for row in latency["objects"]} == {"phantom/a", "phantom/b", "phantom/both"}
    assert all(len(row["ms"]) == 6 for row in latency["objects"])  # the box and 5 clicks
    assert not (tmp_path / "train_config_run.json").exists()  # the run's config copy is cleaned up
