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


class RoleDefaults(dict[str, Any]):
    """Click's ``default_map`` for the top group: the table of the role that runs, given to
    every command under it. Computed when click asks for that role only, so that reading the
    file never imports the other roles."""

    def __init__(
        self, group: click.Group, ctx: click.Context, file_data: dict[str, dict[str, Any]]
    ) -> None:
        super().__init__()
        self._group, self._ctx, self._file_data = group, ctx, file_data

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        table = self._file_data.get(name)
        command = self._group.get_command(self._ctx, name) if table is not None else None
        if command is None:
            return default
        return _spread(command, {k.replace("-", "_"): v for k, v in table.items()})


class RoleGroup(click.Group):
    """A role's command group: the errors an operator can fix become one line and exit status 1,
    never a traceback. Each role names its own (``operator_errors``); ``store_errors`` are a
    store that cannot be reached, told with what to check."""

    def __init__(
        self,
        *args: Any,
        operator_errors: tuple[type[Exception], ...] = (),
        store_errors: tuple[type[Exception], ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.operator_errors = operator_errors
        self.store_errors = store_errors

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except self.operator_errors as exc:
            raise click.ClickException(str(exc)) from None
        except self.store_errors as exc:
            text = str(exc).strip()
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise click.ClickException(
                f"the store cannot be used: {first_line}. Check --store (or LANLOCK_STORE) "
                "and that the database server is running."
            ) from None


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
