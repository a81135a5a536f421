"""Progress of a bundle run for the job supervisor: JSON lines, a heartbeat, and the stop file.

Attached to the bundle's ignite trainer or evaluator by the job's own ``initialize`` step (see
``server/jobs/bundle_commands.py``); writes the same lines as ``aiaa train``'s progress file
(``epoch``, ``epochs``, ``progress`` in [0, 1], ``eta_s``, ``metrics``). In a multi-process run
only rank 0 writes; every rank stops at the next iteration once the stop file exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["BundleProgress"]


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class BundleProgress:
    """An ignite handler: one progress line per iteration, and a cooperative stop."""

    def __init__(self, progress_file: str, stop_file: str | None = None) -> None:
        self.progress_file = Path(progress_file)
        self.stop_file = Path(stop_file) if stop_file else None
        self._start = time.monotonic()

    def attach(self, engine: Any) -> None:
        """Write after every iteration of ``engine`` (a MONAI ``Workflow``)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        state = engine.state
        if self.stop_file is not None and self.stop_file.exists():
            engine.terminate()
        if _rank() != 0:
            return
        per_epoch = max(int(state.epoch_length or 1), 1)
        total = max(int(state.max_epochs or 1), 1) * per_epoch
        done = min(int(state.iteration) / total, 1.0)
        elapsed = time.monotonic() - self._start
        metrics = {k: float(v) for k, v in (state.metrics or {}).items() if isinstance(v, (int, float))}
        line = {"epoch": int(state.epoch), "epochs": int(state.max_epochs or 1), "progress": round(done, 4),
                "eta_s": round(elapsed / done - elapsed, 1) if done > 0 else None, "metrics": metrics}
        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.progress_file, "a") as fh:
            fh.write(json.dumps(line) + "\n")
