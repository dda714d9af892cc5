"""The catalogue of the box's error codes and of the cloud's refusal reasons.

This module is the one place that holds them (docs/design.md §4 and §9). The box's homepage, the CLI
(``lanlock box status``), the console and the error-code guide in the documentation all render an
entry through :func:`describe`, :func:`render_text` or :func:`markdown_guide`, so they always say
the same thing. Other modules name codes through the constants below, never by hand.

Texts may quote commands, file names and settings between backticks; renderers either show them
as code or leave the backticks in place (the plain-text renderer does).

Pure standard library; imports no other lanlock module.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BOX_ERRORS",
    "BOX_ERROR_CODES",
    "BOX_QUOTA_EXCEEDED",
    "BOX_REVOKED",
    "CHECK_CERT_READ_EXCEPTION",
    "CHECK_NO_SERVER",
    "DATABASE_NOT_PRODUCTION",
    "INVALID_CREDENTIALS",
    "INVALID_CSR",
    "ISSUANCE_FAILED",
    "LOAD_NO_CREDENTIAL",
    "LOAD_REQUEST_EXCEPTION",
    "LOAD_REQUEST_NO_RESULT",
    "LOAD_REQUEST_STATUS",
    "NO_IOT_BOX_LINE",
    "REFUSAL_CODES",
    "REFUSAL_REASONS",
    "STATUS_REASONS",
    "SUBSCRIPTION_NOT_IN_PROGRESS",
    "CatalogueEntry",
    "UnknownCodeError",
    "box_error",
    "describe",
    "markdown_guide",
    "refusal",
    "render_text",
    "split_status",
    "status_code",
]

# --------------------------------------------------------------------------------------------
# Codes
# --------------------------------------------------------------------------------------------

# The box's error codes (docs/design.md §8, §9).
CHECK_NO_SERVER = "ERR_IOT_HTTPS_CHECK_NO_SERVER"
CHECK_CERT_READ_EXCEPTION = "ERR_IOT_HTTPS_CHECK_CERT_READ_EXCEPTION"
LOAD_NO_CREDENTIAL = "ERR_IOT_HTTPS_LOAD_NO_CREDENTIAL"
LOAD_REQUEST_EXCEPTION = "ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION"
LOAD_REQUEST_STATUS = "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS"  # shown as "<code> <status>"
LOAD_REQUEST_NO_RESULT = "ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT"

BOX_ERROR_CODES: tuple[str, ...] = (
    CHECK_NO_SERVER,
    CHECK_CERT_READ_EXCEPTION,
    LOAD_NO_CREDENTIAL,
    LOAD_REQUEST_EXCEPTION,
    LOAD_REQUEST_STATUS,
    LOAD_REQUEST_NO_RESULT,
)

# The cloud's refusal reasons (docs/design.md §4), sent as {"error": {"code": ..., "message": ...}}.
INVALID_CREDENTIALS = "invalid_credentials"
DATABASE_NOT_PRODUCTION = "database_not_production"
SUBSCRIPTION_NOT_IN_PROGRESS = "subscription_not_in_progress"
NO_IOT_BOX_LINE = "no_iot_box_line"
BOX_QUOTA_EXCEEDED = "box_quota_exceeded"
BOX_REVOKED = "box_revoked"
INVALID_CSR = "invalid_csr"
ISSUANCE_FAILED = "issuance_failed"

REFUSAL_CODES: tuple[str, ...] = (
    INVALID_CREDENTIALS,
    DATABASE_NOT_PRODUCTION,
    SUBSCRIPTION_NOT_IN_PROGRESS,
    NO_IOT_BOX_LINE,
    BOX_QUOTA_EXCEEDED,
    BOX_REVOKED,
    INVALID_CSR,
    ISSUANCE_FAILED,
)


def status_code(status: int) -> str:
    """The box's code for an unexpected HTTP status: ``"ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502"``."""
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status code: {status!r}")
    return f"{LOAD_REQUEST_STATUS} {status}"


