"""The supervisor: starts queued jobs as worker processes, follows them, and records what happened.

One thread in the server process. Each step of a job is a command line started in its own
process group (``start_new_session``), with few threads and a lower priority so that
inference stays responsive. Workers append JSON lines to ``progress.jsonl`` (their
heartbeat is that file's modification time); the supervisor copies the latest into the job
table. Cancelling asks the worker to stop at its next batch (a ``STOP`` file; it checkpoints
and exits with :data:`EXIT_STOPPED`), then sends SIGTERM, then SIGKILL to the whole group;
``cancelled_by`` says which ended it. A worker that dies on its own becomes ``interrupted``
(killed by a signal or silent) or ``failed`` (an error exit) at the next poll.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engines.config.model import load_json, load_model_config
from engines.errors import EngineError
from engines.serving.deploy import ServingManager
from engines.serving.versions import VersionFiles
from server.jobs.bundle_commands import bundle_finish, bundle_folder, bundle_plan
from server.jobs.commands import Step, plan
from server.jobs.store import JobStore

__all__ = ["EXIT_STOPPED", "Supervisor", "SupervisorSettings"]

log = logging.getLogger(__name__)

EXIT_STOPPED = 3  # a worker that stopped on request (``aiaa train`` after a cooperative stop)
# Workers import this very checkout (they run in their job folder, where ``-m server.cli.main`` would not find it).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SupervisorSettings:
    """How many jobs run at once and how patient the supervisor is."""

    work_root: Path
    max_running: int = 1
    threads: int = 1  # per worker (OMP/MKL/torch threads)
    niceness: int = 10
    poll_s: float = 0.25
    stop_grace_s: float = 30.0  # cooperative stop -> SIGTERM
    term_grace_s: float = 10.0  # SIGTERM -> SIGKILL
    heartbeat_timeout_s: float = 600.0


@dataclass
class _Run:
    """A job whose step is running in a worker process."""

    job_id: str
    steps: list[Step]
    index: int
    process: subprocess.Popen
    log: IO[bytes]
    work: Path
    offset: int = 0
    started: float = field(default_factory=time.time)
    cancel_stage: int = 0  # 0 none, 1 stop asked, 2 SIGTERM sent, 3 SIGKILL sent
    cancel_at: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Runs the job table's queued jobs; one instance per job table."""

    def __init__(self, store: JobStore, serving: ServingManager, settings: SupervisorSettings) -> None:
        self.store = store
        self.serving = serving
        self.settings = settings
        self._runs: dict[str, _Run] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Mark jobs left ``running`` by a previous server as interrupted, then start following jobs."""
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="job-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following jobs. Running workers are stopped like a cancel and become ``interrupted``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for run in list(self._runs.values()):
            self._signal(run, signal.SIGKILL)
            run.process.wait(timeout=10)
            run.log.close()
            if self.store.get(run.job_id)["cancel_requested"]:
                self.store.update(run.job_id, state="cancelled", cancelled_by="SIGKILL", finished_at=time.time(),
                                  pid=None, error="the server stopped before the job's clean stop")
                continue
            self.store.update(run.job_id, state="interrupted", finished_at=time.time(), pid=None,
                              error="the server stopped while the job ran; resume it with POST /admin/jobs/{id}/resume")
        self._runs.clear()

    def wake(self) -> None:
        """Look at the table now (a job was submitted or cancelled)."""
        self._wake.set()

    def recover(self) -> None:
        """Jobs recorded ``running`` have no supervisor any more: end their workers, mark them interrupted."""
        for row in self.store.list(states=("running",)):
            if row["pgid"] and _is_our_worker(row["pid"], row["work_dir"]):
                try:
                    os.killpg(row["pgid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.store.update(row["id"], state="interrupted", finished_at=time.time(), pid=None,
                              error="the server restarted while the job ran; resume it with POST /admin/jobs/{id}/resume")
            log.warning("job %s was running when the server stopped: marked interrupted", row["id"])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for run in list(self._runs.values()):
                    self._follow(run)
                self._start_queued()
            except Exception:  # the supervisor must outlive any one job's trouble
                log.exception("job supervisor error")
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()

    # starting -----------------------------------------------------------------

    def _start_queued(self) -> None:
        queued = self.store.list(states=("queued",))[::-1]  # oldest first
        for row in queued:
            if row["cancel_requested"]:
                self.store.update(row["id"], only_if_state=("queued",), state="cancelled", cancelled_by="queue",
                                  finished_at=time.time())
        for row in queued:
            if len(self._runs) >= self.settings.max_running:
                return
            if not row["cancel_requested"]:
                self._start_job(row)

    def _start_job(self, row: dict) -> None:
        work = Path(row["work_dir"])
        work.mkdir(parents=True, exist_ok=True)
        (work / "STOP").unlink(missing_ok=True)
        try:
            bundle = bundle_folder(self.serving.pool, row["model"])
            if bundle is not None:  # a served MONAI bundle: monai.bundle run on a copy of it
                steps = bundle_plan(row["kind"], row["params"], row["datalist"], bundle, work)
            else:
                version = str(row["params"].get("base_version") or self.serving.serving_config(row["model"])[0])
                config_path = self.serving.store.config_path(row["model"], version)
                steps = plan(row["kind"], row["params"], row["datalist"], config_path, work, resume=row["resume"])
        except EngineError as exc:
            self.store.update(row["id"], state="failed", error=str(exc), finished_at=time.time())
            return
        done = set((row["progress"] or {}).get("steps_done", [])) if row["resume"] else set()
        first = next((i for i in range(len(steps)) if i not in done), len(steps))
        self.store.update(row["id"], state="running", started_at=row["started_at"] or time.time(), error=None,
                          finished_at=None, cancelled_by=None,
                          progress={**(row["progress"] or {}), "steps": len(steps), "step": first + 1,
                                    "steps_done": sorted(done)})
        self._launch(row["id"], steps, first, work)

    def _launch(self, job_id: str, steps: list[Step], index: int, work: Path) -> None:
        if index >= len(steps):
            self._finish(job_id, steps, work)
            return
        step = steps[index]
        step.output.mkdir(parents=True, exist_ok=True)
        threads = str(self.settings.threads)
        python_path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "AIAA_JOB_ID": job_id,
               "PYTHONPATH": python_path}
        argv = ["nice", "-n", str(self.settings.niceness), *step.argv] if self.settings.niceness else step.argv
        log_file = open(work / "job.log", "ab")  # noqa: SIM115 - the worker writes to it; closed when it ends
        log_file.write(f"$ {' '.join(step.argv)}\n".encode())
        log_file.flush()
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=str(work), env=env, start_new_session=True)
        progress_file = work / "progress.jsonl"
        self._runs[job_id] = _Run(job_id, steps, index, process, log_file, work,
                                  offset=progress_file.stat().st_size if progress_file.exists() else 0)
        self.store.update(job_id, pid=process.pid, pgid=process.pid, heartbeat=time.time())
        log.info("job %s step %d/%d started (pid %d)", job_id, index + 1, len(steps), process.pid)

    # following ----------------------------------------------------------------

    def _follow(self, run: _Run) -> None:
        heartbeat = self._read_progress(run)
        row = self.store.get(run.job_id)
        if row["cancel_requested"]:
            self._escalate(run)
        code = run.process.poll()
        if code is None:
            if time.time() - heartbeat > self.settings.heartbeat_timeout_s:
                self._signal(run, signal.SIGKILL)
                run.process.wait(timeout=10)
                self._end(run, "interrupted", error=f"no heartbeat for {self.settings.heartbeat_timeout_s:.0f} s: "
                                                    "the worker was killed")
            return
        self._signal(run, signal.SIGKILL)  # whatever the step left behind in its group (torchrun ranks)
        run.log.close()
        del self._runs[run.job_id]
        if code == 0 and not row["cancel_requested"]:
            done = sorted(set((row["progress"] or {}).get("steps_done", [])) | {run.index})
            self.store.update(run.job_id, progress={**(row["progress"] or {}), "steps_done": done,
                                                    "step": min(run.index + 2, len(run.steps))})
            self._launch(run.job_id, run.steps, run.index + 1, run.work)
        elif row["cancel_requested"]:
            by = {0: "stop", 1: "stop", 2: "SIGTERM", 3: "SIGKILL"}[run.cancel_stage]
            self._end(run, "cancelled", cancelled_by=by, error=None if code == EXIT_STOPPED else f"exit status {code}")
        elif code == EXIT_STOPPED:
            self._end(run, "cancelled", cancelled_by="stop")
        elif code < 0:
            self._end(run, "interrupted", error=f"the worker was killed by signal {-code} "
                                                f"({signal.Signals(-code).name}); resume it with POST /admin/jobs/{{id}}/resume")
        else:
            self._end(run, "failed", error=f"exit status {code}: {_tail(run.work / 'job.log', 5)}")

    def _read_progress(self, run: _Run) -> float:
        path = run.work / "progress.jsonl"
        if not path.exists():
            return run.started
        heartbeat = path.stat().st_mtime
        with open(path, "rb") as fh:
            fh.seek(run.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        run.offset += len(complete)
        latest = None
        for line in complete.splitlines():
            try:
                latest = json.loads(line)
            except json.JSONDecodeError:
                continue
        if latest is not None:
            row = self.store.get(run.job_id)
            progress = dict(row["progress"] or {})
            steps = max(len(run.steps), 1)
            done = float(latest.get("progress", 0.0))
            progress.update({k: latest[k] for k in ("epoch", "epochs") if k in latest})
            progress["metrics"] = {**progress.get("metrics", {}), **latest.get("metrics", {})}
            progress["progress"] = round((run.index + done) / steps, 4)
            if latest.get("eta_s") is not None and done > 0:  # this step's ETA plus the steps after it
                step_s = (time.time() - run.started) / done
                progress["eta_s"] = round(latest["eta_s"] + (steps - run.index - 1) * step_s, 1)
            self.store.update(run.job_id, progress=progress, heartbeat=heartbeat)
        return heartbeat

    def _escalate(self, run: _Run) -> None:
        now = time.time()
        if run.cancel_stage == 0:
            (run.work / "STOP").touch()
            run.cancel_stage, run.cancel_at = 1, now
        elif run.cancel_stage == 1 and now - run.cancel_at > self.settings.stop_grace_s:
            self._signal(run, signal.SIGTERM)
            run.cancel_stage, run.cancel_at = 2, now
        elif run.cancel_stage == 2 and now - run.cancel_at > self.settings.term_grace_s:
            self._signal(run, signal.SIGKILL)
            run.cancel_stage, run.cancel_at = 3, now

    @staticmethod
    def _signal(run: _Run, sig: signal.Signals) -> None:
        try:
            os.killpg(run.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _end(self, run: _Run, state: str, error: str | None = None, cancelled_by: str | None = None,
             result: dict | None = None) -> None:
        self._runs.pop(run.job_id, None)
        if not run.log.closed:
            run.log.close()
        self.store.update(run.job_id, state=state, error=error, cancelled_by=cancelled_by, pid=None,
                          finished_at=time.time(), **({"result": result} if result is not None else {}))
        log.info("job %s %s%s", run.job_id, state, f": {error}" if error else "")

    # finishing ------------------------------------------------------------------

    def _finish(self, job_id: str, steps: list[Step], work: Path) -> None:
        """All steps succeeded: turn their outputs into the job's result (a new version, a report)."""
        row = self.store.get(job_id)
        try:
            if steps and steps[0].extra.get("bundle_job"):
                result = bundle_finish(self.serving.pool, row["kind"], row["model"], row["params"], job_id, work)
            elif row["kind"] in ("train", "finetune"):
                result = self._register(row, steps)
            elif row["kind"] == "evaluate":
                result = load_json(steps[0].output / "report.json")
            else:
                report = steps[0].output / "export_report.json"
                if not report.is_file() or not load_json(report).get("passed", False):
                    raise EngineError(f"the export did not pass its checks (see {report})")
                result = {"output": str(steps[0].output), "report": load_json(report),
                          **self._register_export(row, steps[0].output, load_json(report))}
        except Exception as exc:
            self.store.update(job_id, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time(),
                              pid=None)
            log.exception("job %s: finishing failed", job_id)
            return
        progress = {**(row["progress"] or {}), "progress": 1.0, "eta_s": 0}
        self.store.update(job_id, state="succeeded", result=result, progress=progress, finished_at=time.time(),
                          pid=None, error=None)
        log.info("job %s succeeded: %s", job_id, result if row["kind"] != "evaluate" else result.get("summary"))

    def _register(self, row: dict, steps: list[Step]) -> dict[str, Any]:
        name = row["model"]
        base = str(row["params"].get("base_version") or self.serving.store.serving(name))
        config_path = self.serving.store.config_path(name, base)
        config = load_model_config(config_path)
        weights, metrics, finals = [], [], []
        for member, step in zip(config.members(), steps):
            weights.append(step.output / Path(str(member.model_path)).name)
            metrics.append(step.output / "metrics.json")
            finals.append(load_json(metrics[-1]).get("final", {}))
        summary = {"val_mean_dice": [f.get("val_mean_dice") for f in finals],
                   "val_dice": [f.get("val_dice") for f in finals], "labels": config.labels}
        # New weights: the parent's exports were made from other weights, so the new version lists none.
        config = config.model_copy(update={"exports": []})
        version = self.serving.store.register(
            name, VersionFiles(config, weights, [Path(s.extra["train_config"]) for s in steps], metrics),
            source={"job_id": row["id"], "kind": row["kind"], "datalist": row["datalist"], "base_version": base},
            metrics=summary)
        return self._deploy(row, version, base, {"metrics": summary})

    def _register_export(self, row: dict, output: Path, report: dict[str, Any]) -> dict[str, Any]:
        """A new version with the same weights and the verified export (which ``auto`` then serves)."""
        name = row["model"]
        base = str(row["params"].get("base_version") or self.serving.store.serving(name))
        config_path = self.serving.store.config_path(name, base)
        config = load_model_config(config_path)
        weights = [(config_path.parent / str(m.model_path)).resolve() for m in config.members()]
        none: list[Path | None] = [None] * len(weights)
        version = self.serving.store.register(
            name, VersionFiles(config, weights, none, none, config_path.parent,
                               {f"{report['format']}_{report['precision']}": output}),
            source={"job_id": row["id"], "kind": "export", "base_version": base},
            metrics={"export": {k: report.get(k) for k in ("format", "precision", "speedup_vs_pytorch",
                                                           "mask_dice_min", "validation")}})
        return self._deploy(row, version, base, {})

    def _deploy(self, row: dict, version: str, base: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Serve a new version unless the job says ``deploy: false``; a failed load leaves ``base`` serving."""
        name = row["model"]
        result: dict[str, Any] = {"version": version, "base_version": base, **extra, "deployed": False}
        if row["params"].get("deploy", True):
            try:
                self.serving.deploy(name, version)
                result["deployed"] = True
            except Exception as exc:  # the old version keeps serving
                result["deploy_error"] = f"{type(exc).__name__}: {exc}"
                log.error("job %s: version %s of %s failed to load, %s still serves: %s", row["id"], version, name,
                          base, exc)
        return result


def _is_our_worker(pid: int | None, work_dir: str | None) -> bool:
    """Whether ``pid`` is still a worker of this job (not a reused process id)."""
    if not pid or not work_dir:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return work_dir in cmdline


def _tail(path: Path, lines: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
