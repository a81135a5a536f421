"""Training as jobs use it: progress events, a cooperative stop with a checkpoint, resume, DDP under torchrun."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, segmentation_config, write_phantom_datalist

from engines.errors import TrainingStopped
from engines.training.trainer import LAST_CHECKPOINT, train


def _setup(tmp_path, epochs=2, **extra):
    datalist = write_phantom_datalist(tmp_path / "data", n=3)
    cfg_path = tmp_path / "seg.json"
    cfg_path.write_text(json.dumps(segmentation_config()))
    train_cfg = tmp_path / "train.json"
    train_cfg.write_text(json.dumps({"epochs": epochs, "batch_size": 1, "val_interval": 1, **extra}))
    return cfg_path, datalist, train_cfg


def test_progress_stop_at_a_batch_and_resume(tmp_path):
    cfg_path, datalist, train_cfg = _setup(tmp_path)
    events, asked = [], []

    def stop_in_epoch_two() -> bool:
        asked.append(1)
        return len(asked) == 4  # two batches per epoch: the second batch of epoch 2

    with pytest.raises(TrainingStopped):
        train(cfg_path, datalist, train_cfg, tmp_path / "out", device="cpu", progress=lambda _: None,
              on_progress=events.append, should_stop=stop_in_epoch_two)
    state = torch.load(tmp_path / "out" / LAST_CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and [h["epoch"] for h in state["metrics"]["history"]] == [1]
    batches = [e for e in events if e["event"] == "batch"]
    assert [(e["epoch"], e["batch"]) for e in batches] == [(1, 1), (1, 2), (2, 1)]
    assert [e["progress"] for e in batches] == [0.25, 0.5, 0.75]
    assert all(e["epochs"] == 2 and e["eta_s"] is not None and e["metrics"]["loss"] > 0 for e in batches)
    epoch_end = next(e for e in events if e["event"] == "epoch")
    assert 0 <= epoch_end["metrics"]["dice"] <= 1

    messages, events = [], []
    metrics = train(cfg_path, datalist, train_cfg, tmp_path / "out", device="cpu", progress=messages.append,
                    on_progress=events.append, resume=True)
    assert any("resumed from" in m for m in messages)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and events[-1]["progress"] == 1.0
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds ``mark`` (``NAME=value``)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_two_gloo_processes_train_under_torchrun(tmp_path):
    cfg_path, datalist, train_cfg = _setup(tmp_path, epochs=1)
    # torchrun starts each rank in a session of its own: the ranks are found by a mark in their environment.
    mark = f"AIAA_TEST_RUN={tmp_path}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "AIAA_TEST_RUN": str(tmp_path)}
    torchrun = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "-m", "server.cli.main", "train", "--config", str(cfg_path), "--datalist",
                                 str(datalist), "--train-config", str(train_cfg), "--output", str(tmp_path / "out"),
                                 "--device", "cpu", "--progress-file", str(tmp_path / "progress.jsonl")],
                                env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = torchrun.communicate(timeout=300)
        assert torchrun.returncode == 0, output[-3000:]
        assert _marked(mark) == []  # both ranks exited (a rank once hung in gloo's teardown)
    finally:
        torchrun.kill()
        torchrun.wait()
        for pid in _marked(mark):  # whatever happened, no rank outlives the test
            os.kill(pid, signal.SIGKILL)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["hardware"].endswith("x 2 processes")
    assert [h["epoch"] for h in metrics["history"]] == [1] and len(metrics["final"]["val_dice"]) == 2
    # two training cases over two ranks: one batch each per epoch, reported by rank 0 only
    events = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["batch"], e["batches"]) for e in events if e["event"] == "batch"] == [(1, 1, 1)]
    assert (tmp_path / "out" / "model.pt").is_file()
