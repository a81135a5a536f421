"""The progress handler of bundle jobs: the supervisor's JSON lines, and a stop at the next iteration."""

from __future__ import annotations

import json

from ignite.engine import Engine

from engines.training.bundle_progress import BundleProgress


def test_progress_lines_reach_one_and_the_stop_file_ends_the_run(tmp_path):
    engine = Engine(lambda engine, batch: None)
    BundleProgress(str(tmp_path / "progress.jsonl"), str(tmp_path / "STOP")).attach(engine)
    engine.run([1, 2, 3, 4], max_epochs=2)
    lines = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [line["progress"] for line in lines[:8]] == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert lines[-1]["epoch"] == 2 and lines[-1]["epochs"] == 2 and lines[-1]["eta_s"] == 0.0

    (tmp_path / "STOP").touch()
    stopped = Engine(lambda engine, batch: None)
    BundleProgress(str(tmp_path / "stopped.jsonl"), str(tmp_path / "STOP")).attach(stopped)
    stopped.run([1, 2, 3, 4], max_epochs=2)
    assert stopped.state.iteration == 1
