"""Admission: a request is refused (503, Retry-After) before its body is read or decoded; a backend's own
concurrency limit lowers a model's running slots."""

import json
import threading

import httpx
import torch
from helpers import phantom, segmentation_config, serve_in_thread

from engines.config.model import ModelConfig
from engines.data.io import write_volume
from engines.serving.pool import EnginePool
from engines.tasks.segmentation import SegmentationEngine
from server.admission import GateKeeper
from server.app import create_app
from server.settings import Settings


class Blocking:
    """A backend that holds the first call until released."""

    def __init__(self, max_concurrency=None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.max_concurrency = max_concurrency

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.release.wait(30)
        return torch.zeros((x.shape[0], 3, *x.shape[2:]))


def _served(backend, **limits):
    pool = EnginePool()
    pool.add(SegmentationEngine("slow", ModelConfig.model_validate(segmentation_config()), backend))
    settings = Settings(config="unused.json", max_voxels=200_000, **limits)
    return serve_in_thread(create_app(settings, pool))


def _image() -> bytes:
    volume, _ = phantom()
    return write_volume(volume.array, volume.geometry, ".nii.gz")


def _occupy(port, backend) -> threading.Thread:
    def first():
        with httpx.Client(timeout=60) as c:
            c.post(f"http://127.0.0.1:{port}/v1/segmentation?model=slow&output=json",
                   data={"params": "{}"}, files={"image": ("v.nii.gz", _image())})

    thread = threading.Thread(target=first)
    thread.start()
    assert backend.entered.wait(30)
    return thread


def test_a_full_model_refuses_before_reading_or_decoding_the_upload():
    backend = Blocking()
    with _served(backend, max_running_per_model=1, max_queued_per_model=0) as port:
        first = _occupy(port, backend)
        try:
            # Not an image at all: decoded, it would be a 400; admitted first, it is a 503 at once.
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/segmentation?model=slow",
                               data={"params": json.dumps({})}, files={"image": ("v.nii.gz", b"not an image")},
                               timeout=30)
            assert reply.status_code == 503 and reply.headers["retry-after"] == "1", reply.text
            assert reply.json()["error"] == "Busy"
        finally:
            backend.release.set()
            first.join()


def test_a_backend_that_takes_one_call_at_a_time_gets_one_running_slot():
    backend = Blocking(max_concurrency=1)
    with _served(backend, max_running_per_model=2, max_queued_per_model=0) as port:
        first = _occupy(port, backend)
        try:
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/segmentation?model=slow&output=json",
                               data={"params": "{}"}, files={"image": ("v.nii.gz", _image())}, timeout=30)
            assert reply.status_code == 503  # two running slots by settings, one by the backend
        finally:
            backend.release.set()
            first.join()


def test_every_door_gets_the_one_gate_of_a_model_with_its_backend_limit():
    from types import SimpleNamespace

    gates = GateKeeper(max_running=2, max_queued=4)
    engine = SimpleNamespace(name="m", backend=SimpleNamespace(max_concurrency=1))
    gate = gates.for_engine(engine)
    assert gate.max_running == 1
    # a lookup by name (what tests and metrics do) never replaces it with a gate of the default limit
    assert gates["m"] is gate and gates.for_engine(engine) is gate


def test_a_batching_model_gets_running_slots_for_a_full_batch():
    from types import SimpleNamespace

    from engines.serving.batching import MicroBatcher

    gates = GateKeeper(max_running=2, max_queued=4)
    batcher = MicroBatcher(lambda x: x, max_batch=8, max_wait_ms=5)
    engine = SimpleNamespace(name="m", backend=SimpleNamespace(max_concurrency=1), network=batcher)
    assert gates.for_engine(engine).max_running == 8  # the batcher makes one backend call at a time


def test_a_request_cancelled_while_waiting_for_companions_leaves_the_batch_and_frees_its_slot():
    from types import SimpleNamespace

    import anyio

    from engines.serving.batching import MicroBatcher

    calls = []
    batcher = MicroBatcher(lambda x: calls.append(x) or x, max_batch=4, max_wait_ms=600_000)  # waits 10 minutes
    gate = GateKeeper(max_running=1, max_queued=0).for_engine(SimpleNamespace(name="m", backend=None,
                                                                               network=batcher))

    async def main() -> None:
        with anyio.fail_after(30):
            await cancelled_while_waiting()
        assert gate.in_flight == 0 and not gate._semaphore.locked()

    async def cancelled_while_waiting() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(gate.run, batcher, torch.zeros(1, 1, 2, 2, 2))
            while not batcher._pending:  # the call waits in the batcher now
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()  # its client went away

    anyio.run(main)
    assert calls == []  # the network never ran the cancelled call


def test_model_calls_do_not_wait_behind_other_blocking_work():
    import anyio
    from anyio import to_thread

    gate = GateKeeper(max_running=1, max_queued=0).gate("m")
    release = threading.Event()

    async def main() -> int:
        default = to_thread.current_default_thread_limiter()
        default.total_tokens = 1  # one worker thread for uploads and sync routes...
        async with anyio.create_task_group() as group:
            group.start_soon(to_thread.run_sync, release.wait)  # ...busy decoding a large upload
            while default.borrowed_tokens < 1:
                await anyio.sleep(0.01)
            with anyio.fail_after(30):
                answer = await gate.run(lambda: 42)
            release.set()
        return answer

    assert anyio.run(main) == 42
