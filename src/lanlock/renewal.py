"""When a certificate is due for renewal: the rule the cloud announces and the box follows.

Two thirds into its life, or ten days before its end, whichever comes first — but never inside
the last third, so that a short certificate (Let's Encrypt's 6-day ``shortlived``, or minutes in
tests) is renewed at two thirds, not at once. The cloud sends the time in each answer
(``renew_at``): its own rule, or the CA's renewal information (ACME ARI) when the CA gives it;
the box follows the cloud's time for that certificate, bounded so that a far-off time can never
let it run into the end.
"""

from __future__ import annotations

import datetime as dt

RENEW_FRACTION = 2 / 3
RENEW_MARGIN = dt.timedelta(days=10)
# However late the announced time, a box renews with a tenth of the lifetime still left.
LAST_CHANCE_FRACTION = 0.9
# A box with a valid certificate asks its cloud this often anyway, with the key it serves: the
# answer (the same certificate, from the cloud's reuse path) carries the renewal time as it is
# now, so a CA that pulls renewals forward (ARI, RFC 9773: a revocation coming) reaches the box
# within a day, and a window already open gets it a new certificate at once.
CHECK_IN = dt.timedelta(days=1)


def renewal_time(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """The rule of thumb, without advice from the CA."""
    lifetime = not_after - not_before
    margin = min(RENEW_MARGIN, lifetime * (1 - RENEW_FRACTION))
    return min(not_before + lifetime * RENEW_FRACTION, not_after - margin)


def due_time(
    announced: dt.datetime | None, not_before: dt.datetime, not_after: dt.datetime
) -> dt.datetime:
    """When to renew: the announced time (a time in the past means now), or the rule of thumb
    when none was announced; never later than :data:`LAST_CHANCE_FRACTION` of the lifetime."""
    if announced is None:
        return renewal_time(not_before, not_after)
    return min(announced, not_before + (not_after - not_before) * LAST_CHANCE_FRACTION)
