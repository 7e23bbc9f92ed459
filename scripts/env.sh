# Shared settings of the local dev stack (sourced by the other scripts).
# Everything listens on loopback only; override any of these from the
# environment.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${SITEWATCH_DATA_DIR:-$ROOT/.data}"
PG_PORT="${SITEWATCH_PG_PORT:-55432}"
KAFKA_PORT="${SITEWATCH_KAFKA_PORT:-19092}"
TANSU_VERSION="0.6.0"
TANSU_ROOT="${TANSU_ROOT:-$HOME/.local/share/sitewatch/tansu-$TANSU_VERSION}"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
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
export SITEWATCH_TANSU_BIN="${SITEWATCH_TANSU_BIN:-$TANSU_BIN}"
export SITEWATCH_PG_BIN="${SITEWATCH_PG_BIN:-$PG_BIN}"
