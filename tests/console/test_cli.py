"""``lanlock console …`` on a real console: the first start's password, and the commands an
operator (and the demo) uses instead of the pages."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from lanlock import pki
from tests.console.running import (
    RunningConsole,
    log_in,
    pair,
    report,
    running_console,
)

CLI_CODE = "CLI-CODE-9876"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_says_where_the_password_is(tmp_path: Path):
    data = tmp_path / "console"
    with running_console(data) as first:
        password = first.cli("password").stdout.strip()
        assert f"password is in {data / 'admin-password'}" in first.log_text()
        assert first.printed_passwords() == [] and password not in first.log_text()
    assert mode(data / "admin-password") == 0o600
    assert mode(data / "console.db") == 0o600

    with running_console(data) as again:
        assert "First start" not in again.log_text()
        browser = again.logged_in(password)
        assert browser.get("/iot").status_code == 200

        reset = again.cli("password", "--reset")
        new_password = reset.stdout.strip()
        assert new_password != password and "old one" in reset.stderr
        assert browser.get("/iot").status_code == 303  # a new password ended every session
        with again.client() as http:
            assert log_in(http, password).status_code == 403
            assert log_in(http, new_password).status_code == 303
        browser.close()


def test_settings_pair_and_boxes_from_the_command_line(console: RunningConsole):
    shown = console.cli_json("settings", "--code", CLI_CODE, "--cloud", "http://127.0.0.1:8700")
    assert shown == {
        "db_uuid": console.settings().db_uuid,
        "code_masked": "••••••9876",
        "cloud_url": "http://127.0.0.1:8700",
        "public_url": console.url,
    }

    printed = console.cli("pair")
    link = printed.stdout.strip()
    assert printed.stdout == link + "\n"  # only the link: lanlock box connect "$(… pair)"
    device_key = pki.new_private_key()
    box_id = pki.box_id_for(device_key.public_key())
    with console.client() as http:
        answer = pair(http, link, device_key, name="Back office")
        assert answer.status_code == 200, answer.text
        assert answer.json()["enterprise_code"] == CLI_CODE
        assert answer.json()["cloud_url"] == "http://127.0.0.1:8700"
        token = answer.json()["token"]
        fields = {"name": "Back office", "state": "error", "url": None}
        fields["code"] = "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502"
        assert report(http, box_id, token, fields).status_code == 200

    listing = console.cli("boxes", "--json").stdout
    [listed] = json.loads(listing)
    assert (listed["box_id"], listed["name"], listed["state"]) == (box_id, "Back office", "error")
    assert listed["code"] == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502" and listed["meaning"]
    assert token not in listing

    refused = console.cli("settings", "--cloud", "ftp://cloud.example", check=False)
    assert refused.returncode == 2 and "not a URL" in refused.stderr
    assert CLI_CODE not in console.cli("settings").stdout
