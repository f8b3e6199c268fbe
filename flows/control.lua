-- control: keep runs under control. A flaky task is retried until it
-- works, a slow one is stopped by its timeout, and a map over a rate-limited
-- API starts its calls evenly spaced.
local mf = require "moonflow"

-- {====== Retries ======

-- Fails on its first two attempts, then works. retries = 3 allows up to
-- four attempts; the delays before retries are taken from the list in
-- turn (its last value repeats).
local fetch = mf.task({
  name = "fetch",
  retries = 3,
  retry_delay = { 0.01, 0.02 },
}, function(url)
  local attempt = mf.context().attempt
  if attempt < 3 then
    print(string.format("fetch %s: attempt %d failed", url, attempt))
    error("connection reset", 0)
  end
  print(string.format("fetch %s: attempt %d worked", url, attempt))
  return "<html>" .. url .. "</html>"
end)

local page = fetch:submit("example.org")
print("page: " .. page:result())

-- One future stands for every attempt; its history shows them.
local names = {}
for i, state in ipairs(page:history()) do names[i] = state.name end
print("states: " .. table.concat(names, ", "))

-- retry_condition decides which errors are worth another attempt.
local strict = mf.task({
  name = "strict",
  retries = 5,
  retry_condition = function(err) return err ~= "bad request" end,
}, function()
  print("strict: attempt " .. mf.context().attempt)
  error("bad request", 0)
end)
local _, err = pcall(strict)
print("strict failed with '" .. err .. "' and was not retried")

-- }======

-- {====== Timeouts ======

-- A run that sleeps too long is stopped at its next yield...
local slow = mf.task({ name = "slow", timeout = 0.05 }, function()
  mf.sleep(10)
  print("never printed")
end)
-- ...and one that never yields is stopped too.
local busy = mf.task({ name = "busy", timeout = 0.05 }, function()
  while true do end
end)
for _, t in ipairs({ slow, busy }) do
  local fut = t:submit()
  local ok, e = pcall(fut.result, fut)
  local state = fut:state()
  print(string.format("%s: ok=%s, error kind %s, state %s/%s", fut.name, tostring(ok),
    e.kind, state.type, state.name))
end

-- A timed-out attempt is retried like any failure.
local tries = 0
local patient = mf.task({ name = "patient", timeout = 0.5, retries = 1 }, function()
  tries = tries + 1
  if tries == 1 then mf.sleep(10) end
  return "finished on attempt " .. mf.context().attempt
end)
print("patient: " .. patient())

-- }======

-- {====== A rate-limited map ======

-- The API allows 20 calls a second: the calls of a map start 0.05 s apart.
mf.rate_limit("api", 20)
local starts = {}
local call_api = mf.task({ name = "call_api", tags = { "api" } }, function(i)
  starts[#starts + 1] = mf.now()
  return i * i
end)

local squares = call_api:map({ 1, 2, 3, 4, 5, 6 }):result()
print("squares: " .. table.concat(squares, " "))
table.sort(starts)
-- Six starts 0.05 s apart span 0.25 s (the times are taken in the calls,
-- which on a busy machine may start some milliseconds after the limit let
-- them: up to 0.02 s of that is allowed for).
print(string.format("%d calls spread over at least 0.25 s: %s", #starts,
  tostring(starts[#starts] - starts[1] >= 0.23)))

-- }======
