-- moonflow: the Lua API (api.md), built on the C core (moonflow.core).
--
-- The hot paths (submit, map, waiting, results) are in C; this file defines
-- tasks and flows from their options, and the functional forms.
local core = require "moonflow.core"
local flow_body = require("moonflow.flow").body
local control = require "moonflow.control"
local log = require "moonflow.log"
local runners = require "moonflow.runners"

-- What the engine calls into Lua for: the hooks of a run, and print inside
-- a run whose task has log_prints (set for the step, never outside it).
core.set_hooks_runner(control.run_hooks)
core.set_print_logger(log.print)

local M = {}
local Task = core.Task

M.version = core.version
M._VERSION = "moonflow " .. core.version -- as Lua's own _VERSION
M.Error = core.Error
M.sleep = core.sleep
M.now = core.now
M.context = core.context
M.run = core.run
M.quote = core.quote
M.unmapped = core.unmapped
M.allow_failure = core.allow_failure
M.limit = core.limit
M.rate_limit = core.rate_limit
M.limits = core.limits
M.log = { debug = log.debug, info = log.info, warning = log.warning,
          error = log.error }
-- I/O inside runs (moonflow.io).
for name, value in pairs(require "moonflow.io") do M[name] = value end

local function usage(fmt, ...)
  error(core.error("UsageError", string.format(fmt, ...)), 0)
end

