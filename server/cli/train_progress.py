"""What a job's worker writes for its supervisor (the JSON-lines progress file and its heartbeat), and
what ``aiaa train`` shows while it trains: a progress bar (plain lines when not on a terminal) and the
stop file."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT_S", "ProgressFile", "TrainProgress"]

HEARTBEAT_S = 2.0


class ProgressFile:
    """A worker's progress file: JSON lines appended, and a heartbeat (its modification time renewed every
    ``interval`` seconds by a thread) for as long as the worker lives, whatever kind of work it does.

    The supervisor takes a file that changes as a sign of life; a worker that stops changing it for
    ``AIAA_JOB_HEARTBEAT_TIMEOUT_S`` is ended.
    """

    def __init__(self, path: str | Path, interval: float = HEARTBEAT_S) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._done = threading.Event()
        threading.Thread(target=self._heartbeat, args=(interval,), daemon=True).start()

    def write(self, event: dict[str, Any]) -> None:
        """Append one event."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event) + "\n")

    def close(self) -> None:
        """Stop the heartbeat."""
        self._done.set()

    def _heartbeat(self, interval: float) -> None:
        while not self._done.wait(interval):
            try:
                # A new modification time each beat (even within the file system's time resolution).
                os.utime(self.path, ns=(time.time_ns(), time.time_ns()))
            except OSError:
                return


class TrainProgress:
    """Receives training progress events (:func:`engines.training.trainer.train`'s ``on_progress``)."""

    def __init__(self, progress_file: str | None = None, stop_file: str | None = None, tty: bool | None = None) -> None:
        self.progress_file = Path(progress_file) if progress_file else None
        self.stop_file = Path(stop_file) if stop_file else None
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        self._file = ProgressFile(self.progress_file) if self.progress_file is not None else None

    def __call__(self, event: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(event)
        if self.tty:
            self._show(event)

    def message(self, text: str) -> None:
        """A line of text (epoch summaries, notes) that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def should_stop(self) -> bool:
        """True once the stop file exists (the supervisor asks for a cooperative stop)."""
        return self.stop_file is not None and self.stop_file.exists()

    def close(self) -> None:
        """End the bar and the heartbeat."""
        if self._file is not None:
            self._file.close()
        if self._bar is not None:
            self._bar.close()

    def _show(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        total = event["epochs"] * event["batches"]
        if self._bar is None:
            self._bar = tqdm(total=total, unit="batch", dynamic_ncols=True, file=sys.stderr)
        self._bar.n = (event["epoch"] - 1) * event["batches"] + event["batch"]
        metrics = event.get("metrics", {})
        post = {"epoch": f"{event['epoch']}/{event['epochs']}"}
        if metrics.get("loss") is not None:
            post["loss"] = f"{metrics['loss']:.4f}"
        if metrics.get("dice") is not None:
            post["dice"] = f"{metrics['dice']:.3f}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.refresh()
