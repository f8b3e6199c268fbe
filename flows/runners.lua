-- runners: CPU-bound work on worker threads, and work that may crash in
-- worker processes, with the same tasks and flows as everywhere else.
local mf = require "moonflow"

-- Counts the primes below n: pure Lua, computing without a pause.
local function primes_below(n)
  local count = 0
  for i = 2, n - 1 do
    local prime = true
    for d = 2, math.floor(math.sqrt(i)) do
      if i % d == 0 then prime = false break end
    end
    if prime then count = count + 1 end
  end
  return count
end

local threads = mf.runners.threads { workers = 2 }
local count = mf.task({ name = "count", runner = threads }, primes_below)

-- A parser that sometimes brings its process down: on processes, that
-- run ends CRASHED, its worker is replaced, and a retry goes on.
local processes = mf.runners.processes { workers = 2 }
local parse = mf.task({ name = "parse", runner = processes, retries = 1 },
  function(text)
    if text == "poison" and mf.context().attempt == 1 then
      os.execute("kill -9 " .. io.open("/proc/self/stat"):read("a"):match("^%d+"))
    end
    return #text
  end)

local report = mf.flow({ name = "report" }, function()
  local counts = count:map({ 1000, 10000, 100000 }):result()
  local lengths = parse:map({ "alpha", "poison", "omega" }):result()
  return counts, lengths
end)

local counts, lengths = report()
print("primes below 10^3, 10^4, 10^5: " .. table.concat(counts, ", "))
print("lengths: " .. table.concat(lengths, ", "))
