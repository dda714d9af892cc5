"""Boundary: the cloud's metrics are for its operator, not for whoever reaches the API.

The attacker is anyone on the internet who can reach ``POST /iot/x509``. The metrics count
refusals by code, issuances and the CA's failures: a map of the fleet and of the attacks that
work. ``/metrics`` on the API listener answers only a bearer of the operator's token
(``LANLOCK_CLOUD_METRICS_TOKEN``, compared in constant time), and is off (404) when none is set.
"""

from __future__ import annotations

import httpx
import pytest

from tests.servers import METRICS_TOKEN, running_cloud


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with running_cloud(tmp_path_factory.mktemp("metrics")) as running:
        yield running


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": METRICS_TOKEN},
    ],
)
def test_metrics_refuse_anyone_without_the_token(cloud, headers):
    answer = httpx.get(cloud.url + "/metrics", headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "lanlock_x509_requests_total" not in answer.text


def test_metrics_answer_the_operator(cloud):
    answer = httpx.get(
        cloud.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200
    assert "lanlock_x509_requests_total" in answer.text


def test_metrics_are_off_without_a_token(tmp_path):
    with running_cloud(tmp_path, env={"LANLOCK_CLOUD_METRICS_TOKEN": ""}) as bare:
        answer = httpx.get(bare.url + "/metrics", timeout=10)
        assert answer.status_code == 404
        assert "LANLOCK_CLOUD_METRICS_TOKEN" in answer.json()["detail"]