class UnknownCodeError(KeyError):
    """A code that is not in the catalogue (a KeyError with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown code"


def split_status(code: str) -> tuple[str, int | None]:
    """Split a box error code into the catalogue code and the HTTP status, if any.

    ``"ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502"`` gives ``(LOAD_REQUEST_STATUS, 502)``; any other
    known code gives ``(code, None)``. Raises :class:`UnknownCodeError` (a KeyError) otherwise.
    """
    if not isinstance(code, str):
        raise UnknownCodeError(
            f"not a box error code: {code!r}; expected one of: {', '.join(BOX_ERROR_CODES)}"
        )
    parts = code.split()
    if len(parts) == 1 and parts[0] in BOX_ERRORS:
        return parts[0], None
    if len(parts) == 2 and parts[0] == LOAD_REQUEST_STATUS:
        text = parts[1]
        if len(text) == 3 and text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
            return LOAD_REQUEST_STATUS, int(text)
        raise UnknownCodeError(
            f"unknown box error code {code!r}: {LOAD_REQUEST_STATUS} must be followed by an "
            f"HTTP status (100-599), as in {LOAD_REQUEST_STATUS} 502"
        )
    raise UnknownCodeError(
        f"unknown box error code {code!r}; known codes: {', '.join(BOX_ERROR_CODES)} "
        f"(the status code as {LOAD_REQUEST_STATUS} 502)"
    )


# --------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueEntry:
    """One code: what it means, why it usually happens, and what the user can do, in order."""

    code: str
    meaning: str
    causes: tuple[str, ...]
    fix: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"code", "meaning", "causes": [...], "fix": [...]}``."""
        return {
            "code": self.code,
            "meaning": self.meaning,
            "causes": list(self.causes),
            "fix": list(self.fix),
        }


_RETRY_STEP = (
    "Open or refresh the box's homepage to make it try again at once (the box also retries "
    "by itself), then check the result there or with `lanlock box status`."
)

