"""Test helpers of the nnInteractive door: a stand-in interactive engine, an app with a settable clock."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from helpers import phantom

from engines.serving.pool import EnginePool
from engines.tasks.interaction import predict_step
from engines.transforms.prompts import normalise_volume
from server.app import create_app
from server.protocols.nninteractive.leases import DoorSettings, LeaseRegistry
from server.protocols.nninteractive.routes import Door
from server.settings import Settings

MODEL = "interactive_test"


@dataclass
class Prepared:
    """What the stand-in keeps per image: the normalised volume and its spacing."""

    image: np.ndarray
    spacing: tuple[float, ...]


class StandInInteractive:
    """The shape of ``engines.tasks.interactive.InteractiveEngine``: ``prepare`` once, ``step`` per prompt.

    Its 'network' calls bright voxels the object and carves a ball around every negative click, so a
    prediction depends on the image, the crop the prompts give and the negative prompts.
    """

    type = "deepgrow"

    def __init__(self, name: str = MODEL, roi=(16, 16, 16)) -> None:
        self.name = name
        self.labels = ["object"]
        self.roi = list(roi)
        self.config = SimpleNamespace(roi=self.roi)
        self.steps = 0
        self.prepared = 0

    def info(self) -> dict:
        return {"name": self.name, "type": self.type, "labels": self.labels, "description": "", "version": "1"}

    def prepare(self, volume) -> Prepared:
        self.prepared += 1
        return Prepared(normalise_volume(volume.array), volume.geometry.spacing)

    @staticmethod
    def network(x: np.ndarray) -> np.ndarray:
        return (x[0] - 0.5) * 10.0 - 100.0 * x[3]

    def step(self, prepared: Prepared, prompts, mask):
        self.steps += 1
        return predict_step(self.network, prepared.image, prepared.spacing, prompts, mask, self.roi,
                            min_size_mm=12.0, max_zooms=1)

    def close(self) -> None:
        pass


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
    engine: StandInInteractive

    def state(self, token: str):
        """The server-side state of a lease (touches no clock)."""
        return self.door.leases.peek(token, self.engine.name).state


def make_app(door_settings: DoorSettings, memory=64 * 1024 * 1024, max_voxels=200_000):
    engine = StandInInteractive()
    pool = EnginePool()
    pool.add(engine)
    settings = Settings(config="unused.json", max_upload_bytes=8 * 1024 * 1024, max_voxels=max_voxels,
                        session_memory_bytes=memory)
    app = create_app(settings, pool)
    clock = Clock()
    app.state.nninteractive = Door(door_settings, LeaseRegistry(door_settings, memory, clock=clock))
    return app, clock, engine
