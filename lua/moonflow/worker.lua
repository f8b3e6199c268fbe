-- moonflow.worker: the worker side of the threads and processes runners
-- (bindings/worker.c calls start, job and cancel).  A worker is a Lua state
-- with moonflow open on its own engine and loop; each job is a local run
-- there, named as the main side's run, whose body calls the function with
-- the arguments, then waits for the runs it started (as the enclosing flow
-- would have).  So mf.sleep, waits and I/O interleave inside a worker, and
-- what a job submits runs on the worker's own coroutine runner, as a child
-- of the job: cancelled with it.  The answer goes back once the run is
-- final: its results, or its error and traceback, encoded.
local core = require "moonflow.core"
local mf = require "moonflow"
local runners = require "moonflow.runners"
local log = require "moonflow.log"
local describe = require("moonflow.control").describe

local M = {}
local format, pack, unpack = string.format, table.pack, table.unpack

-- The statuses of bindings/runners.h.
local COMPLETED, FAILED, CRASHED, CANCELLED = 0, 1, 2, 3

local jobs = {} -- id -> Future
local contexts = setmetatable({}, { __mode = "k" }) -- Future -> context
local setup_error

-- A job's run.
local function body(fn, ...)
  local results = pack(fn(...))
  core.wait_children()
  return unpack(results, 1, results.n)
end

local plain = core.new_task(body, "job", { _quiet = true }, false)
local logging = core.new_task(body, "job", { _quiet = true, log_prints = true },
  false)

-- mf.context() inside a job's run: the main side's run.
local base_context = mf.context
local function context()
  local current = core.current()
  local ctx = current and contexts[current]
  if not ctx then return base_context() end
  local copy = {}
  for k, v in pairs(ctx) do copy[k] = v end
  copy.log_prints = nil
  return copy
end

local function answer_failure(id, status, err, traceback)
  local ok, parts = pcall(runners.pack, { { err = err, traceback = traceback } },
    { "error" })
  if not ok then -- an error that cannot be copied travels as its text
    parts = runners.pack({ { err = describe(err), traceback = traceback } },
      { "error" })
  end
  core.worker_answer(id, status, unpack(parts))
end

-- Failures of runs a job started that nobody handled: logged, not lost.
local function report_unhandled()
  for _, fut in ipairs(core.unhandled_root()) do
    log.error(format("run %s failed inside a worker and nobody handled it: %s",
      fut.name, describe(fut:result(nil, false))))
  end
end

local function on_done(id)
  return function(fut)
    jobs[id] = nil
    local state = fut:state()
    if state.type == "COMPLETED" then
      local ok, parts = pcall(runners.pack, { pack(fut:result()) }, { "result" })
      if ok then
        core.worker_answer(id, COMPLETED, unpack(parts))
      else
        answer_failure(id, FAILED, parts)
      end
    elseif state.type == "CANCELLED" then
      core.worker_answer(id, CANCELLED)
    else
      answer_failure(id, state.type == "CRASHED" and CRASHED or FAILED,
        fut:result(nil, false), state.traceback)
    end
    report_unhandled()
  end
end

local function refuse_exit()
  error(core.error("UsageError", "os.exit cannot end a task runner's worker: "
    .. "return or raise an error instead"), 2)
end

-- config: the main side's package paths and time slices; then the setup
-- function's parts, if any.
function M.start(config, ...)
  local c = core.decode(config)
  package.path, package.cpath = c.path, c.cpath
  core.configure { slice = c.slice, preempt = c.preempt }
  os.exit = refuse_exit
  mf.context = context
  if select("#", ...) == 0 then return end
  local ok, err = pcall(function(...)
    runners.unpack({ ... }, 1)[1]()
  end, ...)
  if not ok then
    setup_error = err
    log.error("the runner's setup failed in a worker: " .. describe(err))
  end
end

-- A job: its parts are the context, the function and the arguments.
function M.job(id, timeout, ...)
  if setup_error ~= nil then
    return answer_failure(id, FAILED, core.error("UsageError",
      "the runner's setup failed in its worker: " .. describe(setup_error)))
  end
  local ok, values = pcall(runners.unpack, { ... }, 3)
  if not ok then return answer_failure(id, FAILED, values) end
  local ctx, fn, args = values[1], values[2], values[3]
  local task = ctx.log_prints and logging or plain
  if timeout then -- the rest of the attempt's: a worker stops it too
    task = core.new_task(body, "job", { _quiet = true, timeout = timeout,
      log_prints = ctx.log_prints }, false)
  end
  local fut = task:submit(fn, unpack(args, 1, args.n))
  core.rename(fut, ctx.name)
  contexts[fut] = ctx
  jobs[id] = fut
  fut:add_done_callback(on_done(id))
end

function M.cancel(id)
  local fut = jobs[id]
  if fut then fut:cancel() end
end

return M
