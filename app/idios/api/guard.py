"""The API's front door: what every request must pass before a route reads its body.

FastAPI reads and parses a request's body before it runs the route's dependencies, so an API key
checked there is checked after the server has built Python objects from whatever a stranger sent
(a 30 MB JSON array grew the process by 800 MB before its 401). This ASGI middleware decides from
the request line and headers alone, in this order:

1. Host: only the names the instance serves (`IDIOS_ALLOWED_HOSTS`), against DNS rebinding: 400.
2. The route's API key scope, when keys are configured: 401 / 403.
3. Content-Type of a body: `application/json` on JSON routes, `multipart/form-data` on the upload;
   a web page can send neither cross-site without a CORS preflight, which this API never grants: 415.
4. The route's own body limit: 413 from Content-Length, or as soon as a chunked body passes it.

Starlette's TrustedHostMiddleware is not used for 1: it answers plain text rather than the API's
error shape, redirects to www. names, and its list cannot depend on the address the API listens on.
Nor Starlette's RequestBodyLimitMiddleware or FastAPI's `max_body_size` for 4: they refuse only once
the app reads the body (after the key check we need first), answer without naming the limit, and
FastAPI's per-route limits are fixed when the routes are declared, while these follow the settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import params as fastapi_params
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idios.auth import ConfigError, KeyRing
from idios.auth import Scope as KeyScope
from idios.config import Settings
from idios.errors import IdiosError

KIB, MIB = 1024, 1024 * 1024
# Bodies of routes that carry no image and no rows: one url with up to 64 KiB of metadata (even
# written with \u escapes, six bytes a character) fits many times over.
SMALL_BODY = MIB
# add_bulk: what an item needs on average (a url of up to 2,083 characters and some metadata);
# a batch whose items carry more is split by its client. Every item becomes its own job.
BULK_ITEM_BYTES = 8 * KIB
# What a search or compare job carries besides the body's images (op, model, deadline, options).
JOB_MARGIN = 64 * KIB
# The upload's form fields and multipart boundaries besides the file.
FORM_MARGIN = 64 * KIB
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
JSON, MULTIPART = "application/json", "multipart/form-data"
WITH_BODY = {"POST", "PUT", "PATCH"}


def _base64_size(raw: int) -> int:
    return 4 * ((raw + 2) // 3)


@dataclass(frozen=True)
class Door:
    """What one route asks of a request before it reads the body."""

    scope: KeyScope | None  # the API key scope it needs; None: open
    body_limit: int  # bytes
    media_type: str | None  # the Content-Type a body must have; None: any
    why: str = ""  # what the limit is sized for, in the 413's message


def body_limits(settings: Settings) -> dict[str, tuple[int, str]]:
    """Each route's body limit (by route name) and what it is sized for; SMALL_BODY for the rest.

    A search or compare job carries its images base64 as sent, an upload's file is base64 encoded
    into the job (4/3 of its bytes), and a job must fit one broker message (`max_message_bytes`),
    so those limits follow from it (and from `max_download_bytes`, the largest image)."""
    message = settings.max_message_bytes - JOB_MARGIN
    image = settings.max_download_bytes
    return {
        "restore": (settings.max_body_bytes, "IDIOS_MAX_BODY_BYTES"),
        "add_bulk": (
            settings.max_bulk_items * BULK_ITEM_BYTES,
            f"{BULK_ITEM_BYTES // KIB} KiB per item of IDIOS_MAX_BULK_ITEMS; send fewer items per request",
        ),
        "search": (min(message, _base64_size(image) + JOB_MARGIN), "a base64 image in one broker message"),
        "search_bulk": (settings.max_body_bytes, "IDIOS_MAX_BODY_BYTES; send fewer queries per request"),
        "compare": (min(message, 2 * _base64_size(image) + JOB_MARGIN), "two base64 images in one broker message"),
        "search_upload": (
            min(message * 3 // 4, image + FORM_MARGIN),
            "an image that fits one broker message once base64 encoded",
        ),
    }


def route_doors(routes: Iterable[BaseRoute], settings: Settings) -> list[tuple[APIRoute, Door]]:
    """A Door for every API route: the key scope its dependencies require, its body limit, and the
    media type of its body (multipart where it takes files or form fields, else JSON)."""
    from idios.api.routes import required_scope

    limits = body_limits(settings)
    doors = []
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        limit, why = limits.get(route.name, (SMALL_BODY, ""))
        media_type = None
        if WITH_BODY.intersection(route.methods or ()):  # Starlette types methods as optional
            form = any(isinstance(p.field_info, fastapi_params.Form) for p in route.dependant.body_params)
            media_type = MULTIPART if form else JSON
        doors.append((route, Door(required_scope(route), limit, media_type, why)))
    return doors


def _bracketed(name: str) -> str:
    """IPv6 literals as they appear in a Host header, in brackets."""
    try:
        return f"[{ipaddress.IPv6Address(name)}]"
    except ValueError:
        return name


def host_patterns(settings: Settings) -> list[str] | None:
    """The Host names the API answers (`*.example.net` matches any subdomain); None: any.

    The loopback names are always among them, so a health check from the same host or container
    passes whatever the list (a web page cannot send them for another name)."""
    names = [_bracketed(name.strip().lower().rstrip(".")) for name in settings.allowed_hosts]
    if "*" in names:
        return None
    for name in names:
        wildcard = name.startswith("*.")
        bare = name[2:] if wildcard else name
        if not bare or "*" in bare or "/" in bare or any(c.isspace() for c in bare) or _host_name(bare) != bare:
            raise ConfigError(
                f"IDIOS_ALLOWED_HOSTS: {name!r} is not a host name (a name or address without port, "
                "'*.example.net', or '*')"
            )
    if not names and not _loopback_bind(settings.host):
        return None
    return [*LOOPBACK_NAMES, *names]


def _loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str | None:
    """The name of a Host header value, lower case, without port or final dot; None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    name = name.rstrip(".")
    return name or None