_BOX_ENTRIES = (
    CatalogueEntry(
        code=CHECK_NO_SERVER,
        meaning=(
            "The box is not connected to a database (console), so it does not ask for a "
            "certificate."
        ),
        causes=(
            "The box has never been paired with the database's IoT app.",
            "The box was disconnected from its homepage, or removed from the console; it then "
            "forgets the console, its credentials and its certificate.",
            "A pairing link expired (links last 15 minutes) or failed before the box finished "
            "pairing.",
            "The box's data directory was reset or replaced (for example a new SD card): the box "
            "is then a new box and must be paired again.",
        ),
        fix=(
            "In the database's IoT app (the console), create a pairing link for the box; an "
            "operator can also print one with `lanlock console pair`.",
            "Within 15 minutes, paste the link in the Connect dialog of the box's homepage, or "
            "run `lanlock box connect LINK` on the box.",
            "The box asks for its certificate right after pairing; its homepage and its card in "
            "the console show the result.",
            "Without a console, enter the connection by hand: `lanlock box credentials --db-uuid "
            "UUID --code CODE --console URL`.",
        ),
    ),
    CatalogueEntry(
        code=CHECK_CERT_READ_EXCEPTION,
        meaning="A certificate file exists on the box but cannot be read.",
        causes=(
            "The files' permissions or owner changed: the box now runs as another user, or the "
            "data directory was copied or restored by another user (root, an administrator).",
            "A disk problem: a failing SD card or disk, a file system that turned read-only, or "
            "a full disk.",
            "The certificate or key file was damaged or edited by hand and is no longer valid PEM.",
            "Another program (an antivirus, a backup tool) holds the file locked, mostly on "
            "Windows.",
        ),
        fix=(
            "Read the box's log: it names the file and the exact error.",
            "Check that the user running the box owns its data directory and can read and write "
            "the `tls` folder in it (the `privkey.pem` files must stay readable by that user "
            "only).",
            "Check the disk: free space, file-system errors, and on a Raspberry Pi the SD card.",
            "If the error stays, stop the box, delete (or move aside) the `tls` folder in its "
            "data directory, and start the box again: it makes a temporary certificate at once "
            "and fetches a new one from the cloud. Delete only that folder: the rest of the data "
            "directory holds the box's identity and settings.",
        ),
    ),
    CatalogueEntry(
        code=LOAD_NO_CREDENTIAL,
        meaning=(
            "The box has no database UUID or no subscription code, which it needs to ask the "
            "cloud for a certificate."
        ),
        causes=(
            "The box was set up by hand and the credentials were never entered.",
            "The credentials were wiped when the box was disconnected from its console.",
            "The console that paired the box has no subscription code recorded for its database.",
        ),
        fix=(
            "Pair the box again from the database's IoT app: pairing hands both values to the box.",
            "Or enter them yourself in the Credential dialog of the box's homepage (it asks for "
            "the box's admin password, shown by `lanlock box password`), or with "
            "`lanlock box credentials --db-uuid UUID --code CODE`.",
            "The database UUID identifies your database: the console shows it, or ask whoever "
            "administers the database. The subscription code is the code of your subscription "
            "contract with the vendor, found on the contract, its invoices or the vendor's "
            "customer portal.",
            "The box asks for a certificate as soon as the credentials are saved.",
        ),
    ),
    CatalogueEntry(
        code=LOAD_REQUEST_EXCEPTION,
        meaning=(
            "The box could not reach the cloud: no connection, a firewall, DNS, TLS or a timeout "
            "got in the way (the box's log has the details)."
        ),
        causes=(
            "The box has no internet access (cable, Wi-Fi, router or gateway).",
            "A firewall blocks outgoing HTTPS (TCP port 443) from the box to the cloud.",
            "The network's DNS does not resolve the cloud's host name.",
            "A proxy or security appliance intercepts TLS, so the certificate presented in the "
            "cloud's name is not trusted by the box (or the box is set to a custom cloud CA "
            "bundle that does not match).",
            "The box's clock is wrong, so the cloud's certificate looks expired or not yet valid.",
            "The cloud did not answer in time (a slow or saturated connection).",
        ),
        fix=(
            "Check the box's network: from a computer on the same network, open the cloud's "
            "address in a browser.",
            "Allow outgoing HTTPS (TCP port 443) from the box to the cloud's host, and exempt "
            "that host from any HTTPS inspection or proxy.",
            "Check that the network's DNS resolves the cloud's host name.",
            "Set the box's date and time, preferably from a time server (NTP).",
            "Read the box's log for the exact error.",
            _RETRY_STEP,
        ),
    ),
    CatalogueEntry(
        code=LOAD_REQUEST_STATUS,
        meaning=(
            "The cloud answered with an unexpected HTTP status instead of a certificate; the "
            "code is shown followed by the status, as in ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 502."
        ),
        causes=(
            "5xx (500, 502, 503, 504): the cloud is busy or in maintenance, or a server in front "
            "of it failed. This is temporary and the box retries by itself.",
            "429: too many attempts, usually with wrong credentials; or, with the code "
            "issuance_limited, more new certificates for this box or its subscription in a day "
            "than a box ever needs (a box that loses its TLS key at every start). The cloud asks "
            "the box to wait before trying again.",
            "503 with the code ca_rate_limited: the certificate authority's rate limits are "
            "spent for now; the cloud names when to come back, renewals nearest expiry first.",
            "401: the cloud rejected the box's signed request, most often because the box's "
            "clock is more than 5 minutes off.",
            "Other 4xx (400, 404, 413): the box's software may be out of date for the cloud, or "
            "the box's cloud address points to the wrong server.",
            "A proxy or captive portal on the network answered in the cloud's place (for example "
            "407 or 403).",
        ),
        fix=(
            "5xx: nothing to do, the box retries by itself; if it lasts for hours, check the "
            "vendor's service status or contact the vendor.",
            "429: wait (the box waits as long as the cloud asks), and check the "
            "database UUID and subscription code; for issuance_limited, check that the "
            "box's data folder keeps its `tls` folder across restarts.",
            "401: set the box's date and time, preferably from a time server (NTP).",
            "Other 4xx: update the box's software, and check the cloud address in the box's "
            "settings.",
            "Make sure the box reaches the cloud directly, not through a proxy or captive portal.",
            _RETRY_STEP,
        ),
    ),
    CatalogueEntry(
        code=LOAD_REQUEST_NO_RESULT,
        meaning=(
            "The cloud answered but gave no usable certificate: it refused the request (its "
            "reason code says why), or what it sent failed the box's own checks."
        ),
        causes=(
            "The cloud found the box not eligible; the reason code shown with the error tells "
            "why (credentials, database, subscription, IoT box lines, revocation, request).",
            "The cloud's answer was empty.",
            "The certificate received does not match the box's key, has the wrong names, a "
            "broken chain, or has already expired (then no reason code is shown).",
        ),
        fix=(
            "Follow the steps given for the cloud's reason code, shown with the error.",
            "Without a reason code: set the box's date and time, and read the box's log for the "
            "check that failed.",
            _RETRY_STEP,
            "If it keeps failing, send the box's logs (Download logs on its console card) to the "
            "vendor.",
        ),
    ),
)

