"""What the box's web layer may ask of the agent: exactly what :mod:`lanlock.box.web` uses.

The agent imports the web layer to serve it; the web layer is written against this interface
instead of the agent's class, so that the two do not import each other and the pages cannot
reach into the agent's workings (its certificate store, its listeners, its maintenance).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from lanlock.box.lifecycle import BoxState
from lanlock.box.settings import BoxConfig


class AgentPort(Protocol):
    @property
    def box_id(self) -> str: ...

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every LAN address of the box as last read, the first its main URL's."""

    @property
    def https_port(self) -> int: ...

    @property
    def log_file(self) -> Path: ...

    @property
    def config(self) -> BoxConfig:
        """The settings as last read (:meth:`read_config` reads them afresh)."""

    @property
    def state(self) -> BoxState:
        """The last check's state, without checking."""

    def check(self) -> BoxState: ...

    def check_if_stale(self) -> BoxState:
        """check(), unless one ran less than the homepage's interval ago."""

    def read_config(self) -> BoxConfig: ...

    def update_config(self, change: Callable[[BoxConfig], None]) -> BoxConfig:
        """Read, change and write the settings as one step, with every other writer."""

    def connect(self, link: str) -> BoxState:
        """Pair through a console's one-time link; PairingError when that fails."""

    def disconnect(self) -> BoxState: ...

    def stop(self, restart: bool = False) -> None: ...
