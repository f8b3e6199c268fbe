-- async_flow: a flow that drives async tasks concurrently, runs a subflow,
-- and returns a result. Every task and flow run is a coroutine, so there is
-- no async/await: sleeping or waiting simply parks the run.
local mf = require "moonflow"

local fetch = mf.task({ name = "fetch" }, function(city)
  mf.sleep(0.02)                       -- the three fetches overlap
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
  local t0 = mf.now()
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
  -- Three 20 ms fetches and three 10 ms conversions ran concurrently:
  -- about 30 ms in all, where one after another would take 90 ms.
  print("concurrent: " .. tostring(mf.now() - t0 < 0.075))
  local warmest = readings[1]
  for _, r in ipairs(readings) do if r.c > warmest.c then warmest = r end end
  return warmest.city
end)

-- Called from the main chunk, the flow runs to the end and returns.
print("warmest: " .. weather({ "Oslo", "Rome", "Lima" }))

-- A flow can also be submitted like a task, and its State inspected.
local fut = weather:submit({ "Oslo" })
print("submitted flow result: " .. fut:result() .. ", state " .. fut:state().name)
