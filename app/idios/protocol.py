"""The job protocol between the API and the workers: what a job is, what each operation takes, and
what comes back.

A job names an operation, the model it runs against, its arguments (one pydantic model per
operation, so both sides agree on them by type, not by a dict spread into a call) and its deadline.
Through a broker it travels as JSON (`Job.to_wire`, `Job.from_wire`) with `PROTOCOL_VERSION`: a
worker of another release refuses the job with a clear error instead of failing inside it. In
process (`idios serve`) the `Job` itself is handed over.

Every job is answered by a reply envelope, `{"ok": true, "value": ...}` or
`{"ok": false, "error": {"status", "type", "msg"}}`: the handler's value, or the `IdiosError` it
raised, which `unwrap` raises again on the API's side with the same status and message.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from idios import __version__
from idios.errors import IdiosError, Invalid, Unavailable
from idios.logs import REQUEST_ID, is_request_id

# Raised with every change to a job's shape or an operation's arguments. Jobs without a version
# come from releases before it had one: version 1.
PROTOCOL_VERSION = 3

# interactive: searches and compares (may need a forward pass); light: reads of the store alone
# (count, urls, dump), so they never wait behind searches; ingest: everything that writes, and the
# duplicates walk (background work, like a bulk import).
Lane = Literal["interactive", "light", "ingest"]


class JobArgs(BaseModel):
    """The arguments of one operation. A field the receiving side does not know is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    op: ClassVar[str]
    lane: ClassVar[Lane]
    # Whether the operation runs against a model: its job names one, and a worker that has not
    # loaded it refuses the job.
    needs_model: ClassVar[bool] = True


class PingArgs(JobArgs):
    op = "ping"
    lane = "interactive"
    needs_model = False


class StatusArgs(JobArgs):
    """Asks a worker what each of its models is doing (loading, ready, unavailable and why)."""

    op = "status"
    lane = "interactive"
    needs_model = False


AddMode = Literal["upsert", "new"]


class AddArgs(JobArgs):
    """`upsert` replaces a stored url's entry; `new` refuses a stored url (409)."""

    op = "add"
    lane = "ingest"
    url: str
    metadata: dict[str, Any] | None = None
    mode: AddMode = "upsert"


class RestoreArgs(JobArgs):
    """Rows the API validated and normalised (`ModelSpec.from_public`), as columns: the vectors as
    one array, packed by `idios.wire` when the job goes through a broker; a keypoints model's as the
    list of base64 strings the client sent."""

    op = "restore"
    lane = "ingest"
    urls: list[str]
    metadata: list[dict[str, Any]]
    vectors: Any


class SearchArgs(JobArgs):
    """Exactly one of url, text or image (base64) is the query; `flip` also searches the mirrored image."""

    op = "search"
    lane = "interactive"
    url: str | None = None
    text: str | None = None
    image: str | None = None
    limit: int = 10
    offset: int = 0
    min_similarity: float = 0.0
    filter: dict[str, Any] | None = None
    flip: bool = False


class CompareArgs(JobArgs):
    """Each side is a url (stored or downloaded) or a base64 image; `flip` also compares the first
    side mirrored. Answered as {similarity, match, flipped}."""

    op = "compare"
    lane = "interactive"
    url: str | None = None
    other: str | None = None
    image: str | None = None
    other_image: str | None = None
    flip: bool = False


class UrlsArgs(JobArgs):
    op = "urls"
    lane = "light"
    cursor: str | None = None
    limit: int = 1000


class DumpArgs(JobArgs):
    """A page after `cursor`; with `last`, every row up to and including that url (the streamed dump)."""

    op = "dump"
    lane = "light"
    cursor: str | None = None
    limit: int = 1000
    last: str | None = None


class DuplicatesArgs(JobArgs):
    """A page of the walk over the stored urls for copies of each other: the urls after `cursor`, up
    to `limit` of them, each searched by its stored vector for copies (`min_similarity` and up, at
    most `max_group - 1`)."""

    op = "duplicates"
    lane = "ingest"  # background work, at the ingestion's priority
    cursor: str | None = None
    limit: int = 100
    min_similarity: float
    max_group: int = 20


class CountArgs(JobArgs):
    op = "count"
    lane = "light"


class RemoveArgs(JobArgs):
    op = "remove"
    lane = "ingest"
    url: str


OPERATIONS: dict[str, type[JobArgs]] = {
    args.op: args
    for args in (
        PingArgs,
        StatusArgs,
        AddArgs,
        RestoreArgs,
        SearchArgs,
        CompareArgs,
        UrlsArgs,
        DumpArgs,
        DuplicatesArgs,
        CountArgs,
        RemoveArgs,
    )
}

