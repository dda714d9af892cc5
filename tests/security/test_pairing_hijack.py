"""Boundary: a pairing link lets a box join the console, never take another box's place.

The attacker holds a fresh, valid pairing link (leaked, or made for a box of its own) and knows
the ``box_id`` of a box already paired (it is on the box's homepage and certificate). Pairing that
``box_id`` in the box's stead would rotate the box's token (its reports refused from then on) and
hand the attacker a token whose reports rewrite the box's card, URL included.

The console must refuse every such request: a pairing request is signed by the box's device key,
its ``box_id`` is the one that key derives, it names the link it was signed for, and a ``box_id``
on record with another key pairs again only after the admin removed it. A request refused for
what it claims spends the link (a leaked link gives one try; the admin makes a new one); a body
that is not a pairing request at all leaves the link to the box it was made for.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import josepy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from lanlock import pki
from lanlock.box.identity import DEVICE_KEY_FILE
from lanlock.box.settings import load_config
from lanlock.cloud import admin as cloud_admin
from lanlock.cloud.models import cloud_store
from lanlock.console.models import PairedBox
from tests.console.running import (
    RunningConsole,
    csrf_of,
    make_link,
    new_box_id,
    pair,
    pairing_body,
    post_pairing,
    report,
    running_console,
    set_subscription_code,
)
from tests.servers import RunningBox, lanlock_command, running_cloud, start_box

CODE = "SUB-HIJACK-4242"
CARD_FIELDS = ("name", "token", "address", "url", "state", "code", "not_after", "paired_at")


@dataclass
class Victim:
    """A real box (``lanlock box run``), paired with the console by ``lanlock box connect``."""

    box: RunningBox
    run_args: tuple[str, ...]
    paired_with: str = ""  # the link it last paired through

    @property
    def device_key(self) -> ec.EllipticCurvePrivateKey:
        pem = (self.box.data_dir / DEVICE_KEY_FILE).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @property
    def box_id(self) -> str:
        return pki.box_id_for(self.device_key.public_key())

    def token(self) -> str | None:
        return load_config(self.box.data_dir).token

    def connect(self, link: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            lanlock_command("box", "connect", link, "--data", str(self.box.data_dir)),
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    with running_console(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def admin(console: RunningConsole) -> Iterator[httpx.Client]:
    http = console.logged_in()
    set_subscription_code(http, CODE)
    yield http
    http.close()


@pytest.fixture(scope="module")
def victim(
    console: RunningConsole, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Victim]:
    """The box, with its certificate from a real cloud and its HTTPS URL on its card; it reports
    every second, so that "its next report is accepted" is a short wait."""
    tmp = tmp_path_factory.mktemp("victim")
    with running_cloud(tmp / "cloud") as cloud:
        db_uuid = console.settings().db_uuid
        store = cloud_store(cloud.store_url, pool_size=1)
        try:
            cloud_admin.add_database(store, db_uuid, "shop", "production")
            cloud_admin.add_subscription(store, CODE, db_uuid, "in_progress", 3)
        finally:
            store.dispose()
        run_args = ("--cloud", cloud.url, "--report-interval", "1")
        victim = Victim(start_box(tmp / "box", *run_args), run_args)
        try:
            victim.paired_with = make_link(admin, "Front desk")
            connected = victim.connect(victim.paired_with)
            assert connected.returncode == 0, connected.stderr
            state = victim.box.wait_for(lambda s: s.get("state") == "valid" and not s.get("code"))
            wait_until(lambda: card(console, victim.box_id)["url"] == state["url"])
            yield victim
        finally:
            victim.box.stop()


# --- what the console holds about the box -----------------------------------------------------


def row_of(console: RunningConsole, box_id: str) -> PairedBox | None:
    store = console.store()
    try:
        with store.transaction() as session:
            found = session.get(PairedBox, box_id)
            if found is not None:
                session.expunge(found)
            return found
    finally:
        store.dispose()


def card(console: RunningConsole, box_id: str) -> dict[str, Any]:
    """What the admin sees of the box, and the token its reports must be signed with."""
    found = row_of(console, box_id)
    assert found is not None, f"the console lost box {box_id}"
    return {name: getattr(found, name) for name in CARD_FIELDS}


def wait_until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not so after {seconds:g} s"
        time.sleep(0.2)


def wait_for_an_accepted_report(console: RunningConsole, box_id: str) -> None:
    """Only a report signed with the box's current token moves ``reported_at`` on."""
    found = row_of(console, box_id)
    mark = found.reported_at if found and found.reported_at else 0

    def reported() -> bool:
        latest = row_of(console, box_id)
        return latest is not None and (latest.reported_at or 0) > mark

    wait_until(reported)


def assert_unharmed(console: RunningConsole, victim: Victim, before: dict[str, Any]) -> None:
    wait_for_an_accepted_report(console, victim.box_id)
    assert card(console, victim.box_id) == before


# --- forged pairing requests -------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed_by_another_key(victim: Victim, link: str) -> bytes:
    """The box's own box_id, signed by the attacker's key (which derives another box_id)."""
    return pairing_body(pki.new_private_key(), link, box_id=victim.box_id)


def box_id_not_of_the_key(_: Victim, link: str) -> bytes:
    """The attacker's key, claiming a box_id that key does not derive."""
    return pairing_body(pki.new_private_key(), link, box_id=new_box_id())


