"""Bulk paths in process: many embeddings checked at once, arrays in jobs, answers through the broker's
encoding, packed floats, and the backup CLI's files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from pymilvus.grpc_gen import schema_pb2

from idios import backup
from idios.errors import Invalid
from idios.specs import spec
from idios.store import _packed_floats
from idios.transport.queues import decode, encode, encode_job
from idios.wire import unpack_array

VIT = spec("vit_b32")
PHASH = spec("phash")


def random_rows(count: int, seed: int, dim: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim))


# conversions


def test_many_embeddings_are_checked_and_normalised_together() -> None:
    values = random_rows(5, 1) * 7
    stored = VIT.from_public(values)
    assert stored.dtype == np.float32 and stored.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)
    for index in range(5):
        np.testing.assert_array_equal(stored[index], VIT.from_public(values[index]))
    assert VIT.from_public(np.empty((0, 512))).shape == (0, 512)


def test_extreme_but_finite_embeddings_still_normalise() -> None:
    for scale in (1e300, 1e-300):
        stored = VIT.from_public(np.full((1, 512), scale))
        np.testing.assert_allclose(stored[0], np.full(512, 1 / math.sqrt(512)), rtol=1e-6)


@pytest.mark.parametrize(
    ("model", "bad", "message"),
    [
        (VIT, [math.inf] + [0.5] * 511, "not finite"),
        (VIT, [math.nan] + [0.5] * 511, "not finite"),
        (VIT, [0.0] * 512, "all zeros"),
        (PHASH, [2] + [0] * 63, "each 0 or 1"),
        (PHASH, [0.5] + [0] * 63, "each 0 or 1"),
    ],
)
def test_a_bad_embedding_among_many_is_named_by_its_row(model, bad: list[float], message: str) -> None:
    good = [1.0] + [0.0] * (model.dim - 1)
    with pytest.raises(Invalid) as caught:
        model.from_public([good, good, bad, good])
    assert caught.value.type == "bad_embedding"
    assert caught.value.msg.startswith("row 2: ") and message in caught.value.msg


def test_many_bit_embeddings_pack_like_one() -> None:
    bits = np.random.default_rng(3).integers(0, 2, (4, 64))
    packed = PHASH.from_public(bits)
    assert packed.dtype == np.uint8 and packed.shape == (4, 8)
    assert [row.tobytes() for row in packed] == [PHASH.from_public(row.tolist()) for row in bits]
    assert [PHASH.to_public(row) for row in packed] == bits.tolist()


def test_ragged_embeddings_are_a_dimension_error() -> None:
    with pytest.raises(Invalid) as caught:
        VIT.from_public([[1.0] * 512, [1.0] * 511])
    assert caught.value.type == "wrong_dimension"


# jobs on the wire


@pytest.mark.parametrize("array", [random_rows(3, 4).astype(np.float32), np.arange(24, dtype=np.uint8).reshape(3, 8)])
def test_arrays_in_jobs_round_trip_exactly(array: np.ndarray) -> None:
    """Through a broker a job's array travels packed; in process (`idios serve`) it stays itself."""
    sent = decode(encode_job({"op": "restore", "args": {"vectors": array}}))
    assert isinstance(sent["args"]["vectors"]["base64"], str)
    for back in (unpack_array(sent["args"]["vectors"]), unpack_array(array)):
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "packed",
    [
        None,
        {},
        {"dtype": "<f8", "shape": [1, 1], "base64": "AAAAAAAAAAA="},
        {"dtype": "<f4", "shape": [2, 2], "base64": "AAAAAA=="},
        {"dtype": "<f4", "shape": [1], "base64": "AAAAAA=="},
        {"dtype": "<f4", "shape": [1, 1], "base64": "!!!!"},
    ],
)
def test_unreadable_job_arrays_are_bad_jobs(packed: object) -> None:
    with pytest.raises(Invalid) as caught:
        unpack_array(packed)
    assert caught.value.type == "bad_job"


def test_answers_already_in_json_cross_the_broker_unparsed() -> None:
    page = orjson.dumps([{"url": "u", "metadata": {"k": "é"}, "embedding": [0.5, 1.0]}])
    body = encode({"ok": True, "value": orjson.Fragment(page)})
    assert orjson.loads(body) == {"ok": True, "raw": True, "value": orjson.loads(page)}  # any reader can parse it
    answer = decode(body)
    assert answer["ok"] is True and isinstance(answer["value"], orjson.Fragment)
    assert orjson.dumps(answer["value"]) == page
    plain = {"ok": True, "value": [1, 2]}
    assert decode(encode(plain)) == plain
    job = {"op": "dump", "model": "vit_b32", "args": {"cursor": None, "limit": 5}, "deadline": 1.0}
    assert decode(encode(job)) == job


def test_packed_floats_are_a_protobuf_float_array() -> None:
    for rows in (0, 1, 3, 300):
        vectors = random_rows(rows, 5).astype(np.float32)
        message = schema_pb2.FloatArray.FromString(_packed_floats(vectors))
        np.testing.assert_array_equal(np.array(message.data, dtype=np.float32), vectors.ravel())


def test_backup_restore_names_an_unreadable_line(tmp_path: Path) -> None:
    good = orjson.dumps({"url": "http://127.0.0.2/a.jpg", "embedding": [1] + [0] * 63})
    (tmp_path / "phash-000000.jsonl").write_bytes(good + b"\n\n" + b'{"url": "http://127.0.0.2/b.jpg",\n')
    with pytest.raises(SystemExit, match=r"phash-000000\.jsonl:3: not JSON"):
        backup.restore("http://127.0.0.1:9", "phash", tmp_path, 10)


def test_dump_files_split_whole_lines(tmp_path: Path) -> None:
    lines = [orjson.dumps({"url": f"u{i}"}) + b"\n" for i in range(23)]
    files = backup.DumpFiles(tmp_path, "m", 5)
    written = sum(files.write(b"".join(lines[start : start + size])) for start, size in ((0, 1), (1, 7), (8, 15)))
    files.close()
    assert written == 23
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [f"m-{i:06d}.jsonl" for i in range(5)]  # 5+5+5+5+3 lines, no .part left
    assert [(tmp_path / name).read_bytes() for name in names] == [b"".join(lines[i : i + 5]) for i in range(0, 23, 5)]


def test_idios_add_reads_files_a_spreadsheet_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    from idios.commands import read_items

    (tmp_path / "a.csv").write_bytes("\ufeffurl,tags\nhttp://x/1.jpg,cat\n".encode())
    (tmp_path / "a.txt").write_bytes("\ufeffhttp://x/1.jpg\n".encode())
    (tmp_path / "a.jsonl").write_bytes('\ufeff{"url": "http://x/1.jpg"}\n'.encode())
    assert list(read_items(tmp_path / "a.csv")) == [("http://x/1.jpg", {"tags": "cat"})]
    assert list(read_items(tmp_path / "a.txt")) == [("http://x/1.jpg", None)]
    assert list(read_items(tmp_path / "a.jsonl")) == [("http://x/1.jpg", None)]
