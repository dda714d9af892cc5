"""What pairing and disconnecting leave in the box's settings: nothing of a previous console.

A console may name its cloud at pairing. If that cloud outlived the console (disconnecting, or
pairing with a console that names none), the next console's database UUID and subscription code
would go to the previous console's cloud.
"""

from __future__ import annotations

from lanlock.box.console_client import Pairing
from lanlock.box.settings import BoxConfig


def pairing(cloud_url: str | None) -> Pairing:
    return Pairing(
        console_url="https://console.example",
        db_uuid="db",
        enterprise_code="code",
        name="front desk",
        token="ab" * 32,
        cloud_url=cloud_url,
    )


def test_disconnecting_forgets_the_consoles_cloud():
    config = BoxConfig()
    pairing("https://cloud.first.example").store_in(config)
    config.forget_console()
    assert config.cloud_url is None


def test_a_console_that_names_no_cloud_does_not_inherit_the_previous_ones():
    config = BoxConfig()
    pairing("https://cloud.first.example").store_in(config)
    pairing(None).store_in(config)
    assert config.cloud_url is None  # the box's own --cloud, or the default, from now on
