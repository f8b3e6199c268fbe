-- moonflow.repl: the Lua half of the REPL (bindings/repl.c reads the input).
--
-- Each complete chunk runs as its own run, so `fut:result()` typed at the
-- prompt parks that run while the loop (and everything submitted before)
-- goes on.  Values are printed readably; futures and states as one line.
local core = require "moonflow.core"
local describe = require("moonflow.control").describe

local M = {}

local concat = table.concat

local show = require("moonflow.show").show
local reports = require "moonflow.report"

M.show = show

-- {====== Evaluating chunks ======

-- Compiles a chunk as an expression list first (so `1 + 1` prints 2), then as
-- statements.  Returns fn, or nil and "incomplete", or nil and the error.
local function compile(source)
  -- The values go through an identity function rather than `return f(x)`,
  -- a tail call that would take the chunk's line out of a traceback.
  local fn = load("return (function(...) return ... end)(" .. source .. "\n)", "=stdin")
  if fn then return fn end
  local err
  fn, err = load(source, "=stdin")
  if fn then return fn end
  if err:match("<eof>$") then return nil, "incomplete" end
  return nil, err
end

local chunks = 0        -- chunks run so far
local current = nil     -- the Future of the chunk running now

local function outcome_text(fut)
  local state = fut:state()
  if state.type == "COMPLETED" then
    local results = table.pack(fut:result())
    if results.n == 0 then return nil end
    local parts = {}
    for i = 1, results.n do parts[i] = show(results[i]) end
    return concat(parts, "\t") .. "\n"
  elseif state.type == "CANCELLED" then
    return "interrupted\n"
  end
  return reports.failure(fut) .. "\n"
end

-- Prints how the chunk's run ended; the prompt comes back whatever
-- printing it does (a value's __tostring or __pairs may raise).
local function report(fut, write, ready)
  local ok, text = pcall(outcome_text, fut)
  if not ok then text = "(cannot print the result: " .. describe(text) .. ")\n" end
  current = nil
  if text then pcall(write, text) end
  ready()
end

-- Feeds the source typed so far.  Returns "incomplete" (more lines needed),
-- "error" (reported with write; start over) or "started" (a run executes the
-- chunk; ready() is called when it is final and its result was printed).
function M.feed(source, write, ready)
  local fn, err = compile(source)
  if not fn then
    if err == "incomplete" then return "incomplete" end
    write(err .. "\n")
    return "error"
  end
  -- The chunk is the run's body itself: a traceback ends at its frame
  -- ("stdin:1: in main chunk"), with no frame of moonflow's below it.
  chunks = chunks + 1
  current = core.new_task(fn, "repl", { _quiet = true }, false):submit()
  core.rename(current, "repl-" .. chunks)
  current:add_done_callback(function(fut) report(fut, write, ready) end)
  return "started"
end

-- Ctrl-C: stops the chunk's wait, not the runs it started.
function M.interrupt()
  if not current then return false end
  core.release_children(current)
  current:cancel()
  return true
end

-- Reports failures of background runs that nobody handled.
function M.report_background(write)
  for _, fut in ipairs(core.unhandled_root()) do
    write("[background] " .. reports.safe_failure(fut, { unhandled = true }) .. "\n")
  end
end

-- }======

return M
