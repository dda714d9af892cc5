"""The box's forms under structure-aware fuzzing, over the wire against a real ``lanlock box run``.

Each example is one of the homepage's own POSTs, changed where a form handler can go wrong: the
form token (missing, cut, from the future, another box's), the password (right, wrong, absent,
huge), the fields (absent, empty, huge, control characters, NUL, undecodable percent-escapes,
repeated), the origin (same, absent, ``null``, foreign), the content type and the raw body. The
box must answer every one with a page it meant (303, 400, 403, 413, 415 or 429), never a 500,
keep answering, and log no traceback; the test counts the answers and fails if the fuzzer
stopped reaching the deep ones (a 303 means a form got through every check; a 400 that its
fields were refused after the checks).
"""

from __future__ import annotations

import itertools
from collections import Counter
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.box.clients import admin_password, by_ip, form_token
from tests.fuzz.strategies import fuzz_settings
from tests.servers import RunningBox, start_box

PATHS = ["/credentials", "/log-level", "/connect", "/logs/download", "/disconnect"]
MEANT = {200, 303, 400, 403, 413, 415, 429}
EVERY_ANSWER = {303, 400, 403}
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "é" * 300, "x" * 5000, "<script>", "%", "%ff%fe", "\r\n"]),
)
SOURCES = (f"127.0.{a}.{b}" for a, b in itertools.product(range(20, 250), range(1, 250)))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    running = start_box(tmp_path_factory.mktemp("fuzzed-box"), "--cloud", "http://127.0.0.1:1")
    running.wait_for(lambda s: s["state"] != "checking")
    yield running
    running.stop()


@st.composite
def forms(draw: st.DrawFn, token: str, password: str) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(PATHS))
    fields: list[tuple[str, str]] = []
    token_kind = draw(st.sampled_from(["right"] * 5 + ["cut", "future", "absent", "text"]))
    issued, _, mac = token.partition(".")
    fields += {
        "right": [("csrf", token)],
        "cut": [("csrf", token[: draw(st.integers(0, len(token) - 1))])],
        "future": [("csrf", f"{int(issued) + 10**6}.{mac}")],
        "absent": [],
        "text": [("csrf", draw(HOSTILE_TEXT))],
    }[token_kind]
    password_kind = draw(st.sampled_from(["right", "right", "right", "wrong", "absent"]))
    if password_kind != "absent":
        fields.append(("password", password if password_kind == "right" else draw(HOSTILE_TEXT)))
    for name in draw(st.lists(st.sampled_from(["db_uuid", "code", "level", "link", "action"]))):
        fields.append((name, draw(st.one_of(HOSTILE_TEXT, st.sampled_from(["DEBUG", "clear"])))))
    body = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields).encode()
    if draw(st.integers(0, 9)) == 0:  # a raw body: bytes no browser would send
        body = draw(st.sampled_from([b"%", b"a=%ff%fe", b"\xff\xfe=\x00", b"a" * 20_000, body]))
    headers = {
        "Content-Type": draw(
            st.sampled_from(
                ["application/x-www-form-urlencoded"] * 4 + ["text/plain", "multipart/form-data"]
            )
        )
    }
    origin = draw(st.sampled_from(["same"] * 4 + ["absent", "null", "foreign"]))
    if origin != "absent":
        headers["Origin"] = {"null": "null", "foreign": "http://attacker.example"}.get(origin, "")
    return path, body, headers


def test_every_fuzzed_form_gets_an_answer_the_box_meant(box: RunningBox):
    with by_ip(box) as client:
        token = form_token(client.get("/").text)
    password = admin_password(box)
    reached: Counter[int] = Counter()

    @fuzz_settings(150)
    @given(form=forms(token, password))
    def one(form: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = form
        if headers.get("Origin") == "":
            headers["Origin"] = box.http_url
        # A new source each time: a wrong password must not lock the fuzzer out of the deep paths.
        with by_ip(box, source=next(SOURCES)) as client:
            response = client.post(path, content=body, headers=headers)
        assert response.status_code in MEANT, (response.status_code, path, body[:200], headers)
        reached[response.status_code] += 1

    one()
    print("\nbox form answers reached:", dict(sorted(reached.items())))
    assert httpx.get(box.http_url + "/status.json", timeout=10).status_code == 200
    assert "Traceback" not in box.log.read_text()
    assert set(reached) >= EVERY_ANSWER, f"never reached: {EVERY_ANSWER - set(reached)}"
