-- wrk script: Particle ALERT events against `klaxon serve`.
-- MODE=new: every request is a new device (a random 24-hex-digit id), so a new alert.
-- MODE=repeat: every request repeats one device's alert (grouped into one open alert).
-- Each body differs (published_at), so none is taken for a redelivery.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local key = os.getenv("KEY") or "load-test-key-0123456789"
local n = 0

function request()
  n = n + 1
  local device = "storm"
  if mode == "new" then
    device = counted_ids and string.format("dev-%d-%d-%d", tid or 0, n, math.random(1e9)) or random_id(24, HEX)
  end
  local body = string.format("event=ALERT&coreid=%s&data=-3.5&published_at=t-%d-%d-%d", device, tid or 0, n, math.random(1e9))
  return wrk.format("POST", "/hooks/particle/freezer", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end
