-- wrk script: Mattermost outgoing-webhook form posts (trigger word `#alert`) against
-- `klaxon serve`, in the exact form Mattermost sends.
-- MODE=new: every post names a new problem, so a new alert.
-- MODE=repeat: every post repeats one problem (grouped into one open alert).
-- Every post has its own random post_id, as in Mattermost, so none is taken for a redelivery.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local token = os.getenv("TOKEN") or "load-test-mattermost-token0"

local n = 0

function request()
  n = n + 1
  local post_id, problem = random_id(26, BASE32), "checkout+returns+500s"
  if counted_ids then
    post_id = string.format("p%dx%dx%d", tid or 0, n, math.random(1e9))
  end
  if mode == "new" then
    problem = counted_ids and string.format("freezer+%d+%d+%d+is+warm", tid or 0, n, math.random(1e9))
      or ("freezer+" .. random_id(8, HEX) .. "+is+warm")
  end
  local body = "channel_id=4xp9fdt2pjrnbqkxhq8w1ctmhe&channel_name=town-square&file_ids=&post_id=" .. post_id ..
    "&team_domain=acme&team_id=oiw6xsg1uigqxqzfoinhf8d3ae&text=%23alert+" .. problem ..
    "&timestamp=1795435200&token=" .. token .. "&trigger_word=%23alert&user_id=c9whso3ybtyxjbd6xpwqztmx7c&user_name=alice"
  return wrk.format("POST", "/hooks/mattermost/chat", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end
