-- moonflow.flow: the body of a flow run.
--
-- A flow is a Task whose function is the body built here: it calls the
-- user's function, then waits for every run started inside it (structured
-- concurrency), and chooses the flow's final state by the rules of api.md:
-- its own error first, then the futures and States it returned, then the
-- failures inside it that nobody handled.  Whatever the body decides, the
-- engine owns the rest: a flow that did not complete has the runs it
-- started cancelled and waited for; retries re-run this body; hooks follow.
local core = require "moonflow.core"
local error_text = require("moonflow.show").error_text

local format, pack, unpack = string.format, table.pack, table.unpack

-- Adds to list every future and State in the value: directly, or inside
-- plain tables.
local function collect_outcomes(value, list, seen)
  if core.is_future(value) or core.is_state(value) then
    list[#list + 1] = value
  elseif core.is_future_list(value) then
    -- (its elements are the user's to change: only futures count)
    for _, fut in ipairs(value) do
      if core.is_future(fut) then list[#list + 1] = fut end
    end
  elseif type(value) == "table" and getmetatable(value) == nil
      and not seen[value] then
    seen[value] = true
    for _, v in pairs(value) do collect_outcomes(v, list, seen) end
  end
end

local function returned_outcomes(results)
  local list, seen = {}, {}
  for i = 2, results.n do collect_outcomes(results[i], list, seen) end
  return list
end

-- Rule 2: the states of the futures (and the States) the flow returned.
local function check_returned(outcomes)
  if #outcomes == 0 then return end
  local futures = {}
  for _, o in ipairs(outcomes) do
    if core.is_future(o) then futures[#futures + 1] = o end
  end
  core.wait(futures)
  local cancelled, failed, first_failed = 0, 0, nil
  for _, o in ipairs(outcomes) do
    local state = core.is_future(o) and o:state() or o
    if state.type == "CANCELLED" then
      cancelled = cancelled + 1
    elseif state.type ~= "COMPLETED" then
      failed = failed + 1
      first_failed = first_failed or o
    end
  end
  if cancelled > 0 then
    local message = format("%d/%d states cancelled.", cancelled, #outcomes)
    core.set_outcome("CANCELLED", "Cancelled", message)
    error(core.error("Cancelled", message), 0)
  elseif failed > 0 then
    local message = format("%d/%d states failed.", failed, #outcomes)
    local err
    if core.is_future(first_failed) then
      err = first_failed:result(nil, false)
      core.note_reraise(first_failed, "returned", err)
    else
      -- A State's result(raise_on_failure), not by its field: a State is
      -- a table the user may have written a "result" field into.
      err = core.State.result(first_failed, false)
    end
    core.set_outcome("FAILED", "Failed", message)
    error(err, 0)
  end
end

-- Rule 3: a failure inside the flow that nobody handled fails the flow.
local function check_unhandled()
  local count, first = core.unhandled()
  if count == 0 then return end
  local name = first.name
  local err = first:result(nil, false)
  core.note_reraise(first, "unhandled", err)
  local text = error_text(err)
  local message = format("%d unhandled failed run%s inside the flow; first: %s: %s",
    count, count == 1 and "" or "s", name, text)
  core.set_outcome("FAILED", "Failed", message)
  error(err, 0)
end

-- Calls fn(...) protected; returns xpcall's results, packed, and the
-- traceback of the error, if any.  The error value passes unchanged.
local function call_keeping_traceback(fn, ...)
  local traceback
  local function on_error(err)
    -- (tostring may raise: a __tostring of the user's; err stays as it is.)
    traceback = debug.traceback(error_text(err), 2)
    return err
  end
  local results = pack(xpcall(fn, on_error, ...))
  return results, traceback
end

local function body(fn)
  return function(...)
    local results, traceback = call_keeping_traceback(fn, ...)
    if not results[1] then
      -- Rule 1: the function raised (what it started is then cancelled
      -- and waited for by the engine).
      core.set_outcome("FAILED", "Failed", nil, traceback)
      error(results[2], 0)
    end
    core.wait_children()
    local outcomes = returned_outcomes(results)
    check_returned(outcomes)
    check_unhandled()
    if #outcomes > 0 then
      for i = 2, results.n do results[i] = core.resolve(results[i]) end
    end
    return unpack(results, 2, results.n)
  end
end

return { body = body, call_keeping_traceback = call_keeping_traceback }
