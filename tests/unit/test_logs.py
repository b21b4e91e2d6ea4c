"""Log lines: the request id in each, as text or JSON, and which ids a client may give."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from idios import logs
from idios.protocol import CountArgs, Job


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]):
    def configure(log_format: logs.LogFormat) -> None:
        logs.configure("INFO", log_format)

    yield configure
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("3f2b6c1e-8d4a-4b8e-9c7a-1d2e3f4a5b6c", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("abc" * 43, False),  # 129 characters
        ("two words", False),
        ("line\nbreak", False),
        ("", False),
        ("é", False),
    ],
)
def test_a_client_request_id_is_kept_only_when_it_is_a_plain_token(given: str, kept: bool) -> None:
    assert (logs.request_id(given) == given) is kept
    assert logs.is_request_id(logs.request_id(given))


def test_json_lines_carry_the_request_id_of_their_task(captured, capsys: pytest.CaptureFixture[str]) -> None:
    captured("json")
    log = logging.getLogger("idios.test")

    async def serve(rid: str) -> None:
        logs.REQUEST_ID.set(rid)
        await asyncio.sleep(0)  # the other task runs meanwhile with its own id
        log.info("serving %s", rid)

    async def both() -> None:
        await asyncio.gather(serve("first"), serve("second"))

    asyncio.run(both())
    log.warning("outside any request")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["message"], r["request_id"]) for r in records[:3]] == [
        ("serving first", "first"),
        ("serving second", "second"),
        ("outside any request", "-"),
    ]
    assert records[0]["level"] == "INFO" and records[0]["logger"] == "idios.test"
    assert records[0]["time"].endswith("+00:00")
    assert "ValueError: boom" in records[3]["exception"]


def test_text_lines_name_the_request(captured, capsys: pytest.CaptureFixture[str]) -> None:
    captured("text")
    token = logs.REQUEST_ID.set("req-7")
    logging.getLogger("idios.test").info("hello")
    logs.REQUEST_ID.reset(token)
    assert "INFO idios.test [req-7]: hello" in capsys.readouterr().err


def test_a_job_carries_the_request_id_to_the_worker() -> None:
    token = logs.REQUEST_ID.set("req-42")
    try:
        job = Job.of(CountArgs(), "phash", 10)
    finally:
        logs.REQUEST_ID.reset(token)
    assert Job.from_wire(job.to_wire()).request_id == "req-42"
    # a job from elsewhere with a forged id runs without one rather than writing it into the log
    forged = {**job.to_wire(), "request_id": "x\nERROR forged"}
    assert Job.from_wire(forged).request_id == ""
    assert Job.from_wire({k: v for k, v in job.to_wire().items() if k != "request_id"}).request_id == ""


def test_a_json_line_survives_a_name_that_was_not_utf8(captured, capsys: pytest.CaptureFixture[str]) -> None:
    captured("json")
    logging.getLogger("idios.test").warning("cannot read %s", b"caf\xe9.jpg".decode("utf-8", "surrogateescape"))
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"].startswith("cannot read caf")
