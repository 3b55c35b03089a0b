-- Shared by the wrk scripts here (loaded with dofile): MODE, per-run random seeds, thread
-- ids (`tid`), and the RESULT line that run.sh and storm.sh read.
mode = os.getenv("MODE") or "new"
local thread_id = 0

-- Each run and each thread draws its own random numbers (wrk starts every Lua state with the
-- same seed, so without this a second run would resend the first run's bodies, which Klaxon
-- answers as redeliveries).
function init(args)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(4)
  f:close()
  math.randomseed(b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216)
end

-- `n` random characters from `alphabet`: ids as senders make them (Particle device ids are 24
-- hex digits, Mattermost post ids 26 of a-z0-9), so that keys land at random places in the
-- store's indexes, as they do in a real storm, not one after another.
function random_id(n, alphabet)
  local out = {}
  for i = 1, n do
    local k = math.random(#alphabet)
    out[i] = alphabet:sub(k, k)
  end
  return table.concat(out)
end
HEX = "0123456789abcdef"
BASE32 = "abcdefghijkmnopqrstuwxyz13456789"
-- IDS=counted: the ids these scripts sent before 2026-12-01 ("dev-<thread>-<n>-<random>"), which
-- land one after another in the store's indexes; only for comparing with figures measured then.
counted_ids = os.getenv("IDS") == "counted"

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT mode=%s requests=%d rps=%.0f non2xx=%d socket_errors=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.1f\n",
    mode, summary.requests, summary.requests / secs, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
