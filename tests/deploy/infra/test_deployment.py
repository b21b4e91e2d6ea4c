"""A running Idios deployment, checked from the operator's machine (testinfra, `--hosts`).

Every host: Docker runs, every container is running and healthy, and neither RabbitMQ's 5672 nor
Milvus's 19530 answers from here (the operator's machine stands for "the internet"). With IDIOS_DOMAIN
set: the certificate of https://IDIOS_DOMAIN is valid for it, and GET /ping?rpc=true (a round trip
through RabbitMQ and a worker) answers "pong".
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
import urllib.request

import pytest

DOMAIN = os.environ.get("IDIOS_DOMAIN", "")
needs_domain = pytest.mark.skipif(not DOMAIN, reason="set IDIOS_DOMAIN to the API's host name")


def address(host) -> str:
    return host.backend.get_hostname()


def test_docker_running(host) -> None:
    assert host.service("docker").is_running
    assert host.run("docker compose version").rc == 0


def test_every_container_healthy(host) -> None:
    lines = host.check_output("docker ps --all --format '{{json .}}'").splitlines()
    containers = [json.loads(line) for line in lines if line.strip()]
    assert containers, "no container on this host"
    bad = [
        f"{c['Names']}: {c['Status']}"
        for c in containers
        if c["State"] != "running" or "(unhealthy)" in c["Status"] or "(health: starting)" in c["Status"]
    ]
    assert not bad, bad
    unchecked = [c["Names"] for c in containers if "(healthy)" not in c["Status"]]
    assert not unchecked, f"containers without a passing health check: {unchecked}"


@pytest.mark.parametrize("port", [5672, 19530])
def test_private_ports_closed_from_outside(host, port: int) -> None:
    try:
        with socket.create_connection((address(host), port), timeout=3):
            pass
    except OSError:
        return
    pytest.fail(f"{address(host)}:{port} accepts connections from this machine")


@needs_domain
def test_tls_certificate_valid_for_domain() -> None:
    context = ssl.create_default_context()  # chain and host name verified
    with (
        socket.create_connection((DOMAIN, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
    ):
        cert = tls.getpeercert()
    expires = ssl.cert_time_to_seconds(cert["notAfter"])
    assert expires - time.time() > 7 * 86400, f"the certificate expires on {cert['notAfter']}"


@needs_domain
def test_ping_through_https() -> None:
    with urllib.request.urlopen(f"https://{DOMAIN}/ping?rpc=true", timeout=30) as response:
        assert response.status == 200
        assert json.loads(response.read()) == "pong"