_REFUSAL_ENTRIES = (
    CatalogueEntry(
        code=INVALID_CREDENTIALS,
        meaning=(
            "The cloud does not know this database UUID, or the subscription code is not one of "
            "that database's subscriptions (the cloud does not say which)."
        ),
        causes=(
            "A typing mistake in the database UUID or the subscription code (or a stray space).",
            "The subscription code belongs to another database.",
            "The database is not registered with the vendor, for example a new database or one "
            "restored under a new UUID.",
        ),
        fix=(
            "Pair the box again from the database's IoT app, which hands over both values "
            "exactly; or copy and paste them again into the Credential dialog or "
            "`lanlock box credentials`.",
            "Check with the vendor that the subscription is linked to this database.",
            "After repeated failures the cloud slows down attempts (status 429): wait a few "
            "minutes before trying again.",
        ),
    ),
    CatalogueEntry(
        code=DATABASE_NOT_PRODUCTION,
        meaning=(
            "The database is not a production database; only production databases get certificates."
        ),
        causes=(
            "The box is connected to a copy or duplicate of the database (for example a test "
            "copy or a restored backup).",
            "The box is connected to a staging or development database.",
            "The vendor has the database recorded as something other than production.",
        ),
        fix=(
            "Connect the box to the production database: pair it from the production "
            "database's IoT app.",
            "If this is your real production database, ask the vendor to mark it as production.",
            _RETRY_STEP,
        ),
    ),
    CatalogueEntry(
        code=SUBSCRIPTION_NOT_IN_PROGRESS,
        meaning="The subscription exists but is not running (it is a draft, paused or closed).",
        causes=(
            "The subscription has not been confirmed yet (draft).",
            "The subscription was paused, for example over an unpaid invoice.",
            "The subscription has ended or was closed.",
            "The box uses the code of an old subscription that a newer one replaced.",
        ),
        fix=(
            "Ask the vendor to start, resume or renew the subscription.",
            "If a newer subscription replaced it, give the box the new code: pair it again, or "
            "use the Credential dialog or `lanlock box credentials`.",
            _RETRY_STEP,
        ),
    ),
    CatalogueEntry(
        code=NO_IOT_BOX_LINE,
        meaning="The subscription does not include IoT boxes (it has no IoT box line).",
        causes=(
            "The subscription's plan does not include IoT boxes.",
            "The IoT box line was removed, for example at a renewal.",
            "The box uses the code of another subscription of the database, one without IoT boxes.",
        ),
        fix=(
            "Ask the vendor to add IoT box lines to the subscription.",
            "Or give the box the code of the subscription that has them (pair it again, or use "
            "the Credential dialog or `lanlock box credentials`).",
            _RETRY_STEP,
        ),
    ),
    CatalogueEntry(
        code=BOX_QUOTA_EXCEEDED,
        meaning=(
            "The subscription's IoT box lines are used up: every slot is taken by another box."
        ),
        causes=(
            "More boxes are in use than the subscription's IoT box lines allow.",
            "Old or replaced boxes still hold their slots (a box takes a slot at its first "
            "certificate).",
            "A box that was reinstalled or lost its data directory counts as a new box and takes "
            "another slot.",
        ),
        fix=(
            "Free a slot: ask the vendor to remove (revoke) a box you no longer use.",
            "Or add IoT box lines to the subscription (raise their quantity).",
            _RETRY_STEP,
        ),
    ),
    CatalogueEntry(
        code=BOX_REVOKED,
        meaning="The vendor has revoked this box; it no longer gets certificates.",
        causes=(
            "The box was reported lost, stolen or replaced.",
            "The box was revoked to free its slot for another box.",
            "The box was revoked by mistake.",
        ),
        fix=(
            "If the box was retired on purpose, disconnect it and stop using it.",
            "If it was revoked by mistake, contact the vendor and give the box's ID (box_id, in "
            "the box's log).",
            "To use this hardware again as a new box, reset its data directory: it then makes a "
            "new identity, must be paired again and takes a new slot.",
        ),
    ),
    CatalogueEntry(
        code=INVALID_CSR,
        meaning="The cloud could not use the certificate request (CSR) that the box sent.",
        causes=(
            "The box's TLS key or request was damaged, for example by a disk error.",
            "The box used a key the cloud does not accept (it accepts EC P-256, EC P-384, or RSA "
            "of 2048 bits or more).",
            "The request named something besides the box's own two names (another scope, an IP "
            "or e-mail address, a name in other letter case or with a final dot): the cloud "
            "certifies only the box's own two names and refuses anything more.",
            "The box's software is out of date or has a bug.",
        ),
        fix=(
            "Update the box's software.",
            "Stop the box, delete (or move aside) the `tls` folder in its data directory, and "
            "start it again: it makes a new TLS key and a new request.",
            "If it keeps failing, send the box's logs (Download logs on its console card) to the "
            "vendor.",
        ),
    ),
    CatalogueEntry(
        code=ISSUANCE_FAILED,
        meaning=(
            "The box is eligible, but the cloud's certificate authority could not issue the "
            "certificate this time."
        ),
        causes=(
            "The certificate authority (for example Let's Encrypt) is unavailable or is limiting "
            "the number of certificates.",
            "The validation of the box's name (in the vendor's DNS) failed.",
            "A temporary problem at the vendor.",
        ),
        fix=(
            "Nothing to do on the box: it retries by itself, waiting longer after each failure, "
            "and keeps serving any certificate that is still valid.",
            "If it lasts more than a day, contact the vendor with the time of the error and the "
            "box's logs.",
        ),
    ),
)

