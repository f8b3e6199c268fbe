-- moonflow.repl: the Lua half of the REPL (bindings/repl.c reads the input).
--
-- Each complete chunk runs as its own run, so `fut:result()` typed at the
-- prompt parks that run while the loop (and everything submitted before)
-- goes on.  Values are printed readably; futures and states as one line.
local core = require "moonflow.core"
local describe = require("moonflow.control").describe

local M = {}

local format, concat = string.format, table.concat

-- {====== Printing values ======

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

function show(v, depth, seen)
  depth, seen = depth or 1, seen or {}
  local t = type(v)
  if t == "string" then return format("%q", v):gsub("\\\n", "\\n") end
  if t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and mt.__tostring then return describe(v) end
    return show_table(v, depth, seen)
  end
  return describe(v)
end

M.show = show

-- }======

-- {====== Evaluating chunks ======

-- Compiles a chunk as an expression first (so `1 + 1` prints 2), then as
-- statements.  Returns fn, or nil and "incomplete", or nil and the error.
local function compile(source)
  local fn = load("return " .. source, "=stdin")
  if fn then return fn end
  local err
  fn, err = load(source, "=stdin")
  if fn then return fn end
  if err:match("<eof>$") then return nil, "incomplete" end
  return nil, err
end

local chunk_task = nil  -- made on first use
local current = nil     -- the Future of the chunk running now

local function outcome_text(fut)
  local state = fut:state()
  if state.type == "COMPLETED" then
    local results = table.pack(fut:result())
    if results.n == 0 then return nil end
    local parts = {}
    for i = 1, results.n do parts[i] = show(results[i]) end
    return concat(parts, "\t") .. "\n"
  elseif state.type == "CANCELLED" then
    return "interrupted\n"
  end
  return (state.traceback or describe(fut:result(nil, false))) .. "\n"
end

-- Prints how the chunk's run ended; the prompt comes back whatever
-- printing it does (a value's __tostring or __pairs may raise).
local function report(fut, write, ready)
  local ok, text = pcall(outcome_text, fut)
  if not ok then text = "(cannot print the result: " .. describe(text) .. ")\n" end
  current = nil
  if text then pcall(write, text) end
  ready()
end

-- Feeds the source typed so far.  Returns "incomplete" (more lines needed),
-- "error" (reported with write; start over) or "started" (a run executes the
-- chunk; ready() is called when it is final and its result was printed).
function M.feed(source, write, ready)
  local fn, err = compile(source)
  if not fn then
    if err == "incomplete" then return "incomplete" end
    write(err .. "\n")
    return "error"
  end
  chunk_task = chunk_task or core.new_task(function(f, ...) return f(...) end, "repl",
    { _quiet = true }, false)
  current = chunk_task:submit(fn)
  current:add_done_callback(function(fut) report(fut, write, ready) end)
  return "started"
end

-- Ctrl-C: stops the chunk's wait, not the runs it started.
function M.interrupt()
  if not current then return false end
  core.release_children(current)
  current:cancel()
  return true
end

-- Reports failures of background runs that nobody handled.
function M.report_background(write)
  for _, fut in ipairs(core.unhandled_root()) do
    local state = fut:state()
    local err = fut:result(nil, false)
    write(format("[background] %s %s: %s\n", fut.name, state.name,
      state.traceback or describe(err)))
  end
end

-- }======

return M
