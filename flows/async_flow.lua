-- async_flow: a flow that drives async tasks concurrently, runs a subflow,
-- and returns a result. Every task and flow run is a coroutine, so there is
-- no async/await: sleeping or waiting simply parks the run.
local mf = require "moonflow"

local fetching, most = 0, 0            -- fetches asleep now, and at most
local fetch = mf.task({ name = "fetch" }, function(city)
  fetching = fetching + 1
  most = math.max(most, fetching)
  mf.sleep(0.02)                       -- the fetches overlap
  fetching = fetching - 1
  local temps = { Oslo = 4, Rome = 19, Lima = 22 }
  return temps[city]
end)

local to_fahrenheit = mf.task({ name = "to_fahrenheit" }, function(c)
  mf.sleep(0.01)
  return c * 9 / 5 + 32
end)

-- A subflow: called from inside another flow it parks the caller until done.
local report = mf.flow({ name = "report" }, function(readings)
  local lines = {}
  for _, r in ipairs(readings) do
    lines[#lines + 1] = string.format("%-4s %2d C = %3.0f F", r.city, r.c, r.f)
  end
  return table.concat(lines, "\n")
end)

local weather = mf.flow({ name = "weather" }, function(cities)
  most = 0
  -- Submit everything first; nothing blocks until we ask for results.
  local celsius = fetch:map(cities)
  -- Mapping over a FutureList streams: each conversion starts as soon as its
  -- own fetch is done, and receives that fetch's result.
  local fahrenheit = to_fahrenheit:map(celsius)
  local readings = {}
  for i, city in ipairs(cities) do
    readings[i] = { city = city, c = celsius[i]:result(), f = fahrenheit[i]:result() }
  end
  print(report(readings))
  -- The fetches ran concurrently: all of them were asleep at once (about
  -- 30 ms in all with the conversions, where one after another would take
  -- 90 ms).
  print("fetches asleep at once: " .. most)
  local warmest = readings[1]
  for _, r in ipairs(readings) do if r.c > warmest.c then warmest = r end end
  return warmest.city
end)

-- Called from the main chunk, the flow runs to the end and returns.
print("warmest: " .. weather({ "Oslo", "Rome", "Lima" }))

-- A flow can also be submitted like a task, and its State inspected.
local fut = weather:submit({ "Oslo" })
print("submitted flow result: " .. fut:result() .. ", state " .. fut:state().name)