A = TypeVar("A", bound=JobArgs)


@dataclass(frozen=True)
class Job(Generic[A]):
    """One operation's arguments, the model it runs against, and when its caller stops waiting.

    `redelivered` is set by the worker's side when the broker hands the job out again (a worker died
    before acknowledging it): an add then recognises its own earlier write."""

    args: A
    model: str | None
    deadline: float
    timeout: float
    redelivered: bool = False
    request_id: str = ""  # of the HTTP request the job serves: in the log lines of both sides

    @classmethod
    def of(cls, args: A, model: str | None, timeout: float) -> Job[A]:
        """The job of the request being served (its id from `idios.logs.REQUEST_ID`)."""
        return cls(args=args, model=model, deadline=time.time() + timeout, timeout=timeout, request_id=REQUEST_ID.get())

    @property
    def op(self) -> str:
        return self.args.op

    @property
    def lane(self) -> Lane:
        return self.args.lane

    def expired(self) -> bool:
        return time.time() > self.deadline

    def again(self) -> Job[A]:
        """This job, handed out again by the broker."""
        return replace(self, redelivered=True)

    def to_wire(self) -> dict[str, Any]:
        """The job as JSON-ready data (numpy arrays in it are packed by the transport's encoder)."""
        return {
            "v": PROTOCOL_VERSION,
            "op": self.op,
            "model": self.model,
            "args": self.args.model_dump(),
            "deadline": self.deadline,
            "timeout": self.timeout,
            "request_id": self.request_id,
        }

    @staticmethod
    def from_wire(data: Any) -> Job[Any]:
        """The job `to_wire` wrote; Invalid (a bad job) for anything else, and Unavailable for a job of
        another protocol version, which a worker of the sender's release can run."""
        if not isinstance(data, dict):
            raise Invalid("unreadable job: not an object", type="bad_job")
        version = data.get("v", 1)
        if version != PROTOCOL_VERSION:
            raise Unavailable(
                f"this worker (Idios {__version__}) speaks job protocol {PROTOCOL_VERSION} and the job came with "
                f"protocol {version}: run the API and the workers from the same release",
                type="protocol_mismatch",
            )
        op = data.get("op")
        kind = OPERATIONS.get(op) if isinstance(op, str) else None
        if kind is None:
            raise Invalid(f"unknown operation '{op}'", type="unknown_operation")
        model = data.get("model")
        if kind.needs_model and not isinstance(model, str):
            raise Invalid(f"a {op} job must name a model", type="bad_job")
        try:
            args = kind.model_validate(data.get("args") or {})
            deadline, timeout = _seconds(data["deadline"]), _seconds(data.get("timeout", 0))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors())
            raise Invalid(f"the {op} job's arguments do not fit: {problems}", type="bad_job") from None
        except (KeyError, TypeError, ValueError):
            raise Invalid(f"the {op} job has no readable deadline", type="bad_job") from None
        given = data.get("request_id")
        request_id = given if isinstance(given, str) and is_request_id(given) else ""
        return Job(
            args=args,
            model=model if kind.needs_model else None,
            deadline=deadline,
            timeout=timeout,
            request_id=request_id,
        )


def _seconds(value: Any) -> float:
    """A time given as a JSON number, finite: a job whose deadline is NaN or a string would never expire."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a finite number of seconds: {value!r}")
    return float(value)


Reply = dict[str, Any]


def ok(value: Any = None) -> Reply:
    return {"ok": True, "value": value}


def failed(error: IdiosError) -> Reply:
    return {"ok": False, "error": error.to_wire()}


def unwrap(reply: Reply) -> Any:
    """The reply's value, or the error it carries raised again; Unavailable (503, `bad_reply`) for a
    reply that is no envelope (a worker of another release, a stray message on the reply queue), so
    the API answers it with its error shape instead of a 500, or a 200 carrying an error."""
    if not isinstance(reply, dict):
        raise _bad_reply(f"a {type(reply).__name__}, not an object")
    if reply.get("ok") is True:
        return reply.get("value")
    error = reply.get("error") or {}
    status = error.get("status", 500) if isinstance(error, dict) else None
    if type(status) is not int or not 400 <= status <= 599:
        raise _bad_reply(f"its error is {str(error)[:200]}")
    raise IdiosError.from_wire(error)


def _bad_reply(what: str) -> Unavailable:
    return Unavailable(f"unreadable reply from a worker: {what}", type="bad_reply")
