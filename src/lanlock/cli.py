"""The ``lanlock`` command: one entry point, a subcommand per role (DESIGN §13).

A role is imported only when it runs: ``lanlock box status`` reads one JSON file and must not
pay for (nor, on a box installed with ``lanlock[box]``, need) the cloud's SQL, ACME and DNS
libraries. Each role's group turns the errors it knows into one line (``RoleGroup``).
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click

from lanlock import __version__
from lanlock.config import RoleDefaults, load_file


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
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, ROLES[name].summary) for name in self.list_commands(ctx)])


@click.group(cls=Lanlock, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lanlock")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="LANLOCK_CONFIG",
    help="a TOML settings file (a table per role); also LANLOCK_CONFIG",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """lanlock: browser-trusted HTTPS names for devices on private networks."""
    if config:
        ctx.default_map = RoleDefaults(main, ctx, load_file(config))  # type: ignore[arg-type]
