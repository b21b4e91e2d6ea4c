"""tests/setup-machine.sh, which `make test` runs first, on machines made up of stand-in commands.

Every run gets a PATH of its own: a directory with the few real tools the script uses and stand-ins
for `id`, `apt-get`, `docker-compose` and `rabbitmq-server`, so nothing is installed or started here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "setup-machine.sh"
REAL_TOOLS = ("bash", "seq", "sleep")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def broker() -> Iterator[int]:
    """A port that accepts connections, standing in for RabbitMQ."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


class Machine:
    """A PATH directory of stand-ins and the environment to run the script with."""

    def __init__(self, tmp: Path, amqp_port: int, *, uid: int = 0) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.tmp = tmp
        self.chromium = tmp / "usr-bin-chromium"
        self.apt_log = tmp / "apt-get.log"
        for tool in REAL_TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        self.command("id", f'[ "$1" = -u ] && echo {uid}')
        self.env = {
            "PATH": str(self.bin),
            "CHROMIUM": str(self.chromium),
            "AMQP_PORT": str(amqp_port),
            "VENV": str(Path(sys.prefix)),  # an existing venv: no python3-venv needed
            "RABBITMQ_WAIT_S": "10",
        }

    def command(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!{shutil.which('bash')}\n{body}\n")
        path.chmod(0o755)

    def has_chromium_and_compose(self) -> None:
        self.chromium.write_text("#!/bin/sh\n")
        self.chromium.chmod(0o755)
        self.command("docker-compose", "exit 0")

    def apt_log_lines(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shutil.which("bash"), str(SCRIPT)], env=self.env, capture_output=True, text=True, timeout=60, cwd=ROOT
        )


def test_nothing_to_do_when_everything_is_there(tmp_path: Path, broker: int) -> None:
    machine = Machine(tmp_path, broker)
    machine.has_chromium_and_compose()
    machine.command("apt-get", f'echo "$*" >> {machine.apt_log}')
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert machine.apt_log_lines() == []


def test_without_apt_get_names_what_is_missing_and_how_to_install_it(tmp_path: Path) -> None:
    machine = Machine(tmp_path, closed_port())
    result = machine.run()
    assert result.returncode == 1
    assert "missing: chromium docker-compose rabbitmq-server" in result.stderr
    assert "apt-get install -y chromium docker-compose rabbitmq-server" in result.stderr


def test_not_root_is_told_to_use_sudo(tmp_path: Path, broker: int) -> None:
    machine = Machine(tmp_path, broker, uid=1000)
    machine.command("apt-get", f'echo "$*" >> {machine.apt_log}')
    machine.command("docker-compose", "exit 0")
    result = machine.run()
    assert result.returncode == 1
    assert "missing: chromium\n" in result.stderr
    assert "sudo apt-get update && sudo apt-get install -y chromium" in result.stderr
    assert machine.apt_log_lines() == []


def test_as_root_installs_with_apt_get_and_starts_rabbitmq(tmp_path: Path) -> None:
    port = closed_port()
    machine = Machine(tmp_path, port)
    pid_file = tmp_path / "broker.pid"
    chmod, cat = shutil.which("chmod"), shutil.which("cat")  # the stand-in's own tools, not on the PATH
    listener = f"import socket, time; s = socket.create_server(('127.0.0.1', {port})); time.sleep(120)"
    # The stand-in apt-get "installs" each package it is given; rabbitmq-server then listens on the port.
    machine.command(
        "apt-get",
        f"""echo "$*" >> {machine.apt_log}
[ "$1" = install ] || exit 0
for package in "$@"; do
    case $package in
        chromium) printf '#!/bin/sh\\n' > {machine.chromium}; {chmod} +x {machine.chromium} ;;
        docker-compose) printf '#!/bin/sh\\n' > {machine.bin}/docker-compose; {chmod} +x {machine.bin}/docker-compose ;;
        rabbitmq-server) {cat} > {machine.bin}/rabbitmq-server <<'EOF'
#!{shutil.which("bash")}
[ "$1" = -detached ] || exit 2
{sys.executable} -c "{listener}" </dev/null >/dev/null 2>&1 & echo $! > {pid_file}
EOF
            {chmod} +x {machine.bin}/rabbitmq-server ;;
    esac
done""",
    )
    try:
        result = machine.run()
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert result.returncode == 0, result.stderr
    assert machine.apt_log_lines() == ["update -qq", "install -y -qq chromium docker-compose rabbitmq-server"]
    assert "starting it (rabbitmq-server -detached)" in result.stderr


def test_a_broker_that_never_answers_is_reported(tmp_path: Path) -> None:
    machine = Machine(tmp_path, closed_port())
    machine.has_chromium_and_compose()
    machine.env["RABBITMQ_WAIT_S"] = "1"
    machine.command("rabbitmq-server", "exit 0")
    result = machine.run()
    assert result.returncode == 1
    assert "RabbitMQ still does not answer" in result.stderr