def _host_allowed(name: str, patterns: list[str]) -> bool:
    return any(name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])) for pattern in patterns)


def _media_type_fits(given: str, wanted: str) -> bool:
    """Parameters (charset, boundary) aside; JSON also as application/<x>+json, as FastAPI parses it."""
    return given == wanted or (wanted == JSON and given.startswith("application/") and given.endswith("+json"))


class BodyTooLarge(Exception):
    """Raised from `receive` once a body passes its route's limit; carries the message to answer."""

    def __init__(self, door: Door) -> None:
        super().__init__(too_large_message(door))
        self.door = door


def too_large_message(door: Door) -> str:
    why = f" ({door.why})" if door.why else ""
    return f"request body is larger than {door.body_limit} bytes, this route's limit{why}"


def refusal(status: int, msg: str, type: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"msg": msg, "type": type}]}, status_code=status, headers=headers)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class FrontDoor:
    """ASGI middleware enforcing the checks of this module's docstring before the app runs."""

    def __init__(
        self, app: ASGIApp, *, routes: Iterable[BaseRoute], settings: Settings, keys: KeyRing, hosts: list[str] | None
    ) -> None:
        """`routes`: the API routes as the app serves them (paths as they are matched, no prefix);
        `hosts`: what `host_patterns` answers (the app builds its middleware only at the first request)."""
        self.app = app
        self.keys = keys
        self.hosts = hosts
        self.doors = route_doors(routes, settings)
        self.default = Door(None, SMALL_BODY, None)

    def door(self, scope: Scope) -> Door:
        for route, door in self.doors:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return door
        return self.default  # no such route or method: the router answers 404 / 405

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or []:
            headers.setdefault(name, value)
        door = self.door(scope)
        refused = self._refusal(door, headers)
        if refused is not None:
            await refused(scope, _no_body, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > door.body_limit:
                    raise BodyTooLarge(door)
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge as exc:  # read by the route itself (restore): nothing was sent yet
            await refusal(413, str(exc), "body_too_large")(scope, _no_body, send)

    def _refusal(self, door: Door, headers: dict[bytes, bytes]) -> JSONResponse | None:
        """The answer to a request refused on its headers alone; None when it may go on."""
        if self.hosts is not None:
            raw = headers.get(b"host", b"").decode("latin-1")
            name = _host_name(raw)
            if name is None or not _host_allowed(name, self.hosts):
                shown = raw[:100] or "(none)"
                msg = f"this server does not answer for the host {shown!r} (IDIOS_ALLOWED_HOSTS lists those it does)"
                return refusal(400, msg, "host_not_allowed")
        if door.scope is not None:
            try:
                self.keys.check(headers.get(b"authorization", b"").decode("latin-1") or None, door.scope)
            except IdiosError as exc:
                extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                return refusal(exc.status, exc.msg, exc.type, extra)
        length = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))
        if has_body and door.media_type is not None:
            given = headers.get(b"content-type", b"").decode("latin-1").partition(";")[0].strip().lower()
            if not _media_type_fits(given, door.media_type):
                msg = f"this route takes a body sent as Content-Type: {door.media_type}, not {given or 'none'}"
                return refusal(415, msg, "unsupported_media_type")
        if length is not None and length.strip().isdigit() and int(length) > door.body_limit:
            return refusal(413, too_large_message(door), "body_too_large")
        return None
