-- wrk script for POST /api/v1/vectors/search: cycles through prepared JSON bodies.
-- Environment: HELIOSDB_KEY (API key), BENCH_BODIES (a file with one JSON body per line).
local key = os.getenv("HELIOSDB_KEY")
local path = os.getenv("BENCH_BODIES")

wrk.method = "POST"
wrk.path = "/api/v1/vectors/search"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("seed", #threads)
end

local bodies = {}
local position = 0

function init(args)
  for line in io.lines(path) do
    if #line > 0 then table.insert(bodies, line) end
  end
  -- Threads start at different queries, so they do not search in lockstep.
  position = ((seed or 1) - 1) * math.floor(#bodies / 2)
end

function request()
  position = position % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[position])
end

first_failure = nil

function response(status, headers, body)
  if status ~= 200 and first_failure == nil then
    first_failure = status .. " " .. body
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local failure = thread:get("first_failure")
    if failure then io.write("FAILURE " .. failure .. "\n") end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
