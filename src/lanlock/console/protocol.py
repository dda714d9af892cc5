"""The bodies boxes send to the console (docs/console-protocol.md), read strictly.

The fields and their rules are :mod:`lanlock.console_wire`'s, shared with the box that writes
them; here a body becomes one of those messages, and a body that breaks a rule becomes the 400
answer that names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import josepy
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import jws
from lanlock.console_wire import PairPayload, StatusReport


class ApiError(Exception):
    """An answer other than success: its HTTP status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def refusal(status: int, detail: str) -> ApiError:
    return ApiError(status, {"detail": detail})


@dataclass(frozen=True)
class PairRequest:
    """A pairing request as the box sent it; what it proves is :meth:`signer`'s to say."""

    payload: PairPayload
    envelope: josepy.JWS

    def signer(self) -> ec.EllipticCurvePublicKey:
        """The device key that signed the request, and whose box_id it names; else Unauthorized."""
        device_key = jws.signing_key(self.envelope)
        jws.check_box_id(self.payload.box_id, device_key)
        return device_key


def pair_request(body: bytes) -> PairRequest:
    """The box's signed pairing request, read; its signature is not checked yet (see
    :meth:`PairRequest.signer`): a body that is not one is refused here, before any link is used."""
    try:
        envelope = jws.envelope_of(_object(body))
        payload = PairPayload.from_json(jws.payload_object(envelope.payload))
    except jws.MalformedRequest as exc:  # nesting too deep included (lanlock.jws.NOT_JSON)
        raise refusal(400, str(exc)) from None
    return PairRequest(payload, envelope)


def status_report(body: bytes) -> StatusReport:
    try:
        return StatusReport.from_json(_object(body))
    except jws.MalformedRequest as exc:
        raise refusal(400, str(exc)) from None


def _object(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except jws.NOT_JSON:
        raise refusal(400, "the body is not JSON (or is nested too deeply)") from None
    if not isinstance(fields, dict):
        raise refusal(400, "the body must be a JSON object")
    return fields
