"""Settings: flag > environment > file > default, for every role (DESIGN §10).

Click already orders a flag before an environment variable before its ``default_map`` before the
option's default; this module only supplies the two middle layers the way lanlock names them:
``LANLOCK_<OPTION>`` variables and a TOML file with one table per role.

    # lanlock.toml
    [cloud]
    port = 8700
    store = "postgresql+psycopg://lanlock@db/lanlock"

The file is named by ``--config`` or ``LANLOCK_CONFIG``.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

ROLES = ("cloud", "dns", "console", "box", "demo")


class ConfigError(click.ClickException):
    """A settings file that cannot be used; the message names the file and the problem."""


def option(*names: str, **kwargs: Any) -> Any:
    """``click.option`` that also reads ``LANLOCK_<OPTION>`` and shows it in ``--help``."""
    long_name = next(n for n in names if n.startswith("--"))
    kwargs.setdefault("envvar", "LANLOCK_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def json_flag(command: Any) -> Any:
    """``--json``: a command prints its result as JSON (see :func:`emit`)."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(command)


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    click.echo(json.dumps(data, indent=2) if as_json else text)


def load_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a lanlock TOML file: a table per role, each key an option name."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"settings file {path} does not exist; create it or drop --config"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"settings file {path} is not UTF-8 text; save it as UTF-8") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"settings file {path} cannot be read: {exc}") from exc
    unknown = sorted(set(data) - set(ROLES))
    if unknown or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"settings file {path}: top-level tables must be among {', '.join(ROLES)}"
            + (f" (found {', '.join(unknown)})" if unknown else "")
        )
    return data


def default_map(command: click.Command, file_data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Click's ``default_map`` giving every command under a role the keys of the role's table."""
    result: dict[str, Any] = {}
    if not isinstance(command, click.Group):
        return result
    for name, sub in command.commands.items():
        if name in file_data:
            result[name] = _spread(
                sub, {k.replace("-", "_"): v for k, v in file_data[name].items()}
            )
    return result


def _spread(command: click.Command, values: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(command, click.Group):
        return values
    return {name: _spread(sub, values) for name, sub in command.commands.items()}


def default_data_dir(role: str) -> Path:
    """Where a role keeps its files unless told otherwise: the user's data folder, any OS."""
    if base := os.environ.get("LANLOCK_HOME"):
        return Path(base) / role
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        root = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return root / "lanlock" / role
