"""The defaults of lanlock's settings, written once (the DNS's TCP limits and the cloud's
issuance budget stay next to the code that enforces them: dns/worker.py TcpLimits,
cloud/throttle.py IssuanceBudget).

The command line shows these (``--help``, docs/configuration.md) and the settings classes start
from them, so a role that runs without options and one built in code behave alike. Nothing here
imports anything: every role, even a box's lean install, reads this module.
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"  # every server listens on loopback until told otherwise
ZONE = "iot.localhost"  # *.localhost resolves to loopback in browsers: no DNS set-up to try lanlock

# --- cloud -----------------------------------------------------------------------------------
CLOUD_PORT = 8700
CLOUD_URL = f"http://{LOOPBACK}:{CLOUD_PORT}"
ISSUER = "local"  # the embedded CA
# The embedded CA's leaf lifetime: 90 days, what Let's Encrypt's default profile issues today and
# within the CA/Browser Forum's caps for public CAs (200 days from 2026-03-15, 100 from
# 2027-03-15, 47 from 2029-03-15: ballot SC-081). Boxes renew at two thirds of any lifetime (at
# most ten days before the end), so `--lifetime 47d` or `6d` need nothing else.
CERTIFICATE_LIFETIME_DAYS = 90
FAILURE_LIMIT = 10  # failed credential attempts per source / database before 429
FAILURE_WINDOW = 60.0  # seconds
# A scope's issuance lease, renewed by its holder every third of it while it issues (an ACME
# order takes minutes): a replica that dies stops renewing, and the scope is free again within
# this long. The fleet rehearsal (bench/fleet.py) saw a SIGKILLed replica block two boxes for
# the whole 300 s of the former unrenewed lease.
LEASE_SECONDS = 30.0
# How long a request waits for another request's issuance of the same scope before answering
# 503 + Retry-After: below the box's 20 s request timeout, so that the box gets that answer.
LEASE_WAIT_SECONDS = 12.0

# --- console ---------------------------------------------------------------------------------
CONSOLE_PORT = 8800
CONSOLE_URL = f"http://{LOOPBACK}:{CONSOLE_PORT}"  # what pairing links name until one is set

# --- dns -------------------------------------------------------------------------------------
DNS_PORT = 5353  # unprivileged; production gives --port 53
CAA_ISSUER = "letsencrypt.org"  # the CA the zone's CAA record allows by default

# --- box -------------------------------------------------------------------------------------
BOX_HTTP_PORT = 8900
BOX_HTTPS_PORT = 8943
BOX_REQUEST_ADDRESS = "10.0.0.7"  # `lanlock box request` is a diagnostic: any LAN address will do
RETRY_FIRST = 30.0  # seconds before the first retry after a failed load, then doubling …
RETRY_CAP = 3600.0  # … up to an hour
HOMEPAGE_CHECK_INTERVAL = 10.0  # seconds: opening the homepage checks at most this often
REPORT_INTERVAL = 60.0  # seconds between status reports to the console when nothing changes

# --- demo ------------------------------------------------------------------------------------
DEMO_DATA = ".lanlock/demo"
