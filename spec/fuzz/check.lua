-- spec/fuzz/check.lua: the fuzzer's oracle of errors and its counters.
--
-- Every call into moonflow goes through check.call, which counts it and
-- classifies what it raised:
--   * a moonflow error: a table with a string `kind` among api.md's kinds,
--     a string `message`, and a __tostring giving "kind: message";
--   * an error the fuzzer's own hostile code raised (registered when it was
--     raised), passing through unchanged -- the contract: a run's error
--     reaches result() as it was raised;
--   * "attempt to yield ..." when the fuzzer's own code yielded where Lua
--     cannot (a metamethod of its tables, a callback);
--   * anything else is a violation: a plain string ("attempt to index",
--     "bad argument", ...), a table without kind, an unknown kind.
-- Violations are recorded, not raised: many calls happen in callbacks and
-- finalizers whose errors moonflow swallows.  The case loop checks them.
local M = {}

-- print as the script found it: inside a log_prints run the global is the
-- logger, and a worker's print comes back as this one
local user_print = print

M.KINDS = {
  Timeout = true, TimedOut = true, MappingLengthMismatch = true,
  MappingMissingIterable = true, UpstreamFailed = true, Cancelled = true,
  Crashed = true, Deadlock = true, UsageError = true, IOError = true,
  StoreError = true,
}

M.stats = { calls = 0, failed = 0, by_kind = {}, by_api = {}, by_where = {} }
M.violations = {}
M.case = 0          -- the case being run, for messages
M.trace_calls = false -- print each call and its arguments (--trace-calls)

