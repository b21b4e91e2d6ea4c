#!/usr/bin/env bash
# What `make test` needs from the machine besides the Python packages, checked in a second or two:
#   - Debian's Chromium at /usr/bin/chromium (the browser tests, tests/e2e/test_gui.py)
#   - docker-compose (validates the compose files, tests/deploy/test_compose.py; no Docker engine is needed)
#   - RabbitMQ answering on 127.0.0.1:5672 (the amqp tests)
#   - python3's venv module, while there is no .venv yet
# As root with apt-get, installs what is missing (one `apt-get update`, one `apt-get install`) and starts
# RabbitMQ (`rabbitmq-server -detached`); otherwise names what is missing and how to install it, and
# exits 1. Does nothing when everything is there.
#
# Overridable (tests/deploy/test_setup_machine.py): CHROMIUM, AMQP_HOST, AMQP_PORT, VENV, PYTHON, RABBITMQ_WAIT_S.
set -uo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
RABBITMQ_WAIT_S=${RABBITMQ_WAIT_S:-60}

say() { echo "setup-machine: $*" >&2; }

amqp_answers() {
    # bash's /dev/tcp: no client tool needed. A refused loopback connection fails at once.
    (exec 3<>"/dev/tcp/$AMQP_HOST/$AMQP_PORT") 2>/dev/null
}

missing_packages() {
    local packages=()
    [ -x "$CHROMIUM" ] || packages+=(chromium)
    command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
    if ! amqp_answers && ! command -v rabbitmq-server >/dev/null 2>&1; then
        packages+=(rabbitmq-server)
    fi
    if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
        packages+=(python3-venv)
    fi
    echo "${packages[@]}"
}

can_install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

read -r -a packages <<<"$(missing_packages)"
if [ "${#packages[@]}" -gt 0 ]; then
    if ! can_install; then
        say "missing: ${packages[*]}"
        if command -v apt-get >/dev/null 2>&1; then
            say "install them as root: sudo apt-get update && sudo apt-get install -y ${packages[*]}"
        else
            say "install them (Debian: apt-get update && apt-get install -y ${packages[*]})"
        fi
        exit 1
    fi
    say "installing ${packages[*]} (apt-get)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null; }; then
        say "apt-get could not install ${packages[*]}"
        exit 1
    fi
fi

if ! amqp_answers; then
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        say "RabbitMQ does not answer on $AMQP_HOST:$AMQP_PORT and rabbitmq-server is not installed"
        exit 1
    fi
    say "RabbitMQ does not answer on $AMQP_HOST:$AMQP_PORT: starting it (rabbitmq-server -detached)"
    rabbitmq-server -detached || true
    for _ in $(seq "$RABBITMQ_WAIT_S"); do
        amqp_answers && break
        sleep 1
    done
    if ! amqp_answers; then
        say "RabbitMQ still does not answer on $AMQP_HOST:$AMQP_PORT after ${RABBITMQ_WAIT_S}s;" \
            "see /var/log/rabbitmq/ and start it with: rabbitmq-server -detached"
        exit 1
    fi
fi

# What apt-get was asked for must be there now (a package may install under another path).
read -r -a packages <<<"$(missing_packages)"
if [ "${#packages[@]}" -gt 0 ]; then
    say "still missing after installing: ${packages[*]}"
    exit 1
fi
exit 0
