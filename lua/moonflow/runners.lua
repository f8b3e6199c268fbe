-- moonflow.runners: task runners (api.md, "Running work").
--
-- mf.runners.coroutines() runs every run as a coroutine of the main loop.
-- threads{} and processes{} copy: a run on them stays a run of the main
-- engine (its states, attempts, retries, timeouts, limits, hooks are the
-- main side's), and only its attempt's body executes in a worker.  The body
-- of such an attempt is remote_attempt below: it encodes the run's
-- context, its function and its resolved arguments (bindings/codec.h),
-- hands them to a worker through core.remote_call (bindings/runners.c),
-- which parks the run until the worker answers, and turns the answer back
-- into results or the error the function raised.
--
-- Tasks travel too (a task that calls or submits another): a Task is sent
-- as its name, its plain options and an id, and its function and function
-- options (hooks, retry_condition, ...) in the same message afterwards, so
-- that a task whose function refers to the task itself (recursion) travels.
-- The receiving side makes a local Task of it.  A Runner travels as the
-- receiving side's coroutine runner: inside a worker, everything a job
-- submits runs on the worker's own loop.
local core = require "moonflow.core"
local control = require "moonflow.control"

local M = {}
local format, unpack = string.format, table.unpack
local encode, decode = core.encode, core.decode

local function usage(fmt, ...)
  error(core.error("UsageError", format(fmt, ...)), 0)
end

-- {====== Runners ======

local coroutines = core.runner_new("coroutines")

function M.coroutines() return coroutines end

function M.is_runner(v) return getmetatable(v) == "moonflow.Runner" end

local function check(kind, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    usage("mf.runners.%s expects a table of options, got %s", kind, type(opts))
  end
  for key in pairs(opts) do
    if key ~= "workers" and key ~= "setup" then
      usage("unknown option '%s' of mf.runners.%s (known: workers, setup)",
        tostring(key), kind)
    end
  end
  local workers = opts.workers
  if workers ~= nil and (math.type(workers) ~= "integer" or workers < 1
      or workers > 1024) then
    usage("mf.runners.%s: workers must be an integer from 1 to 1024, got %s",
      kind, tostring(workers))
  end
  if opts.setup ~= nil and type(opts.setup) ~= "function" then
    usage("mf.runners.%s: setup must be a function, got %s", kind,
      type(opts.setup))
  end
  return workers, opts.setup
end

local function copying(kind)
  return function(opts)
    local workers, setup = check(kind, opts)
    -- Inside a worker every runner is the worker's own loop.
    if core.is_worker() then return coroutines end
    local cpus, slice, preempt = core.runtime()
    local config = encode({ path = package.path, cpath = package.cpath,
      slice = slice, preempt = preempt })
    return core.runner_new(kind, workers or cpus, config,
      setup and core.pack(setup, "setup"))
  end
end

M.threads = copying("threads")
M.processes = copying("processes")

function M.redis()
  usage("mf.runners.redis is not supported by this version of moonflow "
    .. "(use mf.runners.threads or mf.runners.processes)")
end

-- }======

-- {====== Tasks in messages ======

-- Set by init.lua: task_info(task) -> user function, name, options,
-- is_flow; new_task(opts, fn) and new_flow(opts, fn).
local hooks = {}
function M.init(h) hooks = h end

local function is_function_list(v)
  return type(v) == "table" and getmetatable(v) == nil and #v > 0
    and type(v[1]) == "function"
end

-- A Task in a message: its id (within the message), name, plain options,
-- and the shape of its function options; the functions follow in parts
-- of their own (put_tasks).  s.tasks lists the Tasks met, by id.
local function encode_task(task)
  local s = core.codec_session()
  s.ids = s.ids or {}
  s.tasks = s.tasks or {}
  local id = s.ids[task]
  if not id then
    id = #s.tasks + 1
    s.ids[task], s.tasks[id] = id, task
  end
  local fn, name, opts, is_flow = hooks.task_info(task)
  local data, shape = {}, {}
  for k, v in pairs(opts) do
    if type(k) == "string" and k:sub(1, 1) == "_" then -- internal
    elseif type(v) == "function" then shape[k] = true
    elseif is_function_list(v) then shape[k] = #v
    else data[k] = v end
  end
  data.name = name
  local params
  if type(opts.task_run_name) == "string" then
    params = control.parameter_names(fn)
  end
  return { id = id, data = data, shape = shape, flow = is_flow,
    params = params }
end

local encode_functions = { functions = true, name = "task" }

-- The functions of the Tasks a message met, by id: { fn = ..., opts = {} }
-- in parts, a round at a time (encoding them may meet more Tasks).
local function put_tasks(s)
  local parts, done = {}, 0
  while done < #s.tasks do
    local round, last = {}, #s.tasks
    for id = done + 1, last do
      local fn, _, opts = hooks.task_info(s.tasks[id])
      local fns = {}
      for k, v in pairs(opts) do
        if type(v) == "function" or is_function_list(v) then fns[k] = v end
      end
      round[id] = { fn = fn, opts = fns }
    end
    parts[#parts + 1] = encode(round, encode_functions)
    done = last
  end
  return unpack(parts)
end

-- The receiving side's Task: its function and function options call those
-- of the message, which come afterwards (get_tasks).
local function decode_task(d)
  local s = core.codec_session()
  s.made = s.made or {}
  s.fills = s.fills or {}
  local task = s.made[d.id]
  if task then return task end
  local fill = { opts = {} }
  s.fills[d.id] = fill
  local opts = d.data
  for k, n in pairs(d.shape) do
    if n == true then
      opts[k] = function(...) return fill.opts[k](...) end
    else
      local list = {}
      for i = 1, n do
        list[i] = function(...) return fill.opts[k][i](...) end
      end
      opts[k] = list
    end
  end
  local function fn(...) return fill.fn(...) end
  if d.params then control.set_parameter_names(fn, d.params) end
  task = (d.flow and hooks.new_flow or hooks.new_task)(opts, fn)
  s.made[d.id] = task
  return task
end

local decode_functions = { functions = true, require = true }

local function get_tasks(s, ...)
  for i = 1, select("#", ...) do
    for id, f in pairs(decode((select(i, ...)), decode_functions)) do
      local fill = s.fills and s.fills[id]
      if fill then fill.fn, fill.opts = f.fn, f.opts end
    end
  end
end

core.set_task_parts(put_tasks, get_tasks)

local runner_mt, task_mt = core.runner_metatables()
core.codec_register("moonflow.Runner", runner_mt,
  function(r) return r.kind end,
  function() return coroutines end)
core.codec_register("moonflow.Task", task_mt, encode_task, decode_task)

-- }======

-- {====== The remote attempt ======

local describe = control.describe

-- A worker's answer: true and the results, or false, how it ended and
-- what failed ({ err, traceback } or a message).
local function finish(ok, ...)
  if ok then return ... end
  local status, failure = ...
  local name = core.current().name
  if status == "lost" then
    local message = format("run %s crashed: %s", name, failure)
    core.set_outcome("CRASHED", "Crashed", message)
    error(core.error("Crashed", message), 0)
  elseif status == "cancelled" then
    local message = format("run %s was cancelled in its worker", name)
    core.set_outcome("CANCELLED", "Cancelled", message)
    error(core.error("Cancelled", message), 0)
  elseif status == "crashed" then
    local message = format("run %s crashed in its worker: %s", name,
      describe(failure.err))
    core.set_outcome("CRASHED", "Crashed", message, failure.traceback)
    error(core.error("Crashed", message), 0)
  end
  core.set_outcome("FAILED", "Failed", nil, failure.traceback)
  error(failure.err, 0)
end

-- The body of an attempt on a runner that copies: (runner, the task's
-- function, the resolved arguments).
local function remote_attempt(runner, fn, ...)
  local named = control.named_bodies[fn]
  if named then -- task_run_name: the run is named here, not in the worker
    if core.attempt() == 1 then control.name_run(named.template, named.fn, ...) end
    fn = named.fn
  end
  return finish(core.remote_call(runner, fn, ...))
end

core.set_remote_attempt(remote_attempt)

-- }======

return M
