"""Errors that carry an HTTP status and a client-facing message.

Every failure a client can cause is an `IdiosError`; it crosses the transport
as plain data (`to_wire`/`from_wire`) so a worker's refusal reaches the client
with the same status and message it would have in-process.
"""

from __future__ import annotations

from typing import Any


class IdiosError(Exception):
    """A failure with an HTTP status, a short machine type and a readable message."""

    status: int = 400
    type: str = "bad_request"

    def __init__(self, msg: str, *, status: int | None = None, type: str | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def detail(self) -> list[dict[str, str]]:
        return [{"msg": self.msg, "type": self.type}]

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status, "type": self.type, "msg": self.msg}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> IdiosError:
        return cls(
            str(data.get("msg", "error")), status=int(data.get("status", 500)), type=str(data.get("type", "error"))
        )


class Unauthorized(IdiosError):
    status = 401
    type = "unauthorized"


class Forbidden(IdiosError):
    status = 403
    type = "forbidden"


class NotFound(IdiosError):
    status = 404
    type = "not_found"


class Conflict(IdiosError):
    status = 409
    type = "conflict"


class TooLarge(IdiosError):
    status = 413
    type = "too_large"


class Invalid(IdiosError):
    status = 422
    type = "invalid"


class Unavailable(IdiosError):
    status = 503
    type = "unavailable"


class Timeout(IdiosError):
    status = 504
    type = "timeout"
