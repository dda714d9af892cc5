"""The ``lanlock`` command: one entry point, a subcommand per role (docs/design.md §13).

A role is imported only when it runs: ``lanlock box status`` reads one JSON file and must not
pay for (nor, on a box installed with ``lanlock[box]``, need) the cloud's SQL, ACME and DNS
libraries. Each role's group turns the errors it knows into one line (``RoleGroup``); its
settings are named after it when it loads (``lanlock.config``).
"""

from __future__ import annotations

import importlib
import itertools
import os
from typing import NamedTuple

import click

from lanlock import __version__
from lanlock.config import (
    CONFIG_VARIABLE,
    SHARED_VARIABLES,
    RoleDefaults,
    check_environment,
    name_settings,
    settings_of,
)


class Role(NamedTuple):
    module: str
    command: str
    extra: str  # the pip extra that installs what the role needs
    summary: str  # shown by ``lanlock --help`` without importing the role


ROLES: dict[str, Role] = {
    "box": Role("lanlock.box.cli", "box", "box", "The IoT box: its identity and certificates."),
    "cloud": Role(
        "lanlock.cloud.cli",
        "cloud",
        "cloud",
        "The vendor's cloud: subscriptions, eligibility, certificates.",
    ),
    "console": Role(
        "lanlock.console.cli",
        "console",
        "console",
        "The customer's database and its IoT app: pairs boxes and shows their HTTPS state.",
    ),
    "demo": Role(
        "lanlock.demo",
        "demo",
        "all",
        "Run the cloud, the DNS server, the console and one box on loopback; Ctrl-C stops them.",
    ),
    "dns": Role("lanlock.dns.cli", "dns", "dns", "The IoT zone's authoritative DNS server."),
}


class Lanlock(click.Group):
    """The top group: roles load on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(ROLES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        role = ROLES.get(name)
        if role is None:
            return None
        try:
            module = importlib.import_module(role.module)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] == "lanlock":
                raise
            raise click.ClickException(
                f"`lanlock {name}` needs {exc.name}, which is not installed here: "
                f"pip install 'lanlock[{role.extra}]'"
            ) from None
        command: click.Command = getattr(module, role.command)
        name_settings(command, name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, ROLES[name].summary) for name in self.list_commands(ctx)])


@click.group(cls=Lanlock, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lanlock")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_VARIABLE,
    show_envvar=True,
    help="a TOML settings file (a table per role)",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """lanlock: browser-trusted HTTPS names for devices on private networks."""
    role = ctx.invoked_subcommand or ""
    command = main.get_command(ctx, role)
    if command is not None:
        check_environment(os.environ, role, command)
    if config:
        ctx.default_map = RoleDefaults(main, ctx, config)  # type: ignore[arg-type]


GUIDE_INTRO = """\
# Settings

<!-- Generated from the commands by lanlock.cli.configuration_guide(): do not edit.
tests/test_docs.py checks that it is up to date, and says how to regenerate it. -->

Every setting is an option of a command, and belongs to the role the command sits under
(`box`, `cloud`, `console`, `demo`, `dns`). Each is taken from the first of:

1. the option on the command line;
2. its environment variable, `LANLOCK_<ROLE>_<OPTION>`: `lanlock cloud serve --port` reads
   `LANLOCK_CLOUD_PORT`;
3. its key in the settings file, named as the option is, in the table of its role;
4. its default.

A variable or a key sets that option on every command of the role that has it:
`LANLOCK_CLOUD_STORE` is the store of `lanlock cloud serve` and of every admin command of the
cloud. The settings file (`--config FILE`, or `LANLOCK_CONFIG`) is TOML, a table per role:

```toml
[cloud]
store = "postgresql+psycopg://lanlock@db.example.com/lanlock"
zone = "iot.example.com"

[dns]
store = "postgresql+psycopg://lanlock@db.example.com/lanlock"
zone = "iot.example.com"
ns = ["ns1.iot.example.com=192.0.2.53"]

[box]
cloud = "https://cloud.example.com"
cloud-ca = "/etc/ssl/vendor-ca.pem"
```

A table no role has, or a key no option of its role has, is an error that names it and lists
the valid ones; a role's table is read, and checked, when that role runs. The variables of
lanlock before settings belonged to roles (`LANLOCK_STORE`, `LANLOCK_PORT`, … one name for every
role) are refused with the names that replace them, and so is a `LANLOCK_<ROLE>_…` variable of
the role that runs that no setting reads. `--json`, `--clear` and `--reset` are one-shot actions,
not settings: they read no variable and no key. Hidden options (test knobs) are not listed.

## Variables of no single role

| variable | meaning |
| --- | --- |
"""


def configuration_guide() -> str:
    """docs/configuration.md: every setting of every command, told by the commands themselves."""
    parts = [GUIDE_INTRO]
    parts += [f"| `{name}` | {_cell(text)} |\n" for name, text in sorted(SHARED_VARIABLES.items())]
    for role in sorted(ROLES):
        command = main.get_command(click.Context(main), role)
        assert command is not None
        parts.append(f"\n## {role}\n\n{ROLES[role].summary}\n")
        for path, found in itertools.groupby(settings_of(command), key=lambda s: s[:2]):
            parts.append(_command_table(role, *path, [option for *_, option in found]))
    return "".join(parts)


def _command_table(
    role: str, path: tuple[str, ...], command: click.Command, options: list[click.Option]
) -> str:
    ctx = click.Context(command, info_name=command.name)
    rows = [_option_row(ctx, option) for option in options if not option.hidden]
    return (
        f"\n### `lanlock {' '.join((role, *path))}`\n\n{command.get_short_help_str(200)}\n\n"
        "| option | variable | default | meaning |\n| --- | --- | --- | --- |\n" + "".join(rows)
    )


def _option_row(ctx: click.Context, option: click.Option) -> str:
    record = option.get_help_record(ctx)
    assert record is not None
    extra = option.get_help_extra(ctx)
    variables = ", ".join(f"`{name}`" for name in option.envvar or ())
    default = f"`{extra['default']}`" if "default" in extra else ""
    if "required" in extra:
        default = "(required)"
    meaning = " ".join(filter(None, [option.help, extra.get("range") and f"({extra['range']})"]))
    return f"| `{_cell(record[0])}` | {variables} | {_cell(default)} | {_cell(meaning)} |\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
