# Shared settings of the local dev stack (sourced by the other scripts).
# Everything listens on loopback only; override any of these from the
# environment.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${SITEWATCH_DATA_DIR:-$ROOT/.data}"
PG_PORT="${SITEWATCH_PG_PORT:-55432}"
KAFKA_PORT="${SITEWATCH_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${SITEWATCH_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
# Apache Kafka, from Maven Central (scripts/install-kafka).
KAFKA_VERSION="${SITEWATCH_KAFKA_VERSION:-4.1.1}"
KAFKA_HOME="${SITEWATCH_KAFKA_HOME:-$HOME/.local/share/sitewatch/kafka-$KAFKA_VERSION}"
# Any fixed id will do for a single-node dev cluster (16 bytes, base64url).
KAFKA_CLUSTER_ID="c2l0ZXdhdGNoLWRldi0wMQ"
# Python for the tests' local SMTP server (scripts/install-deps).
PY_ENV="${SITEWATCH_PY_ENV:-$HOME/.local/share/sitewatch/py}"
AIOSMTPD_VERSION=1.4.6
export SITEWATCH_TEST_PYTHON="${SITEWATCH_TEST_PYTHON:-$PY_ENV/bin/python}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"

export SITEWATCH_TEST_PG_URL="${SITEWATCH_TEST_PG_URL:-postgres://sitewatch@127.0.0.1:$PG_PORT/sitewatch}"
export SITEWATCH_TEST_KAFKA="${SITEWATCH_TEST_KAFKA:-127.0.0.1:$KAFKA_PORT}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_port PORT SECONDS: wait until something accepts TCP on 127.0.0.1:PORT.
wait_port() {
    local port=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# port_pids PORT: the pids listening on 127.0.0.1:PORT (empty if none or if
# `ss` cannot tell).
port_pids() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

export SITEWATCH_KAFKA_HOME="$KAFKA_HOME"
export SITEWATCH_PG_BIN="${SITEWATCH_PG_BIN:-$PG_BIN}"

# For `make run`: when the stack was moved (SITEWATCH_PG_PORT,
# SITEWATCH_KAFKA_PORT), point the daemon at it through its own environment
# overrides, unless those are set already.
export_dev_endpoints() {
    if [ -n "${SITEWATCH_PG_PORT:-}" ] && [ -z "${SITEWATCH__POSTGRES__URL:-}" ]; then
        export SITEWATCH__POSTGRES__URL="postgres://sitewatch@127.0.0.1:$PG_PORT/sitewatch"
    fi
    if [ -n "${SITEWATCH_KAFKA_PORT:-}" ] && [ -z "${SITEWATCH__KAFKA__BROKERS:-}" ]; then
        export SITEWATCH__KAFKA__BROKERS="127.0.0.1:$KAFKA_PORT"
    fi
}
