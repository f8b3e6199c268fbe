-- Known item 14: flows with control options (retries, timeout, hooks,
-- retry_condition, log_prints) ignore the final-state rules: a flow that
-- returns a cancelled run's future ends FAILED instead of CANCELLED
-- (rule 2); the same flow without options ends CANCELLED.
-- Expected: CANCELLED in every line.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local sleeper = mf.task(function() mf.sleep(0.05) end)
local function body()
  local f = sleeper:submit()
  f:cancel()
  return { f }
end
for _, opts in ipairs { {}, { retries = 1, retry_delay = 0 }, { timeout = 30 },
    { on_failure = { function() end } }, { log_prints = true } } do
  local names = {}
  for k in pairs(opts) do names[#names + 1] = k end
  print(table.concat(names, ","), mf.flow(opts, body):run().type)
end
