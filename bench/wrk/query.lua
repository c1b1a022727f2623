-- wrk script for POST /api/v1/query: random ids or random rows, one JSON body per request.
-- Environment: HELIOSDB_KEY (API key), BENCH_CASE (select | insert), BENCH_ROWS (id range).
local key = os.getenv("HELIOSDB_KEY")
local case = os.getenv("BENCH_CASE") or "select"
local rows = tonumber(os.getenv("BENCH_ROWS") or "10000")

wrk.method = "POST"
wrk.path = "/api/v1/query"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("seed", #threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

local SELECT = '{"sql":"SELECT * FROM bench_items WHERE id = $1","params":[%d]}'
local INSERT = '{"sql":"INSERT INTO bench_inserts (name, value) VALUES ($1, $2)",'
  .. '"params":["item-%d",%d.5]}'

function request()
  counter = counter + 1
  if case == "insert" then
    return wrk.format(nil, nil, nil, string.format(INSERT, counter, math.random(1, 1000000)))
  end
  return wrk.format(nil, nil, nil, string.format(SELECT, math.random(1, rows)))
end

-- The first failure each thread sees, so a broken route shows why instead of a fast 4xx.
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
