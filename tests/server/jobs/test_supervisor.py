"""The supervisor through its public behaviour: jobs in the table, ``poll()`` passes on an injected clock,
``stop()``; workers are small Python processes (no torch), registered as a job kind of their own."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from server.jobs.commands import JOB_KINDS, JobKind, Step
from server.jobs.store import JobState, JobStore
from server.jobs.supervisor import Supervisor, SupervisorSettings

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
DEAF = "import time; print('up', flush=True); time.sleep(60)"  # ignores the stop file, dies on SIGTERM


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Serving:
    """What the supervisor asks of the serving side to plan a job: the base version's config path."""

    class store:  # noqa: N801 - mirrors ServingManager.store
        @staticmethod
        def config_path(model, version):
            return Path(f"/nowhere/{model}/{version}/model_config.json")

    class pool:  # noqa: N801 - mirrors ServingManager.pool: no model here is a served MONAI bundle
        @staticmethod
        def record(name):
            return None

    @staticmethod
    def serving_config(model):
        return "1", Serving.store.config_path(model, "1")


@pytest.fixture()
def worker_kind(monkeypatch):
    """Register a job kind whose one step runs ``params["code"]`` (or ``params["argv"]``)."""

    def plan(kind, params, datalist, config, work, resume):
        return [Step(params.get("argv") or [sys.executable, "-c", params["code"]], work / "out")]

    monkeypatch.setitem(JOB_KINDS, "worker", JobKind("worker", lambda *a: None, plan, "report",
                                                     needs_datalist=False))
    return "worker"


def _supervisor(tmp_path, clock, **settings):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    values = {"work_root": tmp_path, "stop_grace_s": 5.0, "term_grace_s": 5.0, "niceness": 0,
              "heartbeat_timeout_s": 600.0}
    values.update(settings)
    return store, Supervisor(store, Serving(), SupervisorSettings(**values), clock=clock)


def _until(condition, what: str, timeout: float = 20.0):
    """Wait for a worker process to do something (its own pace, not the supervisor's clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _log(tmp_path, job_id) -> list[str]:
    """The worker's own output lines (the supervisor's ``$ argv`` line also holds the code's text)."""
    path = tmp_path / job_id / "job.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if not line.startswith(("$ ", "# "))]


def test_a_resumed_job_is_not_killed_for_the_age_of_its_old_progress_file(tmp_path, worker_kind):
    clock = Clock()
    store, supervisor = _supervisor(tmp_path, clock)
    job = store.create(worker_kind, "m", None, {"code": SLEEPER}, str(tmp_path))
    work = tmp_path / job["id"]
    work.mkdir()
    old = work / "progress.jsonl"  # written by the attempt that stopped 20 minutes ago
    old.write_text(json.dumps({"progress": 0.5}) + "\n")
    os.utime(old, (time.time() - 1200, time.time() - 1200))
    store.update(job["id"], resume=True)
    try:
        supervisor.poll()
        assert store.get(job["id"])["state"] == JobState.RUNNING
        clock.now += 30
        supervisor.poll()
        assert store.get(job["id"])["state"] == JobState.RUNNING  # was: "no heartbeat for 600 s", at once
        clock.now += 600
        supervisor.poll()
        ended = store.get(job["id"])
        assert ended["state"] == JobState.INTERRUPTED and "no heartbeat for 600 s" in ended["error"]
        assert "AIAA_JOB_HEARTBEAT_TIMEOUT_S" in ended["error"]
    finally:
        supervisor.stop()


def test_a_worker_that_renews_its_progress_file_outlives_the_timeout(tmp_path, worker_kind):
    clock = Clock()
    store, supervisor = _supervisor(tmp_path, clock, heartbeat_timeout_s=60.0)
    beating = ("import sys, time; sys.path.insert(0, %r); from server.cli.train_progress import ProgressFile; "
               "p = ProgressFile('progress.jsonl', interval=0.05); print('up', flush=True); time.sleep(60)"
               % str(Path(__file__).resolve().parents[3]))
    job = store.create(worker_kind, "m", None, {"code": beating}, str(tmp_path))
    try:
        supervisor.poll()
        progress = tmp_path / job["id"] / "progress.jsonl"
        for _ in range(3):  # each beat a poll sees counts; the clock jumps 50 s between them
            seen = progress.stat().st_mtime_ns if progress.exists() else 0
            _until(lambda: progress.exists() and progress.stat().st_mtime_ns != seen, "the worker never beat")
            clock.now += 50
            supervisor.poll()
        assert store.get(job["id"])["state"] == JobState.RUNNING
    finally:
        supervisor.stop()


def test_a_zero_heartbeat_timeout_never_ends_a_silent_worker(tmp_path, worker_kind):
    clock = Clock()
    store, supervisor = _supervisor(tmp_path, clock, heartbeat_timeout_s=0)
    job = store.create(worker_kind, "m", None, {"code": SLEEPER}, str(tmp_path))
    try:
        supervisor.poll()
        clock.now += 100_000
        supervisor.poll()
        assert store.get(job["id"])["state"] == JobState.RUNNING
    finally:
        supervisor.stop()


def test_a_step_that_cannot_start_fails_the_job_instead_of_leaving_it_running(tmp_path, worker_kind):
    store, supervisor = _supervisor(tmp_path, Clock())
    job = store.create(worker_kind, "m", None, {"argv": [str(tmp_path / "no-such-program")]}, str(tmp_path))
    supervisor.poll()
    failed = store.get(job["id"])
    assert failed["state"] == JobState.FAILED and "could not start" in failed["error"] and failed["pid"] is None
    assert supervisor.running() == []


