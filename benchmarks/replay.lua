-- wrk script: replay prepared POST bodies, each sent once.
--   wrk -t T -c C -d D -s benchmarks/replay.lua URL -- BODIES_FILE PATH T
-- BODIES_FILE has one JSON body per line; thread k of T sends lines k, k+T, k+2T, ...
-- When a thread has sent all its lines it sends GET /exhausted, counted apart (never a
-- replayed body: a challenge is single-use, a second send would be a 409).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, path = args[1], args[2]
  bodies = {}
  local i = 0
  for line in io.lines(file) do
    if i % tonumber(args[3]) == id then
      bodies[#bodies + 1] = line
    end
    i = i + 1
  end
  target = path
  next_body = 1
  exhausted = 0
  non2xx = 0
  headers = {["Content-Type"] = "application/json"}
end

function request()
  if next_body > #bodies then
    exhausted = exhausted + 1
    return wrk.format("GET", "/exhausted")
  end
  local body = bodies[next_body]
  next_body = next_body + 1
  return wrk.format("POST", target, headers, body)
end

function response(status, hdrs, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local exhausted_total, non2xx_total, sent_total = 0, 0, 0
  for _, t in ipairs(threads) do
    exhausted_total = exhausted_total + t:get("exhausted")
    non2xx_total = non2xx_total + t:get("non2xx")
    sent_total = sent_total + (t:get("next_body") - 1)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "non2xx": %d, "exhausted": %d, "sent": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    non2xx_total, exhausted_total, sent_total,
    latency:percentile(50), latency:percentile(99), latency.max))
end
