"""Coverage-guided fuzzing of the code that reads client input (atheris, libFuzzer), see targets.py.

    python tests/e2e/fuzz/fuzz.py run TARGET [libFuzzer options] [corpus dirs]   one libFuzzer process (TARGET
                                                                             `all`: its first byte picks one)
    python tests/e2e/fuzz/fuzz.py campaign [--seconds N] [TARGET ...]           `make fuzz`: every target for N s,
                                                                             new coverage merged into the corpus
    python tests/e2e/fuzz/fuzz.py replay [TARGET ...]                           the checked-in corpus, no atheris
    python tests/e2e/fuzz/fuzz.py seed                                          (re)write the seed inputs

The corpus is tests/e2e/fuzz/corpus/<target>/. A crash, a hang (over 10 s) or a process over 2 GiB stops a
run and leaves the input in test-artifacts/fuzz/ (crash-*, timeout-*, oom-*); replay it with
`python tests/e2e/fuzz/fuzz.py run TARGET test-artifacts/fuzz/<file>`.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ARTIFACTS = HERE.parents[2] / "test-artifacts" / "fuzz"
NAMES = ("decode", "url", "address", "expr", "restore")
# Per input, and for the whole process; libFuzzer stops with the input that broke either.
LIMITS = ["-timeout=10", "-rss_limit_mb=2048", "-max_len=8192"]
# Instrumented for coverage: Idios and the Python libraries that parse its input (Pillow's plugins
# are Python; its codecs, pydantic-core and json's scanner are C or Rust, so run but not measured).
# Instrumenting pydantic and FastAPI too makes a run start in a minute instead of seconds.
INSTRUMENTED = ["idios", "PIL", "httpx", "idna", "ipaddress", "targets"]


def run(argv: list[str]) -> None:
    """One libFuzzer process on one target (never returns: libFuzzer exits)."""
    import atheris

    name, rest = argv[0], argv[1:]
    with atheris.instrument_imports(include=INSTRUMENTED):
        import PIL.Image
        import targets

        PIL.Image.init()  # the format plugins, imported here so they are instrumented too
    # libFuzzer runs argv[0] again for -merge=1: the campaign passes a launcher that runs this target.
    atheris.Setup([os.environ.get("IDIOS_FUZZ_ARGV0", sys.argv[0]), *rest], targets.fuzzed(name))
    atheris.Fuzz()


def campaign(seconds: int, names: list[str]) -> int:
    """Fuzz each target for `seconds`, then merge the inputs that add coverage into its corpus."""

    def child(name: str, workdir: str, *args: str) -> subprocess.CompletedProcess[str]:
        launcher = Path(workdir) / "launcher.sh"
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{__file__}" run {name} "$@"\n')
        launcher.chmod(0o755)
        env = {**os.environ, "IDIOS_FUZZ_ARGV0": str(launcher)}
        return subprocess.run([str(launcher), *args], capture_output=True, text=True, env=env)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        corpus = CORPUS / name
        corpus.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as found:
            before = len(list(corpus.iterdir()))
            inputs = Path(found) / "inputs"
            inputs.mkdir()
            limits = [*LIMITS, f"-max_total_time={seconds}", f"-artifact_prefix={ARTIFACTS}/{name}-"]
            result = child(name, found, *limits, str(inputs), str(corpus))
            tail = "\n".join(result.stderr.splitlines()[-25:])
            if result.returncode != 0:
                failed.append(name)
                print(f"{name}: FAILED (exit {result.returncode})\n{tail}\n", flush=True)
            merged = child(name, found, "-merge=1", "-max_len=8192", str(corpus), str(inputs))
            if merged.returncode != 0:
                print(f"{name}: merge failed\n{merged.stderr[-3000:]}", flush=True)
            after = len(list(corpus.iterdir()))
            stats = [line for line in result.stderr.splitlines() if line.startswith("#") and "cov:" in line]
            print(f"{name}: {stats[-1] if stats else '?'}; corpus {before} -> {after} files", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}; inputs in {ARTIFACTS}")
    return 1 if failed else 0


def replay(names: list[str]) -> int:
    import targets

    warnings.simplefilter("ignore")  # Pillow's warnings about the corrupt images it reads
    failures = 0
    for name in names:
        target = targets.fuzzed(name)
        for path in sorted((CORPUS / name).iterdir()):
            try:
                target(path.read_bytes())
            except Exception as exc:
                failures += 1
                print(f"{name}/{path.name}: {type(exc).__name__}: {exc}"[:500])
    return 1 if failures else 0


def seed() -> None:
    """The seed inputs: tiny images of each accepted format and mode, and typical texts and bodies."""
    from PIL import Image

    def image(mode: str, fmt: str, size: tuple[int, int] = (8, 6), **save: object) -> bytes:
        img = Image.new(mode, size)
        if mode in ("RGB", "RGBA"):
            img.putdata(
                [(x * 30 % 256, y * 40 % 256, 90, 200)[: len(mode)] for y in range(size[1]) for x in range(size[0])]
            )
        out = io.BytesIO()
        img.save(out, fmt, **save)
        return out.getvalue()

    gif = io.BytesIO()
    frames = [Image.new("P", (8, 8), i) for i in range(2)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], transparency=0)
    png = image("RGB", "PNG")
    huge = bytearray(png)
    huge[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # declares 10^10 pixels
    images = {
        "rgb.png": png,
        "rgba.png": image("RGBA", "PNG"),
        "p-transparent.png": image("P", "PNG", transparency=0),
        "i16.png": image("I;16", "PNG"),
        "la.png": image("LA", "PNG"),
        "huge-header.png": bytes(huge),
        "truncated.png": png[: len(png) // 2],
        "rgb.jpg": image("RGB", "JPEG", quality=50),
        "gray-progressive.jpg": image("L", "JPEG", progressive=True),
        "cmyk.jpg": image("CMYK", "JPEG"),
        "animated.gif": gif.getvalue(),
        "lossy.webp": image("RGB", "WEBP", quality=30),
        "lossless-alpha.webp": image("RGBA", "WEBP", lossless=True),
        "rgb.tiff": image("RGB", "TIFF"),
        "float.tiff": image("F", "TIFF"),
        "deflate.tiff": image("RGB", "TIFF", compression="tiff_adobe_deflate"),
        "rgb.bmp": image("RGB", "BMP"),
        "one-bit.bmp": image("1", "BMP"),
    }
    urls = [
        "http://example.com/cat.jpg",
        "https://images.example.org:8443/a/b.png?size=large&x=1#frag",
        "  https://example.com/padded.jpg\n",
        "HTTPS://EXAMPLE.COM/upper.jpg",
        "http://user:secret@example.com/a.jpg",
        "ftp://example.com/a.jpg",
        "http://[::1]:8080/a.jpg",
        "http://127.0.0.1/a.jpg",
        "http://0x7f.1/a.jpg",
        "http://1.2.3.4.5/a.jpg",
        "http://example.com:99999/a.jpg",
        "http://ex ample.com/a.jpg",
        "http://例え.jp/画像.jpg",
        "http://xn--nxasmq6b.com/a.jpg",
        "http://a_b.example.com/a%20b.jpg",
        "http:///nohost.jpg",
        "//example.com/a.jpg",
        "http://example.com\\@evil.com/a.jpg",
        "http://example.com/" + "a" * 2100,
    ]
    addresses = [
        "127.0.0.1",
        "8.8.8.8",
        "10.1.2.3",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "[::1]",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "2002:7f00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "64:ff9b::7f00:1",
        "64:ff9b:1::a00:1",
        "fe80::1%eth0",
        "fd00:1::5",
        "2001:db8::1",
        "2606:4700::1111",
        " 1.1.1.1 ",
        "1.2.3",
        "localhost",
    ]
    filters = [
        b"tags\0letter",
        b"n\0i\x01\x02\x03",
        b"big\0i" + b"\x7f" * 9,
        b"score\0d" + bytes(8),
        b"flag\0b1\0other\0b",
        b'a"b\0x\\y"\nz',
        b"][\0x",
        b"k\0\xff\xfe text",
        b"\xe2\x80\xa8line\0\x7f\x01\x1b",
        b"emoji \xf0\x9f\x98\x80\0\xf0\x9f\x98\x80",
    ]
    bodies = [
        b'[{"url": "http://example.com/1.jpg", "embedding": [0.1, 0.2, 0.3, 0.4]}]',
        b'[{"url": "http://example.com/2.jpg", "metadata": {"tags": ["a", 1]}, "embedding": [1, 0, 0, 0]}]',
        b'[{"url": "http://example.com/3.jpg", "embedding": [1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0]}]',
        b'[{"url": "http://example.com/4.jpg", "embedding": [1e308, 1e308, 1e308, 1e308]}]',
        b'[{"url": "http://example.com/5.jpg", "embedding": [0, 0, 0, 0]}]',
        b'[{"url": "ftp://example.com/6.jpg", "embedding": [1, 2, 3, 4]}]',
        b'[{"url": "http://example.com/7.jpg", "embedding": [1, 2, 3]}, {"url": "x", "embedding": []}]',
        b'[{"url": "http://example.com/8.jpg", "embedding": [1, 2, 3, 4], "extra": 1}]',
        b"[]",
        b"{}",
    ]
    texts = {
        "decode": list(images.items()),
        "url": [(f"seed-{i:02d}", u.encode()) for i, u in enumerate(urls)],
        "address": [(f"seed-{i:02d}", a.encode()) for i, a in enumerate(addresses)],
        "expr": [(f"seed-{i:02d}", f) for i, f in enumerate(filters)],
        "restore": [(f"seed-{i:02d}", b) for i, b in enumerate(bodies)],
    }
    for name, entries in texts.items():
        (CORPUS / name).mkdir(parents=True, exist_ok=True)
        for file_name, data in entries:
            (CORPUS / name / file_name).write_bytes(data)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fuzz = commands.add_parser("campaign")
    fuzz.add_argument("--seconds", type=int, default=120)
    fuzz.add_argument("targets", nargs="*", default=list(NAMES))
    again = commands.add_parser("replay")
    again.add_argument("targets", nargs="*", default=list(NAMES))
    commands.add_parser("seed")
    args = parser.parse_args()
    unknown = set(getattr(args, "targets", ())) - set(NAMES)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(NAMES)}")
    if args.command == "campaign":
        return campaign(args.seconds, args.targets)
    if args.command == "replay":
        return replay(args.targets)
    seed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
