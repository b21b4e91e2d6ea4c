"""Logging: every line carries the id of the request it serves, as text or as JSON (`IDIOS_LOG_FORMAT`).

A request's id comes from its `X-Request-ID` header (when it is a short token) or is made by the API
(`idios.api.observe`); the job carries it to the worker (`idios.protocol.Job.request_id`), which sets
it while the job runs. It lives in a context variable, so each asyncio task, and each thread started
with the task's context, logs its own request's id.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Literal

import orjson

REQUEST_ID: ContextVar[str] = ContextVar("idios_request_id", default="")
# A client's id is kept when it is a token a log line and a header can carry as is (a UUID, a
# trace id, a proxy's id); anything else is replaced, so that a caller cannot forge log lines.
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def is_request_id(value: str) -> bool:
    """Whether `value` is a plain token of at most 128 characters, as a request id must be."""
    return _GOOD_ID.fullmatch(value) is not None


def request_id(given: str | None) -> str:
    """The id of a request: the client's when it is one (`is_request_id`), else a new one."""
    return given if given and is_request_id(given) else uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id`: the id of the request being served, or "-" outside any."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, request_id, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:  # a lone surrogate (a file name that was not UTF-8): escaped, not dropped
            return json.dumps(line, default=str, ensure_ascii=True)


def configure(level: str, log_format: LogFormat) -> None:
    """The root logger's one handler (stderr), in the chosen format; uvicorn's loggers go through it too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warnings as log lines, in the same format
    # httpx logs every request at INFO: each image a worker downloads, each call a command makes.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
