"""Settings: flag > environment > file > default, for every role (docs/design.md §13).

Click already orders a flag before an environment variable before its ``default_map`` before the
option's default; this module only supplies the two middle layers the way lanlock names them.
A setting belongs to its role, the top-level command it sits under (box, cloud, console, demo,
dns): ``lanlock cloud serve --port`` reads ``LANLOCK_CLOUD_PORT``, and the settings file has a
table per role whose keys are the options' names as ``--help`` shows them:

    # lanlock.toml
    [cloud]
    port = 8700
    store = "postgresql+psycopg://lanlock@db/lanlock"

    [box]
    cloud-ca = "/etc/ssl/vendor-ca.pem"

The file is named by ``--config`` or ``LANLOCK_CONFIG``. A few variables are not a role's:
``LANLOCK_HOME``, ``LANLOCK_CONFIG``, ``LANLOCK_SECRET_KEY`` and ``LANLOCK_ZONE``
(see :data:`SHARED_VARIABLES`). Declarations say none of this: :func:`name_settings` gives every
option of a role its variable when the role is loaded.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

ROLES = ("box", "cloud", "console", "demo", "dns")

CONFIG_VARIABLE = "LANLOCK_CONFIG"
HOME_VARIABLE = "LANLOCK_HOME"
SECRET_KEY_VARIABLE = "LANLOCK_SECRET_KEY"  # noqa: S105 - the variable's name, not a secret
ZONE_VARIABLE = "LANLOCK_ZONE"

# The variables that are no role's, and why (docs/configuration.md shows them).
SHARED_VARIABLES = {
    CONFIG_VARIABLE: "the settings file, as `--config FILE` gives it",
    HOME_VARIABLE: "the folder that holds every role's default data folder (`<home>/<role>`) "
    "[default: the user's data folder]/lanlock",
    SECRET_KEY_VARIABLE: "the cloud's secret key, which encrypts the CA's and the ACME account's "
    "keys in the store: every cloud replica of one store needs the same "
    "[default: `<data>/secret.key`, made at first start]",
    ZONE_VARIABLE: "the IoT zone, for the cloud and the DNS at once (they must serve the same "
    "one) and the demo; `LANLOCK_CLOUD_ZONE`, `LANLOCK_DNS_ZONE` and `LANLOCK_DEMO_ZONE` beat it",
}

# Before settings belonged to a role, every option read LANLOCK_<OPTION>: one variable set the
# same option of every role at once. Those names are refused, naming the ones that replace them:
# option → the roles that read it.
UNSCOPED_OPTIONS: dict[str, tuple[str, ...]] = {
    "data": ("box", "cloud", "console", "demo"),
    "host": ("box", "cloud", "console", "dns"),
    "port": ("cloud", "console", "dns"),
    "store": ("cloud", "console", "dns"),
    "tls-cert": ("cloud", "console"),
    "tls-key": ("cloud", "console"),
    "public-url": ("console",),
    **dict.fromkeys(
        [
            "address",
            "cloud",
            "cloud-ca",
            "code",
            "db-uuid",
            "homepage-check-interval",
            "http-port",
            "https-port",
            "report-interval",
            "retry-cap",
            "retry-first",
        ],
        ("box",),
    ),
    **dict.fromkeys(
        [
            "acme-ca-bundle",
            "acme-directory",
            "acme-email",
            "audit-days",
            "box-issuance-limit",
            "failure-limit",
            "failure-window",
            "issuance-window",
            "issuer",
            "lifetime",
            "metrics-token",
            "subscription-issuance-factor",
            "trusted-proxy",
            "zone-dns",
        ],
        ("cloud",),
    ),
    **dict.fromkeys(
        [
            "allow-public",
            "caa-issuer",
            "hostmaster",
            "ns",
            "rrl",
            "site-address",
            "tcp-idle-timeout",
            "tcp-max-connections",
            "tcp-max-lifetime",
            "tcp-max-per-source",
            "tcp-max-queries",
            "workers",
        ],
        ("dns",),
    ),
}


DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class Duration(click.ParamType):
    """A length of time with its unit — ``90d``, ``36h``, ``10m``, ``45s`` — as a timedelta,
    between ``least`` and ``most``. A unit is required: a bare number would be days to one
    reader and seconds to another."""

    name = "duration"

    def __init__(self, least: dt.timedelta, most: dt.timedelta) -> None:
        self.least, self.most = least, most

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.timedelta):
            return value
        try:
            duration = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc))
        if not self.least <= duration <= self.most:
            shown = f"{format_duration(self.least)} to {format_duration(self.most)}"
            self.fail(f"{value} is outside {shown}")
        return duration


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``36h``, ``10m``, ``45s`` as a timedelta; ValueError for anything else."""
    number, unit = text.strip().lower()[:-1], text.strip().lower()[-1:]
    if unit not in DURATION_UNITS or not number.replace(".", "", 1).isdigit():
        raise ValueError(
            f"{text!r} is not a duration: give a number and a unit, like 90d, 36h, 10m"
        )
    return dt.timedelta(**{DURATION_UNITS[unit]: float(number)})


