"""Boundary: one box, or one subscription, cannot burn the fleet's certificate budget.

The attacker is an eligible customer's box (or its owner) asking again and again with a new key:
each new key used to mean a new certificate, and with an ACME CA every one of them counts against
the rate limits the whole fleet shares. New certificates are limited per box and per subscription
within a window (429 with ``Retry-After`` and the code ``issuance_limited``); handing out a
certificate the cloud already has (reuse) never counts.
"""

from __future__ import annotations

import pytest

from lanlock import pki
from lanlock.box.cloud_client import signed_body
from tests.boxes import TestBox, customer_in
from tests.servers import running_cloud

PER_BOX = 3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with running_cloud(
        tmp_path_factory.mktemp("throttle"),
        "--box-issuance-limit",
        str(PER_BOX),
        "--subscription-issuance-factor",
        "2",
    ) as running:
        yield running


def with_new_key(box: TestBox) -> TestBox:
    box.tls_key = pki.new_private_key()
    return box


def test_a_box_asking_with_new_keys_is_stopped_and_reuse_still_works(cloud):
    customer = customer_in(cloud.store_url)
    box = TestBox(cloud.url)
    for _ in range(PER_BOX):
        assert with_new_key(box).ask(customer).result
    kept_key = box.tls_key
    response = with_new_key(box).post_body(signed_body(box.device_key, box.payload(customer)))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["code"] == "issuance_limited"
    box.tls_key = kept_key  # the last certificate it got: handed out again, never counted
    for _ in range(3):
        assert box.ask(customer).result


def test_a_subscription_is_stopped_at_its_share(cloud):
    customer = customer_in(cloud.store_url, 2)  # factor 2: four new certificates a window
    boxes = [TestBox(cloud.url), TestBox(cloud.url)]
    issued = 0
    for box in boxes * 2:
        assert with_new_key(box).ask(customer).result
        issued += 1
    box = with_new_key(boxes[0])
    refused = box.post_body(signed_body(box.device_key, box.payload(customer)))
    assert issued == 4
    assert refused.status_code == 429
    assert refused.json()["code"] == "issuance_limited"
    assert "subscription" in refused.json()["detail"]
