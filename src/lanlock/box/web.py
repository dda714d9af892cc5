"""The box's homepage and its actions (one app, served on HTTP and HTTPS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from lanlock.box.agent import Agent


def create_app(agent: Agent) -> Starlette:
    async def status(_: Request) -> Response:
        state = await run_in_threadpool(agent.check_if_stale)
        return JSONResponse(state.as_dict() | {"box_id": agent.box_id, "address": agent.address})

    return Starlette(routes=[Route("/status.json", status)])
