"""``--acme-profile``: the profile goes in newOrder when the CA's directory offers it, and a
profile the CA does not offer is refused at start with the list it does offer.

Debian's pebble advertises no profiles, so a profile is never ordered end to end here: the
selection is checked against Let's Encrypt's directory document as that CA sends it, the
newOrder body as the acme library serialises it, and the refusal at start against a real pebble.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from acme import messages
from lanlock.cli import main
from lanlock.cloud.issuers.acme import ProfileUnknown, chosen_profile
from tests.pebble import start_pebble
from tests.servers import free_port

# https://acme-v02.api.letsencrypt.org/directory, as Let's Encrypt sends it (2026).
LETS_ENCRYPT_DIRECTORY = {
    "keyChange": "https://acme-v02.api.letsencrypt.org/acme/key-change",
    "meta": {
        "caaIdentities": ["letsencrypt.org"],
        "profiles": {
            "classic": "https://letsencrypt.org/docs/profiles#classic",
            "shortlived": "https://letsencrypt.org/docs/profiles#shortlived",
            "tlsserver": "https://letsencrypt.org/docs/profiles#tlsserver",
        },
        "termsOfService": "https://letsencrypt.org/documents/LE-SA-v1.5-February-24-2025.pdf",
        "website": "https://letsencrypt.org",
    },
    "newAccount": "https://acme-v02.api.letsencrypt.org/acme/new-acct",
    "newNonce": "https://acme-v02.api.letsencrypt.org/acme/new-nonce",
    "newOrder": "https://acme-v02.api.letsencrypt.org/acme/new-order",
    "renewalInfo": "https://acme-v02.api.letsencrypt.org/acme/renewal-info",
    "revokeCert": "https://acme-v02.api.letsencrypt.org/acme/revoke-cert",
}
URL = "https://acme-v02.api.letsencrypt.org/directory"
IDENTIFIERS = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="s.iot.example")]


def directory(document: dict) -> messages.Directory:
    return messages.Directory.from_json(json.loads(json.dumps(document)))


def test_an_offered_profile_is_chosen_and_none_means_the_cas_default():
    offered = directory(LETS_ENCRYPT_DIRECTORY)
    assert chosen_profile(offered, "shortlived", URL) == "shortlived"
    assert chosen_profile(offered, None, URL) is None


def test_a_profile_the_ca_does_not_offer_names_those_it_does():
    with pytest.raises(ProfileUnknown) as refused:
        chosen_profile(directory(LETS_ENCRYPT_DIRECTORY), "short-lived", URL)
    message = str(refused.value)
    assert "offers no profile 'short-lived'" in message
    for name in ("classic", "shortlived", "tlsserver"):
        assert name in message


def test_what_a_ca_writes_in_its_profiles_reaches_the_operator_escaped_and_short():
    hostile = json.loads(json.dumps(LETS_ENCRYPT_DIRECTORY))
    hostile["meta"]["profiles"] = {
        "evil\n\x1b[31mred": "x" * 10_000,
        **{f"p{i:02d}": "d" for i in range(50)},
    }
    with pytest.raises(ProfileUnknown) as refused:
        chosen_profile(directory(hostile), "shortlived", URL)
    message = str(refused.value)
    assert "\n" not in message and "\x1b" not in message
    assert len(message) < 2_000


def test_new_order_carries_the_profile_only_when_one_is_chosen():
    with_profile = messages.NewOrder(identifiers=IDENTIFIERS, profile="shortlived")
    assert with_profile.to_partial_json()["profile"] == "shortlived"
    without = messages.NewOrder(identifiers=IDENTIFIERS, profile=None).to_partial_json()
    assert "profile" not in without


def test_a_profile_asked_of_pebble_which_offers_none_stops_the_cloud_at_start(tmp_path):
    pebble = start_pebble(tmp_path / "pebble", dns_port=free_port())
    try:
        result = CliRunner().invoke(
            main,
            [
                "cloud", "serve", "--data", str(tmp_path / "cloud"), "--issuer", "acme",
                "--acme-directory", pebble.directory, "--acme-ca-bundle", str(pebble.tls.ca),
                "--acme-profile", "shortlived",
            ],
        )  # fmt: skip
    finally:
        pebble.stop()
    assert result.exit_code == 1, result.output
    assert f"the ACME CA at {pebble.directory} offers no profiles" in result.output
    assert "start without --acme-profile" in result.output
    assert not (tmp_path / "cloud" / "cloud.db").exists()
