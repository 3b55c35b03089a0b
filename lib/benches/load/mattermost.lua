-- wrk script: Mattermost outgoing-webhook form posts (trigger word `#alert`) against
-- `klaxon serve`, in the exact form Mattermost sends.
-- MODE=new: every post names a new problem, so a new alert.
-- MODE=repeat: every post repeats one problem (grouped into one open alert).
-- Every post has its own post_id, as in Mattermost, so none is taken for a redelivery.
local mode = os.getenv("MODE") or "new"
local token = os.getenv("TOKEN") or "load-test-mattermost-token0"
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
  local post_id = string.format("p%dx%dx%d", tid or 0, n, math.random(1e9))
  local problem = (mode == "new") and string.format("freezer+%d+%d+%d+is+warm", tid or 0, n, math.random(1e9)) or "checkout+returns+500s"
  local body = "channel_id=4xp9fdt2pjrnbqkxhq8w1ctmhe&channel_name=town-square&file_ids=&post_id=" .. post_id ..
    "&team_domain=acme&team_id=oiw6xsg1uigqxqzfoinhf8d3ae&text=%23alert+" .. problem ..
    "&timestamp=1795435200&token=" .. token .. "&trigger_word=%23alert&user_id=c9whso3ybtyxjbd6xpwqztmx7c&user_name=alice"
  return wrk.format("POST", "/hooks/mattermost/chat", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
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