def format_duration(duration: dt.timedelta) -> str:
    """The shortest of ``7d``, ``3h``, ``10m``, ``45s`` that says ``duration`` exactly."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class ConfigError(click.ClickException):
    """A settings file that cannot be used; the message names the file and the problem."""


class ActionFlag(click.Option):
    """A flag that does something once (print JSON, reset a password), not a setting: it reads
    no variable and no file, so that a value left in either never repeats the action."""


class SharedSetting(click.Option):
    """A setting several roles must agree on: it also reads one variable common to them."""

    def __init__(self, *args: Any, shared_variable: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared_variable = shared_variable


def action_flag(*names: str, **kwargs: Any) -> Any:
    """A one-shot flag (see :class:`ActionFlag`)."""
    return click.option(*names, is_flag=True, cls=ActionFlag, **kwargs)


def zone_option(**kwargs: Any) -> Any:
    """``--zone``: the cloud and the DNS must serve the same zone, so it also reads LANLOCK_ZONE."""
    kwargs["help"] = (
        f"{kwargs.get('help', 'the IoT zone')}; {ZONE_VARIABLE} sets it for the cloud, the DNS "
        "and the demo at once (the cloud and the DNS must agree)"
    )
    return click.option("--zone", cls=SharedSetting, shared_variable=ZONE_VARIABLE, **kwargs)


def json_flag(command: Any) -> Any:
    """``--json``: a command prints its result as JSON (see :func:`emit`)."""
    return action_flag("--json", "as_json", help="print JSON")(command)


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    click.echo(json.dumps(data, indent=2) if as_json else text)


# --- which options are settings, and their names -------------------------------------------------


def setting_name(option: click.Option) -> str:
    """The name an option goes by in ``--help``, in variables and in the settings file."""
    return next(o for o in option.opts if o.startswith("--")).removeprefix("--")


def role_variable(role: str, name: str) -> str:
    """``LANLOCK_<ROLE>_<OPTION>``: the variable of setting ``name`` of ``role``."""
    return f"LANLOCK_{role}_{name}".upper().replace("-", "_")


def _own_settings(command: click.Command) -> list[click.Option]:
    return [
        p for p in command.params if isinstance(p, click.Option) and not isinstance(p, ActionFlag)
    ]


def settings_of(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command, click.Option]]:
    """Every setting of ``command`` and the commands under it, with the path that reaches it."""
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from settings_of(command.commands[name], (*path, name))
        return
    for option in _own_settings(command):
        yield path, command, option


def name_settings(role_command: click.Command, role: str) -> None:
    """Give every setting of a role its variables, shown in ``--help``."""
    for _, _, option in settings_of(role_command):
        shared = (option.shared_variable,) if isinstance(option, SharedSetting) else ()
        option.envvar = (role_variable(role, setting_name(option)), *shared)
        option.show_envvar = True


def _variables_of(role_command: click.Command) -> set[str]:
    return {v for _, _, option in settings_of(role_command) for v in option.envvar or ()}


# --- the environment ------------------------------------------------------------------------------


def check_environment(environ: Mapping[str, str], role: str, role_command: click.Command) -> None:
    """Refuse what would be silently ignored: an old unscoped variable, and a variable of the
    role that runs which none of its settings reads (a typo). Other ``LANLOCK_*`` names are left
    alone: they may be another role's, or the tests' and tools' own."""
    for name in sorted(environ):
        if replacements := _replacements(name):
            raise click.ClickException(
                f"{name} is no longer read: settings belong to a role now; set "
                f"{_either(replacements)} instead (see docs/configuration.md)"
            )
    known = _variables_of(role_command)
    prefix = role_variable(role, "")
    for name in sorted(environ):
        if name.startswith(prefix) and name not in known:
            # Compared without the prefix they all share, which would make any two look alike.
            settings = sorted(k.removeprefix(prefix) for k in known if k.startswith(prefix))
            guess = difflib.get_close_matches(name.removeprefix(prefix), settings, n=1)
            raise click.ClickException(
                f"{name} is not a setting of `lanlock {role}`"
                + (f" (did you mean {prefix}{guess[0]}?)" if guess else "")
                + f"; `lanlock {role} COMMAND --help` lists its settings"
            )