def test_stop_interrupts_running_jobs_and_nothing_starts_after_it(tmp_path, worker_kind):
    store, supervisor = _supervisor(tmp_path, Clock())
    running = store.create(worker_kind, "m", None, {"code": SLEEPER}, str(tmp_path))
    supervisor.start()
    _until(lambda: "up" in _log(tmp_path, running["id"]), "the worker never started")
    pid = store.get(running["id"])["pid"]
    queued = store.create(worker_kind, "m", None, {"code": SLEEPER}, str(tmp_path))
    supervisor.stop()
    supervisor.wake()
    supervisor.poll()  # a pass after stop() does nothing
    assert store.get(running["id"])["state"] == JobState.INTERRUPTED
    assert store.get(queued["id"])["state"] == JobState.QUEUED
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def _cancel(tmp_path, worker_kind, code: str, kill: bool) -> dict:
    clock = Clock()
    store, supervisor = _supervisor(tmp_path, clock)
    job = store.create(worker_kind, "m", None, {"code": code}, str(tmp_path))

    def over() -> bool:
        supervisor.poll()
        return store.get(job["id"])["state"] != JobState.RUNNING

    try:
        supervisor.poll()
        _until(lambda: "up" in _log(tmp_path, job["id"]), "the worker never started")
        store.update(job["id"], cancel_requested=True)
        supervisor.poll()  # asks for a clean stop
        assert (tmp_path / job["id"] / "STOP").exists() and store.get(job["id"])["state"] == JobState.RUNNING
        clock.now += 6  # past the stop grace: SIGTERM
        supervisor.poll()
        if kill:
            clock.now += 6  # past the term grace: SIGKILL
            supervisor.poll()
        _until(over, "the worker outlived its signal")
        return store.get(job["id"])
    finally:
        supervisor.stop()


def test_cancel_sends_sigterm_when_the_worker_does_not_stop_cleanly(tmp_path, worker_kind):
    job = _cancel(tmp_path, worker_kind, DEAF, kill=False)
    assert (job["state"], job["cancelled_by"]) == ("cancelled", "SIGTERM")


def test_cancel_ends_with_sigkill_of_the_group_when_sigterm_is_ignored(tmp_path, worker_kind):
    job = _cancel(tmp_path, worker_kind, STUBBORN, kill=True)
    assert (job["state"], job["cancelled_by"]) == ("cancelled", "SIGKILL") and job["pid"] is None


def test_a_step_that_ends_well_before_a_cancel_reaches_it_is_kept_and_the_job_stops_without_error(
        tmp_path, monkeypatch):
    go, second = tmp_path / "go", tmp_path / "second-step-ran"
    deaf_until_go = (f"import pathlib, time; print('up', flush=True)\n"
                     f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.02)")

    def plan(kind, params, datalist, config, work, resume):
        return [Step([sys.executable, "-c", deaf_until_go], work / "a"),
                Step([sys.executable, "-c", f"open({str(second)!r}, 'w')"], work / "b")]

    monkeypatch.setitem(JOB_KINDS, "two_steps", JobKind("two_steps", lambda *a: None, plan, "report",
                                                        needs_datalist=False))
    store, supervisor = _supervisor(tmp_path, Clock())
    job = store.create("two_steps", "m", None, {}, str(tmp_path))
    try:
        supervisor.poll()
        _until(lambda: "up" in _log(tmp_path, job["id"]), "the worker never started")
        store.update(job["id"], cancel_requested=True)
        supervisor.poll()  # asks for a clean stop, which this step does not read
        go.touch()  # ...and it ends well before the grace runs out
        _until(lambda: supervisor.poll() or store.get(job["id"])["state"] != JobState.RUNNING, "the step never ended")
        ended = store.get(job["id"])
        assert (ended["state"], ended["cancelled_by"], ended["error"]) == ("cancelled", "stop", None)
        assert ended["progress"]["steps_done"] == [0] and not second.exists()  # the next step never started
        # a resume starts at the step after the finished one
        store.update(job["id"], state=JobState.QUEUED, resume=True, cancel_requested=False, cancelled_by=None)
        _until(lambda: supervisor.poll() or second.exists(), "the resumed job never ran its second step")
    finally:
        supervisor.stop()


def test_other_jobs_start_and_are_followed_while_a_finished_one_is_concluded(tmp_path, worker_kind, monkeypatch):
    # Was: the supervisor's own thread loaded and warmed a new version, following no job meanwhile.
    import threading

    import server.jobs.supervisor as supervisor_module

    concluding, release = threading.Event(), threading.Event()

    def slow_result(folder):  # stands in for loading and warming a new version
        concluding.set()
        assert release.wait(30)
        return {"mean_dice": 1.0}

    monkeypatch.setattr(supervisor_module, "evaluation_result", slow_result)
    store, supervisor = _supervisor(tmp_path, Clock())
    first = store.create(worker_kind, "m", None, {"code": "print('up', flush=True)"}, str(tmp_path))
    second = store.create(worker_kind, "m", None, {"code": SLEEPER}, str(tmp_path))
    try:
        supervisor.poll()  # the first starts; the second waits for its slot
        _until(lambda: supervisor.poll() or concluding.is_set(), "the first job never finished")
        poller = threading.Thread(target=supervisor.poll)
        poller.start()
        poller.join(timeout=20)
        assert not poller.is_alive()  # a pass returns while the first job is being concluded
        assert store.get(second["id"])["state"] == JobState.RUNNING and supervisor.running() == [second["id"]]
        assert store.get(first["id"])["state"] == JobState.RUNNING  # until its conclusion is done
        release.set()
        _until(lambda: store.get(first["id"])["state"] == JobState.SUCCEEDED, "the first job never concluded")
        assert store.get(first["id"])["result"] == {"mean_dice": 1.0}
    finally:
        release.set()
        supervisor.stop()
