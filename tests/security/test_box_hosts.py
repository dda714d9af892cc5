"""DNS rebinding: the box answers only for its own addresses and names, on both listeners.

A page of ``attacker.example`` whose name is made to resolve to the box's address gets the
browser to send ``Host: attacker.example`` to the box. Every route of the box, on HTTP and on
HTTPS, must answer such a request with 421 and a short explanation, and nothing of the box:
no homepage, no ``box_id``, no form token, no state, no script, no log.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from lanlock import errors
from lanlock.box.settings import load_config
from lanlock.cloud.models import cloud_store
from lanlock.store import Store
from tests.box.clients import (
    admin_password,
    by_ip,
    by_name,
    cloud_root,
    form_token,
    start_valid_box,
)
from tests.servers import RunningBox, RunningCloud, running_cloud, start_box

ROUTES = (
    ("GET", "/"),
    ("GET", "/status.json"),
    ("GET", "/ping"),
    ("GET", "/static/box.js"),
    ("GET", "/static/box.css"),
    ("GET", "/logs/download"),
    ("GET", "/logs/download?expires=1&signature=00"),
    ("GET", "/no-such-page"),
    ("POST", "/credentials"),
    ("POST", "/log-level"),
    ("POST", "/restart"),
    ("POST", "/connect"),
    ("POST", "/disconnect"),
    ("POST", "/logs/download"),
)
FOREIGN = (
    "attacker.example",
    "attacker.example:{port}",
    "ATTACKER.example.",
    "localhost.attacker.example:{port}",
    "127.0.0.1.nip.io:{port}",
    "10.0.0.8",  # an address, but not one of the box's
    "[fe80::1]:{port}",
    "",
)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("hosts-cloud")) as running:
        yield running


@pytest.fixture(scope="module")
def store(cloud: RunningCloud) -> Iterator[Store]:
    opened = cloud_store(cloud.store_url, pool_size=1)
    yield opened
    opened.dispose()


@pytest.fixture(scope="module")
def bare_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    """A box that has never had a certificate answer: it knows no scope nor zone yet."""
    box = start_box(tmp_path_factory.mktemp("hosts-bare"))
    box.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)
    yield box
    box.stop()


@pytest.fixture(scope="module")
def valid_box(
    cloud: RunningCloud, store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBox]:
    box = start_valid_box(tmp_path_factory.mktemp("hosts-valid"), cloud, store)
    yield box
    box.stop()


def listeners(box: RunningBox) -> dict[str, tuple[str, int]]:
    return {
        "http": (box.http_url, box.http_port),
        "https": (f"https://127.0.0.1:{box.https_port}", box.https_port),
    }


def ask(
    base: str, method: str, path: str, host: str, data: dict[str, str] | None = None
) -> httpx.Response:
    # Unverified: what is tested is the Host, on both listeners, before the box has a name.
    with httpx.Client(base_url=base, timeout=30, verify=False) as http:  # noqa: S501
        return http.request(method, path, headers={"Host": host}, data=data)


def assert_misdirected(answer: httpx.Response, box: RunningBox, what: str) -> None:
    assert answer.status_code == 421, (what, answer.status_code, answer.text[:200])
    assert answer.headers["content-type"].startswith("text/plain"), what
    assert len(answer.content) < 400, (what, answer.text)
    assert "content-disposition" not in answer.headers, what
    assert "access-control-allow-origin" not in answer.headers, what
    config = load_config(box.data_dir)
    for secret in (box.state_file()["box_id"], config.form_secret, 'name="csrf"', "<form"):
        assert secret not in answer.text, (what, secret)


def test_foreign_hosts_get_421_on_every_route_of_both_listeners(bare_box: RunningBox) -> None:
    for scheme, (base, port) in listeners(bare_box).items():
        for pattern in FOREIGN:
            host = pattern.format(port=port)
            for method, path in ROUTES:
                answer = ask(base, method, path, host)
                assert_misdirected(answer, bare_box, f"{scheme} {method} {path} Host={host!r}")


def test_a_rebound_form_post_changes_nothing(bare_box: RunningBox) -> None:
    """The reported attack: a form token read through a rebound name, then posted through it."""
    with by_ip(bare_box) as http:
        token = form_token(http.get("/").text)
    before = (bare_box.data_dir / "config.toml").read_bytes()
    fields = {"csrf": token, "password": admin_password(bare_box), "level": "DEBUG"}
    answer = ask(bare_box.http_url, "POST", "/log-level", "attacker.example", fields)
    assert_misdirected(answer, bare_box, "rebound POST /log-level")
    assert (bare_box.data_dir / "config.toml").read_bytes() == before


def test_own_addresses_and_localhost_are_served(bare_box: RunningBox) -> None:
    for scheme, (base, port) in listeners(bare_box).items():
        for host in (
            f"127.0.0.1:{port}",
            "127.0.0.1",
            "10.0.0.7",  # the box's LAN address
            f"10.0.0.7:{port}",
            f"[::1]:{port}",
            "[::1]",
            f"localhost:{port}",
            "LocalHost",
        ):
            answer = ask(base, "GET", "/", host)
            assert answer.status_code == 200, (scheme, host, answer.text[:200])
            assert "lanlock box" in answer.text
        assert ask(base, "GET", "/status.json", f"127.0.0.1:{port}").status_code == 200
        assert ask(base, "GET", "/static/box.js", "10.0.0.7").status_code == 200


def test_names_are_refused_before_the_box_knows_its_scope(bare_box: RunningBox) -> None:
    config = load_config(bare_box.data_dir)
    assert config.scope is None and config.zone is None
    for scheme, (base, port) in listeners(bare_box).items():
        for host in (f"10-0-0-7.abcdefghijklmnop.iot.test:{port}", "abcdefghijklmnop.iot.test"):
            assert_misdirected(ask(base, "GET", "/", host), bare_box, f"{scheme} {host}")


def test_names_under_the_box_scope_are_served(valid_box: RunningBox) -> None:
    config = load_config(valid_box.data_dir)
    url = valid_box.state_file()["url"]
    name, own = urlsplit(url).hostname, f"{config.scope}.{config.zone}"
    for scheme, (base, port) in listeners(valid_box).items():
        for host in (f"{name}:{port}", name, own, f"{name.upper()}:{port}", f"{name}.:{port}"):
            answer = ask(base, "GET", "/", host)
            assert answer.status_code == 200, (scheme, host, answer.text[:200])
        for host in (
            f"{own}.attacker.example",
            f"x{own}",
            f"10-0-0-7.{'a' * 16}.{config.zone}",
            config.zone,
            "attacker.example",
        ):
            assert_misdirected(ask(base, "GET", "/", host), valid_box, f"{scheme} {host}")


def test_the_ping_of_the_rebinding_check_answers_under_the_box_name(
    valid_box: RunningBox, cloud: RunningCloud
) -> None:
    with by_name(valid_box, cloud_root(cloud)) as https:
        ping = https.get("/ping", headers={"Origin": "http://10.0.0.7"})
    assert ping.status_code == 204
    assert ping.headers["access-control-allow-origin"] == "*"
    answer = ask(f"https://127.0.0.1:{valid_box.https_port}", "GET", "/ping", "attacker.example")
    assert_misdirected(answer, valid_box, "ping for a foreign host")


def test_a_valid_box_still_refuses_foreign_hosts_on_both_listeners(valid_box: RunningBox) -> None:
    for scheme, (base, port) in listeners(valid_box).items():
        for method, path in ROUTES:
            answer = ask(base, method, path, f"attacker.example:{port}")
            assert_misdirected(answer, valid_box, f"{scheme} {method} {path}")
