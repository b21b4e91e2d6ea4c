"""The Milvus that `idios serve` runs for itself when no server is named.

Milvus Lite answers a 10-nearest search over 100,000 vectors in about 0.4 s here and has
no binary vectors, while the standalone server that the `milvus` package bundles answers
in a few ms; so `embedded` means that server, started as a child process, with Milvus Lite
as the fallback when the package is missing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milvus import MilvusServer

log = logging.getLogger("idios.embedded")

# What the bundled server changes in Milvus's defaults. docker/milvus.yaml sets the same for the
# Milvus node (tests/deploy/test_compose.py holds the two together).
SERVER_CONFIG: dict[str, int | float] = {
    # Strong reads (counts, listings) wait for the next time tick; 200 ms by default is too slow for a
    # single-node index where ticks cost next to nothing.
    "proxy.timeTickInterval": 20,
    # Milvus seals a segment at 23% of its largest size (about 50,000 vit_b32 rows) and, by default,
    # counts any below half that size as small: compaction merges those and builds the merged
    # segment's HNSW index again. Building indexes is most of Milvus's CPU while entries arrive fast
    # (a restore). Below a tenth, only the leftovers of idle or flushed segments are merged: after
    # a restore of 300,000 rows Milvus indexed 570,000 rows instead of 737,500, and caught up in
    # 425-446 s instead of 578 s.
    "dataCoord.segment.smallProportion": 0.1,
}
# The bundled server's embedded etcd always takes this peer port, so one runs per machine.
ETCD_PEER_PORT = 2380


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def milvus_uri(uri: str, data_dir: Path) -> Iterator[str]:
    """Yield a Milvus URI, starting the bundled server for `embedded` and stopping it afterwards."""
    if uri != "embedded":
        yield uri
        return
    try:
        import milvus  # noqa: F401
    except ImportError:
        path = Path(data_dir) / "milvus-lite.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        log.warning("package 'milvus' missing: using Milvus Lite at %s (slow search, no phash)", path)
        yield str(path)
        return
    if not _port_free(ETCD_PEER_PORT):
        raise RuntimeError(
            f"port {ETCD_PEER_PORT} is taken, most likely by another embedded Milvus on this machine; "
            "stop it, or point IDIOS_MILVUS_URI at a running Milvus (http://host:19530)"
        )
    server = start_bundled_server(data_dir)
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        log.info("stopping the bundled Milvus server")
        server.stop()


def start_bundled_server(data_dir: Path) -> MilvusServer:
    """Start the `milvus` package's standalone server with its files under `data_dir/milvus`."""
    from milvus import MilvusServer

    base = (Path(data_dir) / "milvus").resolve()
    base.mkdir(parents=True, exist_ok=True)
    server = MilvusServer()
    server.set_base_dir(str(base))
    for key, value in SERVER_CONFIG.items():
        server.config.set(key, value)
    log.info("starting the bundled Milvus server in %s", base)
    server.start()
    log.info("Milvus server listening on 127.0.0.1:%d", server.listen_port)
    return server
