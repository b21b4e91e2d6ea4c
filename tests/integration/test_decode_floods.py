"""A one-scan progressive JPEG is counted at its full cost, measured in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def _one_scan_progressive(path: Path, side: int) -> None:
    """A progressive JPEG of `side` x `side` cut after its first scan (the DC one), written in a
    subprocess so that this one never holds the image."""
    script = f"""
        import io, re
        from PIL import Image
        buf = io.BytesIO()
        Image.new("RGB", ({side}, {side}), (10, 200, 30)).save(buf, "JPEG", progressive=True, quality=90)
        data, pos = buf.getvalue(), 2
        while data[pos + 1] != 0xDA:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = re.compile(rb"\\xff+([^\\x00\\xd0-\\xd7\\xff])").search(data, pos + 4).start(1) - 1
        open({str(path)!r}, "wb").write(data[:end] + b"\\xff\\xd9")
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=120)


def test_a_one_scan_progressive_jpeg_is_counted_at_its_full_cost(tmp_path: Path) -> None:
    """libjpeg holds every DCT coefficient of a progressive JPEG even when it has one scan: its
    estimate must cover them, or a 144 KB file decodes with about four times what the budget counted."""
    path = tmp_path / "one_scan.jpg"
    _one_scan_progressive(path, 7000)
    assert path.stat().st_size < 200_000
    code = textwrap.dedent(
        """
        import json, sys
        from idios.config import Settings
        from idios.decoding import decode_opened, jpeg_scans, open_image
        def peak_kib():  # this process's own high-water mark (ru_maxrss may carry the parent's over exec)
            line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
            return int(line.split()[1])
        data = open(sys.argv[1], "rb").read()
        settings = Settings(_env_file=None)
        opened = open_image(data, settings)
        before = peak_kib()
        image = decode_opened(opened, settings)
        growth = peak_kib() - before
        print(json.dumps({"scans": jpeg_scans(data, 100), "cost_mib": opened.cost / 1048576,
                          "growth_mib": growth / 1024, "size": image.size}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["scans"] == 1 and result["size"] == [875, 875], result
    assert result["growth_mib"] > 100, result  # the coefficients are there to count
    assert result["growth_mib"] < result["cost_mib"], result