BOX_ERRORS: dict[str, CatalogueEntry] = {entry.code: entry for entry in _BOX_ENTRIES}
REFUSAL_REASONS: dict[str, CatalogueEntry] = {entry.code: entry for entry in _REFUSAL_ENTRIES}

ISSUANCE_LIMITED = "issuance_limited"  # 429: the cloud's own budget of new certificates
CA_RATE_LIMITED = "ca_rate_limited"  # 503: the certificate authority's rate limits

# The codes a cloud gives with a "wait" status (429, 503), shown as the reason of
# ERR_IOT_HTTPS_LOAD_REQUEST_STATUS: not refusals (the box is eligible), so not in the six.
_STATUS_REASON_ENTRIES = (
    CatalogueEntry(
        code=ISSUANCE_LIMITED,
        meaning=(
            "This box, or its subscription's boxes, got more new certificates in a day than a "
            "box ever needs; the cloud asks it to wait (status 429)."
        ),
        causes=(
            "The box loses its TLS key at every start (its data folder's `tls` folder is wiped "
            "or not kept), so each start asks for a new certificate.",
            "Many boxes of the subscription were reset at once.",
        ),
        fix=(
            "Nothing to do for the wait itself: the box asks again when the cloud said.",
            "Make sure the box's data folder keeps its `tls` folder across restarts and updates.",
        ),
    ),
    CatalogueEntry(
        code=CA_RATE_LIMITED,
        meaning=(
            "The certificate authority's rate limits for the vendor's zone are spent for now "
            "(status 503); the cloud asks the box to come back when they free up."
        ),
        causes=(
            "Many new boxes asked for their first certificate in the same week: a public CA "
            "allows a registered domain about 50 new certificates a week.",
            "This box asked for several new certificates in a few days (a new TLS key each "
            "time): a CA allows about 5 certificates for the same names a week.",
            "The certificate authority itself answered that a limit was reached.",
        ),
        fix=(
            "Nothing to do on the box: it keeps serving any certificate that is still valid and "
            "asks again at the time the cloud named; renewals closest to expiry go first.",
            "If boxes wait for days, contact the vendor: it can ask the CA for higher limits or "
            "put its zone on the Public Suffix List.",
            "Make sure the box's data folder keeps its `tls` folder: a box that keeps its key "
            "needs no new certificate until renewal.",
        ),
    ),
)
STATUS_REASONS: dict[str, CatalogueEntry] = {e.code: e for e in _STATUS_REASON_ENTRIES}

