-- spec/fuzz/options.lua: option tables for mf.task, mf.flow and :with --
-- valid ones, and ones api.md says are a UsageError (unknown keys, wrong
-- types, a negative delay, a jitter outside 0..1, a non-function hook).
-- Each table comes with what the definition must do: "valid" (it must be
-- accepted), "invalid" (a UsageError), or "unsure" (options api.md names
-- but this version may refuse, hostile metatables on the table).
local V = require "values"
local check = require "check"

local O = {}

local COMMON = { "name", "retries", "retry_delay", "retry_jitter",
  "retry_condition", "timeout", "log_prints", "on_running", "on_completion",
  "on_failure", "on_cancellation" }
local TASK_ONLY = { "tags", "task_run_name", "wait_for", "return_state", "runner",
  "cache_key", "cache_expiration", "refresh_cache", "cache", "persist_result" }
local PER_CALL = { wait_for = true, return_state = true }
local UNSUPPORTED = { "cache_key", "cache_expiration", "refresh_cache",
  "task_runner", "cache", "persist_result", "runner" }
local UNKNOWN = { "retry_delay_seconds", "timeout_seconds", "nope", "Name",
  "retries ", 1, true, 2.5 }

local function hooks(rng, case, purpose)
  local list = {}
  for i = 1, rng:int(0, 3) do list[i] = V.fn(rng, case, purpose) end
  return list
end

local function tags(rng, case, many)
  local list = {}
  local n = many and rng:int(30, 40) or rng:int(0, 3)
  for i = 1, n do list[i] = rng:pick(case.tags) end
  return list
end

