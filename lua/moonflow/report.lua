-- moonflow.report: failure reports written for the person who wrote the
-- flow (the program's, the REPL's, the module's at exit).
--
-- A report starts at the run where the error was first raised (the links
-- of bindings/origin.c lead there from the run that failed last: a flow
-- that re-raised it, the main chunk), gives its error as text and the
-- frames of the user's code only, then how the error travelled: which runs
-- raised it again and where, which flow failed because nobody handled it,
-- which run never started because of it.  The State keeps the full,
-- unfiltered detail for tools.
local core = require "moonflow.core"
local error_text = require("moonflow.show").error_text

local M = {}

local format, concat = string.format, table.concat

-- {====== Frames ======

local TAIL = "(...tail calls...)"

local function is_moonflow(frame)
  return frame:sub(1, 10) == "[moonflow]"
end

-- A C function of moonflow's or one it calls (a frame a user did not
-- write): not a named global function (the Task's __call, Future methods
-- show as locals, fields, methods), a function of the moonflow module, one
-- called by moonflow's own Lua code, or the host's bottom frame.
local function is_helper_c(frame, caller)
  if frame:sub(1, 4) ~= "[C]:" then return false end
  local name = frame:match("^%[C%]: in function '([^']*)'")
  if not name or name:find("^moonflow%.") then return true end
  return caller == nil or is_moonflow(caller)
end

-- The frames of a traceback (luaL_traceback's text) the user wrote: a list
-- of lines without their tab.
function M.user_frames(traceback)
  if type(traceback) ~= "string" then return {} end
  local from, pos = nil, 1
  while true do -- the last "stack traceback:" (a message may hold one)
    local s, e = traceback:find("stack traceback:\n", pos, true)
    if not s then break end
    if s == 1 or traceback:sub(s - 1, s - 1) == "\n" then from = e + 1 end
    pos = e + 1
  end
  if not from then return {} end
  local frames = {}
  for line in traceback:sub(from):gmatch("[^\n]+") do
    frames[#frames + 1] = (line:gsub("^\t", ""))
  end
  local kept = {}
  for i, frame in ipairs(frames) do
    if frame == TAIL then
      if #kept > 0 and kept[#kept] ~= TAIL then kept[#kept + 1] = frame end
    elseif not is_moonflow(frame) and not is_helper_c(frame, frames[i + 1]) then
      kept[#kept + 1] = frame
    end
  end
  return kept
end

local function add_frames(out, traceback, header)
  local frames = M.user_frames(traceback)
  if #frames == 0 then return false end
  if header then out[#out + 1] = header end
  for _, frame in ipairs(frames) do out[#out + 1] = "\t" .. frame end
  return true
end

-- }======

-- {====== Runs ======

-- The failure of fut and of the runs its error came from: a list from fut
-- back to the run that raised the error first.
local function chain_of(fut)
  local chain, seen = {}, {}
  local cur = fut
  while cur and not seen[cur] do
    seen[cur] = true
    local info = core.failure(cur)
    if not info then break end
    info.fut = cur
    chain[#chain + 1] = info
    cur = info.from or info.cause
  end
  return chain
end

-- "task run explode-1", "flow run etl-1"; the program's own runs by what
-- they are to the user.
local function run_title(info)
  if info.internal then
    return info.name == "main" and "the main chunk" or "the prompt"
  end
  if info.kind == "run" then return "run " .. info.name end -- a promise's
  return info.kind .. " run " .. info.name
end

local function attempts(info)
  if (info.attempts or 1) > 1 then
    return format(" after %d attempts", info.attempts)
  end
  return ""
end

local function error_of(info)
  return info.error
end

-- "failed", "crashed", "was cancelled", ...: how the run ended.
local function ended(info)
  local state = info.state
  if state == "Failed" or state == "TimedOut" then return "failed" end
  if state == "Crashed" then return "crashed" end
  if state == "Cancelled" then return "was cancelled" end
  if state == "NotReady" then return "did not start" end
  return "ended " .. tostring(state)
end

-- The first line: the run where the error was raised first, how it ended
-- and the error as text.
local function headline(origin, unhandled)
  local err = error_text(error_of(origin))
  if origin.internal then return err end
  if origin.state == "NotReady" then -- (its UpstreamFailed says so)
    return run_title(origin) .. ": " .. err
  end
  local line = run_title(origin) .. " " .. ended(origin) .. attempts(origin)
  if unhandled then line = line .. " and nothing handled it" end
  if origin.state == "Cancelled" then return line end
  return line .. ": " .. err
end

-- One step of the error's way, from the run before (prev) to info.
local function step(out, info, prev)
  local title = run_title(info) .. attempts(info)
  if info.upstream then
    local line = format("%s did not start: its upstream run %s ended %s",
      title, info.upstream, info.upstream_state)
    if info.root then
      line = line .. format(", after run %s ended %s", info.root, info.root_state)
    end
    out[#out + 1] = line
    return
  end
  if info.how == "unhandled" then
    local count = tonumber((info.message or ""):match("^(%d+) unhandled"))
    local more = count and count > 1
      and format(" (the first of %d unhandled failed runs inside it)", count) or ""
    out[#out + 1] = format("%s failed: nothing handled the failure of %s%s",
      title, run_title(prev), more)
  elseif info.how == "returned" then
    out[#out + 1] = format("%s failed: it returned %s (%s)", title,
      run_title(prev), info.message or "failed")
  else
    local err, before = error_of(info), error_of(prev)
    local header
    if rawequal(err, before) then
      header = format("raised again by %s:", title)
    elseif type(err) == "table" and type(rawget(err, "kind")) == "string" then
      header = format("raised again by %s as %s:", title, rawget(err, "kind"))
    else
      header = format("raised by %s: %s", title, error_text(err))
    end
    if not add_frames(out, info.traceback, header) then out[#out + 1] = header end
    return
  end
  add_frames(out, info.traceback, nil)
end

-- The report of the final run fut that did not complete (no trailing
-- newline).  opts.unhandled: it failed and nothing handled it.
function M.failure(fut, opts)
  opts = opts or {}
  local chain = chain_of(fut)
  if #chain == 0 then return tostring(fut) end
  local origin = chain[#chain]
  local out = { headline(origin, opts.unhandled and #chain == 1) }
  add_frames(out, origin.traceback, "stack traceback:")
  -- A deep recursion that re-raised: the steps nearest the origin and the
  -- ones nearest the run, not ten thousand.
  local near = 3
  for i = #chain - 1, 1, -1 do
    if i == #chain - 1 - near and i > near then
      out[#out + 1] = format("(... raised again by %d more runs)", i - near)
    end
    if i > #chain - 1 - near or i <= near then step(out, chain[i], chain[i + 1]) end
  end
  if opts.unhandled and #chain > 1 then
    out[#out + 1] = "nothing handled the failure of " .. run_title(chain[1])
  end
  return concat(out, "\n")
end

-- Never raises: a report that cannot be made is a line saying so.
function M.safe_failure(fut, opts)
  local ok, text = pcall(M.failure, fut, opts)
  if ok then return text end
  return format("%s (the report failed: %s)", tostring(fut), error_text(text))
end

-- }======

return M