def _replacements(name: str) -> list[str]:
    option = name.removeprefix("LANLOCK_").lower().replace("_", "-")
    if not name.startswith("LANLOCK_") or option not in UNSCOPED_OPTIONS:
        return []
    return [role_variable(role, option) for role in UNSCOPED_OPTIONS[option]]


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# --- the settings file ----------------------------------------------------------------------------


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
    tables = ", ".join(ROLES)
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"settings file {path}: {name} is outside the tables; settings go in the table "
                f"of their role: {tables}"
            )
        if name not in ROLES:
            raise ConfigError(f"settings file {path}: unknown table [{name}]; the tables: {tables}")
    return data


class RoleDefaults(dict[str, Any]):
    """Click's ``default_map`` for the top group: the table of the role that runs, given to
    every command under it. Computed when click asks for that role only, so that reading the
    file never imports the other roles (and their tables are checked only when they run)."""

    def __init__(self, group: click.Group, ctx: click.Context, path: str) -> None:
        super().__init__()
        self._group, self._ctx, self._path = group, ctx, path
        self._file_data = load_file(path)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        table = self._file_data.get(name)
        command = self._group.get_command(self._ctx, name) if table is not None else None
        if command is None:
            return default
        self._check_keys(name, command, table)
        return _defaults_map(command, table)

    def _check_keys(self, role: str, command: click.Command, table: dict[str, Any]) -> None:
        settings = {setting_name(o): o for _, _, o in settings_of(command)}
        unknown = sorted(set(table) - set(settings))
        if unknown:
            shown = sorted(name for name, option in settings.items() if not option.hidden)
            raise ConfigError(
                f"settings file {self._path}: [{role}] has no setting {', '.join(unknown)}; "
                f"its settings: {', '.join(shown)}"
            )


def _defaults_map(command: click.Command, table: dict[str, Any]) -> dict[str, Any]:
    """The table as ``default_map`` wants it: a map per command, keyed by parameter names."""
    if isinstance(command, click.Group):
        return {name: _defaults_map(sub, table) for name, sub in command.commands.items()}
    return {
        option.name: table[setting_name(option)]
        for option in _own_settings(command)
        if setting_name(option) in table
    }


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
                f"the store cannot be used: {first_line}. Check --store (or "
                f"{role_variable(self.name or '', 'store')}) and that the database "
                "server is running."
            ) from None


def default_data_dir(role: str) -> Path:
    """Where a role keeps its files unless told otherwise: the user's data folder, any OS."""
    if base := os.environ.get(HOME_VARIABLE):
        return Path(base) / role
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        root = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return root / "lanlock" / role
