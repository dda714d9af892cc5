"""The reference of bench/cloud_x509.py: a bare Starlette endpoint that reads a JSON body.

What one uvicorn process can answer when an answer costs nothing but HTTP and a JSON parse:
the ceiling the cloud's x509 paths are measured against (issue #13), under the same uvicorn
settings as ``lanlock cloud serve``.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def x509(request: Request) -> Response:
    document = json.loads(await request.body())
    # The shape the benchmark counts as an answer, nothing more behind it.
    return JSONResponse({"result": {"x509_pem": f"{len(document)} fields"}})


app = Starlette(routes=[Route("/iot/x509", x509, methods=["POST"])])
