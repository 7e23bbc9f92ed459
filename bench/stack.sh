# Shared by bench/pipeline.sh and bench/soak.sh: builds, creates the bench
# database, starts a fresh Kafka node (unless BROKER=dev), writes the config
# for $SITES sites every $INTERVAL, and starts the bench target and one
# all-roles sitewatch. Leaves: $dir, $pids, $sw (sitewatch), $tgt, $broker_pid.
# Needs: SITES INTERVAL PORT ADMIN BROKER RUN DB PSQL (set by the caller).
cargo build --release --quiet --bin sitewatch --bin sitewatch-bench
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
if [ "$BROKER" = fresh ]; then
    KAFKA_PORT=${BENCH_KAFKA_PORT:-19192}
    mkdir -p "$dir/kafka"
    KAFKA_HEAP=${KAFKA_HEAP:-1g} scripts/kafka-server "$dir/kafka" "$KAFKA_PORT" "$((KAFKA_PORT + 1))" \
        >"$dir/kafka/broker.log" 2>&1 & broker_pid=$!; pids+=($broker_pid)
    for _ in $(seq 600); do grep -q "Kafka Server started" "$dir/kafka/broker.log" && break; sleep 0.1; done
    grep -q "Kafka Server started" "$dir/kafka/broker.log" \
        || die "the bench broker did not start (see $dir/kafka/broker.log)"
fi
cat >"$dir/base.toml" <<TOML
[postgres]
url = "postgres://sitewatch@127.0.0.1:$PG_PORT/$DB"
pool_size = 8
[kafka]
brokers = "127.0.0.1:$KAFKA_PORT"
group_prefix = "$RUN"
partitions = 6
compression = "${COMPRESSION:-lz4}"
linger = "${LINGER:-25ms}"
[kafka.topics]
created = "${RUN}_created"
succeeded = "${RUN}_succeeded"
failed = "${RUN}_failed"
dlq = "${RUN}_dlq"
[scheduler]
min_interval = "100ms"
coordination = "none"
[checker]
concurrency = ${CONCURRENCY:-512}
[persister]
batch_size = 5000
batch_timeout = "100ms"
[admin]
listen = "$ADMIN"
[log]
level = "warn"
TOML
target/release/sitewatch-bench config --sites "$SITES" --interval "$INTERVAL" --timeout 900ms --port "$PORT" \
    --base "$dir/base.toml" >"$dir/sitewatch.toml"

target/release/sitewatch-bench target --port "$PORT" >/dev/null 2>&1 & tgt=$!; pids+=($tgt)
target/release/sitewatch run --config "$dir/sitewatch.toml" 2>"$dir/sitewatch.log" & sw=$!
pids+=($sw)