-- Futures that stand for a run (not one whose __gc was called by hand: an
-- option holding one is refused, rightly).
local function futures(rng, case)
  local list = {}
  for _ = 1, rng:int(0, 3) do
    local f = V.future(rng, case)
    if f and pcall(function() return f:done() end) then list[#list + 1] = f end
  end
  return list
end

-- A valid value for key, or nil for none.
local function valid(rng, case, key, hazard)
  -- A name is a string without NUL bytes (a run's name is a C string).
  if key == "name" then return (V.string(rng):gsub("%z", "?"))
  elseif key == "retries" then return rng:weighted { { 6, 0 }, { 4, 1 }, { 2, 2 }, { 1, 3 } }
  elseif key == "retry_delay" then
    return rng:pick { 0, 1e-4, 0.001, { 0, 0.001 }, { 0.002 }, 0.0 }
  elseif key == "retry_jitter" then return rng:pick { 0, 0.5, 1 }
  elseif key == "retry_condition" then return V.fn(rng, case, "retry_condition")
  elseif key == "timeout" then
    return rng:weighted {
      { 10, 0.001 + rng:float() * 0.02 }, { 3, 1e-9 }, { 3, 0.05 }, { 5, 10 },
      { hazard("huge_timers") and 2 or 0, rng:pick { math.huge, 1e300, 2 ^ 63 } },
    }
  elseif key == "log_prints" then return rng:chance(0.5)
  elseif key:match("^on_") then return hooks(rng, case, "hook")
  elseif key == "tags" then return tags(rng, case, hazard("many_tags") and rng:chance(0.1))
  elseif key == "task_run_name" then
    if rng:chance(0.4) then return V.fn(rng, case, "run_name") end
    return rng:pick { "run-{x}", "{a}+{b}", "{nope}", "%s%d", "", "{1}",
      string.rep("r", 300), "{" }
  elseif key == "wait_for" then return futures(rng, case)
  elseif key == "return_state" then return rng:chance(0.3)
  elseif key == "runner" or key == "task_runner" then return V.runner(rng, case)
  elseif key == "cache_key" then
    -- (a plain callback on the main thread: a yield in it is Lua's "attempt
    -- to yield from outside a coroutine", the fuzzer's own error, which
    -- fails the run and reaches result() later, from another call)
    local fn = V.fn(rng, case, "cache_key")
    return function(...)
      local r = table.pack(pcall(fn, ...))
      if not r[1] then error(check.own(r[2]), 0) end
      return table.unpack(r, 2, r.n)
    end
  elseif key == "cache_expiration" then
    return rng:pick { 1e-9, 0.001, 1, 3600, 1e300, math.huge, 2 ^ 63 }
  elseif key == "refresh_cache" or key == "cache" or key == "persist_result" then
    return rng:chance(0.5)
  end
end

local NOT_FUNCTION = { "x", 1, {}, true }

local function invalid(rng, case, key)
  if key == "name" then return rng:pick { 1, {}, true, print, "a\0b" }
  elseif key == "retries" then return rng:pick { -1, 1.5, 0 / 0, "2", {}, math.huge, true }
  elseif key == "retry_delay" then
    return rng:pick { -1, 0 / 0, {}, { -1 }, "x", { 0, "a" }, -math.huge, true }
  elseif key == "retry_jitter" then return rng:pick { -0.1, 1.1, 0 / 0, "0.5", math.huge }
  elseif key == "retry_condition" then return rng:pick(NOT_FUNCTION)
  elseif key == "timeout" then return rng:pick { 0, -1, 0 / 0, "1", {}, -math.huge, true }
  elseif key == "log_prints" then return rng:pick { 1, "true", {} }
  elseif key:match("^on_") then
    return rng:pick { V.fn(rng, case), "x", { 1 }, { V.fn(rng, case), "x" }, true }
  elseif key == "tags" then return rng:pick { "t", { 1 }, { {} }, { true }, 5 }
  elseif key == "task_run_name" then return rng:pick { 1, {}, true }
  elseif key == "wait_for" then return rng:pick { "abc", { 1 }, 5, { "x" }, true }
  elseif key == "return_state" then return rng:pick { "yes", 1, {} }
  elseif key == "runner" or key == "task_runner" then
    return rng:pick { "threads", {}, 1, true, print }
  elseif key == "cache_key" then return rng:pick(NOT_FUNCTION)
  elseif key == "cache_expiration" then return rng:pick { 0, -1, 0 / 0, "1", {}, -math.huge, true }
  elseif key == "refresh_cache" or key == "cache" or key == "persist_result" then
    return rng:pick { 1, "true", {} }
  end
end

-- Options for: "task", "flow", "task_with", "flow_with".
function O.make(rng, case, what, hazard)
  local opts, verdict, why = {}, "valid", nil
  local keys = {}
  for _, k in ipairs(COMMON) do keys[#keys + 1] = k end
  for _, k in ipairs(TASK_ONLY) do keys[#keys + 1] = k end
  if what:match("^flow") then
    keys[#keys + 1] = "on_crashed"
    keys[#keys + 1] = "task_runner"
  end
  local is_flow = what:match("^flow") ~= nil
  local p = rng:pick { 0.05, 0.15, 0.3 }
  for _, key in ipairs(keys) do
    if rng:chance(p) then
      local bad = rng:chance(0.15)
      local allowed = not is_flow or key == "on_crashed" or key == "task_runner"
      if is_flow and not allowed then
        for _, k in ipairs(COMMON) do if k == key then allowed = true end end
        if what == "flow_with" and PER_CALL[key] then allowed = true end
      end
      if not allowed then
        bad = true
        opts[key] = valid(rng, case, key == "on_crashed" and "on_failure" or key, hazard)
      elseif bad and what == "flow_with" and PER_CALL[key] and not hazard("with_per_call") then
        bad = false
        opts[key] = valid(rng, case, key, hazard)
      elseif bad then
        opts[key] = invalid(rng, case, key == "on_crashed" and "on_failure" or key)
      else
        opts[key] = valid(rng, case, key == "on_crashed" and "on_failure" or key, hazard)
      end
      if bad then
        verdict = "invalid"
        why = string.format("%s = %s", key, check.repr(opts[key]))
      end
    end
  end
  if rng:chance(0.04) then
    local key = rng:pick(UNKNOWN)
    opts[key] = V.any(rng, case, 2) or 1
    verdict, why = "invalid", "unknown option " .. check.repr(key)
  end
  if rng:chance(0.03) then
    -- (may replace a value chosen above, valid or not)
    opts[rng:pick(UNSUPPORTED)] = V.any(rng, case, 2)
    verdict = "unsure"
  end
  if hazard("hostile_mt") and rng:chance(0.05) then
    setmetatable(opts, V.hostile_mt(rng, case, 1))
    verdict = "unsure" -- its __pairs or __index may raise first
  end
  return opts, verdict, why
end

return O
