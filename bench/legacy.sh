#!/usr/bin/env bash
# End-to-end throughput of the legacy connectors, with real TCP clients
# (bench/legacy_client.py, python3 asyncio):
#   1. frames/s: `lines` TCP source (one-way) → fixed_width → JSON lines file
#   2. messages/s: MLLP source → hl7_to_json → JSON lines file, each message
#      answered with an HL7 ACK before the client sends the next one.
# Usage: bench/legacy.sh [LINES_COUNT] [MLLP_COUNT]   (FERRY_BIN to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-200000}
MLLP=${2:-20000}
if [[ -z "${FERRY_BIN:-}" ]]; then
  cargo build --release --quiet
  FERRY_BIN="${CARGO_TARGET_DIR:-target}/release/ferry"
fi
FERRY_BIN="$(cd "$(dirname "$FERRY_BIN")" && pwd)/$(basename "$FERRY_BIN")"
HL7="../shared/corpus/hl7/ADT-A01-01.hl7"
[[ -f "$HL7" ]] || { echo "missing corpus file $HL7" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(free_port); MP=$(free_port); AP=$(free_port)
DIR=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
mkdir -p "$DIR/routes" "$DIR/connectors"
cat > "$DIR/routes/lines.yaml" <<YAML
from:
  tcp: { listen: "127.0.0.1:$LP", framing: lines }
concurrency: 4
buffer: 256
steps:
  - fixed_width:
      single: true
      fields:
        - { name: account, length: 10 }
        - { name: holder, length: 20 }
        - { name: balance, length: 10, type: decimal, scale: 2 }
        - { name: side, length: 1 }
        - { name: as_of, length: 8, type: date }
        - { name: currency, length: 3 }
to:
  - file: { path: "$DIR/out", name: lines.jsonl, append: true }
YAML
cat > "$DIR/routes/mllp.yaml" <<YAML
from:
  tcp: { listen: "127.0.0.1:$MP", framing: mllp }
concurrency: 8
steps:
  - hl7_to_json: {}
to:
  - file: { path: "$DIR/out", name: hl7.jsonl, append: true }
YAML
(cd "$DIR" && RUST_LOG=warn exec "$FERRY_BIN" run --no-watch --admin-listen "127.0.0.1:$AP" --http-listen "127.0.0.1:0") &
PID=$!
for p in $LP $MP; do
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
echo "nproc $(nproc), $(uname -m), ferry $("$FERRY_BIN" --version 2>/dev/null || echo '(dev)')"
python3 bench/legacy_client.py lines "127.0.0.1:$LP" "$LINES" 4 "$DIR/out/lines.jsonl"
python3 bench/legacy_client.py mllp "127.0.0.1:$MP" "$MLLP" 8 "$HL7"
python3 bench/legacy_client.py mllp "127.0.0.1:$MP" "$((MLLP / 4))" 1 "$HL7"
