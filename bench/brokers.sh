#!/usr/bin/env bash
# Messages/s through Ferry per broker: 1 KB messages published into the
# broker, moved by one Ferry route to another queue/stream/table/topic of the
# same broker, counted there. Ferry runs pinned to CPU 0 (taskset) when it can;
# the load client runs beside it. Prints one line per broker.
#
#   bench/brokers.sh [N] [BROKER...]     (default N=20000, all five brokers)
#
# Needs the services of the machine notes on 127.0.0.1 (RabbitMQ 5672, NATS
# with JetStream 4222, Redis 6379, PostgreSQL 5432 db `test`, Mosquitto 1883).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
shift || true
BROKERS=("$@")
[ ${#BROKERS[@]} -eq 0 ] && BROKERS=(amqp nats redis postgres mqtt)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry-target}"
cargo build --release --quiet --bin ferry --example broker_load
FERRY="$CARGO_TARGET_DIR/release/ferry"
LOAD="$CARGO_TARGET_DIR/release/examples/broker_load"
PIN=()
if command -v taskset >/dev/null; then PIN=(taskset -c 0); fi

route_for() {
  case $1 in
    amqp) cat <<'R'
from:
  amqp: { url: "amqp://guest:guest@127.0.0.1:5672/%2f", queue: ferry_bench_in, prefetch: 256 }
concurrency: 64
buffer: 256
to:
  - amqp: { url: "amqp://guest:guest@127.0.0.1:5672/%2f", routing_key: ferry_bench_out }
R
    ;;
    nats) cat <<'R'
from:
  nats: { url: "nats://127.0.0.1:4222", jetstream: { stream: BENCH_IN, durable: bench, max_ack_pending: 1024 } }
concurrency: 64
buffer: 256
to:
  - nats: { url: "nats://127.0.0.1:4222", subject: BENCH_OUT.x }
R
    ;;
    redis) cat <<'R'
from:
  redis: { url: "redis://127.0.0.1:6379/0", stream: "ferry:bench:in", consumer: bench, batch: 256 }
concurrency: 64
buffer: 256
to:
  - redis: { url: "redis://127.0.0.1:6379/0", stream: "ferry:bench:out" }
R
    ;;
    postgres) cat <<'R'
from:
  postgres:
    url: postgres://postgres@127.0.0.1:5432/test
    query: SELECT id, payload FROM ferry_bench_in WHERE sent_at IS NULL ORDER BY id LIMIT 1000
    key: id
    mark: UPDATE ferry_bench_in SET sent_at = now() WHERE id = $1
    listen: ferry_bench
concurrency: 64
buffer: 256
to:
  - postgres: { url: "postgres://postgres@127.0.0.1:5432/test", table: ferry_bench_out, columns: { id: "{body.id}", payload: "{body.payload}" } }
R
    ;;
    mqtt) cat <<'R'
from:
  mqtt: { url: "mqtt://127.0.0.1:1883", topics: [ferry/bench/in], client_id: ferry-bench, clean_session: true }
concurrency: 64
buffer: 256
to:
  - mqtt: { url: "mqtt://127.0.0.1:1883", topic: ferry/bench/out }
R
    ;;
  esac
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; ferry pinned: ${PIN[*]:-no}; N=$N, 1 KB messages"
for b in "${BROKERS[@]}"; do
  dir=$(mktemp -d)
  mkdir -p "$dir/routes"
  route_for "$b" > "$dir/routes/bench.yaml"
  "$LOAD" setup "$b"
  (cd "$dir" && FERRY_LOG=warn exec "${PIN[@]}" "$FERRY" run --no-watch --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:19099 >/dev/null 2>"$dir/ferry.log") &
  pid=$!
  for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/19099) 2>/dev/null && break; sleep 0.05; done
  "$LOAD" run "$b" "$N" || { echo "$b: failed; ferry log:"; tail -5 "$dir/ferry.log"; }
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  "$LOAD" teardown "$b"
  rm -rf "$dir"
done
