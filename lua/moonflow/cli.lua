-- moonflow.cli: what the `moonflow` program does with a script: run its
-- main chunk as a run, wait for every run still going, report failures.
local core = require "moonflow.core"
local report = require "moonflow.report"

local M = {}

-- Submits chunk(...) as the run "main" and returns its Future.
function M.start(chunk, ...)
  local main = core.new_task(chunk, "main", { _quiet = true }, false)
  local fut = main:submit(...)
  core.rename(fut, "main")
  return fut
end

-- Reports main's failure; returns 1 if it failed, else 0.
local function report_main(fut)
  local state = fut:state()
  if state.type == "COMPLETED" then return 0 end
  if state.type == "CANCELLED" then return 1 end -- Ctrl-C said so already
  io.stderr:write("moonflow: ", report.safe_failure(fut), "\n")
  return 1
end

-- Waits for every run still going, reports the unhandled failures of runs
-- outside any flow; returns the exit status (main: its Future, or nil).
function M.finish(main)
  core.run()
  local status = main and report_main(main) or 0
  for _, failed in ipairs(core.unhandled_root()) do
    if failed ~= main then
      io.stderr:write("moonflow: ", report.safe_failure(failed, { unhandled = true }), "\n")
      status = 1
    end
  end
  return status
end

-- Runs chunk(...) as the run "main"; returns the process exit status.
function M.run_script(chunk, ...)
  return M.finish(M.start(chunk, ...))
end

-- moonflow -i FILE: runs the main chunk to its end (runs it started keep
-- going), reports if it failed; the REPL comes next.
function M.run_before_repl(chunk, ...)
  local fut = M.start(chunk, ...)
  fut:wait()
  report_main(fut)
  return 0
end

return M
