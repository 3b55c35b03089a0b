#!/usr/bin/env bash
# Instructions per request: `klaxon serve` (embedded store, no Mattermost, as run.sh; with
# CARDS=1 every card posted to the tests' fake Mattermost, as storm.sh) under valgrind's
# callgrind, with wrk sending Particle alerts. Unlike requests per second, the count
# does not depend on how fast the machine is at the moment (this VM's speed swings by 2x within
# an hour), so it compares two builds exactly, one after the other, even on a busy machine.
# What it leaves out: waiting (fsync, locks) and the kernel's work (syscalls, TCP).
#
# Counted: everything the server's threads execute from the moment a warm-up ends until the
# notifier has finished every job of the measured requests, divided by the alerts (or repeats)
# stored in that time. The load runs slowly under valgrind (about 100 requests/s), so groups of
# commits are smaller than in a real storm, and work that runs on a clock (notifier loops
# polling, the checkpointer every 20 ms) weighs about 100 times more per request than at full
# speed; the script prints that idle rate (measured for 10 s before the load) so that it can be
# told apart. Compare builds with it, not with run.sh's figures. Repeated runs of one build
# differ by about 3 %: the groups the writer commits depend on timing.
#
#   lib/benches/load/instructions.sh                 # the release build, 64 senders, new alerts
#   BIN=/path/to/klaxon MODE=repeat SENDERS=8 DURATION=20 lib/benches/load/instructions.sh
#   KEEP=1 ...                                        # keeps the callgrind file (callgrind_annotate)
#   CARDS=1 DURATION=20 lib/benches/load/instructions.sh   # per carded alert
set -euo pipefail
cd "$(dirname "$0")/../../.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
MODE="${MODE:-new}"
SENDERS="${SENDERS:-64}"
DURATION="${DURATION:-30}"
CARDS="${CARDS:-}"
[ -z "$CARDS" ] || cargo build --release -q -p klaxon-tests --bin fake-mattermost
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p klaxon
  BIN=target/release/klaxon
fi
DIR=$(mktemp -d)
source lib/benches/load/serve.sh
particle_only_config
FAKE=""
[ -z "$CARDS" ] || fake_mattermost_config
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
OUT="$DIR/callgrind.out"
RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" serve --config "$DIR/klaxon.toml" \
  --data-dir "$DIR/data" --addr "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
PID=$!
trap 'kill $PID $FAKE 2>/dev/null; wait $PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$DIR"' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.2
done
# What the database holds: stored alerts (new alerts, or the one alert's occurrences) and the
# notification jobs still waiting.
count() {
  python3 - "$DIR/data/klaxon.db" "$MODE" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
if sys.argv[2] == "new":
    n = db.execute("SELECT COUNT(*) FROM items WHERE pk LIKE 'alert#%'").fetchone()[0]
else:
    n = db.execute("SELECT COALESCE(SUM(json_extract(data, '$.occurrences')), 0) FROM items WHERE pk LIKE 'alert#%'").fetchone()[0]
waiting = db.execute("SELECT COUNT(*) FROM queue_messages WHERE queue = 'notify'").fetchone()[0]
print(n, waiting)
PY
}
settle() {
  for _ in $(seq 1 120); do
    read -r _ waiting < <(count)
    [ "$waiting" = 0 ] && return 0
    sleep 1
  done
  echo "the notifier did not finish its jobs within 2 minutes" >&2
  return 1
}
callgrind_control -z "$PID" >/dev/null 2>&1
sleep 10
callgrind_control -d "$PID" >/dev/null 2>&1
idle=$(grep -h '^summary:' "$OUT.1" | awk '{print $2}')
MODE=$MODE wrk -t1 -c"$SENDERS" -d5s -s lib/benches/load/particle.lua "http://127.0.0.1:$PORT" >/dev/null
settle
read -r before _ < <(count)
callgrind_control -z "$PID" >/dev/null 2>&1
started=$(date +%s.%N)
RESULT=$(MODE=$MODE wrk -t1 -c"$SENDERS" -d"${DURATION}s" -s lib/benches/load/particle.lua "http://127.0.0.1:$PORT" | grep '^RESULT')
settle
callgrind_control -d "$PID" >/dev/null 2>&1
window=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started")
read -r after _ < <(count)
total=$(grep -h '^summary:' "$OUT.2" | awk '{print $2}')
n=$((after - before))
echo "$RESULT" | sed "s/^RESULT/senders=$SENDERS under valgrind:/"
echo "instructions: $total for $n $( [ "$MODE" = new ] && echo 'new alerts' || echo repeats ) in ${window} s: $((total / n)) per request"
[ -z "$CARDS" ] || echo "cards the fake Mattermost received in all (the warm-up's too): $(cards)"
echo "idle, for comparison: $((idle / 10)) instructions per second (so about $(python3 -c "print(round($idle / 10 * $window / $n))") per request of the above)"
[ -z "${KEEP:-}" ] || echo "callgrind files: $OUT.*"
