"""Fast tests of pure code: model specs, expressions, the micro-batcher, seeded random weights."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idios import expr
from idios.batching import MicroBatcher
from idios.errors import Invalid
from idios.models import ModelSpec, spec

VIT = spec("vit_b32")
PHASH = spec("phash")


# ModelSpec


@pytest.mark.parametrize(
    ("score", "expected"),
    [(1.0, 100.0), (1.0000004, 100.0), (0.0, 0.0), (-0.3, 0.0), (-1.0, 0.0), (0.5, 50.0), (0.123456789, 12.3457)],
)
def test_cosine_similarity(score: float, expected: float) -> None:
    assert VIT.similarity(score) == expected


@pytest.mark.parametrize(
    ("distance", "expected"), [(0, 100.0), (64, 0.0), (32, 50.0), (1, 98.4375), (3, 95.3125), (63, 1.5625)]
)
def test_hamming_similarity(distance: int, expected: float) -> None:
    assert PHASH.similarity(distance) == expected


def test_similarity_rounds_to_four_places() -> None:
    assert VIT.similarity(1 / 3) == 33.3333
    assert VIT.similarity(2 / 3) == 66.6667
    hamming = ModelSpec("h", 3, "HAMMING", "binary", False, "three bits")
    assert hamming.similarity(1) == 66.6667


def test_phash_public_round_trip() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 64).tolist()
    stored = PHASH.from_public(bits)
    assert isinstance(stored, bytes) and len(stored) == 8
    assert PHASH.to_public(stored) == bits
    # Milvus hands binary vectors back wrapped in a one-element list.
    assert PHASH.to_public([stored]) == bits
    assert PHASH.from_public([1] + [0] * 63) == b"\x80" + bytes(7)


def test_float_public_round_trip_is_normalised() -> None:
    values = [3.0, 4.0] + [0.0] * 510
    stored = VIT.from_public(values)
    assert stored.dtype == np.float32 and stored.shape == (512,)
    assert float(np.linalg.norm(stored)) == pytest.approx(1.0, abs=1e-6)
    public = VIT.to_public(stored)
    assert public.dtype == np.float32 and public.shape == (512,)
    assert public[:3] == pytest.approx([0.6, 0.8, 0.0], abs=1e-7)
    assert orjson.loads(orjson.dumps(public, option=orjson.OPT_SERIALIZE_NUMPY))[:2] == [0.6, 0.8]
    np.testing.assert_allclose(VIT.from_public(public), stored, atol=1e-7)


def test_from_public_rejects_bad_embeddings() -> None:
    with pytest.raises(Invalid) as caught:
        VIT.from_public([0.1] * 511)
    assert caught.value.type == "wrong_dimension"
    assert "511" in caught.value.msg and "512" in caught.value.msg
    with pytest.raises(Invalid) as caught:
        PHASH.from_public([0] * 65)
    assert caught.value.type == "wrong_dimension"
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(Invalid) as caught:
            VIT.from_public([bad] + [0.5] * 511)
        assert caught.value.type == "bad_embedding"
    with pytest.raises(Invalid) as caught:
        PHASH.from_public([math.nan] + [0] * 63)
    assert caught.value.type == "bad_embedding"
    for bad_bit in (2, -1, 0.5):
        with pytest.raises(Invalid) as caught:
            PHASH.from_public([bad_bit] + [0] * 63)
        assert caught.value.type == "bad_embedding"
    with pytest.raises(Invalid) as caught:
        VIT.from_public([0.0] * 512)
    assert caught.value.type == "bad_embedding"


def test_compare() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(512), rng.standard_normal(512)
    assert VIT.compare(a, a) == 100.0
    assert VIT.compare(a, 3 * a) == 100.0
    assert VIT.compare(a, -a) == 0.0
    assert 0.0 < VIT.compare(a, a + 0.5 * b) < 100.0
    bits = PHASH.from_public(rng.integers(0, 2, 64).tolist())
    assert PHASH.compare(bits, bits) == 100.0
    flipped = bytes(x ^ 0xFF for x in bits)
    assert PHASH.compare(bits, flipped) == 0.0
    half = bytes(x ^ 0xFF if i < 4 else x for i, x in enumerate(bits))
    assert PHASH.compare(bits, half) == 50.0


# expressions

TRICKY = [
    "",
    'a"b',
    "a'b",
    "a\\b",
    '\\"',
    '" or url != "',
    "line\nbreak\r\n",
    "tab\t",
    "caf\u00e9 \u732b \U0001f600",
    "\x00\x01\x1f\x7f",
    "%22%5C",
    "\\u0041",
    "\u2028\u2029\ufeff",
    "}{][)(",
]


def test_expression_outputs() -> None:
    assert expr.url_equals("https://x.test/a.jpg") == 'url == "https://x.test/a.jpg"'
    assert expr.url_in(["a", "b"]) == 'url in ["a", "b"]'
    assert expr.url_in([]) == "url in []"
    assert expr.url_after(None) == 'url != ""'
    assert expr.url_after("") == 'url != ""'
    assert expr.url_after("m") == 'url > "m"'
    assert expr.url_equals('a"b') == 'url == "a\\"b"'
    assert expr.metadata_filter(None) == ""
    assert expr.metadata_filter({}) == ""
    assert expr.metadata_filter({"tags": "letter"}) == 'metadata["tags"] == "letter"'
    assert (
        expr.metadata_filter({"n": 3, "ok": True, "no": False, "f": 1.5, "s": "x"})
        == 'metadata["n"] == 3 and metadata["ok"] == true and metadata["no"] == false and metadata["f"] == 1.5'
        ' and metadata["s"] == "x"'
    )
    assert expr.scalar_literal(-7) == "-7"
    assert expr.scalar_literal(1e-30) == "1e-30"
    assert expr.combine() == ""
    assert expr.combine("", "a == 1", "", "b == 2") == "(a == 1) and (b == 2)"
    assert expr.combine("a == 1") == "(a == 1)"


@pytest.mark.parametrize("bad", [{"": 1}, {1: 1}, {"k": [1]}, {"k": None}, {"k": {"a": 1}}, {"k": math.nan}])
def test_metadata_filter_rejects(bad: dict) -> None:
    with pytest.raises(Invalid) as caught:
        expr.metadata_filter(bad)
    assert caught.value.type == "bad_filter"


@pytest.mark.parametrize("text", TRICKY)
def test_string_literal_is_a_json_string(text: str) -> None:
    literal = expr.string_literal(text)
    assert literal.startswith('"') and literal.endswith('"')
    assert json.loads(literal) == text
    # No raw quote, backslash or line break can end the literal early.
    inner = literal[1:-1]
    assert "\n" not in inner and "\r" not in inner
    assert all(inner[i - 1] == "\\" for i, ch in enumerate(inner) if ch == '"')


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udc80"])
def test_lone_surrogates_are_refused(text: str) -> None:
    for build in (expr.string_literal, expr.url_equals, lambda t: expr.url_in(["ok", t]), expr.url_after):
        with pytest.raises(Invalid) as caught:
            build(text)
        assert caught.value.type == "bad_text"
    with pytest.raises(Invalid):
        expr.metadata_filter({text: "v"})
    with pytest.raises(Invalid):
        expr.metadata_filter({"k": text})


# MicroBatcher


class Recorder:
    def __init__(self, fail_on: object = None, delay: float = 0.0) -> None:
        self.batches: list[tuple[object, list]] = []
        self.fail_on = fail_on
        self.delay = delay

    async def __call__(self, key: object, items: list) -> list:
        self.batches.append((key, list(items)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot process {self.fail_on}")
        return [(key, item, "done") for item in items]


async def test_batches_fill_to_max_size_and_answer_each_caller() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=4, linger=0.05)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit("k", i) for i in range(10))), 5)
    assert results == [("k", i, "done") for i in range(10)]
    assert [len(items) for _, items in recorder.batches] == [4, 4, 2]
    assert sorted(i for _, items in recorder.batches for i in items) == list(range(10))


async def test_keys_never_share_a_batch() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=3, linger=0.02)
    keys = ["a", "b", "c"]
    submissions = [(keys[i % 3], (keys[i % 3], i)) for i in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(k, item) for k, item in submissions)), 5)
    assert results == [(k, item, "done") for k, item in submissions]
    for key, items in recorder.batches:
        assert items and all(item[0] == key for item in items)
        assert len(items) <= 3
    assert sum(len(items) for _, items in recorder.batches) == 20


async def test_failure_reaches_every_caller_of_its_batch_only() -> None:
    recorder = Recorder(fail_on="bad", delay=0.01)
    batcher = MicroBatcher(recorder, max_size=3, linger=0.02)
    items = ["x1", "bad", "x2", "y1", "y2", "y3"]
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit("k", item) for item in items), return_exceptions=True), 5
    )
    for result in results[:3]:
        assert isinstance(result, ValueError) and "cannot process bad" in str(result)
    assert results[3:] == [("k", item, "done") for item in ("y1", "y2", "y3")]
    # The batcher keeps working afterwards.
    assert await asyncio.wait_for(batcher.submit("k", "later"), 5) == ("k", "later", "done")
    assert await asyncio.wait_for(asyncio.gather(batcher.submit("k", "p"), batcher.submit("j", "q")), 5) == [
        ("k", "p", "done"),
        ("j", "q", "done"),
    ]


async def test_linger_closes_a_partial_batch() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=100, linger=0.1)
    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit("k", i) for i in range(3))), 5)
    elapsed = time.monotonic() - started
    assert results == [("k", i, "done") for i in range(3)]
    assert recorder.batches == [("k", [0, 1, 2])]
    assert 0.08 <= elapsed < 2.0
    # A later item starts a fresh batch with its own linger.
    assert await asyncio.wait_for(batcher.submit("k", 9), 5) == ("k", 9, "done")
    assert recorder.batches[-1] == ("k", [9])


# seeded random weights

EMBED_SCRIPT = """
import json
import numpy as np
import orjson
from PIL import Image
from skimage import data
from idios.config import Settings
from idios.models import REGISTRY

