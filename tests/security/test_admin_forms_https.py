"""Once the box has a valid certificate for its name, its admin forms live on HTTPS only.

The admin password typed into a page served over plain HTTP (or over HTTPS by IP, where the
certificate proves nothing) can be read or changed on the way; so, once the HTTPS name works,
the homepage served any other way shows no form and links to the HTTPS URL, and every action
posted any other way is refused, pointing there, before anything is checked or changed. A box
without a certificate has no HTTPS name yet: its forms work over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lanlock import errors
from lanlock.box.settings import load_config
from lanlock.cloud.models import cloud_store
from tests.box.clients import (
    admin_password,
    by_ip,
    by_name,
    cloud_root,
    form_token,
    start_valid_box,
    text_of,
)
from tests.servers import RunningBox, RunningCloud, running_cloud, start_box

ACTIONS = ("/credentials", "/log-level", "/restart", "/connect", "/disconnect", "/logs/download")
FORM_MARKS = ("<form", 'name="csrf"', 'name="password"')


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("forms-cloud")) as running:
        yield running


@pytest.fixture(scope="module")
def root(cloud: RunningCloud) -> Path:
    return cloud_root(cloud)


@pytest.fixture(scope="module")
def valid_box(
    cloud: RunningCloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBox]:
    store = cloud_store(cloud.store_url, pool_size=1)
    try:
        box = start_valid_box(tmp_path_factory.mktemp("forms-valid"), cloud, store)
    finally:
        store.dispose()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def bare_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    box = start_box(tmp_path_factory.mktemp("forms-bare"))
    box.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)
    yield box
    box.stop()


def https_by_ip(box: RunningBox) -> httpx.Client:
    # By IP the name in the certificate cannot match: as a browser whose user clicked through.
    return httpx.Client(base_url=f"https://127.0.0.1:{box.https_port}", timeout=30, verify=False)  # noqa: S501


def test_homepage_not_served_by_name_over_https_has_no_forms(valid_box: RunningBox) -> None:
    url = valid_box.state_file()["url"]
    with by_ip(valid_box) as http, https_by_ip(valid_box) as https_ip:
        pages = {
            "http by IP": http.get("/"),
            "http by name": http.get("/", headers={"Host": url.split("/")[2]}),
            "https by IP": https_ip.get("/"),
        }
    for how, answer in pages.items():
        assert answer.status_code == 200, how
        for mark in FORM_MARKS:
            assert mark not in answer.text, (how, mark)
        assert f'href="{url}"' in answer.text, how
        assert "HTTPS page" in text_of(answer.text), how


def test_homepage_by_name_over_https_has_the_forms_and_they_work(
    valid_box: RunningBox, root: Path
) -> None:
    with by_name(valid_box, root) as https:
        page = https.get("/").text
        for mark in FORM_MARKS:
            assert mark in page, mark
        fields = {"csrf": form_token(page), "password": admin_password(valid_box)}
        answer = https.post("/log-level", data=fields | {"level": "WARNING"})
        assert answer.status_code == 303, answer.text
        assert load_config(valid_box.data_dir).log_level == "WARNING"
        answer = https.post("/log-level", data=fields | {"level": "INFO"})
        assert answer.status_code == 303, answer.text
    assert load_config(valid_box.data_dir).log_level is None


def test_actions_not_sent_by_name_over_https_are_refused_and_point_there(
    valid_box: RunningBox, root: Path
) -> None:
    url = valid_box.state_file()["url"]
    with by_name(valid_box, root) as https:
        token = form_token(https.get("/").text)
    # Everything right but the way it came: the token and password were good over HTTPS.
    fields = {"csrf": token, "password": admin_password(valid_box), "level": "DEBUG"}
    fields |= {"action": "clear", "db_uuid": "x", "link": "http://127.0.0.1:1/iot/pair/x"}
    before = (valid_box.data_dir / "config.toml").read_bytes()
    with by_ip(valid_box) as http, https_by_ip(valid_box) as https_ip:
        for client in (http, https_ip):
            for path in ACTIONS:
                answer = client.post(path, data=fields)
                what = (str(client.base_url), path)
                assert answer.status_code == 403, (what, answer.status_code, answer.text[:300])
                assert "content-disposition" not in answer.headers, what
                assert url in text_of(answer.text), what
                assert f'href="{url}"' in answer.text, what
                assert "changed nothing" in text_of(answer.text), what
    assert (valid_box.data_dir / "config.toml").read_bytes() == before
    assert "restart asked" not in (valid_box.data_dir / "logs" / "lanlock-box.log").read_text()


def test_without_a_certificate_the_forms_work_over_http(bare_box: RunningBox) -> None:
    assert bare_box.state_file()["state"] != "valid"
    with by_ip(bare_box) as http:
        page = http.get("/").text
        for mark in FORM_MARKS:
            assert mark in page, mark
        fields = {"csrf": form_token(page), "password": admin_password(bare_box)}
        answer = http.post("/log-level", data=fields | {"level": "WARNING"})
        assert answer.status_code == 303, answer.text
        assert load_config(bare_box.data_dir).log_level == "WARNING"
        assert http.post("/log-level", data=fields | {"level": "INFO"}).status_code == 303
