#!/usr/bin/env bash
# Runs Klaxon's whole test suite on a fresh machine.
#
#  1. installs moto server into a local venv (.venv-test/) if it is not there yet;
#  2. starts it (tests/moto_server.py) on a free loopback port and waits until it answers;
#  3. runs `cargo test --workspace` with KLAXON_TEST_AWS_ENDPOINT pointing at it, so the
#     DynamoDB and SQS adapters are tested over the real wire protocols;
#  4. lints the SAM template (infra/template.yaml) with cfn-lint, offline, and checks the deploy
#     recipe with SAM CLI's own code (tests/sam_check.py, SAM in its own venv .venv-sam/);
#  5. stops moto again, whatever happened.
#
# Extra arguments go to `cargo test` (e.g. `tests/run.sh -p klaxon`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${KLAXON_TEST_VENV:-.venv-test}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
CFN_LINT_VERSION="${CFN_LINT_VERSION:-1.58.0}"

log() { printf '[tests/run.sh] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/cfn-lint" ]; then
  log "installing moto[server]==$MOTO_VERSION and cfn-lint==$CFN_LINT_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION"
fi

# A free port: bind to port 0 and let the kernel choose.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
MOTO_LOG=$(mktemp -t klaxon-moto.XXXXXX.log)
# tests/moto_server.py runs moto's own application one request at a time (see why there).
"$VENV/bin/python" tests/moto_server.py 127.0.0.1 "$PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
cleanup() {
  kill "$MOTO_PID" 2>/dev/null || true
  wait "$MOTO_PID" 2>/dev/null || true
}
trap cleanup EXIT

ENDPOINT="http://127.0.0.1:$PORT"
answers() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$ENDPOINT/moto-api/" 2>/dev/null; }
for _ in $(seq 1 100); do
  if ! kill -0 "$MOTO_PID" 2>/dev/null; then
    log "moto server exited early:"; cat "$MOTO_LOG" >&2; exit 1
  fi
  if answers; then break; fi
  sleep 0.1
done
answers || { log "moto server did not answer on $ENDPOINT"; cat "$MOTO_LOG" >&2; exit 1; }
log "moto server $MOTO_VERSION (pid $MOTO_PID) on $ENDPOINT"

export KLAXON_TEST_AWS_ENDPOINT="$ENDPOINT"
# The AWS SDK must never reach for real credentials or a real region in tests.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

log "linting infra/template.yaml with cfn-lint"
"$VENV/bin/cfn-lint" infra/template.yaml

# SAM CLI pins boto3 versions that clash with moto's, so it gets its own venv.
SAM_VENV="${KLAXON_SAM_VENV:-.venv-sam}"
SAM_VERSION="${SAM_VERSION:-1.170.0}"
if [ ! -x "$SAM_VENV/bin/sam" ]; then
  log "installing aws-sam-cli==$SAM_VERSION into $SAM_VENV"
  python3 -m venv "$SAM_VENV"
  "$SAM_VENV/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_VERSION"
fi
log "checking the deploy recipe with SAM CLI's own parser and sam validate --lint"
SAM_CLI_TELEMETRY=0 "$SAM_VENV/bin/python" tests/sam_check.py

cargo test --workspace "$@"
