-- moonflow.cache: the keys of kept results (api.md task options cache_key,
-- cache_expiration, refresh_cache, cache, persist_result).  The lookup, the
-- encoding and the store are in C (bindings/cache.c); this file says which
-- key a run has.
--
-- cache = true keys a run by its task's name and source (the function's
-- bytecode) and its inputs, written canonically (table keys sorted), so
-- that the same call in another process finds the same key.
local core = require "moonflow.core"

local M = {}

local concat, sort, fmt = table.concat, table.sort, string.format

local function unhashable(path, what)
  error(string.format("%s is %s, which has no stable key", path, what), 0)
end

local key_order = { number = 1, string = 2, boolean = 3 }

-- Appends the canonical text of v to out.
local function canonical(v, out, path, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "number" then
    out[#out + 1] = math.type(v) == "integer" and fmt("%d", v)
      or fmt("f%a", v) -- 1.0 is not 1
  elseif t == "string" then
    out[#out + 1] = fmt("%q", v)
  elseif t == "table" and getmetatable(v) == nil then
    if seen[v] then unhashable(path, "a table that contains itself") end
    seen[v] = true
    local keys = {}
    for k in pairs(v) do
      if not key_order[type(k)] then
        unhashable(path, "a table with a " .. type(k) .. " key")
      end
      keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
      local ta, tb = key_order[type(a)], key_order[type(b)]
      if ta ~= tb then return ta < tb end
      if type(a) == "boolean" then return not a and b end
      return a < b
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      canonical(k, out, path, seen)
      out[#out + 1] = "="
      canonical(v[k], out, path .. "[" .. tostring(k) .. "]", seen)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
    seen[v] = nil
  else
    unhashable(path, "a " .. t)
  end
end

-- The default key of a run of the task named name with body fn; nil and
-- a reason when its inputs have no stable key.
function M.default_key(name, fn, ...)
  local ok, source = pcall(string.dump, fn, true)
  if not ok then source = tostring(fn) end -- a C function
  local out = { name, "\0", source, "\0" }
  for i = 1, select("#", ...) do
    local good, err = pcall(canonical, (select(i, ...)), out,
      "argument #" .. i, {})
    if not good then return nil, err end
    out[#out + 1] = ";"
  end
  return name .. ":" .. core.hash(concat(out))
end

-- The keyer bindings/cache.c calls at an attempt's start, as a plain
-- callback: keyer(task, fn, args...) -> key or nil, expiration (seconds, 0:
-- never), refresh, keep (the result is to be kept).  user_fn(task) gives the
-- user's function behind a task (its body may be a wrapper).
function M.keyer(user_fn, warn)
  return function(task, fn, ...)
    local _, name, opts = core.task_info(task)
    local key
    if opts.cache_key then
      key = opts.cache_key(...)
      if key ~= nil and type(key) ~= "string" then
        error(core.error("UsageError", fmt(
          "task %s: cache_key must return a string or nil, got %s", name,
          type(key))), 0)
      end
    elseif opts.cache then
      local why
      key, why = M.default_key(name, user_fn(task) or fn, ...)
      if not key then
        warn(fmt("task %s: not cached: %s", name, why))
      end
    end
    return key, opts.cache_expiration or 0, opts.refresh_cache or false,
      key ~= nil or opts.persist_result == true
  end
end

return M
