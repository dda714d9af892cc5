"""The CA's rate limits as a budget (#10 item 4), over the wire against real clouds.

The clouds here use the embedded CA with small ``--ca-limit`` settings: the budget is the same
code whatever the issuer, and the embedded CA issues in milliseconds. What the CA itself answers
(``rateLimited``) is tested against pebble in ``test_acme_front.py``.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from lanlock import pki
from lanlock.box.cloud_client import signed_body
from lanlock.cli import main
from lanlock.cloud.ca_budget import (
    DUPLICATES,
    LETS_ENCRYPT,
    PER_DOMAIN,
    BudgetSpent,
    CABudget,
    Limit,
    Order,
    parse_limit_setting,
)
from lanlock.cloud.models import AuditEntry, Box, Certificate, cloud_store
from lanlock.cloud.server import CloudSettings, ca_budget_of
from tests.boxes import Customer, TestBox, customer_in, post_together
from tests.servers import ZONE, running_cloud, start_cloud

FIRST_CERTIFICATES = 3


def refused(response) -> tuple[int, str, int]:
    return response.status_code, response.json().get("code"), int(response.headers["Retry-After"])


def ask_with_new_key(box: TestBox, customer: Customer):
    box.tls_key = pki.new_private_key()
    return box.post_body(signed_body(box.device_key, box.payload(customer)))


@pytest.fixture
def cloud(tmp_path):
    """A cloud with a small per-domain limit, and the default per-box throttle lifted."""
    with running_cloud(
        tmp_path,
        "--ca-limit",
        f"certificates_per_domain={FIRST_CERTIFICATES}/1h",
        "--box-issuance-limit",
        "100",
    ) as running:
        yield running


@pytest.fixture
def scope_limited_cloud(tmp_path):
    """A cloud whose only CA limit is five certificates per scope an hour."""
    with running_cloud(
        tmp_path, "--ca-limit", "duplicates=5/1h", "--box-issuance-limit", "100"
    ) as running:
        yield running


def test_first_certificates_wait_when_the_domain_budget_is_spent_and_renewals_go_on(cloud):
    customer = customer_in(cloud.store_url, 10)
    boxes = [TestBox(cloud.url) for _ in range(FIRST_CERTIFICATES + 1)]
    for box in boxes[:FIRST_CERTIFICATES]:
        assert box.ask(customer).result
    status, code, retry_after = refused(ask_with_new_key(boxes[-1], customer))
    # One token comes back every 20 minutes; the wait is spread over up to half as long again.
    assert (status, code) == (503, "ca_rate_limited")
    assert 1150 <= retry_after <= 1800
    # A renewal (the same names again, a new key) does not spend the per-domain limit.
    assert ask_with_new_key(boxes[0], customer).status_code == 200
    # And the certificate it already has is handed out again, budget or not.
    assert boxes[1].ask(customer).result
    store = cloud_store(cloud.store_url, pool_size=1)
    try:
        with store.transaction() as session:
            audited = session.scalars(
                select(AuditEntry.detail).where(AuditEntry.code == "ca_rate_limited")
            ).all()
    finally:
        store.dispose()
    assert any("certificates_per_domain" in detail for detail in audited)
    metrics = cloud.metrics()
    left = re.search(
        rf'lanlock_ca_budget_left{{key="{ZONE}",limit="certificates_per_domain"}} (\S+)', metrics
    )
    assert left and float(left.group(1)) == 0


def test_a_renewal_near_expiry_takes_what_an_early_one_must_leave(scope_limited_cloud):
    cloud = scope_limited_cloud
    customer = customer_in(cloud.store_url)
    box = TestBox(cloud.url)
    assert box.ask(customer).result  # the first certificate: 4 of 5 duplicates left
    for _ in range(3):  # early renewals (new keys, the certificate fresh) down to the reserve
        assert ask_with_new_key(box, customer).status_code == 200
    status, code, _ = refused(ask_with_new_key(box, customer))
    assert (status, code) == (503, "ca_rate_limited")
    # The same box's certificate near its end: the last token is for that renewal.
    store = cloud_store(cloud.store_url, pool_size=1)
    now = dt.datetime.now(dt.UTC)
    try:
        with store.transaction() as session:
            scope = session.scalar(select(Box.scope).where(Box.box_id == box.box_id))
            session.execute(
                update(Certificate)
                .where(Certificate.scope == scope)
                .values(
                    not_before=now - dt.timedelta(days=85), not_after=now + dt.timedelta(days=5)
                )
            )
    finally:
        store.dispose()
    assert ask_with_new_key(box, customer).status_code == 200
    # That took the scope's last token; its new certificate is fresh, so a new key waits.
    assert refused(ask_with_new_key(box, customer))[:2] == (503, "ca_rate_limited")


def test_replicas_spend_from_one_budget(tmp_path):
    """Two clouds on one PostgreSQL store, eight first certificates at one instant: three."""
    with running_cloud(
        tmp_path / "a", "--ca-limit", "certificates_per_domain=3/1h", backend="postgresql"
    ) as first:
        second = start_cloud(
            first.store_url,
            tmp_path / "b",
            "--ca-limit",
            "certificates_per_domain=3/1h",
        )
        try:
            customer = customer_in(first.store_url, 20)
            boxes = [TestBox(first.url) for _ in range(8)]
            bodies = [
                (cloud.url, signed_body(box.device_key, box.payload(customer)))
                for box, cloud in zip(boxes, [first, second] * 4, strict=True)
            ]
            answers, _ = post_together(bodies, 60)
        finally:
            second.stop()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 3 + [503] * 5


def test_a_limit_setting_that_is_not_one_is_refused_with_the_shape_to_give(tmp_path):
    for bad in ("duplicates=5", "weekly=5/7d", "duplicates=0/7d", "duplicates=5/7 days"):
        result = CliRunner().invoke(
            main, ["cloud", "serve", "--data", str(tmp_path), "--ca-limit", bad]
        )
        assert result.exit_code == 2, result.output
        assert "NAME=COUNT/PERIOD" in result.output or "above zero" in result.output
        assert not (tmp_path / "cloud.db").exists()


def test_lets_encrypt_limits_are_the_default_for_its_directory_and_settings_change_them(tmp_path):
    lets_encrypt = "https://acme-v02.api.letsencrypt.org/directory"
    settings = CloudSettings(data_dir=tmp_path, issuer="acme", acme_directory=lets_encrypt)
    budget = ca_budget_of(settings, ZONE)
    assert budget is not None and budget.limits == LETS_ENCRYPT
    changed = CloudSettings(
        data_dir=tmp_path,
        issuer="acme",
        acme_directory=lets_encrypt,
        ca_limit=("duplicates=off", "certificates_per_domain=500/7d"),
    )
    budget = ca_budget_of(changed, ZONE)
    assert budget is not None
    assert DUPLICATES not in budget.limits
    assert budget.limits[PER_DOMAIN] == Limit(500, dt.timedelta(days=7))
    assert ca_budget_of(CloudSettings(data_dir=tmp_path), ZONE) is None  # the embedded CA
    assert parse_limit_setting("orders_per_account=300/3h")[1] == Limit(300, dt.timedelta(hours=3))


def test_a_zone_on_the_public_suffix_list_gives_each_scope_its_own_domain_budget(tmp_path):
    store = cloud_store(f"sqlite:///{tmp_path / 'cloud.db'}", pool_size=1)
    store.migrate()
    limits = {PER_DOMAIN: Limit(1, dt.timedelta(hours=1))}
    shared, suffix = CABudget(limits, ZONE, "a"), CABudget(limits, ZONE, "b", True)
    now = dt.datetime.now(dt.UTC)
    try:
        for budget in (shared, suffix):
            with store.transaction() as session:
                budget.spend_in(session, Order("aaaaaaaaaaaaaaaa"), now)
        with store.transaction() as session:
            suffix.spend_in(session, Order("bbbbbbbbbbbbbbbb"), now)  # its own registered domain
        with pytest.raises(BudgetSpent), store.transaction() as session:
            shared.spend_in(session, Order("bbbbbbbbbbbbbbbb"), now)  # the zone's one budget
    finally:
        store.dispose()


def test_what_the_ca_asked_holds_every_order_of_that_limit_until_then(tmp_path):
    store = cloud_store(f"sqlite:///{tmp_path / 'cloud.db'}", pool_size=1)
    store.migrate()
    budget = CABudget({PER_DOMAIN: Limit(50, dt.timedelta(days=7))}, ZONE, "acct")
    detail = 'too many certificates (50) already issued for "iot.test" in the last 168h0m0s'
    now = dt.datetime.now(dt.UTC)
    try:
        with store.transaction() as session:
            budget.obey(session, Order("aaaaaaaaaaaaaaaa"), detail, 600)
        with pytest.raises(BudgetSpent) as spent, store.transaction() as session:
            budget.spend_in(session, Order("bbbbbbbbbbbbbbbb"), now)
        assert 595 <= spent.value.retry_after <= 901
        # A renewal spends no per-domain token: the CA's word on that limit does not hold it.
        with store.transaction() as session:
            renewal = Order(
                "cccccccccccccccc", now - dt.timedelta(days=80), now + dt.timedelta(days=10)
            )
            budget.spend_in(session, renewal, now)
        later = now + dt.timedelta(seconds=601)
        with store.transaction() as session:
            budget.spend_in(session, Order("bbbbbbbbbbbbbbbb"), later)
    finally:
        store.dispose()
