-- wrk script: Particle ALERT events against `klaxon serve`.
-- MODE=new: every request is a new device, so a new alert.
-- MODE=repeat: every request repeats one device's alert (grouped into one open alert).
-- Each body differs (published_at), so none is taken for a redelivery.
local mode = os.getenv("MODE") or "new"
local key = os.getenv("KEY") or "load-test-key-0123456789"
local thread_id = 0
local n = 0

-- Each run and each thread draws its own random numbers (wrk starts every Lua state with the
-- same seed, so without this a second run would resend the first run's bodies, which Klaxon
-- answers as redeliveries).
function init(args)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(4)
  f:close()
  math.randomseed(b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216)
end

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  n = n + 1
  local device = (mode == "new") and string.format("dev-%d-%d-%d", tid or 0, n, math.random(1e9)) or "storm"
  local body = string.format("event=ALERT&coreid=%s&data=-3.5&published_at=t-%d-%d-%d", device, tid or 0, n, math.random(1e9))
  return wrk.format("POST", "/hooks/particle/freezer", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT mode=%s requests=%d rps=%.0f non2xx=%d socket_errors=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.1f\n",
    mode, summary.requests, summary.requests / secs, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
