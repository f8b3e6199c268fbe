-- moonflow.show: values as text for a person -- the REPL's printing of
-- results, and error values in reports and tracebacks (a table without
-- __tostring readably, never "table: 0x...").
local describe = require("moonflow.control").describe

local M = {}

local format, concat = string.format, table.concat

local MAX_DEPTH, MAX_ITEMS = 3, 30

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local show

local function show_table(t, depth, seen)
  if seen[t] then return "<cycle>" end
  if depth > MAX_DEPTH then return "{...}" end
  seen[t] = true
  local parts, n = {}, #t
  for i = 1, math.min(n, MAX_ITEMS) do parts[#parts + 1] = show(t[i], depth + 1, seen) end
  local keys = {}
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for _, k in ipairs(keys) do
    if #parts >= MAX_ITEMS then parts[#parts + 1] = "..." break end
    local key = is_identifier(k) and k or "[" .. show(k, depth + 1, seen) .. "]"
    parts[#parts + 1] = key .. " = " .. show(t[k], depth + 1, seen)
  end
  seen[t] = nil
  if n > MAX_ITEMS then parts[#parts + 1] = "..." end
  return "{" .. concat(parts, ", ") .. "}"
end

-- A value as the REPL prints it: strings quoted, tables readably (those
-- with a __tostring by it), the rest by tostring.
function show(v, depth, seen)
  depth, seen = depth or 1, seen or {}
  local t = type(v)
  if t == "string" then return (format("%q", v):gsub("\\\n", "\\n")) end
  if t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and mt.__tostring then return describe(v) end
    if mt ~= nil and type(mt) ~= "table" then return describe(v) end -- a protected metatable
    local ok, text = pcall(show_table, v, depth, seen)
    return ok and text or describe(v)
  end
  return describe(v)
end

M.show = show

-- An error value as text: a string as it is, a table without __tostring
-- readably, anything else by tostring (never raising).
function M.error_text(err)
  if type(err) == "string" then return err end
  if type(err) == "table" then return show(err) end
  return describe(err)
end

return M
