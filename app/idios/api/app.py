"""The FastAPI application: routes, error shapes, and the front door (idios.api.guard) before them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from idios import __version__
from idios.api.guard import BodyTooLarge, FrontDoor, host_patterns
from idios.api.observe import Observe
from idios.api.routes import ROUTERS
from idios.auth import KeyRing
from idios.config import Settings
from idios.errors import IdiosError
from idios.locks import KeyedLocks
from idios.transport import Transport

log = logging.getLogger("idios.api")

DESCRIPTION = """Store images by URL and find visually similar ones.

Similarity is 0-100 for every model, 100 a perfect match. Errors answer
`{"detail": [{"msg": ..., "type": ...}]}` with a 4xx status for bad input,
503 when no worker can take the job and 504 when none answered in time.
"""


STATIC = Path(__file__).resolve().parent.parent / "static"
# The web page loads its own script and style only; thumbnails come from wherever the images live.
PAGE_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' http: https: data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _error(status: int, detail: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(settings: Settings, transport: Transport) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await transport.start()
        try:
            yield
        finally:
            await transport.close()

    app = FastAPI(title="Idios", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.transport = transport
    app.state.keys = KeyRing.load(settings.api_keys, settings.api_keys_file)
    app.state.new_urls = KeyedLocks()
    if app.state.keys.open:
        log.warning("no API keys configured: anyone who reaches this API can read and write")
    else:
        log.info("API keys: %d configured", len(app.state.keys.scopes))
    for router in ROUTERS:
        app.include_router(router)

    # The web page holds no data, so it needs no API key; the calls it makes do.
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(IdiosError)
    async def idios_error(request: Request, exc: IdiosError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return _error(exc.status, exc.detail(), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 for a body it cannot read; give the cause and our error shape instead.
        if isinstance(exc.__cause__, BodyTooLarge):
            return _error(413, [{"msg": str(exc.__cause__), "type": "body_too_large"}])
        if exc.status_code == 400 and exc.__cause__ is not None:
            msg = "the body is not valid JSON (not UTF-8, or nested too deeply)"
            return _error(422, [{"msg": msg, "type": "json_invalid"}])
        return _error(exc.status_code, [{"msg": str(exc.detail), "type": "http_error"}], exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The offending input is not echoed back: it may be huge.
        detail = [
            {"msg": str(e.get("msg", "invalid")), "type": str(e.get("type", "invalid")), "loc": list(e.get("loc", []))}
            for e in exc.errors()
        ]
        return _error(422, detail)

    # Host, API key, Content-Type and body size, checked before any route reads a body. The routes
    # outside ROUTERS (the page, /static, /docs) are open and take no body: the default door.
    hosts = host_patterns(settings)  # a bad IDIOS_ALLOWED_HOSTS fails here, not at the first request
    routes = [route for router in ROUTERS for route in router.routes]
    app.add_middleware(FrontDoor, routes=routes, settings=settings, keys=app.state.keys, hosts=hosts)
    # Outermost: every answer is counted and has an id, the front door's refusals too.
    app.add_middleware(Observe, routes=[*routes, *app.router.routes])
    return app
