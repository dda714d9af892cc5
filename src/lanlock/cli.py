"""The ``lanlock`` command: one entry point, a subcommand per role (DESIGN §13)."""

from __future__ import annotations

from typing import Any

import click

from lanlock import __version__
from lanlock.box.cli import box
from lanlock.box.identity import IdentityError
from lanlock.box.settings import BoxConfigError
from lanlock.cloud.cli import OPERATOR_ERRORS, STORE_ERRORS, cloud
from lanlock.config import default_map, load_file
from lanlock.console.cli import console
from lanlock.demo import demo
from lanlock.dns.cli import dns


class LanlockGroup(click.Group):
    """Turns the errors an operator can fix into one line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (*OPERATOR_ERRORS, IdentityError, BoxConfigError) as exc:
            raise click.ClickException(str(exc)) from None
        except STORE_ERRORS as exc:
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise click.ClickException(
                f"the store cannot be used: {first_line}. Check --store (or LANLOCK_STORE) "
                "and that the database server is running."
            ) from None


@click.group(cls=LanlockGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
        ctx.default_map = default_map(main, load_file(config))


main.add_command(cloud)
main.add_command(box)
main.add_command(demo)
main.add_command(dns)
main.add_command(console)
