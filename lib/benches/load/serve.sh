# Shared by run.sh, storm.sh and instructions.sh (sourced).

# Writes "$DIR/klaxon.toml": one Particle source and nothing else (no Mattermost), as the load
# scripts send to.
particle_only_config() {
  cat >"$DIR/klaxon.toml" <<'TOML'
version = 1
[[sources]]
id = "freezer"
kind = "particle"
token = "load-test-key-0123456789"
grouping_window = "24h"
TOML
}

# Starts the release `klaxon serve` on a free loopback port with the configuration
# "$DIR/klaxon.toml" and data in "$DIR/data", logging at the level given (to "$DIR/serve.log"),
# and waits until /healthz answers. Sets PORT and PID.
start_klaxon() {
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  RUST_LOG="$1" target/release/klaxon serve --config "$DIR/klaxon.toml" --data-dir "$DIR/data" \
    --addr "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 50); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$PORT/healthz" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "klaxon serve did not answer /healthz within 5 s; see $DIR/serve.log" >&2
  return 1
}

# Writes "$DIR/klaxon.toml": the Particle source and a Mattermost outgoing-webhook source (trigger
# posts to /hooks/mattermost/chat), and nothing else (no Mattermost to post cards to).
both_sources_config() {
  particle_only_config
  cat >>"$DIR/klaxon.toml" <<'TOML'
[[sources]]
id = "chat"
kind = "mattermost"
token = "load-test-mattermost-token0"
grouping_window = "24h"
TOML
}

# Starts the tests' fake Mattermost (target/release/fake-mattermost, its own process, logging to
# "$DIR/fake.log"; build it first) and appends to "$DIR/klaxon.toml" what makes the notifier post
# every card there, with signed buttons. Sets FAKE (its pid: stop it at the end).
fake_mattermost_config() {
  target/release/fake-mattermost >"$DIR/fake.log" 2>&1 &
  FAKE=$!
  for _ in $(seq 1 50); do grep -q '^url=' "$DIR/fake.log" 2>/dev/null && break; sleep 0.1; done
  local url token channel
  read -r url token channel < <(head -1 "$DIR/fake.log" | sed 's/url=//; s/token=//; s/channel=//')
  cat >>"$DIR/klaxon.toml" <<TOML
[server]
public_url = "https://klaxon.example.com"
signing_secret = "0123456789abcdef0123456789abcdef"
[mattermost]
url = "$url"
bot_token = "$token"
[channels.ops]
channel_id = "$channel"
[routing]
default = "ops"
TOML
}

# The cards the fake Mattermost has received so far.
cards() { tail -1 "$DIR/fake.log" | sed 's/.*cards=//'; }
