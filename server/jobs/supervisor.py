"""The supervisor: starts queued jobs as worker processes, follows them, and records what happened.

One thread in the server process. Each step of a job is a command line started in its own
process group (``start_new_session``), with few threads and a lower priority so that
inference stays responsive. Workers append JSON lines to ``progress.jsonl`` and renew its
modification time every few seconds (:class:`server.cli.train_progress.ProgressFile`); the
supervisor copies the latest line into the job table and takes any change of the file as the
worker's heartbeat, timed on its own (injectable, monotonic) clock from the moment it launched the
step, so a progress file left by an earlier attempt never counts against a resumed job. A worker
silent for ``heartbeat_timeout_s`` is ended. Loading and warming a new version runs on a
deployment thread of its own, so the supervisor keeps following the other jobs meanwhile. Cancelling asks the worker to stop at its next batch (a ``STOP`` file; it checkpoints
and exits with :data:`EXIT_STOPPED`), then sends SIGTERM, then SIGKILL to the whole group;
``cancelled_by`` says which ended it. A worker that dies on its own becomes ``interrupted``
(killed by a signal or silent) or ``failed`` (an error exit) at the next poll.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engines.backends.selection import speedup
from engines.config.model import load_json, load_model_config
from engines.errors import EngineError
from engines.serving.deploy import ServingManager
from engines.serving.versions import VersionFiles
from server.jobs.bundle_commands import bundle_failure, bundle_folder, bundle_plan, bundle_result
from server.jobs.commands import Step, job_kind, plan
from server.jobs.store import JobState, JobStore

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
    heartbeat_timeout_s: float = 600.0  # a worker whose progress file does not change this long is ended; 0: never
    max_dice_drop: float = 0.0  # a training deploys only if its validation Dice is at most this below the base's


@dataclass
class _Run:
    """A job whose step is running in a worker process."""

    job_id: str
    steps: list[Step]
    index: int
    process: subprocess.Popen
    log: IO[bytes]
    work: Path
    started: float  # supervisor clock at launch
    offset: int = 0
    last_beat: float = 0.0  # supervisor clock when the progress file last changed (or the launch)
    signature: tuple[int, int] | None = None  # (size, mtime_ns) of the progress file when last seen
    cancel_stage: int = 0  # 0 none, 1 stop asked, 2 SIGTERM sent, 3 SIGKILL sent
    cancel_at: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Runs the job table's queued jobs; one instance per job table.

    ``clock`` (monotonic seconds) times heartbeats and cancel escalation; tests pass their own.
    """

    def __init__(self, store: JobStore, serving: ServingManager | None, settings: SupervisorSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.serving = serving
        self.settings = settings
        self.clock = clock
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()  # the runs, between the loop, stop() and the deployment thread
        self._deployer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-deploy")
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
        """Stop following jobs. Running workers are ended and their jobs become ``interrupted``.

        The loop finishes its current pass first, so no job is launched or followed after this.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._deployer.shutdown(wait=True)
        with self._lock:
            for run in list(self._runs.values()):
                self._signal(run, signal.SIGKILL)
                try:
                    run.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                run.log.close()
                self.store.update(run.job_id, only_if_state=(JobState.RUNNING,), state=JobState.INTERRUPTED,
                                  finished_at=time.time(), pid=None,
                                  error="the server stopped while the job ran; resume it with POST "
                                        "/admin/jobs/{id}/resume")
            self._runs.clear()

    def wake(self) -> None:
        """Look at the table now (a job was submitted or cancelled)."""
        self._wake.set()

    def running(self) -> list[str]:
        """Ids of the jobs whose worker runs now."""
        with self._lock:
            return list(self._runs)

    def recover(self) -> None:
        """Jobs recorded ``running`` have no supervisor any more: end their workers, mark them interrupted."""
        for row in self.store.list(states=(JobState.RUNNING,)):
            if row["pgid"] and _is_our_worker(row["pid"], row["work_dir"]):
                try:
                    os.killpg(row["pgid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.store.update(row["id"], state=JobState.INTERRUPTED, finished_at=time.time(), pid=None,
                              error="the server restarted while the job ran; resume it with POST /admin/jobs/{id}/resume")
            log.warning("job %s was running when the server stopped: marked interrupted", row["id"])

    def poll(self) -> None:
        """One pass: follow every running worker, then start queued jobs while slots are free."""
        with self._lock:
            if self._stop.is_set():
                return
            for run in list(self._runs.values()):
                self._follow(run)
            self._start_queued()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the supervisor must outlive any one job's trouble
                log.exception("job supervisor error")
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()

    # starting -----------------------------------------------------------------

    def _start_queued(self) -> None:
        queued = self.store.list(states=(JobState.QUEUED,))[::-1]  # oldest first
        for row in queued:
            if row["cancel_requested"]:
                self.store.update(row["id"], only_if_state=(JobState.QUEUED,), state=JobState.CANCELLED,
                                  cancelled_by="queue", finished_at=time.time())
        for row in queued:
            if self._stop.is_set() or len(self._runs) >= self.settings.max_running:
                return
            if not row["cancel_requested"]:
                self._start_job(row)

    def _start_job(self, row: dict) -> None:
        work = Path(row["work_dir"])
        work.mkdir(parents=True, exist_ok=True)
        (work / "STOP").unlink(missing_ok=True)
        try:
            bundle = self._bundle(row)
            if bundle is not None:  # a served MONAI bundle: monai.bundle run on a copy of it
                steps = bundle_plan(row["kind"], row["params"], row["datalist"], bundle, work, resume=row["resume"])
            else:
                version = str(row["params"].get("base_version") or self.serving.serving_config(row["model"])[0])
                config_path = self.serving.store.config_path(row["model"], version)
                steps = plan(row["kind"], row["params"], row["datalist"], config_path, work, resume=row["resume"])
        except (EngineError, OSError) as exc:  # a job that cannot be planned fails (never retried at every poll)
            self.store.update(row["id"], state=JobState.FAILED, error=str(exc), finished_at=time.time())
            return
        done = set((row["progress"] or {}).get("steps_done", [])) if row["resume"] else set()
        first = next((i for i in range(len(steps)) if i not in done), len(steps))
        progress = {**(row["progress"] or {}), "steps": len(steps), "step": first + 1, "steps_done": sorted(done)}
        if first < len(steps) and "resume" in steps[first].extra:  # how a resumed bundle training starts again
            progress["resume"] = steps[first].extra["resume"]
        if first >= len(steps):
            self.store.update(row["id"], state=JobState.RUNNING, progress=progress, error=None, finished_at=None,
                              started_at=row["started_at"] or time.time(), cancelled_by=None)
            self._finish(row["id"], steps, work)
            return
        if self._launch(row["id"], steps, first, work):
            # Running only once its worker exists: a launch that fails leaves the job failed, not running.
            self.store.update(row["id"], only_if_state=(JobState.QUEUED,), state=JobState.RUNNING,
                              started_at=row["started_at"] or time.time(), error=None, finished_at=None,
                              cancelled_by=None, progress=progress)

    def _bundle(self, row: dict) -> Path | None:
        """The bundle folder a bundle job starts from (its base version's), or None for one of our own models."""
        base = row["params"].get("base_version")
        if base is not None:
            return self.serving.store.bundle_dir(row["model"], str(base))
        return bundle_folder(self.serving.pool, row["model"])

    def _launch(self, job_id: str, steps: list[Step], index: int, work: Path) -> bool:
        """Start step ``index`` in a worker process; False (and the job failed) when it cannot start."""
        step = steps[index]
        threads = str(self.settings.threads)
        python_path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "AIAA_JOB_ID": job_id,
               "PYTHONPATH": python_path}
        argv = ["nice", "-n", str(self.settings.niceness), *step.argv] if self.settings.niceness else step.argv
        try:
            step.output.mkdir(parents=True, exist_ok=True)
            log_file = open(work / "job.log", "ab")  # noqa: SIM115 - the worker writes to it; closed when it ends
        except OSError as exc:
            self._fail_launch(job_id, index, steps, exc)
            return False
        if "resume" in step.extra:
            log_file.write(f"# resume: {json.dumps(step.extra['resume'])}\n".encode())
        log_file.write(f"$ {' '.join(step.argv)}\n".encode())
        log_file.flush()
        try:
            process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=str(work), env=env, start_new_session=True)
        except OSError as exc:
            log_file.close()
            self._fail_launch(job_id, index, steps, exc)
            return False
        progress_file = work / "progress.jsonl"
        now = self.clock()
        run = _Run(job_id, steps, index, process, log_file, work, started=now, last_beat=now,
                   offset=progress_file.stat().st_size if progress_file.exists() else 0,
                   signature=_signature(progress_file))
        self._runs[job_id] = run
        self.store.update(job_id, pid=process.pid, pgid=process.pid, heartbeat=time.time())
        log.info("job %s step %d/%d started (pid %d)", job_id, index + 1, len(steps), process.pid)
        return True

    def _fail_launch(self, job_id: str, index: int, steps: list[Step], exc: OSError) -> None:
        self.store.update(job_id, state=JobState.FAILED, finished_at=time.time(), pid=None,
                          error=f"step {index + 1}/{len(steps)} could not start: {exc}")
        log.error("job %s: step %d could not start: %s", job_id, index + 1, exc)

    # following ----------------------------------------------------------------

    def _follow(self, run: _Run) -> None:
        self._read_progress(run)
        row = self.store.get(run.job_id)
        if row["cancel_requested"]:
            self._escalate(run)
        code = run.process.poll()
        if code is None:
            timeout = self.settings.heartbeat_timeout_s
            if timeout and self.clock() - run.last_beat > timeout:
                self._signal(run, signal.SIGKILL)
                run.process.wait(timeout=10)
                self._end(run, JobState.INTERRUPTED,
                          error=f"no heartbeat for {timeout:.0f} s (AIAA_JOB_HEARTBEAT_TIMEOUT_S): the worker was "
                                "killed; resume it with POST /admin/jobs/{id}/resume")
            return
        self._signal(run, signal.SIGKILL)  # whatever the step left behind in its group (torchrun ranks)
        run.log.close()
        del self._runs[run.job_id]
        if code == 0:  # the step ran to its end (perhaps before a cancel reached it): resume skips it
            done = sorted(set((row["progress"] or {}).get("steps_done", [])) | {run.index})
            self.store.update(run.job_id, progress={**(row["progress"] or {}), "steps_done": done,
                                                    "step": min(run.index + 2, len(run.steps))})
        if row["cancel_requested"]:
            by = {0: "stop", 1: "stop", 2: "SIGTERM", 3: "SIGKILL"}[run.cancel_stage]
            self._end(run, JobState.CANCELLED, cancelled_by=by,
                      error=None if code in (0, EXIT_STOPPED) else f"exit status {code}")
        elif code == 0:
            if run.index + 1 < len(run.steps):
                self._launch(run.job_id, run.steps, run.index + 1, run.work)
            else:
                self._finish(run.job_id, run.steps, run.work)
        elif code == EXIT_STOPPED:
            self._end(run, JobState.CANCELLED, cancelled_by="stop")
        elif code < 0:
            self._end(run, JobState.INTERRUPTED, error=f"the worker was killed by signal {-code} "
                                                       f"({signal.Signals(-code).name}); resume it with POST "
                                                       "/admin/jobs/{id}/resume")
        else:
            explained = bundle_failure(run.work) if run.steps[run.index].extra.get("bundle_job") else None
            self._end(run, JobState.FAILED, error=f"exit status {code}: {explained or _tail(run.work / 'job.log', 5)}")

    def _read_progress(self, run: _Run) -> None:
        """Copy the worker's latest progress line into the table; any change of the file is a heartbeat."""
        path = run.work / "progress.jsonl"
        signature = _signature(path)
        if signature is None:
            return
        if signature != run.signature:
            run.signature, run.last_beat = signature, self.clock()
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
        if latest is None or "progress" not in latest and "metrics" not in latest:
            return
        row = self.store.get(run.job_id)
        progress = dict(row["progress"] or {})
        steps = max(len(run.steps), 1)
        done = float(latest.get("progress", 0.0))
        progress.update({k: latest[k] for k in ("epoch", "epochs") if k in latest})
        progress["metrics"] = {**progress.get("metrics", {}), **latest.get("metrics", {})}
        progress["progress"] = round((run.index + done) / steps, 4)
        if latest.get("eta_s") is not None and done > 0:  # this step's ETA plus the steps after it
            step_s = (self.clock() - run.started) / done
            progress["eta_s"] = round(latest["eta_s"] + (steps - run.index - 1) * step_s, 1)
        self.store.update(run.job_id, progress=progress, heartbeat=time.time())

    def _escalate(self, run: _Run) -> None:
        now = self.clock()
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

    def _end(self, run: _Run, state: JobState, error: str | None = None, cancelled_by: str | None = None) -> None:
        self._runs.pop(run.job_id, None)
        if not run.log.closed:
            run.log.close()
        self.store.update(run.job_id, state=state, error=error, cancelled_by=cancelled_by, pid=None,
                          finished_at=time.time())
        log.info("job %s %s%s", run.job_id, state, f": {error}" if error else "")

    # finishing ------------------------------------------------------------------

    def _finish(self, job_id: str, steps: list[Step], work: Path) -> None:
        """All steps succeeded: turn their outputs into the job's result on the deployment thread (loading
        and warming a new version takes a while; the supervisor keeps following other jobs meanwhile)."""
        self.store.update(job_id, pid=None)
        self._deployer.submit(self._conclude, job_id, steps, work)

    def _conclude(self, job_id: str, steps: list[Step], work: Path) -> None:
        row = self.store.get(job_id)
        produces = job_kind(row["kind"]).produces
        try:
            if steps and steps[0].extra.get("bundle_job"):
                result = bundle_result(row["kind"], work)
                if produces == "version":
                    result = self._register_bundle(row, result)
            elif produces == "version":
                result = self._register(row, steps)
            elif produces == "report":
                result = evaluation_result(steps[0].output)
            else:
                report = steps[0].output / "export_report.json"
                if not report.is_file() or not load_json(report).get("passed", False):
                    raise EngineError(f"the export did not pass its checks (see {report})")
                result = {"output": str(steps[0].output), "report": load_json(report),
                          **self._register_export(row, steps[0].output, load_json(report))}
        except Exception as exc:
            self.store.update(job_id, state=JobState.FAILED, error=f"{type(exc).__name__}: {exc}",
                              finished_at=time.time(), pid=None)
            log.exception("job %s: finishing failed", job_id)
            return
        progress = {**(row["progress"] or {}), "progress": 1.0, "eta_s": 0}
        self.store.update(job_id, state=JobState.SUCCEEDED, result=result, progress=progress, finished_at=time.time(),
                          pid=None, error=None)
        log.info("job %s succeeded: %s", job_id, result if produces != "report" else result.get("mean_dice"))

    def _register(self, row: dict, steps: list[Step]) -> dict[str, Any]:
        """A finished training: a new version (its weights, and the export re-made from them), deployed only
        when the quality gate passes: its validation Dice (``aiaa evaluate``) not more than
        ``max_dice_drop`` below the base version's on the same cases."""
        name = row["model"]
        base = str(row["params"].get("base_version") or self.serving.serving_config(name)[0])
        config_path = self.serving.store.config_path(name, base)
        config = load_model_config(config_path)
        trained = [s for s in steps if s.extra.get("role", "train") == "train"]
        checks = {s.extra["role"]: s for s in steps if s.extra.get("role", "train") != "train"}
        weights, metrics, finals = [], [], []
        for member, step in zip(config.members(), trained):
            weights.append(step.output / Path(str(member.model_path)).name)
            metrics.append(step.output / "metrics.json")
            finals.append(load_json(metrics[-1]).get("final", {}))
        summary: dict[str, Any] = {"val_mean_dice": [f.get("val_mean_dice") for f in finals],
                                   "val_dice": [f.get("val_dice") for f in finals], "labels": config.labels}
        gate, failure = self._quality_gate(row, checks)
        if gate is not None:
            summary["quality_gate"] = gate
        exports: dict[str, Path] = {}
        export = checks.get("export")
        if export is not None:
            report = load_json(export.output / "export_report.json")
            summary["export"] = {k: report.get(k) for k in ("format", "precision", "passed", "speedup_vs_pytorch",
                                                            "mask_dice_min")}
            if report.get("passed"):
                exports[f"{report['format']}_{report['precision']}"] = export.output
        # New weights: the parent's exports were made from other weights; only the re-made one is listed.
        config = config.model_copy(update={"exports": []})
        version = self.serving.store.register(
            name, VersionFiles(config, weights, [Path(s.extra["train_config"]) for s in trained], metrics,
                               exports=exports),
            source={"job_id": row["id"], "kind": row["kind"], "datalist": row["datalist"], "base_version": base},
            metrics=summary)
        if failure is not None:
            return {"version": version, "base_version": base, "metrics": summary, "deployed": False,
                    "not_deployed": failure}
        return self._deploy(row, version, base, {"metrics": summary})

    def _register_bundle(self, row: dict, trained: dict[str, Any]) -> dict[str, Any]:
        """A finished bundle training: the job's bundle copy (its configs, the new weights) becomes a new version."""
        name = row["model"]
        base = row["params"].get("base_version")
        version = self.serving.store.register_bundle(
            name, Path(trained["bundle"]),
            source={"job_id": row["id"], "kind": row["kind"], "datalist": row["datalist"], "base_version": base},
            metrics=trained.get("metrics") or {})
        return self._deploy(row, version, str(base), {k: v for k, v in trained.items() if k == "metrics"})

    def _quality_gate(self, row: dict, checks: dict[str, Step]) -> tuple[dict[str, Any] | None, str | None]:
        """New against base Dice on the job's validation cases and, where checked, on the version's own
        datalists (``others_``): each may drop at most ``max_dice_drop``. Returns the gate (None without
        checks) and why it failed (None when it passed)."""
        if "evaluate_new" not in checks or "evaluate_base" not in checks:
            return None, None
        drop = float(row["params"].get("max_dice_drop", self.settings.max_dice_drop))
        gate: dict[str, Any] = {"max_dice_drop": drop}
        reasons = []
        for prefix, suffix, what in (("", "", "validation Dice"),
                                     ("others_", "_others", "Dice on the datalists the serving version was trained on")):
            if f"evaluate_new{suffix}" not in checks:
                continue
            new = evaluation_result(checks[f"evaluate_new{suffix}"].output)["mean_dice"]
            base = evaluation_result(checks[f"evaluate_base{suffix}"].output)["mean_dice"]
            gate.update({f"{prefix}dice": new, f"{prefix}base_dice": base})
            if new is None or (base is not None and new < base - drop):
                reasons.append(f"{what} {new} is more than {drop} below the serving version's {base}")
        gate["passed"] = not reasons
        return gate, "; ".join(reasons) + " (quality gate)" if reasons else None

    def _register_export(self, row: dict, output: Path, report: dict[str, Any]) -> dict[str, Any]:
        """A new version with the same weights and the verified export (which ``auto`` then serves)."""
        name = row["model"]
        base = str(row["params"].get("base_version") or self.serving.serving_config(name)[0])
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
        serving = self.serving.served_speedup(name)
        new = speedup(report)
        if new is None or new <= serving:
            # Kept (it may serve on other hardware, or be chosen by hand), but not worth a switch here.
            return {"version": version, "base_version": base, "deployed": False,
                    "not_deployed": f"the export runs {new}x PyTorch's speed; what serves runs {serving}x"}
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


