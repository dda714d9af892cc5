"""The catalogue of error codes and refusal reasons (docs/design.md §4, §9)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from lanlock import errors
from lanlock.errors import (
    BOX_ERRORS,
    REFUSAL_REASONS,
    CatalogueEntry,
    box_error,
    describe,
    markdown_guide,
    refusal,
    render_text,
    status_code,
)

# Hard-coded from docs/design.md §9 and §4 (copied by hand: a change to the codes changes both).
DESIGN_BOX_CODES = (
    "ERR_IOT_HTTPS_CHECK_NO_SERVER",
    "ERR_IOT_HTTPS_CHECK_CERT_READ_EXCEPTION",
    "ERR_IOT_HTTPS_LOAD_NO_CREDENTIAL",
    "ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION",
    "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS",
    "ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT",
)
DESIGN_REFUSAL_CODES = (
    "invalid_credentials",
    "database_not_production",
    "subscription_not_in_progress",
    "no_iot_box_line",
    "box_quota_exceeded",
    "box_revoked",
    "invalid_csr",
    "issuance_failed",
)

ALL_ENTRIES = [*BOX_ERRORS.values(), *REFUSAL_REASONS.values()]
PLACEHOLDER = re.compile(r"TODO|TBD|FIXME|XXX|lorem|ipsum|\.\.\.|…|<[a-z_]+>|\{\w*\}", re.I)


def test_catalogue_holds_exactly_the_design_codes():
    assert set(BOX_ERRORS) == set(DESIGN_BOX_CODES)
    assert set(REFUSAL_REASONS) == set(DESIGN_REFUSAL_CODES)
    assert errors.BOX_ERROR_CODES == DESIGN_BOX_CODES
    assert errors.REFUSAL_CODES == DESIGN_REFUSAL_CODES


def test_constants_spell_the_codes():
    assert errors.CHECK_NO_SERVER == "ERR_IOT_HTTPS_CHECK_NO_SERVER"
    assert errors.CHECK_CERT_READ_EXCEPTION == "ERR_IOT_HTTPS_CHECK_CERT_READ_EXCEPTION"
    assert errors.LOAD_NO_CREDENTIAL == "ERR_IOT_HTTPS_LOAD_NO_CREDENTIAL"
    assert errors.LOAD_REQUEST_EXCEPTION == "ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION"
    assert errors.LOAD_REQUEST_STATUS == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS"
    assert errors.LOAD_REQUEST_NO_RESULT == "ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT"
    assert errors.INVALID_CREDENTIALS == "invalid_credentials"
    assert errors.DATABASE_NOT_PRODUCTION == "database_not_production"
    assert errors.SUBSCRIPTION_NOT_IN_PROGRESS == "subscription_not_in_progress"
    assert errors.NO_IOT_BOX_LINE == "no_iot_box_line"
    assert errors.BOX_QUOTA_EXCEEDED == "box_quota_exceeded"
    assert errors.BOX_REVOKED == "box_revoked"
    assert errors.INVALID_CSR == "invalid_csr"
    assert errors.ISSUANCE_FAILED == "issuance_failed"
    for name in errors.__all__:
        assert hasattr(errors, name), name


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=lambda e: e.code)
def test_entry_is_complete(entry: CatalogueEntry):
    assert isinstance(entry, CatalogueEntry)
    assert entry.meaning.strip()
    assert "\n" not in entry.meaning
    assert isinstance(entry.causes, tuple)
    assert isinstance(entry.fix, tuple)
    assert len(entry.causes) >= 1
    assert len(entry.fix) >= 1
    for text in (entry.meaning, *entry.causes, *entry.fix):
        assert isinstance(text, str)
        assert text.strip() == text and text, repr(text)
        assert text[-1] in ".)", f"{entry.code}: not a full sentence: {text!r}"
        assert not PLACEHOLDER.search(text), f"{entry.code}: placeholder in {text!r}"
    assert len(set(entry.causes)) == len(entry.causes)
    assert len(set(entry.fix)) == len(entry.fix)


def test_entries_are_frozen_and_serialise_to_json():
    entry = BOX_ERRORS[errors.CHECK_NO_SERVER]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.meaning = "changed"  # type: ignore[misc]
    data = entry.as_dict()
    assert data == {
        "code": entry.code,
        "meaning": entry.meaning,
        "causes": list(entry.causes),
        "fix": list(entry.fix),
    }
    assert json.loads(json.dumps(data)) == data


def test_substance_of_the_entries():
    exception = BOX_ERRORS[errors.LOAD_REQUEST_EXCEPTION]
    causes = " ".join(exception.causes).lower()
    for word in ("internet", "firewall", "dns", "clock", "proxy"):
        assert word in causes, word
    assert "homepage" in " ".join(exception.fix)
    status = " ".join(BOX_ERRORS[errors.LOAD_REQUEST_STATUS].causes)
    for word in ("5xx", "4xx", "429", "retries by itself", "out of date"):
        assert word in status, word
    assert "`tls`" in " ".join(BOX_ERRORS[errors.CHECK_CERT_READ_EXCEPTION].fix)
    assert "lanlock box connect LINK" in " ".join(BOX_ERRORS[errors.CHECK_NO_SERVER].fix)
    assert "lanlock box credentials" in " ".join(BOX_ERRORS[errors.LOAD_NO_CREDENTIAL].fix)
    assert "reason" in BOX_ERRORS[errors.LOAD_REQUEST_NO_RESULT].meaning
    assert "production" in " ".join(REFUSAL_REASONS[errors.DATABASE_NOT_PRODUCTION].fix)
    assert "IoT box lines" in " ".join(REFUSAL_REASONS[errors.BOX_QUOTA_EXCEEDED].fix)


@pytest.mark.parametrize("code", DESIGN_BOX_CODES)
def test_box_error_finds_each_code(code):
    assert box_error(code) is BOX_ERRORS[code]
    assert box_error(f"  {code} ") is BOX_ERRORS[code]


@pytest.mark.parametrize("status", [400, 401, 404, 413, 429, 500, 502, 503])
def test_box_error_accepts_the_status_form(status):
    code = status_code(status)
    assert code == f"ERR_IOT_HTTPS_LOAD_REQUEST_STATUS {status}"
    assert box_error(code) is BOX_ERRORS[errors.LOAD_REQUEST_STATUS]
    assert errors.split_status(code) == (errors.LOAD_REQUEST_STATUS, status)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "ERR_IOT_HTTPS_NOPE",
        "err_iot_https_check_no_server",
        "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS abc",
        "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 99",
        "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 600",
        "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502 503",
        "ERR_IOT_HTTPS_LOAD_NO_CREDENTIAL 502",
        "invalid_credentials",
        None,
    ],
)
def test_box_error_rejects_unknown_codes(code):
    with pytest.raises(KeyError) as caught:
        box_error(code)
    assert "ERR_IOT_HTTPS" in str(caught.value)
    assert repr(code) in str(caught.value)


@pytest.mark.parametrize("bad", [0, 99, 600, True, "502", 502.0])
def test_status_code_rejects_non_statuses(bad):
    with pytest.raises(ValueError):
        status_code(bad)


def test_refusal_finds_and_rejects():
    for code in DESIGN_REFUSAL_CODES:
        assert refusal(code) is REFUSAL_REASONS[code]
    with pytest.raises(KeyError) as caught:
        refusal("no_such_reason")
    assert "no_such_reason" in str(caught.value)
    assert "invalid_credentials" in str(caught.value)
    with pytest.raises(KeyError):
        refusal(errors.CHECK_NO_SERVER)


def test_describe_includes_the_reason_entry():
    info = describe(errors.LOAD_REQUEST_NO_RESULT, errors.BOX_QUOTA_EXCEEDED)
    entry = BOX_ERRORS[errors.LOAD_REQUEST_NO_RESULT]
    assert info["code"] == errors.LOAD_REQUEST_NO_RESULT
    assert info["meaning"] == entry.meaning
    assert info["causes"] == list(entry.causes)
    assert info["fix"] == list(entry.fix)
    assert info["status"] is None
    assert info["known"] is True
    assert info["reason"] == REFUSAL_REASONS[errors.BOX_QUOTA_EXCEEDED].as_dict()
    assert json.loads(json.dumps(info)) == info


def test_describe_without_reason_and_without_error():
    info = describe(errors.CHECK_NO_SERVER)
    assert info["reason"] is None
    assert info["detail"] is None
    assert {"code", "meaning", "causes", "fix", "reason"} <= set(info)
    empty = describe(None)
    assert empty["code"] is None
    assert empty["causes"] == [] and empty["fix"] == [] and empty["reason"] is None
    # a reason only comes with NO_RESULT
    implied = describe(None, errors.INVALID_CREDENTIALS)
    assert implied["code"] == errors.LOAD_REQUEST_NO_RESULT
    assert implied["reason"]["code"] == errors.INVALID_CREDENTIALS


def test_describe_status_form():
    info = describe("ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502")
    assert info["code"] == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502"
    assert info["status"] == 502
    assert info["meaning"] == BOX_ERRORS[errors.LOAD_REQUEST_STATUS].meaning
    assert "retries by itself" in info["detail"]
    assert "wait" in describe(status_code(429))["detail"].lower()
    assert "out of date" in describe(status_code(404))["detail"]
    assert "clock" in describe(status_code(401))["detail"]


def test_describe_never_fails_on_codes_from_newer_parts():
    info = describe("ERR_IOT_HTTPS_FROM_THE_FUTURE", "reason_from_the_future")
    assert info["known"] is False
    assert info["code"] == "ERR_IOT_HTTPS_FROM_THE_FUTURE"
    assert info["meaning"] and info["causes"] and info["fix"]
    assert info["reason"]["code"] == "reason_from_the_future"
    assert info["reason"]["meaning"] and info["reason"]["fix"]


def test_render_text_has_code_meaning_causes_steps_and_reason():
    text = render_text(errors.LOAD_REQUEST_NO_RESULT, errors.DATABASE_NOT_PRODUCTION)
    lines = text.splitlines()
    assert lines[0] == errors.LOAD_REQUEST_NO_RESULT
    flat = " ".join(line.strip() for line in lines)
    entry = BOX_ERRORS[errors.LOAD_REQUEST_NO_RESULT]
    why = REFUSAL_REASONS[errors.DATABASE_NOT_PRODUCTION]
    assert entry.meaning in flat
    assert why.meaning in flat
    assert text.count("Likely causes:") == 2
    assert text.count("What to do:") == 2
    assert "Cloud's reason: database_not_production" in text
    assert "  1. " in text and "  - " in text
    for step in (*entry.fix, *why.fix):
        assert step in flat
    assert all(len(line) <= 78 or " " not in line.strip() for line in lines)


def test_render_text_without_reason_and_status_form():
    text = render_text(status_code(503))
    assert text.splitlines()[0] == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 503"
    assert "Cloud's reason" not in text
    assert "retries by itself" in text


def test_markdown_guide_has_a_heading_per_code():
    guide = markdown_guide()
    headings = re.findall(r"^#{2,3} (\S+)$", guide, re.M)
    for code in (*DESIGN_BOX_CODES, *DESIGN_REFUSAL_CODES):
        assert headings.count(code) == 1, code
    assert guide.startswith("# ")
    assert guide.endswith("\n") and not guide.endswith("\n\n")
    for entry in ALL_ENTRIES:
        assert entry.meaning in guide
        for step in entry.fix:
            assert step in guide
    assert not PLACEHOLDER.search(guide.replace("](#", "]("))
    assert markdown_guide() == guide  # deterministic, for a generated docs/errors.md


def test_module_is_stdlib_only():
    source = Path(errors.__file__).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top != "lanlock"
            assert top in {"__future__", "re", "textwrap", "dataclasses", "typing"}, name
