-- moonflow.cli: what the `moonflow` program does with a script: run its
-- main chunk as a run, wait for every run still going, report failures.
local core = require "moonflow.core"

local M = {}

local function describe(fut)
  local state = fut:state()
  local err = fut:result(nil, false)
  local text = state.traceback or tostring(err)
  if state.traceback and type(err) ~= "string" then
    text = tostring(err) .. "\n" .. state.traceback
  end
  return string.format("%s %s: %s", fut.name, state.name, text)
end

-- Runs chunk(...) as the run "main"; returns the process exit status.
function M.run_script(chunk, ...)
  local main = core.new_task(chunk, "main", {}, false)
  local fut = main:submit(...)
  core.rename(fut, "main")
  core.run()
  local status = 0
  if fut:state().type ~= "COMPLETED" then
    io.stderr:write("moonflow: ", describe(fut), "\n")
    status = 1
  end
  for _, failed in ipairs(core.unhandled_root()) do
    if failed ~= fut then
      io.stderr:write("moonflow: unhandled failure: ", describe(failed), "\n")
      status = 1
    end
  end
  return status
end

return M
