-- moonflow.control: the body of a task or flow that has control options:
-- retries, timeout, hooks, task_run_name, log_prints.  Tasks without them
-- run their function directly (the fast path); this body runs one attempt
-- after another inside the same run, so one future stands for them all.
local core = require "moonflow.core"
local log = require "moonflow.log"
local call_keeping_traceback = require("moonflow.flow").call_keeping_traceback

local M = {}

local pack, unpack, format = table.pack, table.unpack, string.format

-- {====== Helpers ======

-- The delay before retry number n (1 for the first retry).
local function retry_delay(opts, n)
  local delay = opts.retry_delay or 0
  if type(delay) == "table" then delay = delay[math.min(n, #delay)] or 0 end
  local jitter = opts.retry_jitter
  if jitter and jitter > 0 then
    delay = delay * (1 + jitter * (2 * math.random() - 1))
  end
  return delay > 0 and delay or 0
end

-- A State as the run will end, for hooks and retry_condition: the run's
-- current State with its type, name and message replaced.
local function provisional(fut, type, name, message)
  local state = fut:state()
  state.type, state.name, state.message = type, name, message
  return state
end

local function run_hooks(kind, hooks, task, fut, state)
  if not hooks then return end
  for _, hook in ipairs(hooks) do
    local ok, err = pcall(hook, task, fut, state)
    if not ok then
      log.error(format("%s hook failed: %s", kind, tostring(err)))
    end
  end
end

-- The parameter names of fn, for "{param}" templates.
local function parameter_names(fn)
  local names = {}
  for i = 1, debug.getinfo(fn, "u").nparams do
    names[i] = debug.getlocal(fn, i)
  end
  return names
end

local function run_name(template, fn, args)
  if type(template) == "function" then
    local name = core.call_callback(template, unpack(args, 1, args.n))
    if type(name) ~= "string" then
      error(core.error("UsageError", format(
        "task_run_name function returned %s, not a string", type(name))), 0)
    end
    return name
  end
  local values = {}
  for i, name in ipairs(parameter_names(fn)) do values[name] = args[i] end
  return (template:gsub("{([%w_]+)}", function(key)
    local value = values[key]
    if value == nil then return "{" .. key .. "}" end
    return tostring(value)
  end))
end

-- }======

-- The body for a task (or flow body) fn with options opts; task() gives
-- the Task object, which exists only once the body was made.
function M.body(fn, opts, task)
  local retries = opts.retries or 0
  return function(...)
    local args = pack(...)
    local fut = core.current()
    if opts.task_run_name then
      core.rename(fut, run_name(opts.task_run_name, opts.original or fn, args))
    end
    local failures = 0
    while true do
      run_hooks("on_running", opts.on_running, task(), fut, fut:state())
      if opts.timeout then core.set_deadline(opts.timeout) end
      local results, traceback =
        call_keeping_traceback(fn, unpack(args, 1, args.n))
      local timed_out = opts.timeout and core.timed_out()
      if opts.timeout then core.clear_deadline() end
      if results[1] and timed_out then
        -- It caught its TimedOut and returned: it still timed out.
        results = pack(false, core.error("TimedOut",
          format("run %s exceeded its timeout", fut.name)))
      end
      if results[1] then
        run_hooks("on_completion", opts.on_completion, task(), fut,
          provisional(fut, "COMPLETED", "Completed"))
        return unpack(results, 2, results.n)
      end
      local err = results[2]
      if core.cancelled() then
        core.cancel_children()
        core.wait_children()
        run_hooks("on_cancellation", opts.on_cancellation, task(), fut,
          provisional(fut, "CANCELLED", "Cancelled", "cancelled"))
        error(err, 0)
      end
      if timed_out then
        -- What the attempt started is cancelled with it.
        core.cancel_children()
        core.wait_children()
      end
      local name = timed_out and "TimedOut" or "Failed"
      local state = provisional(fut, "FAILED", name, tostring(err))
      state.traceback = traceback
      failures = failures + 1
      local again = failures <= retries
      if again and opts.retry_condition then
        local ok, answer = pcall(core.call_callback, opts.retry_condition, err, state)
        if not ok then
          log.error(format("retry_condition failed: %s", tostring(answer)))
        end
        again = ok and answer
      end
      if not again then
        run_hooks("on_failure", opts.on_failure, task(), fut, state)
        core.set_outcome("FAILED", name, nil, traceback)
        error(err, 0)
      end
      log.info(format("attempt %d failed (%s); retrying", failures, tostring(err)))
      core.clear_outcome() -- what the failed attempt chose does not stand
      core.awaiting_retry()
      core.release_slots() -- a run waiting for its retry holds no slot
      core.sleep(retry_delay(opts, failures))
      core.acquire_slots()
      core.next_attempt()
    end
  end
end

-- Whether a task's options need the controlled body.
function M.needed(opts)
  return opts.retries or opts.timeout or opts.task_run_name
    or opts.on_running or opts.on_completion or opts.on_failure
    or opts.on_cancellation or opts.on_crashed or opts.log_prints
end

return M
