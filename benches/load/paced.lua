-- wrk script for the paced rows of benches/load.sh: every connection waits a random time
-- (uniform, PACE_MS milliseconds on average) after each response before it sends its next
-- request, so the connections do not fire in step and two configs are
-- offered about the same request rate and neither runs at saturation. A saturated proxy
-- serves many requests per event-loop wake-up, so its CPU per request is lower than one
-- that is not; comparing CPU per request is only fair at the same load. Env: PACE_MS.

local pace = tonumber(os.getenv("PACE_MS") or "6")

function init(args)
  math.randomseed(os.time() + (id or 0))
end

function delay()
  return math.floor(math.random() * 2 * pace + 0.5)
end
