"""Cancel escalation of the supervisor with workers that do not stop cleanly (no torch, so quick)."""

import sys
import threading
import time

from server.jobs.commands import Step
from server.jobs.store import JobStore
from server.jobs.supervisor import Supervisor, SupervisorSettings

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
DEAF = "import time; print('up', flush=True); time.sleep(60)"  # ignores the stop file, dies on SIGTERM


def _run_and_cancel(tmp_path, code: str) -> dict:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    supervisor = Supervisor(store, serving=None, settings=SupervisorSettings(
        work_root=tmp_path, poll_s=0.05, stop_grace_s=0.5, term_grace_s=0.5, niceness=0))
    row = store.create("evaluate", "m", None, {}, str(tmp_path))
    store.update(row["id"], state="running")
    (tmp_path / row["id"]).mkdir()
    supervisor._launch(row["id"], [Step([sys.executable, "-c", code], tmp_path / row["id"] / "out")], 0,
                       tmp_path / row["id"])
    supervisor._thread = threading.Thread(target=supervisor._loop, daemon=True)  # follow it (no recovery pass)
    supervisor._thread.start()
    try:
        deadline = time.monotonic() + 20
        while "up" not in (tmp_path / row["id"] / "job.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store.update(row["id"], cancel_requested=True)
        while store.get(row["id"])["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        supervisor.stop()
    return store.get(row["id"])


def test_cancel_sends_sigterm_when_the_worker_does_not_stop_cleanly(tmp_path):
    job = _run_and_cancel(tmp_path, DEAF)
    assert (job["state"], job["cancelled_by"]) == ("cancelled", "SIGTERM")
    assert (tmp_path / job["id"] / "STOP").exists()


def test_cancel_ends_with_sigkill_of_the_group_when_sigterm_is_ignored(tmp_path):
    job = _run_and_cancel(tmp_path, STUBBORN)
    assert (job["state"], job["cancelled_by"]) == ("cancelled", "SIGKILL") and job["pid"] is None
