"""Real Idios processes for end-to-end tests: `idios serve`, `idios api`, `idios worker`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Subprocess:
    """A child process with its output in `log_dir/<name>.log`, in its own session; `stop` ends it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def wait_until(check, timeout: float, what: str, processes: list[Subprocess] = ()) -> None:
    """Poll `check()` until it is true; fail with the processes' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log()[-4000:]}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.3)
    logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in processes)
    raise TimeoutError(f"timed out waiting for {what}\n{logs}")


def models_ready(base_url: str, names: tuple[str, ...] = ("vit_b32", "phash"), key: str | None = None) -> bool:
    """Whether the server lists those models as ready (asking with the API key `key`, when given)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{base_url}/models", headers=headers, timeout=5)
    if response.status_code != 200:
        return False
    answer = response.json()
    status = {model["name"]: model["status"] for model in answer}
    return all(status.get(name) == "ready" for name in names)


class Process(Subprocess):
    """An `idios` command (serve, api, worker) as a child process."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path, wrap: list[str] | None = None
    ) -> None:
        """`wrap` prefixes the command, e.g. `ip netns exec NS` to run it on a test host."""
        super().__init__(name, [*(wrap or []), sys.executable, "-m", "idios", *args], env, log_dir)


def all_urls(client: httpx.Client, model: str) -> list[str]:
    """Every stored url of `model` (a path like /models/vit_b32), paged through `urls` to the end."""
    urls: list[str] = []
    cursor = None
    while True:
        response = client.post(f"{model}/urls", json={"cursor": cursor, "limit": 500})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page:
            return urls
        urls += page
        cursor = page[-1]