-- {====== Options ======

-- Each option's check returns nil when the value is right, or what it
-- should have been.
-- Options are read raw (next, not pairs): a table's own __pairs has no
-- say in what a task is.
local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

-- Options are copied when a task is defined, lists too: changing the
-- caller's tags list afterwards changes nothing.
local function copy_options(opts)
  local c = {}
  for k, v in next, opts do
    if type(v) == "table" and getmetatable(v) == nil then v = copy(v) end
    c[k] = v
  end
  return c
end

local function is_type(t)
  return function(v) if type(v) ~= t then return "a " .. t end end
end

-- Lists are read raw: their metatables have no say.
local function is_list_of(t, what)
  return function(v)
    if type(v) ~= "table" then return "a list of " .. what end
    for i = 1, rawlen(v) do
      if not t(rawget(v, i)) then return "a list of " .. what end
    end
  end
end

local function is_string(v) return type(v) == "string" end
local function is_runner(v)
  if not runners.is_runner(v) then return "a Runner (mf.runners.*)" end
end
-- wait_for: futures, FutureLists, or either through allow_failure.
local function is_future(v)
  return core.is_future(v) or core.is_future_list(v) or core.is_allowed(v)
end

local function is_function(v) return type(v) == "function" end
local function is_delay(v) return type(v) == "number" and v >= 0 end

local function count_between(low, high)
  return function(v)
    if math.type(v) ~= "integer" or v < low or v > high then
      return string.format("an integer from %d to %d", low, high)
    end
  end
end

local function positive(v)
  if type(v) ~= "number" or not (v > 0) then return "a number > 0" end
end

local function fraction(v)
  if type(v) ~= "number" or not (v >= 0 and v <= 1) then
    return "a number from 0 to 1"
  end
end

local function delays(v)
  if is_delay(v) then return end
  if type(v) == "table" and rawlen(v) > 0 then
    for i = 1, rawlen(v) do
      if not is_delay(rawget(v, i)) then
        return "a number >= 0, or a list of them"
      end
    end
    return
  end
  return "a number >= 0, or a list of them"
end

local function name_template(v)
  if type(v) ~= "string" and type(v) ~= "function" then
    return "a string or a function"
  end
end

local hook_list = is_list_of(is_function, "functions")

-- Options of both tasks and flows.
local common_options = {
  name = function(v)
    -- The engine keeps names as C strings.
    if type(v) ~= "string" or v:find("\0", 1, true) then
      return "a string without NUL bytes"
    end
  end,
  retries = count_between(0, 1000000),
  retry_delay = delays,
  retry_jitter = fraction,
  retry_condition = is_type("function"),
  timeout = positive,
  log_prints = is_type("boolean"),
  on_running = hook_list,
  on_completion = hook_list,
  on_failure = hook_list,
  on_cancellation = hook_list,
}

local function options(extra)
  local all = copy(common_options)
  for k, v in pairs(extra) do all[k] = v end
  return all
end

local task_options = options {
  tags = is_list_of(is_string, "strings"),
  wait_for = is_list_of(is_future, "futures (or FutureLists)"),
  return_state = is_type("boolean"),
  task_run_name = name_template,
  runner = is_runner,
  -- Results kept and reused (bindings/cache.c, lua/moonflow/cache.lua).
  cache_key = is_type("function"),
  cache_expiration = positive,
  refresh_cache = is_type("boolean"),
  cache = is_type("boolean"),
  persist_result = is_type("boolean"),
}

local flow_options = options { on_crashed = hook_list, task_runner = is_runner }

-- Options of api.md whose behaviour is not built yet: refusing them is
-- better than accepting them and doing nothing.
local later_options = {
}

-- Prefect's names for options that moonflow names otherwise.
local prefect_names = {
  retry_delay_seconds = "retry_delay", timeout_seconds = "timeout",
  retry_jitter_factor = "retry_jitter", cache_key_fn = "cache_key",
  flow_run_name = "task_run_name",
}

-- Edit distance (insertions, deletions, substitutions, swaps of two
-- neighbours), for "did you mean".
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local best = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        best = math.min(best, d[i - 2][j - 2] + 1)
      end
      d[i][j] = best
    end
  end
  return d[#a][#b]
end

-- The known option an unknown key most likely meant, or nil.
local function suggestion(key, known)
  if type(key) ~= "string" then return nil end
  local alias = prefect_names[key]
  if alias and known[alias] then
    return alias, " (Prefect's " .. key .. ")"
  elseif alias and later_options[alias] then
    return alias, " (Prefect's " .. key .. "; not supported by this version of moonflow)"
  end
  local lower = key:lower():gsub("-", "_")
  local best, best_d
  for name in pairs(known) do
    local d = distance(lower, name)
    if d <= math.max(1, #name // 4) and (not best_d or d < best_d or d == best_d and name < best) then
      best, best_d = name, d
    end
  end
  return best, ""
end

local function check_options(opts, known, what)
  if type(opts) ~= "table" then
    usage("%s options must be a table, got %s", what, type(opts))
  end
  for key, value in next, opts do
    local check = known[key]
    if check == nil then
      if later_options[key] then
        usage("%s option '%s' is not supported by this version of moonflow",
          what, tostring(key))
      end
      local meant, why = suggestion(key, known)
      if meant then
        usage("unknown %s option '%s': did you mean '%s'?%s", what,
          tostring(key), meant, why)
      end
      usage("unknown %s option '%s'", what, tostring(key))
    end
    local expected = check(value)
    if expected then
      usage("%s option '%s' must be %s, got %s", what, key, expected,
        type(value))
    end
  end
end

-- The definition's place, "file.lua:12": the default name.
local function default_name(fn)
  local info = debug.getinfo(fn, "S")
  local file = info.short_src:match("([^/\\]+)$") or info.short_src
  return string.format("%s:%d", file, info.linedefined)
end

local function split_args(kind, a, b)
  if type(a) == "function" and b == nil then return {}, a end
  if type(a) == "table" and type(b) == "function" then return a, b end
  usage("mf.%s expects (fn) or (opts, fn), got (%s, %s)", kind, type(a),
    type(b))
end

-- }======

-- Tasks and flows remember the user's function, for :with().
local user_functions = setmetatable({}, { __mode = "k" })

-- Makes the Task: the engine takes its control options (retries, timeout,
-- hooks: the run's policy); a task_run_name wraps the body to name the run.
local function make(fn, body, opts, is_flow)
  local name = opts.name or default_name(fn)
  if opts.task_run_name then
    body = control.named_body(body, opts.task_run_name, fn)
  end
  return core.new_task(body, name, opts, is_flow)
end

local function new_task(opts, fn)
  check_options(opts, task_options, "task")
  local task = make(fn, fn, copy_options(opts), false)
  user_functions[task] = fn
  return task
end

local function new_flow(opts, fn)
  check_options(opts, flow_options, "flow")
  local flow = make(fn, flow_body(fn), copy_options(opts), true)
  user_functions[flow] = fn
  return flow
end

function M.task(a, b) return new_task(split_args("task", a, b)) end

-- The keys of kept results: the user's function behind a task, and a
-- warning for a run whose inputs have no stable key.
core.set_cache_keyer(require("moonflow.cache").keyer(
  function(task) return user_functions[task] end, log.warning))
function M.flow(a, b) return new_flow(split_args("flow", a, b)) end

-- {====== Task runners (moonflow.runners) ======

M.runners = { coroutines = runners.coroutines, threads = runners.threads,
  processes = runners.processes, redis = runners.redis }

-- What a Task that travels to a worker takes along.
runners.init {
  task_info = function(task)
    local fn, name, opts, is_flow = core.task_info(task)
    return user_functions[task] or fn, name, opts, is_flow
  end,
  new_task = new_task,
  new_flow = new_flow,
}

-- mf.configure{ task_runner = runner, slice = s, preempt = b }: the
-- runner of runs that neither their task nor an enclosing flow chose.
function M.configure(opts)
  if type(opts) == "table" and opts.task_runner ~= nil then
    if not runners.is_runner(opts.task_runner) then
      usage("configure option 'task_runner' must be a Runner (mf.runners.*), got %s",
        type(opts.task_runner))
    end
    local rest = copy(opts)
    rest.task_runner = nil
    core.configure(rest)
    core.set_default_runner(opts.task_runner)
    return
  end
  return core.configure(opts)
end

-- }======

-- The per-call options a flow's :with also takes.
local per_call_options = { wait_for = task_options.wait_for,
  return_state = task_options.return_state }

-- t:with(opts): a copy with options replaced.
function Task.with(self, opts)
  if not core.is_task(self) then usage("use t:with(opts), not t.with(opts)") end
  if type(opts) ~= "table" then
    usage("with expects a table of options, got %s", type(opts))
  end
  local fn, name, old, is_flow = core.task_info(self)
  fn = user_functions[self] or fn
  local merged = copy(old)
  merged.name = merged.name or name
  for k, v in next, opts do merged[k] = v end
  if not is_flow then return new_task(merged, fn) end
  local flow_opts, per_call = copy(merged), {}
  for k, check in pairs(per_call_options) do
    per_call[k], flow_opts[k] = flow_opts[k], nil
    if per_call[k] ~= nil then
      local expected = check(per_call[k])
      if expected then
        usage("flow option '%s' must be %s, got %s", k, expected,
          type(per_call[k]))
      end
    end
  end
  check_options(flow_opts, flow_options, "flow")
  local checked = copy_options(flow_opts)
  for k, v in pairs(per_call) do checked[k] = v end
  local flow = make(fn, flow_body(fn), checked, true)
  user_functions[flow] = fn
  return flow
end

-- f:run(...): run it to the end and return its final State.
function Task.run(self, ...)
  if not core.is_task(self) then
    usage("expected a Task or Flow as self (use f:run(...), not f.run(...)), got %s",
      type(self))
  end
  local fut = self:submit(...)
  if core.is_state(fut) then return fut end -- return_state: it waited
  -- The caller takes the State: handled from the start, even if the caller
  -- ends before the run does.
  core.mark_handled(fut)
  fut:wait()
  return fut:state()
end

function M.submit(task, ...) return Task.submit(task, ...) end
function M.map(task, ...) return Task.map(task, ...) end
function M.result(fut, ...)
  if not core.is_future(fut) then
    usage("mf.result expects a Future, got %s", type(fut))
  end
  return fut:result(...)
end

function M.wait(futures, timeout)
  if core.is_future(futures) then futures = { futures } end
  if type(futures) ~= "table" then
    usage("mf.wait expects a list of futures, got %s", type(futures))
  end
  return core.wait(futures, timeout)
end

-- mf.as_completed(futures, timeout): the futures already final first,
-- then each one as it finishes.
function M.as_completed(futures, timeout)
  if core.is_future(futures) then futures = { futures } end
  if type(futures) ~= "table" then
    usage("mf.as_completed expects a list of futures, got %s", type(futures))
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    usage("timeout must be a number >= 0, got %s", tostring(timeout))
  end
  local ready, pending, seen = {}, {}, {}
  for i, fut in ipairs(futures) do
    if not core.is_future(fut) then
      usage("element %d is not a Future (%s)", i, type(fut))
    end
    if not seen[fut] then
      seen[fut] = true
      if fut:done() then ready[#ready + 1] = fut
      else pending[#pending + 1] = fut end
    end
  end
  local total = #ready + #pending
  local deadline = timeout and core.now() + timeout
  -- Done callbacks fire in the order runs finish: they queue the futures.
  local finished, unfinished = ready, #pending
  for _, fut in ipairs(pending) do
    core.watch(fut, function(f)
      finished[#finished + 1] = f
      unfinished = unfinished - 1
    end)
  end
  local next_index = 1
  return function()
    while next_index > #finished do
      if unfinished == 0 then return nil end
      local remaining = deadline and math.max(0, deadline - core.now())
      local waiting = {}
      for _, fut in ipairs(pending) do
        if not fut:done() then waiting[#waiting + 1] = fut end
      end
      if not core.wait_any(waiting, remaining) then
        error(core.error("Timeout", string.format("%d (of %d) futures unfinished",
          unfinished, total)), 0)
      end
      -- The callbacks of the runs that just finished run from the
      -- scheduler; let it run them before looking again.
      if next_index > #finished and unfinished > 0 then core.sleep(0) end
    end
    local fut = finished[next_index]
    next_index = next_index + 1
    return fut
  end
end

return M
