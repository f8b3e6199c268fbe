-- wait_for: order runs that pass no data to each other. A run submitted
-- with wait_for = {futures} starts only after those runs have completed,
-- without receiving their results.
local mf = require "moonflow"

local setup = mf.task({ name = "setup" }, function()
  mf.sleep(0.03)                       -- slow on purpose: the others must wait
  print("setup: create the table")
end)

local write = mf.task({ name = "write" }, function(row)
  mf.sleep(0.1 * row)                  -- rows finish in order 1, 2, 3
  print("write: row " .. row)
  return row
end)

local report = mf.task({ name = "report" }, function()
  print("report: all rows written")
end)

local setup_future = setup:submit()

-- Every write waits for setup, though it takes nothing from it.
local writes = {}
for row = 1, 3 do
  writes[row] = write:with({ wait_for = { setup_future } }):submit(row)
end

-- The report waits for all three writes: wait_for takes any list of futures
-- (and with{wait_for = ...} works for map as well as submit).
report:with({ wait_for = writes }):submit():wait()

-- If an upstream run fails, the waiting run never starts: it ends NotReady.
local broken = mf.task({ name = "broken" }, function() error("disk full", 0) end)
local bad = broken:submit()
local after = write:with({ wait_for = { bad } }):submit(99)
after:wait()
print("after a failed upstream: " .. after:state().name)
local _, err = pcall(after.result, after)
print("its result raises " .. err.kind)
print("the upstream's own error: " .. bad:result(nil, false))
