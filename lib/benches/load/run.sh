#!/usr/bin/env bash
# Load test: a real HTTP load generator (wrk) against `klaxon serve` on the embedded store.
# Prints, for 1, 8 and 64 concurrent senders, new alerts/s and grouped repeats of one alert/s,
# with p50/p99 latency and the count of non-2xx answers, and after each run the notification
# jobs still waiting in the embedded queue (how far the notifier is behind intake). Bounded: each run lasts DURATION
# seconds against 127.0.0.1 only, and the server is stopped at the end. The server logs errors
# only: with no Mattermost configured it would otherwise write a warning for every job.
#
#   lib/benches/load/run.sh            # needs wrk (apt-get install wrk)
#   DURATION=20 lib/benches/load/run.sh
#   IDS=counted lib/benches/load/run.sh   # ids as sent before 2026-12-01 (see common.lua)
set -euo pipefail
cd "$(dirname "$0")/../../.."
DURATION="${DURATION:-10}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p klaxon
DIR=$(mktemp -d)
source lib/benches/load/serve.sh
particle_only_config
PID=""
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
start_klaxon error
echo "klaxon serve on 127.0.0.1:$PORT, ${DURATION}s per run, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in new repeat; do
  for c in 1 8 64; do
    threads=$(( c < 2 ? 1 : 2 ))
    MODE=$mode wrk -t"$threads" -c"$c" -d"${DURATION}s" --latency -s lib/benches/load/particle.lua \
      "http://127.0.0.1:$PORT" | grep '^RESULT' | sed "s/^RESULT/senders=$c/"
    python3 - "$DIR/data/klaxon.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
waiting = db.execute("SELECT COUNT(*) FROM queue_messages WHERE queue = 'notify'").fetchone()[0]
print(f"  notify queue right after the run: {waiting} jobs waiting")
PY
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); database $(du -sh "$DIR/data" | cut -f1)"
