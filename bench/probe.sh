#!/usr/bin/env bash
# Probe-only benchmark on realistic work: host names resolved through a
# local DNS server (dnsmasq), half the sites over HTTPS (a quarter with an
# ECDSA P-256 leaf, a quarter RSA-2048, both from a test CA every client
# trusts), one fresh connection and a regex on the body per check. The
# same checks run through sitewatch's checker, a bare hyper + rustls client
# (the physical reference for CPU per check) and blackbox_exporter, side
# by side; then the earlier plain-HTTP, IP-literal figure as its own row.
# Everything runs in a network namespace whose /etc/resolv.conf names the
# local server, so every tool resolves through it.
#   CHECKS=20000 CONCURRENCY=64 NAMES=1000 bench/probe.sh     (make bench-probe)
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKS=${CHECKS:-20000}
CONCURRENCY=${CONCURRENCY:-64}
NAMES=${NAMES:-1000}
PORT=${PORT:-18080}
BB_PORT=${BB_PORT:-9115}
NS=swbench$$
DOMAIN=bench.test
die() { echo "[bench-probe] $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (a network namespace and a DNS server on port 53 inside it)"
need=()
command -v prometheus-blackbox-exporter >/dev/null || need+=(prometheus-blackbox-exporter)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    echo "[bench-probe] installing ${need[*]} (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin sitewatch-bench

dir=$(mktemp -d)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS" "$dir"
}
trap cleanup EXIT

# The test CA and the two leaves (valid two days; *.bench.test).
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=sitewatch bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
leaf() { # name, key options...
    local name=$1; shift
    ossl req -newkey "$@" -nodes -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=*.$DOMAIN"
    printf 'subjectAltName=DNS:*.%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$DOMAIN" \
        >"$dir/$name.ext"
    ossl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/$name.ext" -out "$dir/$name.pem"
}
leaf ecdsa ec -pkeyopt ec_paramgen_curve:P-256
leaf rsa rsa:2048

# The names: s<n>.bench.test -> 127.0.0.(2 + n % 8), as `Target::url` expects.
for n in $(seq 0 $((NAMES - 1))); do echo "127.0.0.$((2 + n % 8)) s$n.$DOMAIN"; done >"$dir/hosts"
cat >"$dir/blackbox.yml" <<YML
# The same check as sitewatch's: GET, fresh connection, regex on the body.
modules:
  http_regex:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
      fail_if_body_not_matches_regexp: ["healthy"]
      tls_config:
        ca_file: $dir/ca.pem
YML

ip netns add "$NS"
mkdir -p "/etc/netns/$NS"
echo "nameserver 127.0.0.1" >"/etc/netns/$NS/resolv.conf"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
in_ns dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$dir/hosts" \
    --local="/$DOMAIN/" --listen-address=127.0.0.1 --bind-interfaces --port=53 \
    --user=root --pid-file= --cache-size=1000 >"$dir/dnsmasq.log" 2>&1 & pids+=($!)
in_ns target/release/sitewatch-bench target --port "$PORT" \
    --ecdsa-cert "$dir/ecdsa.pem" --ecdsa-key "$dir/ecdsa.key" \
    --rsa-cert "$dir/rsa.pem" --rsa-key "$dir/rsa.key" >"$dir/target.log" 2>&1 & pids+=($!)
in_ns prometheus-blackbox-exporter --config.file="$dir/blackbox.yml" \
    --web.listen-address="127.0.0.1:$BB_PORT" --log.level=error >"$dir/blackbox.log" 2>&1 & pids+=($!)
ready=""
for _ in $(seq 100); do
    if in_ns curl -sf "127.0.0.1:$BB_PORT/-/healthy" >/dev/null &&
        in_ns curl -sf --cacert "$dir/ca.pem" "https://s1.$DOMAIN:$((PORT + 1))/site/1" >/dev/null &&
        in_ns curl -sf --cacert "$dir/ca.pem" "https://s3.$DOMAIN:$((PORT + 2))/site/3" >/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
[ -n "$ready" ] || die "the DNS server, the target or blackbox_exporter did not start (logs in $dir)"
# `ip netns exec` forks: the processes' own pids, for their CPU.
bb=$(pgrep -n -f "blackbox-exporter --config.file=$dir")
tgt=$(pgrep -n -f "sitewatch-bench target --port $PORT")

echo "machine: $(nproc) cores, $(uname -r); $CHECKS checks per tool, concurrency $CONCURRENCY"
echo "== realistic: $NAMES host names through DNS (dnsmasq), half HTTPS (ECDSA P-256 / RSA-2048)"
in_ns target/release/sitewatch-bench probe --port "$PORT" --domain "$DOMAIN" --names "$NAMES" --https \
    --ca-file "$dir/ca.pem" --bare --blackbox "127.0.0.1:$BB_PORT" --blackbox-pid "$bb" \
    --target-pid "$tgt" --checks "$CHECKS" --concurrency "$CONCURRENCY"
echo "== plain HTTP to IP literals (the earlier figure)"
in_ns target/release/sitewatch-bench probe --port "$PORT" --bare \
    --blackbox "127.0.0.1:$BB_PORT" --blackbox-pid "$bb" --target-pid "$tgt" --checks "$CHECKS" --concurrency "$CONCURRENCY"
