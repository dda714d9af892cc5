"""How the box reads the cloud's answer: a status keeps its own code (``issuance_limited`` on a
429) as the reason the homepage shows, and nothing a cloud writes there can be more than a short
printable word."""

from __future__ import annotations

import httpx
import pytest

from lanlock import errors
from lanlock.box.cloud_client import read_answer
from lanlock.box.lifecycle import CertificateManager, LoadFailed


def answer(status: int, body: dict, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_a_limited_answer_keeps_its_code_its_detail_and_its_wait():
    read = read_answer(
        answer(429, {"detail": "this box got 5 new certificates", "code": "issuance_limited"},
               **{"Retry-After": "120"})
    )  # fmt: skip
    assert (read.status, read.refusal_code, read.retry_after) == (429, "issuance_limited", 120.0)
    with pytest.raises(LoadFailed) as failed:
        CertificateManager._accepted_result(read)
    assert failed.value.code == errors.status_code(429)
    assert failed.value.reason == "issuance_limited"
    assert failed.value.message == "this box got 5 new certificates"


@pytest.mark.parametrize("code", ["x" * 65, "two\nlines", "é", 7, "", None])
def test_a_code_that_is_not_a_short_printable_word_is_dropped(code):
    assert read_answer(answer(503, {"detail": "busy", "code": code})).refusal_code is None
