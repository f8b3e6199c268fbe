-- spec/fuzz/values.lua: the values the fuzzer passes to moonflow -- plain
-- and hostile: nil, NaN, infinities, huge integers, odd strings, deep,
-- cyclic and huge tables, tables with hostile metatables (metamethods that
-- raise, yield, lie or call moonflow again), forged moonflow objects,
-- coroutines, other objects' userdata, and functions that raise or yield.
--
-- Functions and metamethods made here are called later, anywhere (inside
-- runs, callbacks, finalizers): each carries its own generator, forked from
-- the case's, so what it does depends on the seed, not on the timing.
local check = require "check"

local V = {}
local env -- { mf, act(rng, case, where), hazard(name) }

function V.init(e) env = e end

local function hazard(name) return env.hazard(name) end

-- {====== Scalars ======

local NUMBERS = {
  0, 1, -1, 2, 3, 0.5, -0.0, 1e-17, 1e-300, 5e-324, 1e308, -1e308,
  math.huge, -math.huge, 0 / 0, math.maxinteger, math.mininteger, 2 ^ 53,
  2 ^ 63, -2 ^ 63, 1e15, 255, 256, 65536, 2 ^ 31, 2 ^ 32, 0.001, 1e-6,
}

function V.number(rng)
  if rng:chance(0.7) then return rng:pick(NUMBERS) end
  if rng:chance(0.5) then return rng:int(-1000, 1000) end
  return (rng:float() - 0.5) * 10 ^ rng:int(-10, 20)
end

local STRINGS = {
  "", "x", "abc", "%s%d%n%%", "{x}", "{a}-{b}", "\0nul\0", "\xff\xfe",
  "UsageError", "1", "0x10", "nan", "inf", " 12 ", "-1", "0.001",
  "retry_delay_seconds", "timeout_seconds", "name", "__index", "n",
}

function V.string(rng)
  if rng:chance(0.9) then return rng:pick(STRINGS) end
  return string.rep(rng:pick { "n", "%", "{", "\0" }, rng:int(200, 3000))
end

-- A timeout argument: absent, valid (tiny to large), or not valid.  Long
-- ones only in the main chunk: a run may wait on itself, or on a cycle,
-- with a timeout (never a deadlock), and a long one would hold up
-- everything waiting on it.
function V.timeout(rng, where)
  local main = where == "main"
  return rng:weighted {
    { 30, nil },
    { 20, 0 },
    { 20, rng:float() * 0.01 },
    { 5, 1e-6 },
    { 5, 0.05 + rng:float() * 0.1 },
    { main and 4 or 0, rng:pick { 1e3, 1e9, 3600 } },
    { main and hazard("huge_timers") and 3 or 0,
      rng:pick { math.huge, 1e300, 2 ^ 63, 1e19 } },
    { 10, rng:pick { -1, -1e-9, 0 / 0, -math.huge, "0.01", "x", true, {}, -0.0 } },
  }
end

function V.bool_or_junk(rng)
  return rng:pick { true, false, nil, 0, "yes", "false", {}, 0 / 0 }
end

-- }======

-- {====== Errors the fuzzer raises ======

-- A fresh error value, registered as the fuzzer's own: strings, tables,
-- numbers, rarely nil or booleans, tables with hostile metatables.
local raised_count = 0
function V.own_error(rng, case)
  raised_count = raised_count + 1
  local kind = rng:weighted {
    { 30, "string" }, { 30, "table" }, { 8, "number" }, { 4, "nil" },
    { 3, "boolean" }, { hazard("hostile_errors") and 10 or 0, "hostile" },
    { 5, "typed" }, { 3, "function" },
  }
  local v
  if kind == "string" then
    v = "fuzz-raise#" .. raised_count
  elseif kind == "table" then
    v = { fuzz = raised_count }
  elseif kind == "number" then
    v = raised_count + 0.25
  elseif kind == "nil" then
    v = nil
  elseif kind == "boolean" then
    v = false
  elseif kind == "hostile" then
    v = setmetatable({ fuzz = raised_count }, V.hostile_mt(rng, case, 1))
  elseif kind == "typed" then
    -- Looks like moonflow's: a run may raise what another call raised.
    v = setmetatable({ kind = "UsageError", message = "own " .. raised_count },
      { __tostring = function(e) return "UsageError: " .. e.message end })
  else
    v = function() return raised_count end
  end
  check.own(v)
  return v
end

function V.raise(rng, case)
  error(V.own_error(rng, case), 0)
end

-- The fuzzer's own yield: counted, so that Lua's "attempt to yield ..."
-- it may cause is recognised.
function V.yield(...)
  check.yields = check.yields + 1
  if not coroutine.isyieldable() then
    -- Lua's error is then the fuzzer's own, also when it fails a run and
    -- reaches result() later, from another call (a cache_key, a callback)
    check.own("attempt to yield across a C-call boundary")
    check.own("attempt to yield from outside a coroutine")
  end
  return coroutine.yield(...)
end

-- }======

