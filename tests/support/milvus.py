"""The suite's Milvus: the server under test, and the cleanup of the collections a test made."""

from __future__ import annotations

import time

from pymilvus import MilvusClient

from tests.support.stack import port_free, wait_until


class MilvusUnderTest:
    """The session's Milvus: its URI, and a restart for fault tests when the suite started it."""

    def __init__(self, uri: str, server: object | None) -> None:
        self.uri = uri
        self.server = server

    def restart(self, down_seconds: float = 3.0) -> None:
        assert self.server is not None, "IDIOS_TEST_MILVUS_URI names a server this suite cannot restart"
        port = self.server.listen_port
        self.server.stop()
        time.sleep(down_seconds)
        wait_until(lambda: port_free(port), 60, f"port {port} to be free")
        self.server.start()
        assert self.server.listen_port == port, "Milvus came back on another port"


def drop_prefixed(client: MilvusClient, prefix: str) -> None:
    for name in client.list_collections():
        if name.startswith(prefix):
            client.drop_collection(name)