# One-line notes for the status code, by HTTP status or status class.
_STATUS_NOTES: dict[int | str, str] = {
    401: (
        "The cloud rejected the box's signed request; most often the box's clock is more than "
        "5 minutes off."
    ),
    407: "A proxy on the network asks for a login: the box must reach the cloud directly.",
    413: "The cloud found the request too large; the box's software may be out of date.",
    429: "Too many attempts: wait before trying again, and check the credentials.",
    "4xx": (
        "The box's software may be out of date, or its cloud address points to the wrong server."
    ),
    "5xx": "The cloud is busy or in maintenance; the box retries by itself.",
    "other": "An answer the box does not expect from the cloud; check the cloud address.",
}


def _status_note(status: int) -> str:
    note = _STATUS_NOTES.get(status)
    if note is not None:
        return note
    if 400 <= status <= 499:
        return _STATUS_NOTES["4xx"]
    if 500 <= status <= 599:
        return _STATUS_NOTES["5xx"]
    return _STATUS_NOTES["other"]


def box_error(code: str) -> CatalogueEntry:
    """The entry of a box error code; accepts the status form ``"ERR_..._STATUS 502"``.

    Raises :class:`UnknownCodeError` (a KeyError) for a code not in the catalogue.
    """
    base, _status = split_status(code)
    return BOX_ERRORS[base]


def refusal(code: str) -> CatalogueEntry:
    """The entry of one of the cloud's refusal reasons; KeyError for an unknown one."""
    try:
        return REFUSAL_REASONS[code]
    except (KeyError, TypeError):
        raise UnknownCodeError(
            f"unknown refusal reason {code!r}; known reasons: {', '.join(REFUSAL_CODES)}"
        ) from None


def _unknown_box_error(code: str) -> CatalogueEntry:
    return CatalogueEntry(
        code=code,
        meaning="An error code that this software does not know (it may come from a newer box).",
        causes=("The box runs a newer or older version of the software than the one showing it.",),
        fix=(
            "Open the box's homepage, or run `lanlock box status` on the box, to read its own "
            "description of the error.",
            "Update the software so that every part knows the same codes.",
        ),
    )


def _unknown_refusal(code: str) -> CatalogueEntry:
    return CatalogueEntry(
        code=code,
        meaning="The cloud refused the request for a reason that this software does not know.",
        causes=("The cloud runs a newer version than the box's software.",),
        fix=(
            "Read the cloud's message in the box's log.",
            "Update the box's software.",
            "If it keeps failing, send the box's logs to the vendor.",
        ),
    )


def describe(code: str | None, reason: str | None = None) -> dict[str, Any]:
    """The JSON-ready description that the homepage, the CLI and the console all render.

    Returns ``{"code", "status", "meaning", "detail", "causes", "fix", "known", "reason"}``:

    * ``code`` — the code as shown to the user (with its status for the status form);
    * ``status`` — the HTTP status of the status form, else None;
    * ``meaning``, ``causes`` (list), ``fix`` (list of ordered steps) — the catalogue entry;
    * ``detail`` — a one-line note for that particular HTTP status, else None;
    * ``known`` — False when the code is not in this catalogue (a generic entry is given, so
      that a console never fails on a code from a newer box);
    * ``reason`` — the refusal entry's dict (``{"code", "meaning", "causes", "fix"}``) when a
      reason is given (unknown reasons get a generic entry), else None.

    ``describe(None)`` (no error) gives ``code`` None and empty fields; ``describe(None, reason)``
    stands for ``describe(LOAD_REQUEST_NO_RESULT, reason)``, the only code that carries a reason.
    """
    if code is None and reason is not None:
        code = LOAD_REQUEST_NO_RESULT
    reason_dict = None
    if reason is not None:
        known_reason = REFUSAL_REASONS.get(reason) or STATUS_REASONS.get(reason)
        reason_entry = known_reason or _unknown_refusal(str(reason))
        reason_dict = reason_entry.as_dict()
    if code is None:
        return {
            "code": None,
            "status": None,
            "meaning": "",
            "detail": None,
            "causes": [],
            "fix": [],
            "known": True,
            "reason": None,
        }
    try:
        base, status = split_status(code)
    except UnknownCodeError:
        entry, status, known, shown = _unknown_box_error(str(code)), None, False, str(code)
    else:
        entry, known = BOX_ERRORS[base], True
        shown = base if status is None else status_code(status)
    return {
        "code": shown,
        "status": status,
        "meaning": entry.meaning,
        "detail": None if status is None else _status_note(status),
        "causes": list(entry.causes),
        "fix": list(entry.fix),
        "known": known,
        "reason": reason_dict,
    }


