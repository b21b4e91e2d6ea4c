"""The job protocol: what crosses between an API and a worker, and what a worker refuses."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from idios.errors import IdiosError, Invalid, Unavailable
from idios.protocol import (
    OPERATIONS,
    PROTOCOL_VERSION,
    AddArgs,
    CountArgs,
    Job,
    PingArgs,
    RestoreArgs,
    SearchArgs,
    failed,
    ok,
    unwrap,
)
from idios.transport.queues import decode, encode_job
from idios.wire import unpack_array

EXAMPLES = {
    "ping": PingArgs(),
    "add": AddArgs(url="http://images.example/a.jpg", metadata={"tags": ["x"], "n": 1}, mode="new"),
    "search": SearchArgs(text="a red bicycle", limit=5, offset=10, min_similarity=20.5, filter={"k": "v"}),
    "count": CountArgs(),
}


def through_broker(job: Job) -> Job:
    """The job as a worker reads it from RabbitMQ."""
    return Job.from_wire(decode(encode_job(job.to_wire())))


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_a_job_crosses_the_broker_unchanged(op: str) -> None:
    sent = Job.of(EXAMPLES[op], "vit_b32" if EXAMPLES[op].needs_model else None, 30)
    received = through_broker(sent)
    assert received == sent
    assert received.lane == sent.lane and received.op == op


def test_every_operation_has_arguments_a_lane_and_a_name() -> None:
    assert set(OPERATIONS) == {
        "ping", "status", "add", "restore", "search", "compare", "urls", "dump", "duplicates", "count", "remove"
    }  # fmt: skip
    for op, kind in OPERATIONS.items():
        assert kind.op == op and kind.lane in ("interactive", "light", "ingest")
    ingest = {op for op, kind in OPERATIONS.items() if kind.lane == "ingest"}
    assert ingest == {"add", "restore", "remove", "duplicates"}


def test_a_restore_job_carries_its_vectors_packed() -> None:
    vectors = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sent = Job.of(RestoreArgs(urls=["a", "b", "c"], metadata=[{}, {}, {"x": 1}], vectors=vectors), "vit_b32", 30)
    wire = orjson.loads(encode_job(sent.to_wire()))
    assert set(wire["args"]["vectors"]) == {"dtype", "shape", "base64"}
    received = through_broker(sent)
    assert np.array_equal(unpack_array(received.args.vectors), vectors)


def wire_job(**changes: object) -> dict:
    data = Job.of(EXAMPLES["add"], "phash", 30).to_wire()
    data.update(changes)
    return {key: value for key, value in data.items() if value is not ...}


def test_a_job_of_another_protocol_version_is_refused_with_the_reason() -> None:
    for version in (PROTOCOL_VERSION + 1, ...):  # a newer release's job, and a job of a release before versions
        with pytest.raises(Unavailable) as refused:
            Job.from_wire(wire_job(v=version))
        assert refused.value.type == "protocol_mismatch"
        assert f"protocol {PROTOCOL_VERSION}" in refused.value.msg and "same release" in refused.value.msg


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"op": "explode"}, "unknown operation 'explode'"),
        ({"op": None}, "unknown operation"),
        ({"model": None}, "must name a model"),
        ({"args": {"url": "http://a.example/", "colour": "red"}}, "colour: Extra inputs are not permitted"),
        ({"args": {"metadata": {}}}, "url: Field required"),
        ({"args": {"url": "http://a.example/", "mode": "overwrite"}}, "mode: Input should be 'upsert' or 'new'"),
        ({"args": {"url": ["not", "a", "string"]}}, "url: Input should be a valid string"),
        ({"deadline": "soon"}, "no readable deadline"),
        ({"deadline": "2000000000"}, "no readable deadline"),
        ({"deadline": float("nan")}, "no readable deadline"),
        ({"deadline": True}, "no readable deadline"),
        ({"deadline": ...}, "no readable deadline"),
    ],
)
def test_a_malformed_job_is_a_bad_job_naming_the_problem(changes: dict, says: str) -> None:
    with pytest.raises(Invalid) as refused:
        Job.from_wire(wire_job(**changes))
    assert refused.value.status == 422 and says in refused.value.msg


@pytest.mark.parametrize("data", [None, [], "add", 3])
def test_a_job_that_is_not_an_object_is_refused(data: object) -> None:
    with pytest.raises(Invalid, match="not an object"):
        Job.from_wire(data)


def test_a_model_free_job_names_no_model() -> None:
    assert Job.from_wire({"v": PROTOCOL_VERSION, "op": "ping", "model": "phash", "deadline": 1}).model is None


def test_deadline_and_redelivery() -> None:
    job = Job.of(CountArgs(), "phash", 5)
    assert not job.expired() and job.deadline == pytest.approx(time.time() + 5, abs=1)
    assert Job.of(CountArgs(), "phash", -1).expired()
    again = job.again()
    assert again.redelivered and not job.redelivered and again.args == job.args


def test_replies_carry_values_and_errors_back() -> None:
    assert unwrap(ok([1, 2])) == [1, 2]
    with pytest.raises(IdiosError) as raised:
        unwrap(failed(Invalid("no such thing", type="no_such")))
    assert (raised.value.status, raised.value.type, raised.value.msg) == (422, "no_such", "no such thing")
    with pytest.raises(IdiosError) as raised:
        unwrap({"ok": False})
    assert raised.value.status == 500


@pytest.mark.parametrize(
    "reply",
    [
        ["pong"],
        "pong",
        None,
        {"ok": False, "error": "the worker broke"},
        {"ok": False, "error": {"status": "teapot", "msg": "m"}},
        {"ok": False, "error": {"status": 200, "msg": "looks like a success"}},
        {"ok": False, "error": {"status": 99, "msg": "no such status"}},
    ],
)
def test_a_reply_that_is_no_envelope_is_a_bad_reply(reply: object) -> None:
    """A worker of another release, or a stray message on the reply queue: the API answers 503 in its
    own error shape; it used to raise AttributeError or ValueError (a bare 500), or answer with the
    reply's own status (a 200 carrying an error)."""
    with pytest.raises(Unavailable) as raised:
        unwrap(reply)  # type: ignore[arg-type]
    assert raised.value.type == "bad_reply" and "unreadable reply" in raised.value.msg
