-- spec/fuzz/actions.lua: the fuzzer's actions -- each one call (or a short
-- scripted sequence) of moonflow's public API with generated arguments.
-- Actions belong to groups (module, task, flow, future, list, state,
-- limits, context, oracle) that --only selects.  A.act picks one; it is
-- called from the main chunk, run bodies, flows, done callbacks, hooks,
-- retry_condition and task_run_name functions, metamethods, finalizers and
-- coroutines created inside runs.
--
-- Besides "no untyped error" (check.lua), some actions know what the answer
-- must be (the oracle group, and checks after calls): an echo task returns
-- its arguments, a run's error reaches result() unchanged, a cancelled run
-- ends CANCELLED, a flow ends by api.md's rules, invalid options raise.
local check = require "check"
local V = require "values"
local O = require "options"

local A = {}
local mf, hazard, groups_on
local actions = {}
local MAX_NESTING = 3
local nesting = setmetatable({}, { __mode = "k" })
local pack, unpack = table.pack, table.unpack

function A.init(env)
  mf, hazard, groups_on = env.mf, env.hazard, env.groups
end

local function def(group, name, weight, fn)
  actions[#actions + 1] = { group = group, name = name, weight = weight, fn = fn }
end

local call = check.call

-- The methods, taken once from real objects: a junk self then reaches
-- moonflow's own checks (t.submit(x), fut.wait(x)), not Lua's "attempt to
-- call a nil value" in the fuzzer.
local M

-- {====== Pools ======

local function in_run_body(where) return where == "run" or where == "flow" end

-- A flow ends only after every run started inside it is final: checked
-- by a done callback on the flow's future, for the runs its body and its
-- tasks' bodies started.
local function watch_flow(case, id)
  local flow = case.by_id[id]
  if not flow or case.watched[id] then return end
  case.watched[id] = true
  local children = case.flow_children[id]
  pcall(M.Future.add_done_callback, flow, function()
    for _, child in ipairs(children) do
      local ok, done = pcall(M.Future.done, child)
      if ok and not done then
        check.violation("flow", "flow run %s final before run %s it started",
          tostring(flow.name), tostring(child.name))
      end
    end
  end)
end

local function add_future(case, fut, where)
  if not check.is_future(fut) or case.known[fut] then return end
  case.known[fut] = true
  case.futures[#case.futures + 1] = fut
  local ok0, id0 = pcall(function() return fut.id end)
  if ok0 then case.by_id[id0] = fut end
  if in_run_body(where) then
    local ok, ctx = pcall(mf.context)
    if ok and type(ctx) == "table" and type(ctx.flow_run) == "table" then
      local id = ctx.flow_run.id
      case.flow_children[id] = case.flow_children[id] or {}
      local list = case.flow_children[id]
      list[#list + 1] = fut
      watch_flow(case, id)
    end
  end
end

-- The length of a list of futures: a FutureList's by #, which it answers
-- (a map's list makes its Futures only when they are read: raw, it may be
-- empty); any other table's raw (its metatable may be hostile).
local list_len = check.list_len

local function add_list(case, list, where)
  if not check.is_list(list) then return end
  case.lists[#case.lists + 1] = list
  -- A few of its Futures, read through the list (which makes them): the
  -- rest are left unmade, for the lists' own paths.
  for i = 1, math.min(list_len(list), 3) do
    add_future(case, check.list_get(list, i), where)
  end
end

local function add_state(case, st)
  if check.is_state(st) and #case.states < 200 then case.states[#case.states + 1] = st end
end

local function add_error(case, r)
  if check.is_typed(r[1]) and #case.errors < 50 then case.errors[#case.errors + 1] = r[1] end
end


function A.setup_methods()
  local t = mf.task(function(...) return ... end)
  local f = t:submit(1)
  f:wait()
  local l = t:map({ 1 })
  l:wait()
  local st = f:state()
  M = {
    Task = { submit = t.submit, map = t.map, with = t.with, run = t.run,
      __call = debug.getmetatable(t).__call },
    Future = {}, FutureList = { wait = l.wait, result = l.result },
    State = {},
  }
  for _, name in ipairs { "wait", "result", "state", "history", "done", "cancel",
    "add_done_callback" } do
    M.Future[name] = f[name]
  end
  for _, name in ipairs { "is_completed", "is_failed", "is_final", "result" } do
    M.State[name] = st[name]
  end
end

local function pick_task(rng, case)
  if #case.tasks > 0 and rng:chance(0.9) then return V.task(rng, case) end
  return V.any(rng, case, 2)
end

local function pick_future(rng, case)
  if #case.futures > 0 and rng:chance(0.9) then return V.future(rng, case) end
  return V.any(rng, case, 2)
end

local function pick_list(rng, case)
  if #case.lists > 0 and rng:chance(0.9) then return V.list(rng, case) end
  return V.any(rng, case, 2)
end

-- Records what a call returned into the pools.
local function keep(case, r, where)
  for i = 1, math.min(r.n or 0, 8) do
    local v = r[i]
    if check.is_future(v) then add_future(case, v, where)
    elseif check.is_list(v) then add_list(case, v, where)
    elseif check.is_state(v) then add_state(case, v)
    end
  end
end

-- }======

-- {====== Bodies of tasks and flows ======

local function same(a, b)
  if a ~= a and b ~= b then return true end -- NaN
  return rawequal(a, b) and math.type(a) == math.type(b)
end

-- Whether a may be an equal copy of b, as a runner that copies gives back
-- (a run that started while the default runner was a pool: check.lua,
-- copy_window): a table (of the same raised id), a function of the same
-- code.
local function copy_of(a, b)
  local t = type(a)
  if t ~= type(b) then return false end
  if t == "table" then return rawget(a, "fuzz") == rawget(b, "fuzz") end
  if t == "function" then
    local ia, ib = debug.getinfo(a, "S"), debug.getinfo(b, "S")
    return ia.source == ib.source and ia.linedefined == ib.linedefined
  end
  if t == "userdata" then -- a Task or Flow is copied as a new one of its own
    local sa = tostring(a)
    return (sa:find("^<Task ") or sa:find("^<Flow ")) ~= nil and sa == tostring(b)
  end
  return false
end

local function body_outcome(r, case, args)
  local o = r:weighted {
    { 20, "echo" }, { 25, "values" }, { 15, "raise" }, { 10, "futures" },
    { hazard("deep_tables") and 3 or 0, "deep" },
    { hazard("many_values") and 2 or 0, "many" }, { 5, "busy" },
    { 10, "sleep" }, { hazard("yields") and 5 or 0, "yield" },
  }
  if o == "echo" then return unpack(args, 1, args.n)
  elseif o == "values" then
    local v = V.args(r, case)
    return unpack(v, 1, v.n)
  elseif o == "raise" then V.raise(r, case)
  elseif o == "futures" then
    -- (a flow builds a State for each future it returns: not 5000 at a time)
    local l = V.list(r, case)
    if l and list_len(l) > 100 then l = nil end
    return V.future(r, case), V.table(r, case, 3), l
  elseif o == "deep" then
    local t = { V.future(r, case) or 1 }
    for _ = 2, V.deep_depth(r) do t = { t } end
    return t
  elseif o == "many" then
    local n = r:pick { 60, 79, 80, 81, 200 }
    local t = {}
    for i = 1, n do t[i] = i end
    return unpack(t, 1, n)
  elseif o == "busy" then
    local stop = os.clock() + r:float() * 0.003
    while os.clock() < stop do end
    return "busy"
  elseif o == "sleep" then
    call("mf.sleep", mf.sleep, r:float() * 0.005)
    return "slept"
  else
    V.yield("bare")
    return "yielded"
  end
end

-- kind: "run" or "flow" (the where of the actions inside).
local function make_body(rng, case, kind)
  local base = rng:fork()
  local invocations = 0
  return function(...)
    invocations = invocations + 1
    local r = base:fork(invocations)
    if hazard("hijack") and #case.coroutines < 50 then
      case.coroutines[#case.coroutines + 1] = coroutine.running()
    end
    local args = pack(...)
    local stops = check.stops
    for _ = 1, r:int(0, kind == "flow" and 6 or 3) do A.act(r, case, kind) end
    if check.stops > stops and r:chance(0.9) then error(check.last_stop, 0) end
    return body_outcome(r, case, args)
  end
end
A.make_body = make_body

-- }======

-- {====== Generated arguments ======

-- A Future that still stands for a run (its __gc not called by hand), or
-- nil; a list only of such.  (Mostly live ones: a map meeting a collected
-- Future raises; repro/map_raises_midway.lua.)
local function live(f)
  if f == nil or pcall(function() return f:done() end) then return f end
  return nil
end
local function live_list(l)
  if l == nil then return nil end
  for i = 1, list_len(l) do
    local f = check.list_get(l, i)
    if check.is_future(f) and not live(f) then return nil end
  end
  return l
end

-- Big arrays only for the echo task: 5000 runs of a body that computes
-- would make a slow case, not a finding.
local function map_args(rng, case, t)
  local n = rng:weighted { { 5, 0 }, { 50, 1 }, { 30, 2 }, { 10, 3 }, { 2, 65 } }
  local big = hazard("big") and case.runs_left > 6000 and rng:chance(0.03)
    and rawequal(t, case.echo)
  local len = big and rng:pick { 1000, 5000 } or rng:pick { 0, 1, 1, 2, 3, 3, 5, 10 }
  local args = { n = n }
  for i = 1, n do
    local kind = rng:weighted {
      { 40, "array" }, { 10, "list" }, { 8, "future" }, { 8, "unmapped" },
      { 5, "quote" }, { 5, "record" }, { 10, "scalar" }, { 5, "mismatch" },
      { 5, "any" },
    }
    if kind == "array" or kind == "mismatch" then
      local t = {}
      for j = 1, kind == "array" and len or len + 1 do
        t[j] = rng:chance(0.1) and live(V.future(rng, case)) or j
      end
      args[i] = t
    elseif kind == "list" then
      local l = live_list(V.list(rng, case))
      if l and list_len(l) > 100 and not rawequal(t, case.echo) then l = nil end
      args[i] = l
    elseif kind == "future" then args[i] = live(V.future(rng, case))
    elseif kind == "unmapped" then
      local ok, r = call("mf.unmapped", mf.unmapped, V.any(rng, case, 1))
      args[i] = ok and r[1] or nil
    elseif kind == "quote" then
      local t = {}
      for j = 1, len do t[j] = { j } end
      local ok, r = call("mf.quote", mf.quote, t)
      args[i] = ok and r[1] or nil
    elseif kind == "record" then args[i] = { a = 1, b = 2 }
    elseif kind == "scalar" then args[i] = V.scalar(rng, case)
    else args[i] = V.any(rng, case, 1)
    end
  end
  return args, big and len or 0
end

-- A list of futures for mf.wait and as_completed: futures (duplicates),
-- a FutureList, junk, a hostile table.
-- A timeout for waiting on t: with empty_wait off, none when t is an empty
-- table (known: a wait on nothing sleeps its whole timeout under lua5.4).
local function list_timeout(rng, t, where)
  local timeout = V.timeout(rng, where)
  if not hazard("empty_wait") and (type(t) ~= "table"
      or (debug.getmetatable(t) ~= nil and not check.is_list(t))
      or list_len(t) == 0) then
    return nil -- (a __len may say 0 too)
  end
  return timeout
end

local function futures_arg(rng, case, where)
  local kind = rng:weighted {
    { 50, "futures" }, { 15, "list" }, { 5, "single" }, { 5, "empty" },
    { 10, "junk" }, { 10, "mixed" },
  }
  if #case.futures == 0 and not hazard("empty_wait") then return V.scalar(rng, case) end
  if kind == "futures" or kind == "mixed" then
    local t = {}
    for i = 1, rng:int(1, 6) do t[i] = V.future(rng, case) end
    if kind == "mixed" then t[rng:int(1, #t + 1)] = V.any(rng, case, 2) end
    if #t > 1 and rng:chance(0.3) then t[#t + 1] = t[1] end
    return t
  elseif kind == "list" then return V.list(rng, case)
  elseif kind == "single" then return V.future(rng, case)
  elseif kind == "empty" then return hazard("empty_wait") and {} or V.future(rng, case)
  end
  return V.any(rng, case, 1)
end

-- }======

-- {====== The module's functions ======

def("module", "mf.sleep", 6, function(rng, case, where)
  local v = rng:weighted {
    { 30, 0 }, { 30, rng:float() * 0.004 }, { 5, 1e-9 },
    { 15, rng:pick { -1, 0 / 0, -math.huge, "x", {}, true } },
    { 5, "0.001" }, { 5, nil },
  }
  call("mf.sleep", mf.sleep, v)
end)

def("module", "mf.now", 2, function(rng, case, where)
  local ok, r = call("mf.now", mf.now, V.any(rng, case, 2))
  if ok and type(r[1]) ~= "number" then
    check.violation("mf.now", "returned %s", check.repr(r[1]))
  end
end)

def("module", "mf.context", 3, function(rng, case, where)
  local ok, r = call("mf.context", mf.context, V.any(rng, case, 2))
  if not ok or r[1] == nil then return end
  local c = r[1]
  if type(c) ~= "table" or type(c.id) ~= "string" or type(c.name) ~= "string"
      or math.type(c.attempt) ~= "integer" or type(c.tags) ~= "table"
      or (c.flow_run ~= nil and type(c.flow_run) ~= "table") then
    check.violation("mf.context", "malformed context in %s", where)
  end
end)

def("module", "mf.run", 1, function(rng, case, where)
  call("mf.run", mf.run, V.any(rng, case, 2))
end)

def("module", "mf.configure", 2, function(rng, case, where)
  local arg = rng:weighted {
    { 40, { slice = rng:pick { 0.01, 0.001, 0.002, 0.05, 1e-9, 1e-6, 0, -1, 0 / 0,
      "x", "0.01", {} } } },
    -- a slice so long that no tick comes (known: timeouts then stop nothing)
    { hazard("big_slice") and 10 or 0, { slice = rng:pick { 100, 1e300, math.huge } } },
    { 10, { nope = 1 } }, { 10, { [1] = 2 } }, { 10, V.any(rng, case, 1) },
    { 5, { slice = 0.01, store = ":memory:" } },
  }
  call("mf.configure", mf.configure, arg)
  case.configured = true
end)

def("module", "mf.log", 3, function(rng, case, where)
  local level = rng:pick { "debug", "info", "warning", "error" }
  local args = V.args(rng, case, 6)
  call("mf.log." .. level, mf.log[level], unpack(args, 1, args.n))
end)

def("module", "wrappers", 3, function(rng, case, where)
  V.wrapper(rng, case, 1)
end)

def("module", "mf.wait", 8, function(rng, case, where)
  local futs = futures_arg(rng, case, where)
  local timeout = list_timeout(rng, futs, where)
  local ok, r = call("mf.wait", mf.wait, futs, timeout)
  if not ok then return end
  local done, not_done = r[1], r[2]
  if type(done) ~= "table" or type(not_done) ~= "table" then
    return check.violation("mf.wait", "returned %s, %s", check.repr(done), check.repr(not_done))
  end
  for _, f in ipairs(done) do
    if not check.is_future(f) then
      return check.violation("mf.wait", "done holds %s", check.repr(f))
    end
    local ok2, d = call("Future:done", f.done, f)
    if ok2 and d[1] ~= true then
      check.violation("mf.wait", "a future in done is not done")
    end
  end
  if timeout == nil and #not_done > 0 then
    check.violation("mf.wait", "no timeout, yet %d not done", #not_done)
  end
  -- On a map's list, done may be another lazy list of its runs: one more
  -- list for the later actions to read, write and pass on.
  add_list(case, done, where)
end)

def("module", "mf.as_completed", 4, function(rng, case, where)
  local futs = futures_arg(rng, case, where)
  local timeout = list_timeout(rng, futs, where)
  local ok, r = call("mf.as_completed", mf.as_completed, futs, timeout)
  if not ok then return end
  local iter, seen = r[1], {}
  if type(iter) ~= "function" then
    return check.violation("mf.as_completed", "returned %s", check.repr(iter))
  end
  for _ = 1, 20 do
    local ok2, r2 = call("as_completed iterator", iter)
    if not ok2 or r2[1] == nil then return end
    local f = r2[1]
    if not check.is_future(f) then
      return check.violation("as_completed iterator", "yielded %s", check.repr(f))
    end
    if seen[f] then
      return check.violation("as_completed iterator", "yielded a future twice")
    end
    seen[f] = true
  end
end)

def("module", "mf.result", 3, function(rng, case, where)
  local ok, r = call("mf.result", mf.result, pick_future(rng, case), V.timeout(rng, where),
    V.bool_or_junk(rng))
  if not ok then add_error(case, r) end
end)

def("module", "mf.submit", 3, function(rng, case, where)
  local args = V.args(rng, case)
  local ok, r = call("mf.submit", mf.submit, pick_task(rng, case), unpack(args, 1, args.n))
  if ok then
    keep(case, r, where)
    case.runs_left = case.runs_left - 1
  end
end)

def("module", "mf.map", 2, function(rng, case, where)
  local t = pick_task(rng, case)
  local args, big = map_args(rng, case, t)
  local ok, r = call("mf.map", mf.map, t, unpack(args, 1, args.n))
  if ok then
    keep(case, r, where)
    case.runs_left = case.runs_left - big
  end
end)

-- }======

-- {====== Tasks and flows ======

-- Defines a task or flow from generated options; checks the verdict.
-- Whether v is a runner whose runs are copies, in workers.
local function is_pool(v)
  local s = type(v) == "userdata" and tostring(v) or ""
  return s:find("^<Runner threads") ~= nil or s:find("^<Runner processes") ~= nil
end

-- A flow of the case runs its tasks on a pool (the option task_runner):
-- inside a run or flow, an oracle's run may have been copied to a worker,
-- or have crashed there (lua5.4 finds no moonflow program for the
-- processes runner; seed 1796200188 case 37).
local function note_pool_flow(case, opts)
  if type(opts) == "table" and is_pool(rawget(opts, "task_runner")) then
    case.pool_flow = true
  end
end

-- Whether an oracle's run, submitted at mark from where, may have run in
-- a worker: copied values, or Crashed when no worker could start.
local function maybe_in_worker(case, mark, where)
  return check.maybe_copied(mark) or (case.pool_flow == true and where ~= "main")
end

local function define(rng, case, what)
  local opts, verdict, why = O.make(rng, case, what, hazard)
  local fn = rng:chance(0.9) and make_body(rng, case, what == "flow" and "flow" or "run")
    or V.any(rng, case, 2)
  local form = rng:weighted { { 70, "opts" }, { 20, "fn" }, { 5, "swapped" }, { 5, "junk" } }
  local a, b
  if form == "opts" then a, b = opts, fn
  elseif form == "fn" then a, b = fn, nil; verdict = "valid"; opts = nil
  elseif form == "swapped" then a, b = fn, opts; verdict, why = "invalid", "(fn, opts)"
  else
    a, b = V.any(rng, case, 2), V.any(rng, case, 2); verdict = "unsure"
    -- (what the task was made with, not the options drawn above: a task
    -- made of these is checked against them; seed 1796154959 case 30)
    opts = type(a) == "table" and a or nil
  end
  if type(fn) ~= "function" and verdict == "valid" then
    verdict, why = "invalid", "a " .. type(fn) .. " as the function"
  end
  local label = "mf." .. what
  local ok, r = call(label, mf[what], a, b)
  if ok then
    if not check.is_task(r[1]) then
      return check.violation(label, "returned %s", check.repr(r[1]))
    end
    if verdict == "invalid" then
      check.violation(label, "accepted invalid options: %s", why)
    end
    if #case.tasks < 60 then case.tasks[#case.tasks + 1] = r[1] end
    case.task_opts[r[1]] = opts
    if what == "flow" then note_pool_flow(case, opts) end
  elseif verdict == "valid" and r.class == "UsageError" then
    check.violation(label, "refused valid options: %s", check.repr(r[1]))
  elseif verdict == "invalid" and r.class ~= "UsageError" and r.class ~= "own"
      and r.class ~= "own-yield" then
    check.violation(label, "invalid options raised %s, not UsageError", r.class)
  end
end

def("task", "mf.task", 8, function(rng, case, where) define(rng, case, "task") end)
def("flow", "mf.flow", 5, function(rng, case, where) define(rng, case, "flow") end)

def("task", "Task:submit", 14, function(rng, case, where)
  local t, args = pick_task(rng, case), V.args(rng, case)
  local ok, r = call("Task:submit", function(...) return M.Task.submit(t, ...) end,
    unpack(args, 1, args.n))
  if not ok then return add_error(case, r) end
  case.runs_left = case.runs_left - 1
  if not check.is_future(r[1]) and not check.is_state(r[1]) then
    return check.violation("Task:submit", "returned %s", check.repr(r[1]))
  end
  keep(case, r, where)
  if check.is_future(r[1]) then
    local opts = case.task_opts[t]
    local name = type(opts) == "table" and rawget(opts, "name")
    if type(name) == "string" and not rawget(opts, "task_run_name") then
      local ok2, n = pcall(function() return r[1].name end)
      if ok2 and (type(n) ~= "string" or n:sub(1, #name + 1) ~= name .. "-") then
        check.violation("Future.name", "run of task %s (%d bytes) is named %s (%s bytes)",
          check.repr(name), #name, check.repr(n), type(n) == "string" and #n or "?")
      end
    end
  end
end)

def("task", "Task:map", 6, function(rng, case, where)
  local t = pick_task(rng, case)
  local args, big = map_args(rng, case, t)
  local ok, r = call("Task:map", function(...) return M.Task.map(t, ...) end, unpack(args, 1, args.n))
  if not ok then return add_error(case, r) end
  case.runs_left = case.runs_left - big
  if not check.is_list(r[1]) and type(r[1]) ~= "table" then
    return check.violation("Task:map", "returned %s", check.repr(r[1]))
  end
  keep(case, r, where)
end)

def("task", "Task:__call", 5, function(rng, case, where)
  local t, args = pick_task(rng, case), V.args(rng, case)
  local ok, r = call("Task:__call", function(...) return M.Task.__call(t, ...) end, unpack(args, 1, args.n))
  if not ok then add_error(case, r) end
end)

def("task", "Task:with", 5, function(rng, case, where)
  local t = pick_task(rng, case)
  local is_flow = check.is_task(t) and tostring(t):match("^<Flow") ~= nil
  local opts, verdict, why = O.make(rng, case, is_flow and "flow_with" or "task_with", hazard)
  if rng:chance(0.1) then opts, verdict = V.any(rng, case, 1), "unsure" end
  if not check.is_task(t) then verdict, why = "invalid", "self is a " .. type(t) end
  local ok, r = call("Task:with", function() return M.Task.with(t, opts) end)
  if ok then
    if not check.is_task(r[1]) then
      return check.violation("Task:with", "returned %s", check.repr(r[1]))
    end
    if verdict == "invalid" then
      check.violation("Task:with", "%s accepted invalid options: %s",
        is_flow and "flow" or "task", why)
    end
    if #case.tasks < 60 then case.tasks[#case.tasks + 1] = r[1] end
    if is_flow then note_pool_flow(case, opts) end
  elseif verdict == "valid" and r.class == "UsageError" then
    check.violation("Task:with", "refused valid options: %s", check.repr(r[1]))
  end
end)

def("task", "Task:run", 4, function(rng, case, where)
  local t, args = pick_task(rng, case), V.args(rng, case)
  local ok, r = call("Task:run", function(...) return M.Task.run(t, ...) end, unpack(args, 1, args.n))
  if ok then
    if check.check_state("Task:run", r[1]) then
      add_state(case, r[1])
      if not check.final_type(r[1].type, r[1].name) then
        check.violation("Task:run", "returned a State that is not final: %s", r[1].name)
      end
    end
  end
end)

def("task", "Task misc", 3, function(rng, case, where)
  local t = V.task(rng, case)
  local junk = V.any(rng, case, 2)
  local which = rng:pick { "name", "tostring", "submit", "map", "with", "run", "index",
    "__call" }
  if not t then return
  elseif which == "name" then
    call("Task.name", function() return t.name end)
  elseif which == "tostring" then
    call("tostring(Task)", tostring, t)
  elseif which == "index" then
    call("Task[junk]", function() return t[junk] end)
  else
    -- the methods with a wrong self (t.submit(x) instead of t:submit(x));
    -- junk may be a Task after all: what it started is kept, to be read.
    local ok, r = call("Task." .. which .. "(junk)", function()
      return M.Task[which](junk, V.any(rng, case, 2))
    end)
    if ok then keep(case, r, where) end
  end
end)

-- }======

-- {====== Futures ======

def("future", "Future:wait", 8, function(rng, case, where)
  local f, timeout = pick_future(rng, case), V.timeout(rng, where)
  local ok, r = call("Future:wait", function() return M.Future.wait(f, timeout) end)
  if ok and type(r[1]) ~= "boolean" then
    check.violation("Future:wait", "returned %s", check.repr(r[1]))
  elseif ok and r[1] == true then
    local ok2, d = call("Future:done", function() return M.Future.done(f) end)
    if ok2 and d[1] ~= true then
      check.violation("Future:wait", "returned true but done() is false")
    end
  end
end)

def("future", "Future:result", 8, function(rng, case, where)
  local f = pick_future(rng, case)
  local ok, r = call("Future:result", function()
    return M.Future.result(f, V.timeout(rng, where), V.bool_or_junk(rng))
  end)
  if not ok then add_error(case, r) end
end)

def("future", "Future:state", 5, function(rng, case, where)
  local f = pick_future(rng, case)
  local ok, r = call("Future:state", function() return M.Future.state(f) end)
  if ok and check.check_state("Future:state", r[1]) then add_state(case, r[1]) end
end)

def("future", "Future:history", 3, function(rng, case, where)
  local f = pick_future(rng, case)
  local ok, r = call("Future:history", function() return M.Future.history(f) end)
  if not ok then return end
  local h = r[1]
  if type(h) ~= "table" or #h == 0 then
    return check.violation("Future:history", "returned %s", check.repr(h))
  end
  for i = 1, #h do
    if not check.check_state("Future:history", h[i]) then return end
  end
  add_state(case, h[#h])
end)

def("future", "Future:done", 3, function(rng, case, where)
  local f = pick_future(rng, case)
  local ok, r = call("Future:done", function() return M.Future.done(f) end)
  if ok and type(r[1]) ~= "boolean" then
    check.violation("Future:done", "returned %s", check.repr(r[1]))
  end
end)

def("future", "Future:cancel", 4, function(rng, case, where)
  local f = pick_future(rng, case)
  local ok, r = call("Future:cancel", function() return M.Future.cancel(f) end)
  if ok and type(r[1]) ~= "boolean" then
    check.violation("Future:cancel", "returned %s", check.repr(r[1]))
  elseif ok and r[1] == true then
    case.cancelled[f] = true
  end
end)

def("future", "Future:add_done_callback", 6, function(rng, case, where)
  local f = pick_future(rng, case)
  local record = { calls = 0, future = f }
  local inner = rng:chance(0.9) and V.fn(rng, case, "callback") or V.any(rng, case, 2)
  local cb = inner
  if type(inner) == "function" then
    cb = function(arg, ...)
      record.calls = record.calls + 1
      if not rawequal(arg, f) then record.wrong_arg = true end
      return inner(arg, ...)
    end
  end
  local ok = call("Future:add_done_callback", function() return M.Future.add_done_callback(f, cb) end)
  if ok and type(inner) == "function" and check.is_future(f) then
    case.callbacks[#case.callbacks + 1] = record
  end
end)

def("future", "Future fields", 3, function(rng, case, where)
  local f = V.future(rng, case)
  if not f then return end
  local key = rng:weighted {
    { 20, "id" }, { 20, "name" }, { 10, "tostring" }, { 10, V.any(rng, case, 2) },
    { 5, 1 }, { 5, 0 / 0 },
  }
  if key == "tostring" then
    call("tostring(Future)", tostring, f)
  else
    local label = (key == "id" or key == "name") and "Future." .. key or "Future[" .. type(key) .. "]"
    local ok, r = call(label, function() return f[key] end)
    if ok and (key == "id" or key == "name") and check.is_future(f)
        and type(r[1]) ~= "string" then
      check.violation("Future." .. key, "is %s", check.repr(r[1]))
    end
  end
end)

def("future", "Future methods, wrong self", 3, function(rng, case, where)
  local f = V.future(rng, case)
  if not f then return end
  local which = rng:pick { "wait", "result", "state", "history", "done", "cancel",
    "add_done_callback" }
  local junk = V.any(rng, case, 2)
  call("Future." .. which .. "(junk)", M.Future[which], junk, V.any(rng, case, 2))
end)

def("future", "Future __gc by hand", 1, function(rng, case, where)
  if not hazard("gc_by_hand") then return end
  local f = V.future(rng, case)
  if not f then return end
  -- (read first: the cleanup cannot read a collected Future, and a failed
  -- run nobody read is rightly reported at exit, an exit status 1)
  pcall(M.Future.state, f)
  call("Future __gc", function() return debug.getmetatable(f).__gc(f) end)
  call("Future:state after __gc", function() return M.Future.state(f) end)
end)

-- }======

-- {====== FutureLists ======

def("list", "FutureList access", 5, function(rng, case, where)
  local l = V.list(rng, case)
  if not check.is_list(l) then return end -- the fuzzer's own hostile table
  local which = rng:pick { "len", "index", "ipairs", "tostring" }
  if which == "len" then
    local ok, r = call("#FutureList", function() return #l end)
    if ok and check.is_list(l) and math.type(r[1]) ~= "integer" then
      check.violation("#FutureList", "is %s", check.repr(r[1]))
    end
  elseif which == "index" then
    local i = rng:pick { 1, 2, 0, -1, 1.5, 2 ^ 53, math.maxinteger, "1", "n", "wait" }
    call("FutureList[i]", function() return l[i] end)
  elseif which == "ipairs" then
    call("ipairs(FutureList)", function()
      local n = 0
      for _, f in ipairs(l) do
        n = n + 1
        if n > 10000 then break end
        local _ = f
      end
      return n
    end)
  else
    call("tostring(FutureList)", tostring, l)
  end
end)

def("list", "FutureList:wait", 5, function(rng, case, where)
  local l = pick_list(rng, case)
  local timeout = list_timeout(rng, l, where)
  local ok, r = call("FutureList:wait", function() return M.FutureList.wait(l, timeout) end)
  if ok and type(r[1]) ~= "boolean" then
    check.violation("FutureList:wait", "returned %s", check.repr(r[1]))
  end
end)

def("list", "FutureList:result", 5, function(rng, case, where)
  local l = pick_list(rng, case)
  local raise = V.bool_or_junk(rng)
  local timeout = list_timeout(rng, l, where)
  -- The list as called with: a done callback may change it during the wait,
  -- and the results are those of the futures it held at the call.
  -- (not when timeout or raise may run metamethods: the call reads them
  -- before its snapshot, and what they run may change the list first)
  local plain = type(timeout) ~= "table" and type(timeout) ~= "userdata"
    and type(raise) ~= "table" and type(raise) ~= "userdata"
  local len = plain and check.is_list(l) and list_len(l)
  local ok, r = call("FutureList:result", function() return M.FutureList.result(l, timeout, raise) end)
  if not ok then return add_error(case, r) end
  local res = r[1]
  if type(res) ~= "table" or math.type(rawget(res, "n")) ~= "integer" then
    return check.violation("FutureList:result", "returned %s", check.repr(res))
  end
  if len and rawget(res, "n") ~= len then
    check.violation("FutureList:result", "n = %d for a list of %d", res.n, len)
  end
end)

def("list", "FutureList mutate", 2, function(rng, case, where)
  local l = V.list(rng, case)
  if not l or not hazard("list_mutation") then return end
  local which = rng:pick { "set", "append", "remove", "metatable" }
  -- (a future taken out of the list is still the case's to handle: its
  -- failure, unhandled, would end the program with exit 1.  Kept as made
  -- at top level: the list may come from anywhere, and the future is no
  -- child of the flow this runs in)
  local function keep(i)
    local old = rawget(l, i)
    if check.is_future(old) then add_future(case, old, "main") end
  end
  if which == "set" then
    local i = rng:int(1, rawlen(l) + 1)
    keep(i)
    rawset(l, i, V.any(rng, case, 2))
  elseif which == "append" then rawset(l, rawlen(l) + 1, V.future(rng, case))
  elseif which == "remove" then
    keep(rawlen(l))
    rawset(l, rawlen(l), nil)
  else
    -- A FutureList's metatable is protected: setmetatable must refuse.
    local ok = pcall(setmetatable, l, V.hostile_mt(rng, case, 1))
    if ok then
      check.violation("FutureList", "setmetatable replaced a FutureList's metatable")
    end
  end
end)

-- A done callback changes the list while it is waited on.
def("list", "FutureList changed while waited", 2, function(rng, case, where)
  if not hazard("list_mutation") then return end
  local t = case.sleeper
  local ok, r = call("Task:map", function() return t:map({ 0.001, 0.002, 0.003 }) end)
  if not ok then return end
  local l = r[1]
  add_list(case, l, where)
  local change = rng:pick { "set", "grow", "shrink" }
  call("Future:add_done_callback", function()
    return l[1]:add_done_callback(function()
      if change == "set" then l[2] = "x"
      elseif change == "grow" then
        for i = 1, 50 do l[#l + 1] = V.future(rng, case) or i end
      else
        for i = #l, 1, -1 do l[i] = nil end
      end
    end)
  end)
  local how = rng:pick { "mf.wait", "wait", "result" }
  if how == "mf.wait" then call("mf.wait", mf.wait, l, 1)
  elseif how == "wait" then call("FutureList:wait", function() return l:wait(1) end)
  else call("FutureList:result", function() return l:result(1) end) end
end)

def("list", "FutureList methods, wrong self", 2, function(rng, case, where)
  local l = V.list(rng, case)
  if not l then return end
  local which = rng:pick { "wait", "result" }
  local junk = rng:chance(0.5) and V.table(rng, case, 1) or V.any(rng, case, 2)
  call("FutureList." .. which .. "(junk)", function()
    return M.FutureList[which](junk, list_timeout(rng, junk, where))
  end)
end)

-- }======

-- {====== States ======

def("state", "State methods", 5, function(rng, case, where)
  local st = rng:chance(0.9) and case.states[rng:int(1, math.max(1, #case.states))]
  if not st then return end
  local which = rng:pick { "is_completed", "is_failed", "is_final", "result", "fields" }
  if which == "fields" then
    check.check_state("State fields", st)
  elseif which == "result" then
    local ok, r = call("State:result", function() return M.State.result(st, V.bool_or_junk(rng)) end)
    if not ok then add_error(case, r) end
  else
    local ok, r = call("State:" .. which, function() return M.State[which](st) end)
    if ok and type(r[1]) ~= "boolean" then
      check.violation("State:" .. which, "returned %s", check.repr(r[1]))
    end
  end
end)

def("state", "State methods, wrong self", 2, function(rng, case, where)
  local st = case.states[1]
  if not st then return end
  local which = rng:pick { "is_completed", "is_failed", "is_final", "result" }
  local junk = rng:chance(0.5) and V.table(rng, case, 1) or V.any(rng, case, 2)
  if rng:chance(0.3) and type(junk) == "table" then
    -- a copy of a real State with fields changed
    -- (forged with the debug library: getmetatable gives only a name)
    junk = setmetatable({ type = V.any(rng, case, 2), name = "NotReady" }, debug.getmetatable(st))
  end
  call("State." .. which .. "(junk)", function() return M.State[which](junk) end)
end)

-- }======

-- {====== Limits ======

local function tag_arg(rng, case)
  return rng:weighted {
    { 70, rng:pick(case.tags) }, { 10, case.tags[1] .. "-spare" },
    { 10, V.any(rng, case, 2) }, { 5, "" }, { 5, string.rep("t", 1000) },
  }
end

def("limits", "mf.limit", 3, function(rng, case, where)
  local tag = tag_arg(rng, case)
  local used = false
  for _, t in ipairs(case.tags) do if t == tag then used = true end end
  local n = rng:weighted {
    { 40, rng:int(1, 4) }, { 5, 1000 }, { 5, math.maxinteger },
    { 10, rng:pick { -1, 1.5, 0 / 0, "2", {}, math.huge, math.mininteger } },
    -- 0 would stop every run with the tag: only on a tag no task uses.
    { used and 0 or 10, 0 },
  }
  local ok = call("mf.limit", mf.limit, tag, n)
  if ok and (math.type(n) ~= "integer" or n < 1) then
    check.violation("mf.limit", "accepted limit %s", check.repr(n))
  end
end)

def("limits", "mf.rate_limit", 3, function(rng, case, where)
  local tag = tag_arg(rng, case)
  local used = false
  for _, t in ipairs(case.tags) do if t == tag then used = true end end
  local r = rng:weighted {
    { 40, 1e4 + rng:float() * 1e5 }, { 5, 1e9 }, { 5, math.huge },
    { 10, rng:pick { -1, 0, 0 / 0, "5", {}, -math.huge } },
    -- A rate so slow that a second start waits forever: unused tags only.
    { used and 0 or 10, rng:pick { 1e-17, 1e-300, 5e-324, 1e-3 } },
  }
  call("mf.rate_limit", mf.rate_limit, tag, r)
end)

def("limits", "mf.limits", 2, function(rng, case, where)
  local ok, r = call("mf.limits", mf.limits, V.any(rng, case, 2))
  if not ok then return end
  if type(r[1]) ~= "table" then
    return check.violation("mf.limits", "returned %s", check.repr(r[1]))
  end
  for tag, info in pairs(r[1]) do
    if type(tag) ~= "string" or type(info) ~= "table"
        or math.type(info.holders) ~= "integer" or math.type(info.waiters) ~= "integer" then
      return check.violation("mf.limits", "malformed entry for %s", check.repr(tag))
    end
  end
end)

-- A rate so slow, or a limit of 0, on a tag some runs carry: they wait,
-- are cancelled, and end CANCELLED.
def("limits", "stalled tag", 1, function(rng, case, where)
  local tag = case.tags[1] .. "-stalled"
  local how = rng:pick { "rate", "rate", "zero" }
  if how == "rate" then
    local slow = hazard("huge_timers") and rng:pick { 1e-17, 1e-300, 1e-3 } or 1e-3
    call("mf.rate_limit", mf.rate_limit, tag, slow)
  else
    local ok = call("mf.limit", mf.limit, tag, 0)
    if ok then check.violation("mf.limit", "accepted limit 0") end
  end
  local ok, r = call("mf.task", mf.task, { tags = { tag } }, function() return 1 end)
  if not ok then return end
  local t = r[1]
  local futs = {}
  for i = 1, rng:int(1, 3) do
    local ok2, s = call("Task:submit", t.submit, t)
    if ok2 then futs[i] = s[1]; add_future(case, s[1], where) end
  end
  call("mf.sleep", mf.sleep, 0.002)
  for _, f in ipairs(futs) do call("Future:cancel", f.cancel, f) end
  if #futs > 0 then call("mf.wait", mf.wait, futs, 30) end
end)

-- }======

-- {====== Where calls come from ======

-- Actions inside a coroutine created here (inside a run, or not).
def("context", "coroutine", 4, function(rng, case, where)
  local r = rng:fork()
  local co = coroutine.create(function()
    for _ = 1, r:int(1, 4) do A.act(r, case, "coroutine") end
    return "done"
  end)
  for _ = 1, 20 do
    local ok = coroutine.resume(co, V.any(rng, case, 2))
    if not ok or coroutine.status(co) == "dead" then break end
  end
  if coroutine.status(co) ~= "dead" then coroutine.close(co) end
end)

-- Waiting where Lua cannot yield: a table.sort comparator under pcall.
def("context", "no yield", 2, function(rng, case, where)
  if not hazard("nonyield") then return end
  local f = V.future(rng, case)
  local which = rng:pick { "sleep", "wait", "result", "call" }
  pcall(table.sort, { 3, 1, 2 }, function(a, b)
    if which == "sleep" then call("mf.sleep (no yield)", mf.sleep, 0)
    elseif which == "wait" and f then call("Future:wait (no yield)", f.wait, f)
    elseif which == "result" and f then call("Future:result (no yield)", f.result, f)
    elseif case.echo then call("Task:__call (no yield)", case.echo, 1) end
    return a < b
  end)
end)

-- Resuming or closing the coroutine of another run.
def("context", "hijack", 1, function(rng, case, where)
  if not hazard("hijack") then return end
  local co = case.coroutines[rng:int(1, math.max(1, #case.coroutines))]
  if not co or co == coroutine.running() then return end
  local which = rng:pick { "status", "resume", "resume", "close", "wrap" }
  if which == "status" then pcall(coroutine.status, co)
  elseif which == "resume" then pcall(coroutine.resume, co, V.any(rng, case, 2))
  elseif which == "close" then pcall(coroutine.close, co)
  end
end)

-- A table with a finalizer that calls moonflow, dropped at once.
def("context", "finalizer", 2, function(rng, case, where)
  if not hazard("gc_meta") then return end
  local r = rng:fork()
  setmetatable({}, { __gc = function() A.act(r, case, "gc") end })
  if rng:chance(0.3) then collectgarbage(rng:pick { "step", "collect" }) end
end)

-- }======

-- {====== Oracles: calls whose answer is known ======

-- An echo task returns its arguments unchanged (api.md: a table without
-- futures is passed as it is).
def("oracle", "echo", 6, function(rng, case, where)
  local args = V.args(rng, case)
  local special = false
  for i = 1, args.n do special = special or V.special(args[i]) end
  local t = rng:chance(0.7) and case.echo or case.echo_controlled
  local mark = check.copy_mark()
  local ok, r = call("Task:submit", function() return t:submit(unpack(args, 1, args.n)) end)
  if not ok then return end
  local f = r[1]
  add_future(case, f, where)
  for _ = 1, rng:int(0, 2) do call("Future:wait", f.wait, f, rng:pick { 0, 1e-6, 1e-4 }) end
  local ok2, res = call("Future:result", f.result, f)
  if not ok2 then
    if res.class ~= "UsageError" and res.class ~= "Cancelled" and res.class ~= "TimedOut"
        and res.class ~= "own" and res.class ~= "Deadlock"
        and not (special and res.class == "UpstreamFailed")
        and not maybe_in_worker(case, mark, where) then -- (see raiser)
      check.violation("echo", "result() raised %s", check.repr(res[1]))
    end
    return
  end
  if special then return end
  if res.n ~= args.n then
    return check.violation("echo", "%d arguments, %d results", args.n, res.n)
  end
  local copied = maybe_in_worker(case, mark, where)
  for i = 1, args.n do
    if not same(res[i], args[i]) and not (copied and copy_of(res[i], args[i])) then
      return check.violation("echo", "result %d is %s, argument was %s", i,
        check.repr(res[i]), check.repr(args[i]))
    end
  end
end)

-- A run's error reaches result() unchanged, also after retries and hooks.
def("oracle", "raiser", 5, function(rng, case, where)
  local e = V.own_error(rng, case)
  local opts = {}
  if rng:chance(0.5) then
    opts.retries = rng:int(0, 2)
    opts.retry_delay = 0
    if rng:chance(0.3) then opts.on_failure = { V.fn(rng, case, "hook") } end
    if rng:chance(0.3) then opts.retry_condition = V.fn(rng, case, "retry_condition") end
  end
  local mark = check.copy_mark()
  local ok, r = call("mf.task", mf.task, opts, function() error(e, 0) end)
  if not ok then return end
  local t = r[1]
  local ok2, s = call("Task:submit", t.submit, t)
  if not ok2 then return end
  local f = s[1]
  add_future(case, f, where)
  local ok3, res = call("Future:result", f.result, f)
  if ok3 then
    return check.violation("raiser", "result() returned instead of raising")
  end
  if res.class == "UsageError" or res.class == "Cancelled" or res.class == "TimedOut"
      or res.class == "Deadlock" then
    return -- in a callback, or the caller was stopped
  end
  local in_worker = maybe_in_worker(case, mark, where)
  if in_worker and not same(res[1], e) and not copy_of(res[1], e) then
    -- started on a pool (the default runner a run had made one, or a
    -- flow's task_runner) whose worker could not start (seed 1796199055
    -- case 96: lua5.4 finds no moonflow program for the processes
    -- runner), died, or whose setup failed: Crashed, or the setup's error
    return
  end
  local function as_raised(v)
    return same(v, e) or (in_worker and copy_of(v, e))
  end
  if not as_raised(res[1]) then
    check.violation("raiser", "result() raised %s, the run raised %s",
      check.repr(res[1]), check.repr(e))
  end
  local ok4, v = call("Future:result", f.result, f, nil, false)
  if ok4 and not as_raised(v[1]) then
    check.violation("raiser", "result(nil, false) returned %s, not the error",
      check.repr(v[1]))
  end
  local ok5, st = call("Future:state", f.state, f)
  if ok5 and check.check_state("Future:state", st[1]) and st[1].type ~= "FAILED" then
    check.violation("raiser", "state %s after raising", st[1].type)
  end
end)

-- A cancelled run ends CANCELLED.
def("oracle", "cancel", 4, function(rng, case, where)
  local ok, r = call("Task:submit", case.sleeper.submit, case.sleeper, rng:float() * 0.02)
  if not ok then return end
  local f = r[1]
  add_future(case, f, where)
  if rng:chance(0.5) then call("mf.sleep", mf.sleep, rng:pick { 0, 0.001, 0.005 }) end
  local ok2, c = call("Future:cancel", f.cancel, f)
  if not ok2 or c[1] ~= true then return end
  local ok3, w = call("Future:wait", f.wait, f)
  if not ok3 or w[1] ~= true then return end
  local ok4, st = call("Future:state", f.state, f)
  if ok4 and check.check_state("Future:state", st[1]) and st[1].type ~= "CANCELLED" then
    check.violation("cancel", "cancel() returned true; the run ended %s", st[1].name)
  end
end)

-- A wait that timed out does not spoil a later result() (api.md: result
-- waits first).
def("oracle", "wait then result", 3, function(rng, case, where)
  local ok, r = call("Task:submit", case.sleeper.submit, case.sleeper, 0.005)
  if not ok then return end
  local f = r[1]
  add_future(case, f, where)
  local ok2, w = call("Future:wait", f.wait, f, rng:pick { 0, 1e-5, 1e-4 })
  if not ok2 or w[1] ~= false then return end
  local ok3, res = call("Future:result", f.result, f)
  if not ok3 and res.class == "Timeout" then
    check.violation("wait then result", "result() raised Timeout after a timed-out wait")
  end
end)

-- A run past its timeout is stopped and ends TimedOut, whether it sleeps,
-- computes without yielding, or catches the error and goes on.
def("oracle", "timeout", 3, function(rng, case, where)
  local how = rng:pick { "sleep", "compute", "catch", "handler" }
  if how == "handler" and not hazard("handler_loop") then how = "compute" end
  if how ~= "sleep" and not hazard("compute_timeout") then how = "sleep" end
  local body
  if how == "sleep" then
    body = function() for _ = 1, 100 do mf.sleep(0.01) end end
  elseif how == "compute" then
    body = function() while true do end end
  elseif how == "catch" then
    body = function()
      while true do pcall(function() while true do end end) end
    end
  else
    body = function()
      xpcall(error, function() while true do end end)
    end
  end
  local ok, r = call("mf.task", mf.task,
    { timeout = rng:pick { 0.001, 0.005, 0.02 }, retries = rng:int(0, 1), retry_delay = 0 },
    body)
  if not ok then return end
  local ok2, s = call("Task:submit", r[1].submit, r[1])
  if not ok2 then return end
  local f = s[1]
  add_future(case, f, where)
  local ok3, res = call("Future:result", f.result, f)
  if ok3 then
    return check.violation("timeout", "a run that never ends completed")
  end
  if res.class ~= "TimedOut" and res.class ~= "UsageError" and res.class ~= "Cancelled"
      and res.class ~= "Deadlock" then
    check.violation("timeout", "%s run: result() raised %s, not TimedOut", how,
      check.repr(res[1]))
  end
end)

-- Flows end by api.md's rules, whatever their options.
def("oracle", "flow rules", 4, function(rng, case, where)
  local mark = check.copy_mark()
  local opts = {}
  if rng:chance(0.7) then
    local control = rng:pick { "retries", "timeout", "on_failure", "on_completion",
      "log_prints", "retry_condition" }
    if control == "retries" then opts.retries, opts.retry_delay = 1, 0
    elseif control == "timeout" then opts.timeout = 30
    elseif control == "log_prints" then opts.log_prints = true
    elseif control == "retry_condition" then
      opts.retries, opts.retry_condition = 1, function() return false end
    else opts[control] = { function() end } end
  end
  local raiser_err = check.own("fuzz-flow-raise#" .. rng:int(1, 1e6))
  local variant = rng:pick { "returned failure", "unhandled failure", "returned cancel",
    "completed", "raised" }
  local echo, sleeper = case.echo, case.sleeper
  local fn
  if variant == "returned failure" then
    fn = function()
      local raiser = mf.task(function() error(raiser_err, 0) end)
      return raiser:submit()
    end
  elseif variant == "unhandled failure" then
    fn = function()
      local raiser = mf.task(function() error(raiser_err, 0) end)
      raiser:submit()
      mf.sleep(0.001)
      return 1
    end
  elseif variant == "returned cancel" then
    fn = function()
      local f = sleeper:submit(0.05)
      f:cancel()
      return { f }
    end
  elseif variant == "raised" then
    fn = function() error(raiser_err, 0) end
  else
    fn = function() return echo:submit(7) end
  end
  local ok, r = call("mf.flow", mf.flow, opts, fn)
  if not ok then return end
  local ok2, st = call("Task:run", r[1].run, r[1])
  if not ok2 or not check.check_state("Task:run", st[1]) then return end
  local ty = st[1].type
  local want = variant == "completed" and "COMPLETED"
    or variant == "returned cancel" and "CANCELLED" or "FAILED"
  -- (its runs may have gone to a pool whose setup failed, or whose worker
  -- could not start: they fail or crash; seed 1796201646 case 2)
  if ty ~= want and ty ~= "CANCELLED" and not maybe_in_worker(case, mark, where) then
    local names = {}
    for k in pairs(opts) do names[#names + 1] = k end
    table.sort(names)
    check.violation("flow rules", "flow (%s) with {%s} ended %s, not %s", variant,
      table.concat(names, ","), ty, want)
  end
end)

-- A big map of an echo task returns the array in order.
def("oracle", "big map", 1, function(rng, case, where)
  if not hazard("big") or case.runs_left < 6000 then return end
  local n = rng:pick { 1000, 3000, 5000 }
  case.runs_left = case.runs_left - n
  local xs = {}
  for i = 1, n do xs[i] = i end
  local ok, r = call("Task:map", case.echo.map, case.echo, xs)
  if not ok then return end
  add_list(case, r[1], where)
  local ok2, res = call("FutureList:result", r[1].result, r[1])
  if not ok2 then return end
  if res[1].n ~= n then
    return check.violation("big map", "result n = %s for %d runs", check.repr(res[1].n), n)
  end
  for i = 1, n do
    if res[1][i] ~= i then
      return check.violation("big map", "result[%d] = %s", i, check.repr(res[1][i]))
    end
  end
end)

-- A sleep or timeout longer than any timer can hold, stopped by a
-- cancellation.
def("oracle", "huge timers", 1, function(rng, case, where)
  if not hazard("huge_timers") then return end
  local v = rng:pick { math.huge, 1e300, 2 ^ 63, 1e17 }
  local how = rng:pick { "sleep", "retry_delay", "wait" }
  local opts, fn = {}, function(f) return f:wait(v) end
  if how == "sleep" then
    fn = function() mf.sleep(v) end
  elseif how == "retry_delay" then
    opts = { retries = 1, retry_delay = v }
    fn = function() error(check.own("fuzz-retry"), 0) end
  end
  local ok0, d = call("mf.task", mf.task, opts, fn)
  if not ok0 then return end
  local t = d[1]
  local ok1, up = call("Task:submit", case.sleeper.submit, case.sleeper, 0.05)
  if not ok1 then return end
  add_future(case, up[1], where)
  local ok, r = call("Task:submit", t.submit, t, up[1])
  if not ok then return end
  local f = r[1]
  add_future(case, f, where)
  call("mf.sleep", mf.sleep, 0.002)
  call("Future:cancel", f.cancel, f)
  call("Future:wait", f.wait, f, 30)
end)

-- }======

-- Defines a task or flow as the action mf.task/mf.flow does (case setup).
A.define = define

-- For the modules of more actions (actions_runners.lua, actions_io.lua).
A.lib = {
  def = def, call = call, add_future = add_future, add_list = add_list,
  add_error = add_error, add_state = add_state, keep = keep, same = same,
  pick_task = pick_task, pick_future = pick_future,
  methods = function() return M end,
}

-- {====== Picking ======

local enabled, total_weight

local function build()
  enabled, total_weight = {}, 0
  for _, a in ipairs(actions) do
    if groups_on(a.group) and a.weight > 0 then
      enabled[#enabled + 1] = a
      total_weight = total_weight + a.weight
    end
  end
end

function A.names()
  local list = {}
  for _, a in ipairs(actions) do list[#list + 1] = a.group .. ":" .. a.name end
  return list
end

-- Does one action from where; bounded by the case's budget and by the
-- nesting of actions on this coroutine.
function A.act(rng, case, where)
  if not enabled then build() end
  if case.budget <= 0 or #enabled == 0 then return end
  local co = coroutine.running()
  local depth = nesting[co] or 0
  if depth >= MAX_NESTING then return end
  case.budget = case.budget - 1
  local x = rng:float() * total_weight
  local chosen = enabled[#enabled]
  for _, a in ipairs(enabled) do
    x = x - a.weight
    if x < 0 then chosen = a; break end
  end
  check.stats.by_where[where] = (check.stats.by_where[where] or 0) + 1
  if A.trace then
    local ok, now = pcall(mf.now)
    local okc, ctx = pcall(mf.context)
    local run = okc and type(ctx) == "table" and ctx -- the run executing, if any
    io.stdout:write(string.format("  %s%s: %s  [%.3f] %s\n", string.rep("  ", depth), where,
      chosen.name, ok and now or -1, run and (tostring(run.name) .. "#" .. tostring(run.id)) or "-"))
    io.stdout:flush()
  end
  nesting[co] = depth + 1
  local y0 = check.yields
  local ok, err = pcall(chosen.fn, rng, case, where)
  nesting[co] = depth
  if not ok then
    -- The fuzzer's own code raised: a timeout or cancellation delivered
    -- where the run computes, its own hostile error, or a bug of the
    -- fuzzer (reported like a violation, so that it gets fixed).
    local class = check.is_own(err) and "own" or check.is_typed(err) and err.kind
      or (type(err) == "string" and check.yields > y0 and err:find("attempt to yield", 1, true))
        and "own-yield"
    if not class then
      check.violation("fuzzer action " .. chosen.name, "raised %s", check.repr(err))
    elseif class == "TimedOut" or class == "Cancelled" then
      error(err, 0)
    end
  end
end

-- }======

return A