# --------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------

_WIDTH = 78


_CODE_SPAN = re.compile(r"`[^`]*`")


def _wrap(text: str, first: str, rest: str) -> str:
    # Keep `quoted commands` on one line: hide their spaces from textwrap.
    text = _CODE_SPAN.sub(lambda match: match.group(0).replace(" ", "\x00"), text)
    return textwrap.fill(
        text,
        width=_WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    ).replace("\x00", " ")


def _text_body(meaning: str, causes: list[str], fix: list[str], detail: str | None) -> list[str]:
    lines = [_wrap(meaning, "  ", "  ")]
    if detail:
        lines.append(_wrap(detail, "  ", "  "))
    lines.append("Likely causes:")
    lines.extend(_wrap(cause, "  - ", "    ") for cause in causes)
    lines.append("What to do:")
    for number, step in enumerate(fix, 1):
        label = f"  {number}. "
        lines.append(_wrap(step, label, " " * len(label)))
    return lines


def render_text(code: str, reason: str | None = None) -> str:
    """A plain-text block for the CLI: the code, its meaning, causes, steps, and the reason's."""
    info = describe(code, reason)
    if info["code"] is None:
        return "No error."
    lines = [info["code"]]
    detail = info["detail"] and f"HTTP {info['status']}: {info['detail']}"
    lines.extend(_text_body(info["meaning"], info["causes"], info["fix"], detail))
    why = info["reason"]
    if why is not None:
        lines.append("")
        lines.append(f"Cloud's reason: {why['code']}")
        lines.extend(_text_body(why["meaning"], why["causes"], why["fix"], None))
    return "\n".join(lines) + "\n"


def _markdown_entry(entry: CatalogueEntry, level: str) -> list[str]:
    lines = [f"{level} {entry.code}", "", entry.meaning, "", "Likely causes:", ""]
    lines.extend(f"- {cause}" for cause in entry.causes)
    lines.extend(["", "What to do:", ""])
    lines.extend(f"{number}. {step}" for number, step in enumerate(entry.fix, 1))
    lines.append("")
    return lines


def _anchor(code: str) -> str:
    return "#" + code.lower()


def markdown_guide() -> str:
    """The whole catalogue as Markdown: one section per box error code and per refusal reason."""
    lines = [
        "# Error codes",
        "",
        "When a box has no valid certificate, its homepage, `lanlock box status` and its card "
        "in the console show one of the codes below, with the same explanation. While an error "
        "lasts, a certificate that is still valid keeps being served, and the box keeps "
        "retrying by itself; opening its homepage makes it try again at once.",
        "",
        "| code | meaning |",
        "| --- | --- |",
    ]
    lines.extend(f"| [{e.code}]({_anchor(e.code)}) | {e.meaning} |" for e in _BOX_ENTRIES)
    lines.append("")
    for entry in _BOX_ENTRIES:
        lines.extend(_markdown_entry(entry, "##"))
    lines.extend(
        [
            "## Refusal reasons",
            "",
            f"With {LOAD_REQUEST_NO_RESULT}, the cloud usually gives one of these reasons; the "
            "box shows it next to the code.",
            "",
            "| reason | meaning |",
            "| --- | --- |",
        ]
    )
    lines.extend(f"| [{e.code}]({_anchor(e.code)}) | {e.meaning} |" for e in _REFUSAL_ENTRIES)
    lines.append("")
    for entry in _REFUSAL_ENTRIES:
        lines.extend(_markdown_entry(entry, "###"))
    return "\n".join(lines).rstrip("\n") + "\n"
