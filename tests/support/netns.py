"""Test hosts in network namespaces, joined to this machine by veth pairs, with partitions on demand.

Each `Host` is a namespace `idios-<tag>` with one veth link to the root namespace: the host side holds
`gateway` (the address the namespace reaches this machine by) and `service`, a second address of this
machine on the same link. A partition blackholes `service` inside the namespace: traffic to it is
dropped silently, as when a network fails, while the namespace stays reachable through `gateway`.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def available() -> bool:
    if shutil.which("ip") is None:
        return False
    probe = f"idios-probe-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=30)
    except (subprocess.CalledProcessError, OSError):
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return True


class Host:
    def __init__(self, index: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.netns = f"idios-{tag}"
        self.veth = f"vi{tag}"
        subnet = f"10.213.{index}"
        self.gateway = f"{subnet}.1"
        self.service = f"{subnet}.2"
        self.address = f"{subnet}.10"

    def create(self) -> None:
        ip("netns", "add", self.netns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.veth)
        ip("addr", "add", f"{self.service}/32", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("addr", "add", f"{self.address}/24", "dev", "eth0", netns=self.netns)
        ip("link", "set", "eth0", "up", netns=self.netns)
        ip("link", "set", "lo", "up", netns=self.netns)
        ip("route", "add", f"{self.service}/32", "via", self.gateway, netns=self.netns)

    def partition(self) -> None:
        ip("route", "replace", "blackhole", f"{self.service}/32", netns=self.netns)

    def heal(self) -> None:
        ip("route", "replace", f"{self.service}/32", "via", self.gateway, netns=self.netns)

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)


@contextmanager
def hosts(count: int, first_subnet: int = 101) -> Iterator[list[Host]]:
    made = [Host(first_subnet + i) for i in range(count)]
    try:
        for host in made:
            host.create()
        yield made
    finally:
        for host in made:
            host.destroy()
