#!/usr/bin/env bash
# Alert storm: a real HTTP load generator (wrk) against `klaxon serve` on the embedded store,
# with the notifier posting every card to a fake Mattermost (its own process, the tests' fake),
# exactly as in production but on one machine. Prints the intake figures (accepted/s, p50/p99,
# non-2xx), then how long after the storm's end the last card arrived and cards per second.
#
#   lib/benches/load/storm.sh                        # 60 s, 64 senders, new Particle alerts
#   DURATION=20 SENDERS=8 lib/benches/load/storm.sh
#   SOURCE=mattermost MODE=repeat lib/benches/load/storm.sh
#   IDS=counted lib/benches/load/storm.sh   # ids as sent before 2026-12-01 (see common.lua)
#
# Bounded: the storm lasts DURATION seconds against 127.0.0.1 only; waiting for cards stops
# after DRAIN_LIMIT seconds (default 120); every process started here is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DURATION="${DURATION:-60}"
SENDERS="${SENDERS:-64}"
MODE="${MODE:-new}"
SOURCE="${SOURCE:-particle}"
DRAIN_LIMIT="${DRAIN_LIMIT:-120}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p klaxon
cargo build --release -q -p klaxon-tests --bin fake-mattermost
DIR=$(mktemp -d)
FAKE=""
PID=""
trap 'kill $FAKE $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
source lib/benches/load/serve.sh
both_sources_config
fake_mattermost_config
start_klaxon warn
echo "storm: ${SOURCE} ${MODE} alerts from ${SENDERS} senders for ${DURATION}s; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
threads=$(( SENDERS < 2 ? 1 : 2 ))
before=$(cards)
MODE=$MODE wrk -t"$threads" -c"$SENDERS" -d"${DURATION}s" --latency -s "lib/benches/load/${SOURCE}.lua" \
  "http://127.0.0.1:$PORT" >"$DIR/wrk.out"
ended=$(date +%s.%N)
grep '^RESULT' "$DIR/wrk.out" | sed 's/^RESULT/intake:/'
accepted=$(grep '^RESULT' "$DIR/wrk.out" | sed 's/.*requests=\([0-9]*\).*non2xx=\([0-9]*\).*/\1 \2/' | awk '{print $1-$2}')
at_end=$(cards)
# Every new alert gets one card; repeats of one alert share one card. wrk does not count the
# requests still in flight when it stops (up to one per sender), which the server accepted too:
# so wait until the count has not moved for a second, and time the last change.
[ "$MODE" = "new" ] && expected=$accepted || expected=1
last=$(cards); last_at=$ended; quiet_since=$(date +%s.%N)
while :; do
  now=$(date +%s.%N); n=$(cards)
  if [ "$n" != "$last" ]; then last=$n; last_at=$now; quiet_since=$now; fi
  if [ "$n" -ge $(( before + expected )) ] && awk -v a="$now" -v b="$quiet_since" 'BEGIN { exit !(a - b > 1) }'; then break; fi
  if awk -v now="$now" -v end="$ended" -v lim="$DRAIN_LIMIT" 'BEGIN { exit !(now - end > lim) }'; then break; fi
  sleep 0.2
done
got=$(( $(cards) - before ))
after=$(awk -v a="$last_at" -v b="$ended" 'BEGIN { printf "%.1f", a - b }')
echo "cards: $got, at least $expected expected (wrk leaves out what was in flight when it stopped; $(( at_end - before )) at the storm's end), the last $after s after the storm's end;" \
  "$(awk -v g="$got" -v d="$DURATION" -v a="$after" 'BEGIN { printf "%d", g / (d + a) }') cards/s over the whole run"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); database $(du -sh "$DIR/data" | cut -f1)"