-- What the fuzzer's hostile code raised: tables by identity, strings and
-- numbers by value.  Reset for each case.
local own_tables = setmetatable({}, { __mode = "k" })
local own_values = {}
-- The `fuzz` ids of the plain tables it raised (values.lua's own_error),
-- and where the functions it raised were defined: a copy of one (a runner
-- that copies gives back an equal table, a function with the same code) is
-- known by them.
local own_ids, own_sites = {}, {}
local function site(f)
  local info = debug.getinfo(f, "S")
  return info.source .. ":" .. info.linedefined
end
M.yields = 0        -- yields the fuzzer's code attempted
M.stops = 0         -- Cancelled and TimedOut errors seen
M.last_stop = nil
M.odd_raised = {}   -- nil/boolean errors raised (by type name)

function M.reset_case(k)
  M.case = k
  own_values = {}
  own_ids, own_sites = {}, {}
  M.odd_raised = {}
end

-- {====== The default runner copies ======
-- mf.configure{task_runner = pool} (actions_runners.lua) makes every run
-- whose attempt starts before it is set back run in a worker, also runs of
-- other actions submitted to the coroutine runner (the default is read
-- when each attempt starts: docs/lua-api.md, mf.configure): their
-- arguments, results and errors are then equal copies, not the same
-- values (api.md, "Running work").  An oracle that knows identity takes a
-- mark before it submits and asks afterwards whether such a window was
-- open at any time since.
M.copying = 0    -- windows open now
M.copy_epoch = 0 -- windows opened so far

function M.copy_window(open)
  if open then
    M.copying = M.copying + 1
    M.copy_epoch = M.copy_epoch + 1
  else
    M.copying = M.copying - 1
  end
end

function M.copy_mark()
  return M.copying > 0 and -1 or M.copy_epoch
end

function M.maybe_copied(mark)
  return mark == -1 or M.copying > 0 or mark ~= M.copy_epoch
end

-- }======

-- Registers v as raised by the fuzzer's own code, and returns it.
function M.own(v)
  local t = type(v)
  if t == "table" or t == "userdata" or t == "function" or t == "thread" then
    own_tables[v] = true
    if t == "table" and math.type(rawget(v, "fuzz")) == "integer" then
      own_ids[rawget(v, "fuzz")] = true
    elseif t == "function" and debug.getinfo(v, "S").what ~= "C" then
      own_sites[site(v)] = true
    end
  elseif t == "number" and v ~= v then
    M.odd_raised.nan = true
  elseif t == "string" or t == "number" then
    own_values[v] = true
  else
    M.odd_raised[t] = true
  end
  return v
end

function M.is_own(v)
  local t = type(v)
  -- a copy of what the fuzzer's code raised in a worker (actions_runners.lua)
  if t == "table" and rawget(v, "fuzz_remote") ~= nil then return true end
  if t == "string" and v:sub(1, 12) == "fuzz-remote:" then return true end
  if t == "function" and (v == print or v == user_print) then return true end
  -- what a worker's run raised that could not be copied comes back as its
  -- text (README.md, "Values are copied"): REMOTE's coroutines and files
  if t == "string" and (v:match("^thread: 0x%x+$") or v:match("^file %(0x%x+%)$")
      -- REMOTE's error table holding an argument that cannot travel back
      -- (seed 7008 case 57: raised in a flow's task on a threads runner)
      or v:match("^table: 0x%x+$")
      or v == "(error object: table)"
      -- reject(nil): the promise fails with this text (io_promise.c)
      or v:match("^promise .* was rejected$")) then
    return true
  end
  if t == "function" and debug.getinfo(v, "S").source:find("actions_runners.lua", 1, true) then
    return true
  end
  -- copies of what a run raised, the run started on a runner that copies
  -- (see copy_window)
  if t == "function" and own_sites[site(v)] then return true end
  if t == "table" and getmetatable(v) == nil
      and own_ids[rawget(v, "fuzz")] and next(v, next(v)) == nil then
    return true
  end
  if t == "table" or t == "userdata" or t == "function" or t == "thread" then
    return own_tables[v] == true
  elseif t == "string" or t == "number" then
    if v ~= v then return M.odd_raised.nan end -- NaN never equals itself
    return own_values[v] == true
  end
  return M.odd_raised[t] == true
end

-- " module.field" for a C function a loaded module holds, else " unnamed"
-- plus the registry slot holding it, if one does.
function M.c_function_name(f)
  for modname, mod in pairs(package.loaded) do
    if type(mod) == "table" then
      for field, v in pairs(mod) do
        if rawequal(v, f) then return string.format(" %s.%s", modname, field) end
      end
    end
  end
  for slot, v in pairs(debug.getregistry()) do
    if rawequal(v, f) then return string.format(" registry[%s]", tostring(slot)) end
  end
  return " unnamed"
end

-- A printable form of any value that never calls the value's metamethods.
function M.repr(v)
  local t = type(v)
  if t == "string" then
    if #v > 200 then v = v:sub(1, 200) .. "..." end
    return string.format("%q", v)
  elseif t == "table" then
    local kind, message = rawget(v, "kind"), rawget(v, "message")
    if kind ~= nil then
      return string.format("{kind=%s, message=%s}", M.repr(kind), M.repr(message))
    end
    return "table"
  elseif t == "function" then -- where it was defined says whose it is
    local info = debug.getinfo(v, "S")
    return string.format("function (%s:%d%s)", info.short_src, info.linedefined,
      info.what == "C" and M.c_function_name(v) or "")
  end
  return t == "number" and string.format("%.17g", v) or t
end

function M.violation(label, fmt, ...)
  local msg = string.format("VIOLATION case=%d %s: " .. fmt, M.case, label, ...)
  M.violations[#M.violations + 1] = msg
  io.stdout:write(msg, "\n")
  io.stdout:flush()
end

-- Whether err is a well-formed moonflow error (kind and message strings,
-- a metatable whose __tostring gives "kind: message").
function M.is_typed(err)
  return type(err) == "table" and type(rawget(err, "kind")) == "string"
    and type(rawget(err, "message")) == "string"
end

local function check_typed(label, err)
  local kind = rawget(err, "kind")
  if not M.KINDS[kind] then
    M.violation(label, "error of unknown kind %s", M.repr(kind))
    return
  end
  local mt = getmetatable(err)
  local ts = type(mt) == "table" and rawget(mt, "__tostring")
  if type(ts) ~= "function" then
    M.violation(label, "%s error without __tostring", kind)
    return
  end
  local ok, s = pcall(ts, err)
  if not ok or s ~= kind .. ": " .. rawget(err, "message") then
    M.violation(label, "%s error's __tostring gives %s", kind, M.repr(s))
  end
end

-- Classifies an error raised by a moonflow call; returns its class.
function M.classify(label, err, yields_before)
  if M.is_own(err) then return "own" end
  if M.is_typed(err) then
    check_typed(label, err)
    return rawget(err, "kind")
  end
  if type(err) == "string" and M.yields > yields_before
      and (err:find("attempt to yield", 1, true)) then
    return "own-yield"
  end
  M.violation(label, "untyped error %s", M.repr(err))
  return "untyped"
end

-- Calls f(...) protected, counting and classifying.  Returns ok and the
-- results packed (or the error as r[1]).
function M.call(label, f, ...)
  local stats = M.stats
  stats.calls = stats.calls + 1
  stats.by_api[label] = (stats.by_api[label] or 0) + 1
  local y0 = M.yields
  if M.trace_calls then
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = M.repr((select(i, ...))) end
    io.stdout:write("    call ", label, "(", table.concat(parts, ", "), ")\n")
    io.stdout:flush()
  end
  local r = table.pack(pcall(f, ...))
  if r[1] then
    return true, table.pack(table.unpack(r, 2, r.n))
  end
  stats.failed = stats.failed + 1
  local class = M.classify(label, r[2], y0)
  if class == "Cancelled" or class == "TimedOut" then
    M.stops = M.stops + 1 -- a run told to stop: its body passes it on
    M.last_stop = r[2]
  end
  stats.by_kind[class] = (stats.by_kind[class] or 0) + 1
  return false, { r[2], n = 1, class = class }
end

-- Kind checks for values moonflow returns (they never call metamethods).
local function mt_name(v)
  local mt = getmetatable(v)
  if type(mt) == "string" then return mt end -- a protected metatable
  return type(mt) == "table" and rawget(mt, "__name") or nil
end
M.mt_name = mt_name

function M.is_future(v)
  return type(v) == "userdata" and mt_name(v) == "moonflow.Future"
end
function M.is_list(v)
  return type(v) == "table" and mt_name(v) == "moonflow.FutureList"
end

-- A map's FutureList makes its Futures when they are read: raw, it may be
-- empty, and only its own (C) __len and __index give its runs.  Any other
-- table, a forged list among them, is read raw (its metamethods may be
-- hostile).
local function lazy_list(v)
  local mt = type(v) == "table" and debug.getmetatable(v)
  local len = type(mt) == "table" and rawget(mt, "__len")
  return type(len) == "function" and debug.getinfo(len, "S").what == "C"
    and M.is_list(v)
end
function M.list_len(v)
  if lazy_list(v) then return #v end
  return rawlen(v)
end
function M.list_get(v, i)
  if lazy_list(v) then return v[i] end
  return rawget(v, i)
end
function M.is_task(v)
  return type(v) == "userdata" and mt_name(v) == "moonflow.Task"
end
function M.is_state(v)
  return type(v) == "table" and mt_name(v) == "moonflow.State"
end

local TYPES = { PENDING = true, SCHEDULED = true, RUNNING = true,
  COMPLETED = true, FAILED = true, CRASHED = true, CANCELLED = true }
local NAMES = { Pending = true, Scheduled = true, Running = true,
  Completed = true, Failed = true, Retrying = true, AwaitingRetry = true,
  NotReady = true, TimedOut = true, Cached = true, Cancelled = true,
  Crashed = true }

-- Checks a State's shape (api.md, States); returns whether it is one.
function M.check_state(label, st)
  if not M.is_state(st) then
    M.violation(label, "expected a State, got %s", M.repr(st))
    return false
  end
  local ty, name = rawget(st, "type"), rawget(st, "name")
  if not TYPES[ty] or not NAMES[name] then
    M.violation(label, "State with type %s name %s", M.repr(ty), M.repr(name))
    return false
  end
  if type(rawget(st, "run_id")) ~= "string" or type(rawget(st, "run_name")) ~= "string"
      or math.type(rawget(st, "attempt")) ~= "integer"
      or type(rawget(st, "timestamp")) ~= "number" then
    M.violation(label, "State %s/%s lacks run_id, run_name, attempt or timestamp",
      ty, name)
    return false
  end
  return true
end

function M.final_type(ty, name)
  return ty == "COMPLETED" or ty == "FAILED" or ty == "CRASHED"
    or ty == "CANCELLED" or name == "NotReady"
end

return M
