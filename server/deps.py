"""Request-scoped access to the server's state, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from engines.serving.pool import EnginePool
from server.admission import GateKeeper
from server.sessions.interaction import Interactions
from server.sessions.store import SessionStore
from server.settings import Settings

__all__ = ["PoolDep", "SessionsDep", "SettingsDep", "GatesDep", "InteractionsDep"]


def _pool(request: Request) -> EnginePool:
    return request.app.state.pool


def _sessions(request: Request) -> SessionStore:
    return request.app.state.sessions


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _gates(request: Request) -> GateKeeper:
    return request.app.state.gates


PoolDep = Annotated[EnginePool, Depends(_pool)]
SessionsDep = Annotated[SessionStore, Depends(_sessions)]
SettingsDep = Annotated[Settings, Depends(_settings)]
GatesDep = Annotated[GateKeeper, Depends(_gates)]


def _interactions(request: Request) -> Interactions:
    state = request.app.state
    return Interactions(state.sessions, state.pool, state.gates)  # stateless: everything lives in the sessions


InteractionsDep = Annotated[Interactions, Depends(_interactions)]