-- {====== Moonflow objects and others' ======

-- The metatable keys of moonflow's objects (their [1] is a light userdata
-- the bindings check), to forge objects with.
local function forged_key(case)
  local keys = {}
  for _, pool in ipairs { case.futures, case.lists, case.tasks, case.states } do
    local obj = pool[1]
    local mt = obj and getmetatable(obj)
    if type(mt) == "table" and rawget(mt, 1) ~= nil then keys[#keys + 1] = rawget(mt, 1) end
  end
  for _, w in ipairs(case.wrappers) do
    local mt = getmetatable(w)
    if type(mt) == "table" and rawget(mt, 1) ~= nil then keys[#keys + 1] = rawget(mt, 1) end
  end
  return keys
end

local function from(pool, rng)
  if #pool == 0 then return nil end
  return pool[rng:int(1, #pool)]
end

function V.future(rng, case) return from(case.futures, rng) end
function V.list(rng, case) return from(case.lists, rng) end
function V.task(rng, case) return from(case.tasks, rng) end

-- A runner: one of the case's (threads or processes), or the default.
function V.runner(rng, case)
  if case.runners and #case.runners > 0 and rng:chance(0.7) then
    return from(case.runners, rng)
  end
  return env.mf.runners.coroutines()
end

-- An object: one of the case's moonflow objects, or someone else's.
function V.object(rng, case, depth)
  local choice = rng:weighted {
    { 30, "future" }, { 10, "list" }, { 10, "task" }, { 6, "state" },
    { 5, "error" }, { 6, "wrapper" }, { 3, "coroutine" }, { 2, "stdout" },
    { hazard("mf_as_value") and 2 or 0, "mf" }, { 4, "function" }, { hazard("forge") and 3 or 0, "forged" },
    { 2, "run_coroutine" }, { 1, "runner" },
  }
  if choice == "future" then return V.future(rng, case)
  elseif choice == "list" then return V.list(rng, case)
  elseif choice == "task" then return V.task(rng, case)
  elseif choice == "state" then return from(case.states, rng)
  elseif choice == "error" then return from(case.errors, rng)
  elseif choice == "wrapper" then return V.wrapper(rng, case, depth)
  elseif choice == "coroutine" then
    local co = coroutine.create(function(...) return ... end)
    if rng:chance(0.3) then coroutine.resume(co) end -- a dead one
    return co
  elseif choice == "stdout" then return io.stdout
  elseif choice == "mf" then return env.mf
  elseif choice == "function" then return V.fn(rng, case)
  elseif choice == "runner" then return V.runner(rng, case)
  elseif choice == "forged" then
    local keys = forged_key(case)
    if #keys == 0 then return nil end
    local mt = rng:chance(0.5) and V.hostile_mt(rng, case, depth + 1) or {}
    rawset(mt, 1, rng:pick(keys))
    local t = {}
    for i = 1, rng:int(0, 3) do t[i] = V.any(rng, case, depth + 1) end
    return setmetatable(t, mt)
  end
  return from(case.coroutines, rng)
end

-- mf.quote / mf.unmapped / mf.allow_failure of something.
function V.wrapper(rng, case, depth)
  local mf = env.mf
  local which = rng:pick { "quote", "unmapped", "allow_failure" }
  local inner = which == "allow_failure" and rng:chance(0.8)
    and (V.future(rng, case) or V.list(rng, case)) or V.any(rng, case, depth + 1)
  local ok, r = check.call("mf." .. which, mf[which], inner)
  if ok then
    case.wrappers[#case.wrappers + 1] = r[1]
    return r[1]
  end
  return inner
end

-- }======

-- {====== Tables ======

local function deep_chain(depth, bottom)
  local t = { bottom }
  for _ = 2, depth do t = { t } end
  return t
end

function V.deep_depth(rng)
  return rng:pick { 5, 20, 35, 36, 40, 60, 100, 150, 199, 200, 201, 250, 1000, 5000 }
end

function V.table(rng, case, depth)
  depth = depth or 0
  local kind = rng:weighted {
    { 10, "empty" }, { 25, "array" }, { 15, "record" }, { 8, "sparse" },
    { hazard("deep_tables") and 6 or 0, "deep" },
    { hazard("cyclic") and 6 or 0, "cyclic" },
    { hazard("big") and 2 or 0, "big" },
    { hazard("hostile_mt") and 12 or 0, "hostile" },
    { 8, "futures" },
  }
  if depth > 3 and kind ~= "deep" and kind ~= "big" then kind = "empty" end
  if kind == "empty" then return {}
  elseif kind == "array" then
    local t = {}
    for i = 1, rng:int(1, 8) do t[i] = V.any(rng, case, depth + 1) end
    return t
  elseif kind == "record" then
    local t = {}
    for _ = 1, rng:int(1, 5) do
      local key = rng:pick { "a", "b", "name", "n", "kind", "message", 1.5, -1, true }
      t[key] = V.any(rng, case, depth + 1)
    end
    return t
  elseif kind == "sparse" then
    return { [1] = V.any(rng, case, depth + 1), [3] = V.any(rng, case, depth + 1),
      [rng:pick { 10, 1000, 2 ^ 40, math.maxinteger }] = true }
  elseif kind == "deep" then
    local bottom = rng:chance(0.4) and V.future(rng, case) or V.scalar(rng, case)
    return deep_chain(V.deep_depth(rng), bottom)
  elseif kind == "cyclic" then
    local a, b = {}, {}
    a[1], a.b, b.a, b[1] = b, b, a, V.scalar(rng, case)
    if rng:chance(0.5) then a[a] = a end
    if rng:chance(0.5) then b[2] = V.future(rng, case) end
    return a
  elseif kind == "big" then
    local t = {}
    for i = 1, rng:pick { 1000, 5000, 20000 } do t[i] = i end
    return t
  elseif kind == "hostile" then
    local t = {}
    for i = 1, rng:int(0, 3) do t[i] = V.any(rng, case, depth + 1) end
    return setmetatable(t, V.hostile_mt(rng, case, depth + 1))
  else -- futures inside a plain table (resolution)
    local t = {}
    for i = 1, rng:int(1, 4) do
      t[i] = V.future(rng, case) or V.list(rng, case) or i
    end
    if rng:chance(0.3) then t.nested = { deep = { V.future(rng, case) } } end
    if rng:chance(0.2) then t[V.future(rng, case) or 1] = "future as key" end
    return t
  end
end

function V.scalar(rng, case)
  return rng:weighted {
    { 10, nil }, { 5, true }, { 3, false },
    { 30, V.number(rng) }, { 25, V.string(rng) },
  }
end

-- Any value.
function V.any(rng, case, depth)
  depth = depth or 0
  local kind = rng:weighted {
    { 40, "scalar" }, { depth > 4 and 0 or 25, "table" }, { 30, "object" },
    { depth > 4 and 0 or 5, "function" },
  }
  if kind == "scalar" then return V.scalar(rng, case)
  elseif kind == "table" then return V.table(rng, case, depth)
  elseif kind == "function" then return V.fn(rng, case)
  end
  return V.object(rng, case, depth)
end

-- A packed argument list: 0..6 values, with holes, sometimes many.
function V.args(rng, case, max)
  local n = rng:weighted {
    { 20, 0 }, { 40, rng:int(1, 3) }, { 15, rng:int(4, 8) },
    { hazard("many_values") and 3 or 0, rng:pick { 50, 79, 80, 81, 200, 250 } },
  }
  if max and n > max then n = max end
  local args = { n = n }
  for i = 1, n do args[i] = V.any(rng, case, 1) end
  return args
end

-- Whether v reaches, through plain tables, a moonflow object or forgery:
-- then submit resolves or unwraps it, and the run does not get v as it is.
function V.special(v, seen)
  seen = seen or {}
  local t = type(v)
  if t == "userdata" then return check.is_future(v) end
  if t ~= "table" then return false end
  local mt = debug.getmetatable(v)
  if mt ~= nil then return rawget(mt, 1) ~= nil end -- moonflow's, or forged
  if seen[v] then return false end
  seen[v] = true
  local n = 0
  for k, x in next, v do
    n = n + 1
    if n > 10000 or V.special(k, seen) or V.special(x, seen) then return true end
  end
  return false
end

-- }======

-- {====== Hostile metatables and functions ======

local METAMETHODS = {
  "__index", "__newindex", "__len", "__eq", "__lt", "__le", "__tostring",
  "__pairs", "__call", "__concat", "__gc", "__close", "__name", "__mode",
  "__metatable", "__unm",
}

local function junk_len(rng)
  return rng:pick { 2 ^ 61 + 1, 2 ^ 62, math.maxinteger, -1, math.mininteger,
    1.5, 0 / 0, "3", "x", nil, {}, 1e300, 3, 0 }
end

-- The fuzzer's finalizers and metamethods run anywhere: inside moonflow's
-- C functions, the loop, the GC.  Nesting is bounded by case.depth.
local function meta_fn(rng, case, name, depth)
  local r = rng:fork()
  local behaviour = r:weighted {
    { 30, "value" }, { 20, "raise" },
    { hazard("yields") and 10 or 0, "yield" },
    { hazard("reentry") and 10 or 0, "act" },
  }
  return function(self, ...)
    if behaviour == "raise" then V.raise(r, case) end
    if behaviour == "yield" then V.yield(name) end
    if behaviour == "act" then env.act(r, case, "meta " .. name) end
    if name == "__len" then return junk_len(r) end
    if name == "__tostring" then
      return r:pick { "hostile", 42, nil, {}, string.rep("t", 5000) }
    end
    if name == "__pairs" then
      return r:pick {
        function() return next, self, nil end,
        function() return function() V.raise(r, case) end, self, nil end,
        function() return function() V.yield("pairs") end, self, nil end,
        function() return nil end,
      }()
    end
    if name == "__index" then
      return depth < 3 and V.any(r, case, depth + 1) or nil
    end
    if name == "__eq" or name == "__lt" or name == "__le" then
      return r:chance(0.5)
    end
    if name == "__gc" and hazard("resurrect") and r:chance(0.3) then
      case.resurrected[#case.resurrected + 1] = self
    end
    return nil
  end
end

function V.hostile_mt(rng, case, depth)
  depth = depth or 0
  local mt = {}
  for _, name in ipairs(METAMETHODS) do
    if rng:chance(0.3) then
      if name == "__name" then
        mt.__name = rng:pick { "moonflow.Future", "moonflow.FutureList",
          "moonflow.Task", "moonflow.State", 42, {} }
      elseif name == "__mode" then
        mt.__mode = rng:pick { "k", "v", "kv" }
      elseif name == "__metatable" then
        mt.__metatable = rng:pick { false, "protected", {} }
      elseif name == "__gc" and not hazard("gc_meta") then
        -- skipped
      else
        mt[name] = meta_fn(rng, case, name, depth)
      end
    end
  end
  return mt
end

-- A function that returns, raises, yields, loops or calls moonflow.
-- purpose names where it will be used (for the act label).
function V.fn(rng, case, purpose)
  local r0 = rng:fork()
  local calls = 0
  local behaviour = r0:weighted {
    { 30, "return" }, { 20, "raise" }, { hazard("yields") and 10 or 0, "yield" },
    { 25, "act" }, { 5, "busy" }, { 5, "many" },
  }
  return function(...)
    calls = calls + 1
    local r = r0:fork(calls)
    if behaviour == "raise" then V.raise(r, case) end
    if behaviour == "yield" then V.yield(...) end
    if behaviour == "act" then
      for _ = 1, r:int(1, 3) do env.act(r, case, purpose or "callback") end
    end
    if behaviour == "busy" then
      local stop = os.clock() + r:float() * 0.003
      while os.clock() < stop do end
    end
    if behaviour == "many" then
      local v = V.args(r, case)
      return table.unpack(v, 1, v.n)
    end
    if r:chance(0.2) then V.raise(r, case) end
    return V.any(r, case, 2), V.any(r, case, 2)
  end
end

-- }======

return V
