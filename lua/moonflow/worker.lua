-- moonflow.worker: the Lua parts of a task runner's worker (the rest is
-- bindings/worker.c).  A worker is a Lua state with moonflow open on its
-- own engine and loop; each job is a local run there, named as the main
-- side's run, whose body calls the function with the arguments, then
-- waits for the runs it started (as the enclosing flow would have).  So
-- mf.sleep, waits and I/O interleave inside a worker, and what a job
-- submits runs on the worker's own coroutine runner, as a child of the
-- job: cancelled with it.
local core = require "moonflow.core"
local mf = require "moonflow"
local log = require "moonflow.log"
local describe = require("moonflow.control").describe

local M = {}
local format, unpack, sunpack = string.format, table.unpack, string.unpack

-- The statuses of bindings/runners.h.
local FAILED = 1

local function finish(...)
  if core.has_children() then core.wait_children() end
  return ...
end

-- A job's run: (the function, its arguments packed).
local function body(fn, args)
  return finish(fn(unpack(args, 1, args.n)))
end

M.task = core.new_task(body, "job", { _quiet = true }, false)
M.logging_task = core.new_task(body, "job", { _quiet = true, log_prints = true },
  false)

-- mf.context() inside a job's run: the main side's run, from the job's
-- context part (bindings/runners.c, put_context).
local function job_context(bytes)
  local id, attempt, _, name, flow_id, flow_name, ntags, at =
    sunpack("<I8I4Bs4s4s4I4", bytes)
  local tags = {}
  for i = 1, ntags do tags[i], at = sunpack("<s4", bytes, at) end
  local ctx = { id = format("%d", id), name = name, attempt = attempt,
    tags = tags }
  if flow_id ~= "" then ctx.flow_run = { id = flow_id, name = flow_name } end
  return ctx
end

local base_context = mf.context
local function context()
  local current = core.current()
  local bytes = current and core.job_context(current)
  if not bytes then return base_context() end
  return job_context(bytes)
end

local setup_error

-- A job that cannot run answers failed with err.
function M.refuse(id, err)
  if setup_error ~= nil then
    err = core.error("UsageError", "the runner's setup failed in its worker: "
      .. describe(setup_error))
  end
  local ok, parts = pcall(core.pack, { err = err }, "error")
  if not ok then parts = core.pack({ err = describe(err) }, "error") end
  core.worker_answer(id, FAILED, parts)
end

-- Failures of runs a job started that nobody handled: logged, not lost.
function M.report_unhandled()
  for _, fut in ipairs(core.unhandled_root()) do
    log.error(format("run %s failed inside a worker and nobody handled it: %s",
      fut.name, describe(fut:result(nil, false))))
  end
end

local function refuse_exit()
  error(core.error("UsageError", "os.exit cannot end a task runner's worker: "
    .. "return or raise an error instead"), 2)
end

-- config: the main side's package paths and time slices; setup: the setup
-- function's message, if any.
function M.start(config, setup)
  local c = core.decode(config)
  package.path, package.cpath = c.path, c.cpath
  core.configure { slice = c.slice, preempt = c.preempt }
  os.exit = refuse_exit
  mf.context = context
  if not setup then return true end
  local ok, err = pcall(function() core.unpack(setup)() end)
  if not ok then
    setup_error = err
    log.error("the runner's setup failed in a worker: " .. describe(err))
  end
  return ok
end

return M
