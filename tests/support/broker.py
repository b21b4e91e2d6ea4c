"""A throwaway RabbitMQ node for fault-injection tests: its own port, node name and data directory.

The machine's broker (127.0.0.1:5672) is never touched: this one can be stopped and restarted at will.
The server runs in the foreground (`/usr/lib/rabbitmq/bin/rabbitmq-server`, not the `/usr/sbin`
wrapper, which switches to the `rabbitmq` user and drops the environment) in its own session, so that
`stop` can end it, and everything it started, by its process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.stack import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def available() -> bool:
    return Path(SERVER).exists() or shutil.which("rabbitmq-server") is not None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """A RabbitMQ node on 127.0.0.1:`port`; `restart` keeps the port and the data (durable queues and
    persistent messages survive it)."""

    def __init__(
        self,
        base: Path,
        *,
        listen: str = "127.0.0.1",
        remote_guest: bool = False,
        max_message_size: int | None = None,
    ) -> None:
        """`listen` 0.0.0.0 and `remote_guest` let hosts in test network namespaces connect as guest;
        `max_message_size` (bytes) sets the broker's message limit, as the shipped broker config does
        (16 MiB, RabbitMQ 4's default; this machine's RabbitMQ 3 would take 128 MiB)."""
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.node = f"idios-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        config = []
        if remote_guest:
            config.append("loopback_users.guest = false")
        if max_message_size is not None:
            config.append(f"max_message_size = {max_message_size}")
        if config:
            (self.base / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        plugins = self.base / "enabled_plugins"
        plugins.write_text("[].\n")  # no management plugin: no listener that could collide
        self.env = {
            "HOME": str(self.base),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": listen,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            # never read the machine's config
            "RABBITMQ_CONFIG_FILE": str(self.base / ("rabbitmq.conf" if config else "absent")),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "absent-advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "absent-env.conf"),
        }
        self.log_path = self.base / "rabbitmq.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 90.0) -> None:
        assert not self.alive(), "the broker runs already"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [SERVER],
                env={**os.environ, **self.env},
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        marker = "Server startup complete"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"rabbitmq-server exited at start:\n{self.log()[-4000:]}")
            if _listening(self.port) and self.log().count(marker) >= self.starts:
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"rabbitmq-server did not start within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the script runs `rabbitmqctl stop`-like shutdown), then SIGKILL the whole group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # the Erlang VM and its helpers share the script's process group (its own session)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        deadline = time.monotonic() + 10
        while _listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
