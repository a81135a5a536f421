"""Test helpers of the nnInteractive door: the stand-in interactive engine, counted, and an app with a settable clock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from helpers import phantom, standin_interactive_engine

from engines.serving.pool import EnginePool
from server.app import create_app
from server.protocols.nninteractive.door import Door
from server.protocols.nninteractive.leases import DoorSettings
from server.settings import Settings

MODEL = "interactive_test"


def counted_engine(name: str = MODEL):
    """The shared stand-in InteractiveEngine, counting its ``prepare`` and ``step`` calls."""
    engine = standin_interactive_engine(name, interactive={"margin": 0.25, "min_size_mm": 12.0, "max_zooms": 1})
    engine.steps = engine.prepared = 0
    prepare, step = engine.prepare, engine.step

    def counted_prepare(volume):
        engine.prepared += 1
        return prepare(volume)

    def counted_step(*args, **kwargs):
        engine.steps += 1
        return step(*args, **kwargs)

    engine.prepare, engine.step = counted_prepare, counted_step
    return engine


class Clock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def image_4d(shape=(40, 48, 32), center=(18, 25, 15)) -> np.ndarray:
    """A phantom image as the client sends it: ``[1, X, Y, Z]`` float32."""
    volume, _ = phantom(shape=shape, center=center)
    return volume.array[None].astype(np.float32)


@dataclass
class Server:
    """A running app: its base URL, the door (leases, clock) and the stand-in engine."""

    url: str
    app: object
    door: Door
    clock: Clock
    engine: object

    def state(self, token: str):
        """The server-side state of a lease (touches no clock)."""
        return self.door.leases.peek(token, self.engine.name).state


def make_app(door_settings: DoorSettings, memory=64 * 1024 * 1024, max_voxels=200_000, engines=()):
    engine = counted_engine()
    pool = EnginePool()
    for e in (engine, *engines):
        pool.add(e)
    settings = Settings(config="unused.json", max_upload_bytes=8 * 1024 * 1024, max_voxels=max_voxels,
                        session_memory_bytes=memory)
    app = create_app(settings, pool)
    clock = Clock()
    app.state.nninteractive = Door.create(door_settings, app.state.sessions, clock=clock)
    return app, clock, engine