def the_boxs_key_with_a_bad_signature(victim: Victim, link: str) -> bytes:
    """The box's public key in the protected header, but the attacker's signature."""
    document = json.loads(signed_by_another_key(victim, link))
    header = json.loads(unb64(document["protected"]))
    header["jwk"] = josepy.JWKEC(key=victim.device_key.public_key()).to_partial_json()
    document["protected"] = b64(json.dumps(header).encode())
    return json.dumps(document).encode()


def the_boxs_request_altered(victim: Victim, link: str) -> bytes:
    """A request the box signed for this link, its payload changed after the signature."""
    document = json.loads(pairing_body(victim.device_key, link))
    payload = json.loads(unb64(document["payload"])) | {"name": "Attacker's"}
    document["payload"] = b64(json.dumps(payload).encode())
    return json.dumps(document).encode()


def the_boxs_request_for_another_link(victim: Victim, _: str) -> bytes:
    """The box's own request, captured when it paired, replayed on a fresh link."""
    return pairing_body(victim.device_key, victim.paired_with)


# Each forgery, and what the console's refusal must say (it is refused for that, not another).
FORGERIES = {
    signed_by_another_key: "box_id does not match the device key",
    box_id_not_of_the_key: "box_id does not match the device key",
    the_boxs_key_with_a_bad_signature: "signature does not verify",
    the_boxs_request_altered: "signature does not verify",
    the_boxs_request_for_another_link: "signed for another pairing link",
}


# --- the attacks -------------------------------------------------------------------------------


def test_an_unsigned_pairing_request_for_a_paired_box_is_refused(
    console: RunningConsole, admin: httpx.Client, victim: Victim
):
    """The request every holder of a link could send before pairing was signed."""
    before = card(console, victim.box_id)
    link = make_link(admin)
    unsigned = {"box_id": victim.box_id, "name": "Front desk", "address": "10.6.6.6"}
    with console.client() as http:
        answer = http.post(link, json=unsigned)
        assert answer.status_code == 400, f"the console paired it: {answer.text}"
    assert_unharmed(console, victim, before)
    with console.client() as http:  # not a pairing request: the link stays for its own box
        assert pair(http, link).status_code == 200


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda forge: forge.__name__)
def test_a_forged_pairing_is_refused_and_spends_the_link(
    console: RunningConsole,
    admin: httpx.Client,
    victim: Victim,
    forge: Callable[[Victim, str], bytes],
):
    before = card(console, victim.box_id)
    link = make_link(admin)
    with console.client() as http:
        refused = post_pairing(http, link, forge(victim, link))
        assert refused.status_code == 401, refused.text
        assert FORGERIES[forge] in refused.json()["detail"]
        # One try per leaked link: spent, even for a box of the attacker's own.
        assert pair(http, link).status_code == 410
    assert_unharmed(console, victim, before)


def test_the_box_itself_may_pair_again_and_its_key_is_on_record(
    console: RunningConsole, admin: httpx.Client, victim: Victim
):
    old_token = victim.token()
    link = make_link(admin, "Front desk")
    connected = victim.connect(link)
    assert connected.returncode == 0, connected.stderr
    victim.paired_with = link
    found = row_of(console, victim.box_id)
    assert found is not None
    assert found.device_key_der == pki.public_key_der(victim.device_key.public_key())
    new_token = victim.token()
    assert new_token and new_token != old_token
    with console.client() as http:
        assert report(http, victim.box_id, old_token or "").status_code == 401
    wait_for_an_accepted_report(console, victim.box_id)  # the running box took its new token
    assert card(console, victim.box_id)["token"] == new_token


def set_key_on_record(console: RunningConsole, box_id: str, key: ec.EllipticCurvePublicKey) -> None:
    store = console.store()
    try:
        with store.transaction() as session:
            session.execute(
                update(PairedBox)
                .where(PairedBox.box_id == box_id)
                .values(device_key_der=pki.public_key_der(key))
            )
    finally:
        store.dispose()


def test_a_box_id_on_record_with_another_key_pairs_only_after_the_admin_removed_it(
    console: RunningConsole, admin: httpx.Client, victim: Victim
):
    # No key derives the box_id of another (that is the point of deriving it), so a record with
    # another key is made by hand here.
    set_key_on_record(console, victim.box_id, pki.new_private_key().public_key())
    victim.box.stop()  # no report of the box races the admin's removal below
    link = make_link(admin)
    with console.client() as http:
        refused = pair(http, link, victim.device_key)
        assert refused.status_code == 409, refused.text
        assert "remove" in refused.json()["detail"]
        assert pair(http, link).status_code == 410
    connected = victim.connect(make_link(admin))
    assert connected.returncode != 0 and "remove" in connected.stderr

    page = admin.get(f"/iot/boxes/{victim.box_id}").text
    removed = admin.post(f"/iot/boxes/{victim.box_id}/remove", data={"csrf": csrf_of(page)})
    assert removed.status_code == 303
    connected = victim.connect(make_link(admin, "Front desk"))
    assert connected.returncode == 0, connected.stderr
    found = row_of(console, victim.box_id)
    assert found is not None and found.removed_at is None
    assert found.device_key_der == pki.public_key_der(victim.device_key.public_key())

    victim.box = start_box(victim.box.data_dir, *victim.run_args)
    wait_for_an_accepted_report(console, victim.box_id)
