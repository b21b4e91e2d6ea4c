"""Every HTTP request's id and metrics, outermost of the API's middleware (so that the front door's
refusals are counted and carry an id too).

The id is the client's `X-Request-ID` when it is a plain token (`idios.logs.request_id`), else a
new one; it is answered in the response's `X-Request-ID`, set in `idios.logs.REQUEST_ID` for the log
lines of the request, and carried by its jobs to the workers. A pure ASGI middleware rather than
Starlette's BaseHTTPMiddleware, which would buffer the streamed dump.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idios import metrics
from idios.logs import REQUEST_ID, request_id

log = logging.getLogger("idios.api")

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class Observe:
    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        """`routes`: the API's routes (their paths as matched) and the app's own (the page, /static)."""
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrived = dict(scope)  # as it came: the routers rewrite root_path and path as they descend
        rid = request_id(Headers(scope=scope).get("x-request-id"))
        token = REQUEST_ID.set(rid)
        status = 500  # an app that raises before answering: the server answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = self.template(scope, arrived)
            seconds = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(method, route).observe(seconds)
            log.debug("%s %s: %d in %.1f ms", method, route, status, 1000 * seconds)
            REQUEST_ID.reset(token)

    def template(self, scope: Scope, arrived: Scope) -> str:
        """The path template of the route the request went to (`/models/{model}/search`), so that the
        metrics have one series a route, not one a path; `unmatched` for a path no route serves.

        The router names the route it ran in the scope; a request the front door refused never
        reached it, and is matched here against the routes, as it `arrived`."""
        ran = scope.get("route")
        if ran is not None and hasattr(ran, "path"):
            return str(ran.path)
        partial = None
        for route in self.routes:
            if not hasattr(route, "path"):  # a router of routes, not a route
                continue
            match, _ = route.matches(arrived)
            if match == Match.FULL:
                return str(route.path)
            if match == Match.PARTIAL and partial is None:
                partial = str(route.path)
        return partial or "unmatched"
