-- quickstart: map an async task over a list and print the results.
local mf = require "moonflow"

local fetch = mf.task({ name = "fetch" }, function(n)
  mf.sleep(0.01 * (4 - n))   -- pretend to wait on the network
  return n * n
end)

local pipeline = mf.flow({ name = "pipeline" }, function(items)
  local squares = fetch:map(items):result()
  local total = 0
  for _, v in ipairs(squares) do total = total + v end
  return squares, total
end)

local squares, total = pipeline({ 1, 2, 3 })
print("squares: " .. table.concat(squares, ", "))
print("total: " .. total)
