"""Micro-batching: concurrent calls of the same shape run as one network call and get their own outputs."""

import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest
import torch
from helpers import interactive_config, phantom, write_model, write_pool

from engines.config.model import ModelConfig
from engines.serving.batching import CANCELLED, MicroBatcher
from engines.serving.pool import EnginePool
from engines.tasks.interactive import point_prompt


class Recording:
    """A deterministic network (a per-sample affine map) that records the batch size of every call.

    ``gate``: when given, each call first waits for it (so a test can hold the network busy).
    """

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            assert self.gate.wait(30)
        self.sizes.append(int(x.shape[0]))
        return x.sum(dim=1, keepdim=True) * 2.0 + 1.0


def _input(value: float, shape=(1, 2, 4, 4, 4)) -> torch.Tensor:
    return torch.full(shape, value)


def test_a_full_batch_runs_as_one_call_and_each_caller_gets_its_own_outputs():
    network = Recording()
    batcher = MicroBatcher(network, max_batch=3, max_wait_ms=60_000)  # only a full batch can start it
    futures = [batcher.submit(_input(v)) for v in (1.0, 2.0, 3.0)]
    outputs = [f.result(10) for f in futures]
    assert network.sizes == [3]
    for v, out in zip((1.0, 2.0, 3.0), outputs):
        assert torch.equal(out, network.__class__()(_input(v)))


def test_inputs_of_another_shape_go_in_another_batch():
    network = Recording()
    batcher = MicroBatcher(network, max_batch=2, max_wait_ms=0)
    small, large = batcher.submit(_input(1.0)), batcher.submit(_input(1.0, (1, 2, 8, 8, 8)))
    assert small.result(10).shape == (1, 1, 4, 4, 4) and large.result(10).shape == (1, 1, 8, 8, 8)
    assert sorted(network.sizes) == [1, 1]


def test_calls_from_many_threads_get_the_results_they_would_get_alone():
    network = Recording()
    batcher = MicroBatcher(network, max_batch=4, max_wait_ms=60_000)
    results: dict[int, torch.Tensor] = {}

    def client(n: int) -> None:
        results[n] = batcher(_input(float(n)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert network.sizes == [4, 4]
    for n in range(8):
        assert torch.equal(results[n], Recording()(_input(float(n))))


def test_a_cancelled_waiter_leaves_and_its_companions_batch_still_runs():
    network = Recording()
    batcher = MicroBatcher(network, max_batch=3, max_wait_ms=60_000)
    first, gone = batcher.submit(_input(1.0)), batcher.submit(_input(2.0))
    assert gone.cancel()
    later = [batcher.submit(_input(v)) for v in (3.0, 4.0)]
    assert [torch.equal(f.result(10), Recording()(_input(v))) for f, v in zip([first, *later], (1.0, 3.0, 4.0))] \
        == [True, True, True]
    assert network.sizes == [3] and gone.cancelled()


def test_a_call_whose_request_is_cancelled_stops_waiting_for_companions():
    batcher = MicroBatcher(Recording(), max_batch=4, max_wait_ms=60_000)  # alone, it would wait a minute
    token = CANCELLED.set(lambda: True)
    try:
        with pytest.raises(CancelledError):
            batcher(_input(1.0))
    finally:
        CANCELLED.reset(token)


def test_a_call_waits_at_most_max_wait_from_the_oldest_waiter():
    now = [100.0]
    network = Recording()
    batcher = MicroBatcher(network, max_batch=8, max_wait_ms=5, clock=lambda: now[0])
    future = batcher.submit(_input(1.0))  # alone: it waits for companions until its deadline
    now[0] += 0.006
    assert torch.equal(future.result(10), Recording()(_input(1.0)))
    assert network.sizes == [1]


def test_a_failing_network_fails_every_caller_of_its_batch_and_the_next_batch_runs():
    calls = []

    def network(x):
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x

    batcher = MicroBatcher(network, max_batch=2, max_wait_ms=60_000)
    failed = [batcher.submit(_input(1.0)), batcher.submit(_input(2.0))]
    for future in failed:
        with pytest.raises(RuntimeError, match="boom"):
            future.result(10)
    following = [batcher.submit(_input(v)) for v in (5.0, 6.0)]
    assert [torch.equal(f.result(10), _input(v)) for f, v in zip(following, (5.0, 6.0))] == [True, True]
    assert calls == [2, 2]


def test_an_interactive_model_with_batching_predicts_what_it_predicts_without(tmp_path):
    cfg = interactive_config(interactive={"margin": 0.25, "min_size_mm": 20.0, "max_zooms": 0})  # one call a step
    write_model(tmp_path, "plain", cfg, seed=3)
    write_model(tmp_path, "batched", {**cfg, "batching": {"max_batch": 4, "max_wait_ms": 100}}, seed=3)
    entries = [{"name": n, "class": "InteractiveEngine", "module": "engines.tasks.interactive",
                "config_file": f"{n}.json"} for n in ("plain", "batched")]
    pool = EnginePool.from_file(write_pool(tmp_path, entries), warmup=False)
    plain, batched = pool.get("plain"), pool.get("batched")
    assert isinstance(batched.network, MicroBatcher) and not isinstance(plain.network, MicroBatcher)
    assert batched.network.max_batch == 4 and batched.network.max_wait_s == 0.1
    batched.network.max_wait_s = 60.0  # only a full batch starts: the test does not depend on timing
    volume, _ = phantom()
    prepared = plain.prepare(volume)
    clicks = [[18, 25, 15], [16, 24, 14], [20, 27, 16], [18, 22, 15]]
    alone = [plain.step(prepared, [point_prompt(c, True, prepared.shape)], None).mask for c in clicks]
    together: dict[int, np.ndarray] = {}

    def click(n: int) -> None:
        together[n] = batched.step(prepared, [point_prompt(clicks[n], True, prepared.shape)], None).mask

    threads = [threading.Thread(target=click, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert 4 in batched.network.batch_sizes  # the four first crops met in one batch
    for n in range(4):
        assert np.array_equal(together[n], alone[n])


def test_batching_settings_are_validated():
    with pytest.raises(ValueError, match="max_batch"):
        ModelConfig.model_validate(interactive_config(batching={"max_batch": 1}))
    with pytest.raises(ValueError, match="max_wait_ms"):
        ModelConfig.model_validate(interactive_config(batching={"max_batch": 4, "max_wait_ms": -1}))
