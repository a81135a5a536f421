"""What ``aiaa train`` shows and writes while it trains: a progress bar (plain lines when not on a
terminal), the JSON-lines progress file a job's supervisor reads, its heartbeat and the stop file."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["TrainProgress"]

HEARTBEAT_S = 2.0


class TrainProgress:
    """Receives training progress events (:func:`engines.training.trainer.train`'s ``on_progress``)."""

    def __init__(self, progress_file: str | None = None, stop_file: str | None = None, tty: bool | None = None) -> None:
        self.progress_file = Path(progress_file) if progress_file else None
        self.stop_file = Path(stop_file) if stop_file else None
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        self._done = threading.Event()
        if self.progress_file is not None:
            self.progress_file.parent.mkdir(parents=True, exist_ok=True)
            self.progress_file.touch()
            threading.Thread(target=self._heartbeat, daemon=True).start()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.progress_file is not None:
            with open(self.progress_file, "a") as fh:
                fh.write(json.dumps(event) + "\n")
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
        self._done.set()
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

    def _heartbeat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            try:
                os.utime(self.progress_file)
            except OSError:
                return
