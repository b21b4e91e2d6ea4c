"""`idios add`, `idios search` and `idios reindex` as a user runs them, against a live `idios serve`
(the address from IDIOS_API)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from idios.client import Client

from tests.support.imageserver import ImageServer
from tests.support.photos import jpeg
from tests.support.stacks import Stack

PHOTOS = ["astronaut", "coffee", "coins", "rocket", "chelsea", "camera"]


def idios(serve: Stack, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IDIOS_API": serve.url}
    return subprocess.run(
        [sys.executable, "-m", "idios", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def stored(serve: Stack, model: str, urls: list[str]) -> dict[str, dict]:
    with Client(serve.url) as client:
        return {row.url: row.metadata for row in client.dump(model) if row.url in urls}


def test_add_reads_text_csv_and_json_lines_and_writes_the_failures(
    serve: Stack, images: ImageServer, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    urls = [images.url(f"/{name}.jpg?t={key}") for name in PHOTOS[:3]]
    missing = images.url(f"/missing.jpg?t={key}")
    (tmp_path / "urls.txt").write_text("# a comment\n" + "\n".join([urls[0], "", missing]) + "\n")
    (tmp_path / "urls.csv").write_text(f"url,tag,empty\n{urls[1]},letter,\n")
    (tmp_path / "urls.jsonl").write_text(json.dumps({"url": urls[2], "metadata": {"n": 3}}) + "\n")

    text = idios(serve, "add", "phash", "urls.txt", "--failures", "bad.jsonl", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "added 1, already stored 0, failed 1 (reasons in bad.jsonl)" in text.stdout
    assert "urls/s" in text.stderr or "url/s" in text.stderr  # the progress bar's rate
    [failure] = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert failure["url"] == missing and "404" in failure["error"]
    assert not (tmp_path / "urls.txt.phash.checkpoint").exists()  # done: nothing to resume

    for name in ("urls.csv", "urls.jsonl"):
        done = idios(serve, "add", "phash", name, cwd=tmp_path)
        assert done.returncode == 0 and "added 1," in done.stdout, done.stderr
    assert stored(serve, "phash", urls) == {urls[0]: {}, urls[1]: {"tag": "letter"}, urls[2]: {"n": 3}}


def test_a_malformed_file_or_a_refusal_exits_with_one_line(serve: Stack, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"url": "http://127.0.0.2/a.jpg"}\n[1, 2]\n')
    (tmp_path / "ok.txt").write_text("http://127.0.0.2/a.jpg\n")
    malformed = idios(serve, "add", "phash", "bad.jsonl", cwd=tmp_path)
    assert malformed.returncode != 0
    assert malformed.stderr.strip() == "bad.jsonl:2: each line must be an object with a url"
    refused = idios(serve, "add", "nosuchmodel", "ok.txt", cwd=tmp_path)
    assert refused.returncode != 0
    assert refused.stderr.strip().startswith("GET /models/nosuchmodel/count: 404 unknown_model: ")
    assert len(refused.stderr.strip().splitlines()) == 1
    nothing = idios(serve, "search", "phash", cwd=tmp_path)
    assert nothing.returncode != 0 and "give an image url or file, or --text" in nothing.stderr


def test_an_interrupted_add_resumes_where_it_stopped(serve: Stack, images: ImageServer, tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    # Enough urls that the add is still running when the signal comes (about 28 a second here).
    urls = [images.url(f"/{PHOTOS[i % len(PHOTOS)]}.jpg?r={key}-{i:03d}") for i in range(600)]
    (tmp_path / "many.txt").write_text("\n".join(urls) + "\n")
    checkpoint = tmp_path / "many.txt.phash.checkpoint"
    env = {**os.environ, "IDIOS_API": serve.url}
    command = [sys.executable, "-m", "idios", "add", "phash", "many.txt", "--batch", "2", "--concurrency", "1"]
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        checkpoint.exists() and json.loads(checkpoint.read_text())["done"] >= 10
    ):
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode != 0 and "continue with --resume" in err, err
    done = json.loads(checkpoint.read_text())["done"]
    assert 10 <= done < len(urls)

    resumed = idios(serve, "add", "phash", "many.txt", "--batch", "2", "--concurrency", "1", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    added = int(resumed.stdout.split("added ")[1].split(",")[0].replace(",", ""))
    again = int(resumed.stdout.split("already stored ")[1].split(",")[0])
    assert added + again == len(urls) - done and again <= 2  # at most the batch in flight at the signal
    assert set(stored(serve, "phash", urls)) == set(urls)


def test_search_prints_a_table_or_json(serve: Stack, images: ImageServer, tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    url = images.url(f"/coins.jpg?s={key}")
    with Client(serve.url) as client:
        client.add("phash", url, {"key": key})
        client.add("vit_b32", url, {"key": key})
    only = json.dumps({"key": key})
    table = idios(serve, "search", "phash", images.url("/coins_small.jpg"), "--filter", only, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["#", "similarity", "url"]
    assert lines[1].split()[-1] == url and json.loads(lines[2].strip()) == {"key": key}
    photo = tmp_path / "query.jpg"
    photo.write_bytes(jpeg("coins"))
    as_json = idios(serve, "search", "phash", str(photo), "--json", "--filter", only, cwd=tmp_path)
    hits = json.loads(as_json.stdout)
    assert (
        url in [hit["url"] for hit in hits] and {"url", "similarity", "metadata", "flipped", "match"} <= hits[0].keys()
    )
    by_text = idios(serve, "search", "vit_b32", "--text", "coins", "--json", "--filter", only, cwd=tmp_path)
    assert by_text.returncode == 0 and [hit["url"] for hit in json.loads(by_text.stdout)] == [url]
    refused = idios(serve, "search", "phash", "--text", "coins", cwd=tmp_path)
    assert refused.returncode != 0 and refused.stderr.startswith("POST /models/phash/search: 422 ")


def test_reindex_embeds_every_url_into_another_model_with_its_metadata(
    serve: Stack, images: ImageServer, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    urls = [images.url(f"/{name}.jpg?x={key}") for name in PHOTOS]
    with Client(serve.url) as client:
        client.add_bulk("phash", [(url, {"key": key, "i": i}) for i, url in enumerate(urls)])
        before = client.count("vit_b32")
    moved = idios(serve, "reindex", "phash", "vit_b32", "--batch", "4", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert stored(serve, "vit_b32", urls) == {url: {"key": key, "i": i} for i, url in enumerate(urls)}
    with Client(serve.url) as client:
        assert client.count("vit_b32") >= before + len(urls)
    again = idios(serve, "reindex", "phash", "vit_b32", cwd=tmp_path)  # nothing new: every url is found
    assert again.returncode == 0 and "added 0," in again.stdout


def test_every_command_explains_itself_with_examples(tmp_path: Path) -> None:
    for command in ("add", "search", "reindex"):
        shown = subprocess.run(
            [sys.executable, "-m", "idios", command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0 and "examples:" in shown.stdout and "IDIOS_API" in shown.stdout
