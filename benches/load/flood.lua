-- wrk script for the bad-signature flood rows of benches/load.sh: every request carries
-- FLOOD_TOKEN with a different signature, so no two requests share a token and each one
-- costs the proxy a full signature verification before it answers 401.
--
-- The signature keeps its length and alphabet (a well-formed token of the right kid and
-- alg); at a quarter of its length one character is set to something other than the
-- original, and the next four carry a per-request counter (64^4 distinct values per wrk
-- thread, threads offset by their own character). Env: FLOOD_TOKEN, FLOOD_PATH, FLOOD_XFF.

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

local head, sig, pre, post, flip, path, headers
local n = 0

function init(args)
  local token = assert(os.getenv("FLOOD_TOKEN"), "FLOOD_TOKEN is not set")
  path = assert(os.getenv("FLOOD_PATH"), "FLOOD_PATH is not set")
  head, sig = token:match("^(.*%.)([^.]+)$")
  assert(head and #sig >= 16, "FLOOD_TOKEN is not a JWT")
  local at = math.floor(#sig / 4)
  local original = sig:sub(at + 1, at + 1)
  -- the thread's own character, never the original one, so no request repeats the token
  local choices = alphabet:gsub(original:gsub("%-", "%%-"), "")
  flip = choices:sub((id or 0) % #choices + 1, (id or 0) % #choices + 1)
  pre = head .. sig:sub(1, at)
  post = sig:sub(at + 6)
  headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["X-Forwarded-For"] = os.getenv("FLOOD_XFF") or "203.0.113.9"
end

local function digit(k)
  local d = k % 64
  return alphabet:sub(d + 1, d + 1)
end

function request()
  n = n + 1
  local k = n
  local counter = digit(k) .. digit(math.floor(k / 64)) .. digit(math.floor(k / 4096)) .. digit(math.floor(k / 262144))
  headers["Authorization"] = "Bearer " .. pre .. flip .. counter .. post
  return wrk.format("GET", path, headers)
end