def evaluation_result(folder: Path) -> dict[str, Any]:
    """The result of an evaluate job: ``aiaa evaluate``'s report (``summary.json`` and ``raw.csv``), or
    ``aiaa evaluate --interactive``'s (``summary.json`` and ``interactive.csv``)."""
    summary = load_json(folder / "summary.json")
    if (folder / "interactive.csv").is_file():
        return interactive_result(folder, summary)
    cases: dict[str, dict[str, Any]] = {}
    with open(folder / "raw.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            dice = float(row["dice"])
            cases.setdefault(row["case"], {"case": row["case"], "dice": {}})["dice"][row["label"]] = (
                None if math.isnan(dice) else round(dice, 4))  # NaN: the label is in neither mask (not scored)
    scored = [s["dice"] for s in summary.values() if s.get("dice") is not None]
    return {"mean_dice": round(sum(scored) / len(scored), 4) if scored else None, "summary": summary,
            "cases": list(cases.values()), "report": str(folder)}


def interactive_result(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The result of an interactive evaluation: the protocol's overall figures of the ``box`` variant (or
    the first one run, without it) at the top, ``mean_dice`` being the Dice after the last click (what a fine-tune's
    quality gate compares), and the whole summary (every variant, dataset and structure)."""
    variant = "box" if "box" in summary else next(k for k in summary if k != "protocol")
    overall = summary[variant]["overall"]
    figures = {k: overall[k] for k in ("dice_first", "dice_final", "dice_auc", "nsd_final", "nsd_auc")}
    return {"variant": variant, **figures, "objects": overall["objects"], "mean_dice": overall["dice_final"],
            "summary": summary, "report": str(folder)}


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


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
