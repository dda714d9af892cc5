"""The operator's command line: `lanlock cloud database|subscription|box|ca …`, on both backends.

Commands run in-process through click's CliRunner on the real `lanlock` entry point (an exception
escaping the command would show there as ``result.exception``); one runs as a subprocess, to see
exactly what the operator's terminal shows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from lanlock import pki
from lanlock.cli import main
from tests.boxes import Customer, TestBox
from tests.servers import lanlock_command

SECRET = "test-secret-key-0123456789abcdef"
CLEAN_ENV: dict[str, str | None] = {
    "LANLOCK_CLOUD_STORE": None,
    "LANLOCK_CLOUD_DATA": None,
    "LANLOCK_CONFIG": None,
    "LANLOCK_ZONE": None,
    "LANLOCK_CLOUD_ZONE": None,
    "LANLOCK_SECRET_KEY": SECRET,
}


DB = ("cloud", "database")
SUB = ("cloud", "subscription")
BOX = ("cloud", "box")
CA_ROOT = ("cloud", "ca", "root")


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing a test does lands in the user's own data folder."""
    monkeypatch.setenv("LANLOCK_HOME", str(tmp_path / "isolated-home"))


def lanlock(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception
    return result.stdout


def ok_json(result: Result) -> object:
    return json.loads(ok(result))


def assert_operator_error(result: Result, *fragments: str) -> str:
    """Exit status 1, one line that says what to do, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_usage_error(result: Result, option: str, *fragments: str) -> None:
    """Click's usage error: status 2, the option named with what it accepts, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"Error: Invalid value for '{option}'"), error
    for fragment in fragments:
        assert fragment in error, error
    assert "Traceback" not in result.output


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For checks that do not depend on the backend: a SQLite store is enough."""
    return f"sqlite:///{tmp_path / 'store.db'}"


def new_code() -> str:
    return "SUB-" + uuid.uuid4().hex


# --- databases ----------------------------------------------------------------------------------


def test_database_add_and_list(store_url):
    store = ("--store", store_url)
    assert ok(lanlock(*DB, "list", *store)).strip() == "no databases"
    assert ok_json(lanlock(*DB, "list", "--json", *store)) == []

    out = ok(lanlock(*DB, "add", "db-one", "--name", "Shop", *store))
    assert out.strip() == "database db-one added (production)"
    added = ok_json(lanlock(*DB, "add", "db-two", "--kind", "staging", "--json", *store))
    assert added == {"uuid": "db-two", "name": "", "kind": "staging"}

    rows = ok_json(lanlock(*DB, "list", "--json", *store))
    assert [r["uuid"] for r in rows] == ["db-one", "db-two"]
    for row in rows:
        assert set(row) == {"uuid", "name", "kind", "created_at", "subscriptions"}
        created = dt.datetime.fromisoformat(row["created_at"])
        assert created.utcoffset() == dt.timedelta(0)
        assert row["subscriptions"] == []
    assert (rows[0]["name"], rows[0]["kind"]) == ("Shop", "production")

    text = ok(lanlock(*DB, "list", *store)).splitlines()
    assert len(text) == 2
    assert text[0].startswith("db-one") and "production" in text[0] and "Shop" in text[0]
    assert text[1].startswith("db-two") and "staging" in text[1]


def test_duplicate_database_is_refused_pointing_to_the_list(store_url):
    ok(lanlock(*DB, "add", "db-dup", "--store", store_url))
    assert_operator_error(
        lanlock(*DB, "add", "db-dup", "--kind", "staging", "--store", store_url),
        "db-dup already exists",
        "lanlock cloud database list",
    )
    rows = ok_json(lanlock(*DB, "list", "--json", "--store", store_url))
    assert [(r["uuid"], r["kind"]) for r in rows] == [("db-dup", "production")]


def test_blank_database_uuid_is_refused(sqlite_url):
    assert_operator_error(
        lanlock(*DB, "add", "   ", "--store", sqlite_url),
        "database UUID must be 1 to 64 printable characters",
    )


# --- subscriptions ------------------------------------------------------------------------------


def test_subscription_add_and_set(store_url):
    store = ("--store", store_url)
    code = new_code()
    ok(lanlock(*DB, "add", "db-subs", *store))

    out = ok(lanlock(*SUB, "add", code, "--database", "db-subs", "--iot-boxes", "3", *store))
    assert out.strip() == f"subscription …{code[-4:]} added: in_progress, 3 IoT boxes"
    other = new_code()
    added = ok_json(
        lanlock(*SUB, "add", other, "--database", "db-subs", "--state", "draft", "--json", *store)
    )
    assert added == {
        "code": f"…{other[-4:]}",
        "database": "db-subs",
        "state": "draft",
        "iot_boxes": 0,
    }

    changed = ok_json(lanlock(*SUB, "set", other, "--state", "paused", "--json", *store))
    assert changed == {
        "code": f"…{other[-4:]}",
        "database": "db-subs",
        "state": "paused",
        "iot_boxes": 0,
    }
    out = ok(lanlock(*SUB, "set", other, "--iot-boxes", "7", *store))
    assert out.strip() == f"subscription …{other[-4:]}: paused, 7 IoT boxes"
    ok(lanlock(*SUB, "set", code, "--iot-boxes", "0", "--state", "closed", *store))

    [row] = ok_json(lanlock(*DB, "list", "--json", *store))
    subscriptions = sorted(row["subscriptions"], key=lambda s: s["state"])
    for subscription in subscriptions:
        assert set(subscription) == {"code", "state", "iot_boxes"}
    assert subscriptions == [
        {"code": f"…{code[-4:]}", "state": "closed", "iot_boxes": 0},
        {"code": f"…{other[-4:]}", "state": "paused", "iot_boxes": 7},
    ]
    text = ok(lanlock(*DB, "list", *store))
    assert f"…{other[-4:]} paused (7 boxes)" in text


def test_subscription_codes_never_appear_in_full(store_url):
    store = ("--store", store_url)
    long_code, short_code = new_code(), "AB12CD"
    ok(lanlock(*DB, "add", "db-secret", *store))
    outputs = [
        lanlock(*SUB, "add", long_code, "--database", "db-secret", *store),
        lanlock(*SUB, "add", short_code, "--database", "db-secret", "--json", *store),
        lanlock(*SUB, "set", long_code, "--state", "draft", *store),
        lanlock(*SUB, "set", short_code, "--iot-boxes", "1", "--json", *store),
        lanlock(*DB, "list", *store),
        lanlock(*DB, "list", "--json", *store),
    ]
    for result in outputs:
        out = ok(result)
        assert long_code not in out
        assert short_code not in out
    # Enough is shown to tell codes apart, never enough to use one.
    listing = ok(lanlock(*DB, "list", *store))
    assert f"…{long_code[-4:]}" in listing


def test_subscription_for_an_unknown_database_is_refused(sqlite_url):
    assert_operator_error(
        lanlock(*SUB, "add", new_code(), "--database", "nope", "--store", sqlite_url),
        "database nope does not exist",
        "lanlock cloud database add",
    )


def test_duplicate_subscription_is_refused_pointing_to_set(store_url):
    code = new_code()
    ok(lanlock(*DB, "add", "db-x", "--store", store_url))
    ok(lanlock(*SUB, "add", code, "--database", "db-x", "--store", store_url))
    line = assert_operator_error(
        lanlock(*SUB, "add", code, "--database", "db-x", "--store", store_url),
        "already exists",
        "lanlock cloud subscription set",
    )
    assert code not in line


def test_unknown_subscription_code_on_set_is_refused(sqlite_url):
    code = new_code()
    line = assert_operator_error(
        lanlock(*SUB, "set", code, "--state", "closed", "--store", sqlite_url),
        "no subscription has this code",
        "lanlock cloud database list",
    )
    assert code not in line


@pytest.mark.parametrize(
    ("args", "option", "accepted"),
    [
        (("database", "add", "db", "--kind", "prod"), "--kind", "'production'"),
        (
            ("subscription", "add", "C", "--database", "db", "--state", "open"),
            "--state",
            "'paused'",
        ),
        (("subscription", "set", "C", "--state", "active"), "--state", "'in_progress'"),
        (
            ("subscription", "add", "C", "--database", "db", "--iot-boxes", "-1"),
            "--iot-boxes",
            ">=0",
        ),
        (("subscription", "set", "C", "--iot-boxes", "-3"), "--iot-boxes", ">=0"),
        (("subscription", "set", "C", "--iot-boxes", "many"), "--iot-boxes", "integer"),
    ],
)
def test_invalid_choices_and_quantities_are_usage_errors(sqlite_url, args, option, accepted):
    assert_usage_error(lanlock("cloud", *args, "--store", sqlite_url), option, accepted)


# --- boxes (registered through the real cloud) --------------------------------------------------


def test_box_list_and_revoke(cloud, cloud_store):
    store = ("--store", cloud.store_url)
    customer = Customer.create(cloud_store, iot_boxes=1)
    box = TestBox(cloud.url)
    granted = box.ask(customer).result
    assert granted, "the box should get a certificate"

    rows = {r["box_id"]: r for r in ok_json(lanlock(*BOX, "list", "--json", *store))}
    row = rows[box.box_id]
    assert set(row) == {
        "box_id",
        "scope",
        "database",
        "state",
        "last_address",
        "last_seen_at",
        "certificate_not_after",
    }
    assert (row["scope"], row["database"], row["state"]) == (
        granted.scope,
        customer.db_uuid,
        "active",
    )
    assert row["last_address"] == "10.0.0.7"
    assert dt.datetime.fromisoformat(row["certificate_not_after"]) == dt.datetime.fromisoformat(
        granted.not_after
    )
    dt.datetime.fromisoformat(row["last_seen_at"])
    [line] = [x for x in ok(lanlock(*BOX, "list", *store)).splitlines() if box.box_id in x]
    assert granted.scope in line and "active" in line and customer.db_uuid in line

    # The subscription is full: a second box is refused until the first is revoked.
    second = TestBox(cloud.url)
    assert second.ask(customer).refusal_code == "box_quota_exceeded"

    out = ok(lanlock(*BOX, "revoke", box.box_id, *store))
    assert out.strip() == f"box {box.box_id} revoked"
    again = ok_json(lanlock(*BOX, "revoke", box.box_id, "--json", *store))
    assert again == {"box_id": box.box_id, "scope": granted.scope, "state": "revoked"}

    assert box.ask(customer).refusal_code == "box_revoked"
    assert second.ask(customer).result, "the revoked box's slot should be free"
    rows = {r["box_id"]: r for r in ok_json(lanlock(*BOX, "list", "--json", *store))}
    assert rows[box.box_id]["state"] == "revoked"
    assert rows[second.box_id]["state"] == "active"


def test_box_list_of_an_empty_store(sqlite_url):
    assert ok(lanlock(*BOX, "list", "--store", sqlite_url)).strip() == "no boxes"
    assert ok_json(lanlock(*BOX, "list", "--json", "--store", sqlite_url)) == []


def test_revoking_an_unknown_box_is_refused_pointing_to_the_list(sqlite_url):
    assert_operator_error(
        lanlock(*BOX, "revoke", "a" * 26, "--store", sqlite_url),
        f"no box has id {'a' * 26}",
        "lanlock cloud box list",
    )


# --- the CA's root ------------------------------------------------------------------------------


def test_ca_root_prints_the_zone_constrained_root(store_url, tmp_path):
    args = (*CA_ROOT, "--store", store_url, "--data", str(tmp_path / "data"))
    pem = ok(lanlock(*args, "--zone", "IOT.Test."))
    root = pki.certificate_from_pem(pem)
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    constraints = root.extensions.get_extension_for_class(x509.NameConstraints).value
    assert constraints.permitted_subtrees == [x509.DNSName("iot.test")]
    root.verify_directly_issued_by(root)

    shown = ok_json(lanlock(*args, "--zone", "iot.test", "--json"))
    assert set(shown) == {"root_pem", "zone"}
    assert shown["zone"] == "iot.test"
    assert pki.certificate_from_pem(shown["root_pem"]) == root  # made once, then the same


def test_ca_root_for_another_zone_names_both_zones(store_url, tmp_path):
    args = (*CA_ROOT, "--store", store_url, "--data", str(tmp_path / "data"))
    ok(lanlock(*args, "--zone", "iot.test"))
    assert_operator_error(lanlock(*args, "--zone", "iot.example"), "'iot.test'", "'iot.example'")


def test_ca_root_with_an_invalid_zone(tmp_path):
    assert_operator_error(
        lanlock(*CA_ROOT, "--data", str(tmp_path), "--zone", "iot test"),
        "iot test",
    )


def test_secret_key_file_is_made_private_and_reused(tmp_path):
    data = tmp_path / "data"
    no_secret = {"LANLOCK_SECRET_KEY": None}
    first = ok(lanlock(*CA_ROOT, "--data", str(data), env=no_secret))
    secret_file = data / "secret.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_bytes()
    assert len(secret.strip()) >= 16
    assert (data / "cloud.db").is_file()  # the default store lives next to it

    assert ok(lanlock(*CA_ROOT, "--data", str(data), env=no_secret)) == first
    assert secret_file.read_bytes() == secret
    # Another replica given the same key through the environment opens the same CA.
    same = {"LANLOCK_SECRET_KEY": secret.decode().strip()}
    replica = ("--data", str(tmp_path / "replica"), "--store", f"sqlite:///{data / 'cloud.db'}")
    assert ok(lanlock(*CA_ROOT, *replica, env=same)) == first
    assert not (tmp_path / "replica" / "secret.key").exists()

    # Losing the key file is told plainly: the stored CA keys no longer open.
    secret_file.unlink()
    assert_operator_error(
        lanlock(*CA_ROOT, "--data", str(data), env=no_secret), "LANLOCK_SECRET_KEY"
    )


def test_too_short_secret_key_is_refused(tmp_path):
    assert_operator_error(
        lanlock(*CA_ROOT, "--data", str(tmp_path), env={"LANLOCK_SECRET_KEY": "short"}),
        "LANLOCK_SECRET_KEY must be at least 16 characters",
    )


# --- stores that cannot be used ----------------------------------------------------------------


def test_unreachable_postgresql_store_as_the_terminal_shows_it():
    process = subprocess.run(
        lanlock_command(
            "cloud",
            "database",
            "list",
            "--store",
            "postgresql+psycopg://lanlock@127.0.0.1:1/lanlock",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("LANLOCK_")},
    )
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr + process.stdout, process.stderr
    assert process.stdout == ""
    [line] = process.stderr.strip().splitlines()
    assert line.startswith("Error: the store cannot be used"), line
    assert "port 1" in line and "--store" in line


@pytest.mark.parametrize("command", [("database", "add", "db"), ("box", "list")])
def test_store_that_is_not_a_url(command):
    assert_operator_error(
        lanlock("cloud", *command, "--store", "not a url"), "is not a store URL", "--store"
    )


def test_store_url_from_the_environment_is_named_in_the_fix():
    url = "postgresql+psycopg://x@127.0.0.1:1/x"
    result = lanlock(*BOX, "list", env={"LANLOCK_CLOUD_STORE": url})
    assert_operator_error(result, "the store cannot be used", "LANLOCK_CLOUD_STORE")


def test_sqlite_store_whose_folder_cannot_be_made(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    result = lanlock(*DB, "list", "--store", f"sqlite:///{blocker / 'store.db'}")
    assert_operator_error(result, str(blocker))


def test_store_of_an_unsupported_database_system():
    result = lanlock(*DB, "list", "--store", "mysql://x@127.0.0.1:1/x")
    assert_operator_error(result, "--store")