model = REGISTRY["vit_b32"](Settings())
model.load()
images = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "chelsea")]
vectors = model.embed_images(images)
print(json.dumps({
    "first8": [repr(float(x)) for x in vectors[0][:8]],
    "norms": [float(np.linalg.norm(v)) for v in vectors],
    "cosine": float(np.dot(vectors[0], vectors[1])),
    "dim": len(vectors[0]),
}))
"""


def test_random_weights_are_deterministic_across_processes(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIOS_")}
    env["IDIOS_WEIGHTS"] = "random"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", EMBED_SCRIPT], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr.decode()[-3000:]
        assert b"IDIOS_WEIGHTS=random" in stderr  # the loud warning
        outputs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    first, second = outputs
    assert first["first8"] == second["first8"]
    assert len(set(first["first8"])) > 1
    assert first["dim"] == 512
    for norm in first["norms"]:
        assert norm == pytest.approx(1.0, abs=1e-5)
    assert first["cosine"] < 0.99


def test_bulk_priority_lowers_only_the_calling_thread_and_what_it_starts() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from idios import niceness

    def child_niceness() -> int:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(niceness.this_thread_niceness()))
        thread.start()
        thread.join()
        return seen[0]

    before = niceness.this_thread_niceness()
    with ThreadPoolExecutor(max_workers=1, initializer=niceness.lower_this_thread) as bulk:
        assert bulk.submit(niceness.this_thread_niceness).result() == niceness.BULK_NICENESS
        assert bulk.submit(child_niceness).result() == niceness.BULK_NICENESS  # a session's pool threads
    assert niceness.this_thread_niceness() == before == child_niceness()


def test_forward_pass_layout_follows_the_settings() -> None:
    from idios.config import Settings
    from idios.models.base import parallel_passes, pass_threads

    def layout(**fields: int) -> tuple[int, int]:
        settings = Settings(**fields)
        return parallel_passes(settings), pass_threads(settings)

    assert layout(torch_threads=4) == (4, 1)  # the default: one thread per pass, a pass per core
    assert layout(torch_threads=4, pass_threads=2) == (2, 2)
    assert layout(torch_threads=4, pass_threads=0) == (1, 4)  # one pass at a time on every core
    assert layout(torch_threads=4, pass_threads=3) == (1, 3)
    assert layout(torch_threads=2, pass_threads=8) == (1, 2)  # never more threads than cores
    assert layout(pass_threads=0) == (1, os.cpu_count())


def test_pass_slots_run_bulk_batches_side_by_side_and_never_make_a_search_wait() -> None:
    from idios.models.base import PassSlots

    slots = PassSlots(parallel=2)
    inside: list[str] = []
    release = {name: threading.Event() for name in ("bulk1", "bulk2", "bulk3", "search")}

    def run(name: str, urgent: bool) -> threading.Thread:
        def body() -> None:
            with slots.hold(urgent):
                inside.append(name)
                release[name].wait(10)
                inside.remove(name)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    def settle() -> list[str]:
        time.sleep(0.2)
        return sorted(inside)

    threads = [run("bulk1", False), run("bulk2", False)]
    assert settle() == ["bulk1", "bulk2"]  # two bulk batches at once
    threads.append(run("bulk3", False))
    assert settle() == ["bulk1", "bulk2"]  # the third waits for a free slot
    threads.append(run("search", True))
    assert settle() == ["bulk1", "bulk2", "search"]  # a search starts at once, beside them
    release["bulk1"].set()
    assert settle() == ["bulk2", "search"]  # no bulk batch starts while a search runs
    release["search"].set()
    assert settle() == ["bulk2", "bulk3"]
    for event in release.values():
        event.set()
    for thread in threads:
        thread.join(10)
    assert inside == []


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _JSON_VALUES, max_size=6))
def test_metadata_limit_takes_the_same_decisions_as_measuring_json_dumps(value: dict) -> None:
    """The metadata limit skips the exact (slow) measure for small metadata: with a limit small
    enough that generated values land on both sides, every decision is the exact measure's."""
    from unittest import mock

    from idios.api import schemas

    limit = 48
    try:
        exact = len(json.dumps(value, ensure_ascii=False).encode("utf-8")) <= limit
    except (ValueError, UnicodeEncodeError):
        exact = False
    with mock.patch.object(schemas, "METADATA_MAX_BYTES", limit):
        try:
            accepted = schemas._metadata(value) is value
        except ValueError:
            accepted = False
    assert accepted == exact, value


def test_the_store_loads_scipy_sparse_before_any_thread_can_race_for_it() -> None:
    """pymilvus loads scipy.sparse by hand, without a lock, on its first insert, search or query;
    two threads doing it at once failed a search with 'deadlock detected' (a 503). Importing the
    store does it once, in a fresh process, before any request."""
    code = (
        "import sys\n"
        "import idios.store\n"
        "from pymilvus.client.utils import SciPyHelper\n"
        "assert SciPyHelper._checked and 'scipy.sparse' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
