-- moonflow.store_cli: `moonflow runs`, `moonflow show RUN`, `moonflow logs
-- RUN`: reading the run store (bindings/store*.c) in a terminal, or as
-- JSON.  A flow of many runs is shown aggregated (per task and state) with
-- a page of its runs.
local core = require "moonflow.core"

local M = {}
local fmt = string.format

local TYPES = { [0] = "PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED",
  "CRASHED", "CANCELLED" }
local NAMES = { [0] = "Pending", "Scheduled", "Running", "Completed", "Failed",
  "Retrying", "AwaitingRetry", "NotReady", "TimedOut", "Cached", "Cancelled",
  "Crashed" }
local LEVELS = { [10] = "DEBUG", [20] = "INFO", [30] = "WARNING",
  [40] = "ERROR" }

local function usage_error(msg) error({ usage = true, message = msg }, 0) end

-- {====== Formatting ======

local function when(t)
  if not t then return "-" end
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t))
end

local function duration(a, b)
  if not a or not b then return "-" end
  local s = b - a
  if s < 0.001 then return fmt("%.0fus", s * 1e6) end
  if s < 1 then return fmt("%.1fms", s * 1e3) end
  if s < 60 then return fmt("%.2fs", s) end
  if s < 3600 then return fmt("%dm%02ds", s // 60, math.floor(s % 60)) end
  return fmt("%dh%02dm", s // 3600, math.floor(s % 3600) // 60)
end

-- A run not final whose process ended (or is gone: SIGKILL, a crash)
-- will never end: said so beside its state.
local gone_cache = {}
local function process_gone(db, process)
  if gone_cache[process] == nil then
    local p = db:query("SELECT pid, ended FROM processes WHERE id = ?", process)[1]
    gone_cache[process] = not p or p.ended ~= nil or not core.process_alive(p.pid)
  end
  return gone_cache[process]
end

local current_db
local function state_of(r)
  return TYPES[r.state_type] or "?", NAMES[r.state_name] or "?"
end

local function is_gone(r)
  return r.state_type < 3 and r.state_name ~= 7 and current_db ~= nil
    and process_gone(current_db, r.process)
end

-- "COMPLETED", "FAILED/TimedOut", "RUNNING (process gone)".
local function state_text(r)
  local type_, name = state_of(r)
  local text = type_ == name:upper() and type_ or type_ .. "/" .. name
  return is_gone(r) and text .. " (process gone)" or text
end

-- Prints rows (arrays of strings) under headers, columns padded.
local function table_print(headers, rows)
  local widths = {}
  for i, h in ipairs(headers) do widths[i] = #h end
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do
      if i < #headers and utf8.len(cell) and utf8.len(cell) > widths[i] then
        widths[i] = utf8.len(cell)
      end
    end
  end
  local function line(cells)
    local out = {}
    for i, cell in ipairs(cells) do
      local pad = i < #headers and widths[i] - (utf8.len(cell) or #cell) or 0
      out[i] = cell .. string.rep(" ", pad)
    end
    print((table.concat(out, "  "):gsub("%s+$", "")))
  end
  line(headers)
  for _, row in ipairs(rows) do line(row) end
end

-- A small JSON writer: tables with a [1] are arrays.
local function json(v, out)
  out = out or {}
  local t = type(v)
  if t == "table" then
    if v[1] ~= nil or next(v) == nil and getmetatable(v) == "array" then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        json(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        json(k, out)
        out[#out + 1] = ":"
        json(v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n",
        ["\t"] = "\\t", ["\r"] = "\\r" }
      return named[c] or fmt("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "number" then
    out[#out + 1] = (v ~= v or v == math.huge or v == -math.huge) and "null"
      or math.type(v) == "integer" and tostring(v) or fmt("%.17g", v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = "null"
  end
  return out
end

local function print_json(v)
  local empty_array = setmetatable({}, { __metatable = "array" })
  if type(v) == "table" and next(v) == nil then v = empty_array end
  print(table.concat(json(v)))
end

-- }======

-- {====== Arguments ======

-- Parses --key value and --flag options; the rest are positional.
local function parse(args, known)
  local opts, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local key = a:match("^%-%-([%w-]+)$")
    if key then
      local kind = known[key]
      if not kind then usage_error("unknown option --" .. key) end
      if kind == "flag" then
        opts[key] = true
      else
        i = i + 1
        if args[i] == nil then usage_error("--" .. key .. " needs a value") end
        opts[key] = args[i]
        if kind == "number" then
          opts[key] = math.tointeger(tonumber(args[i]))
          if not opts[key] or opts[key] < 0 then
            usage_error("--" .. key .. " needs a whole number >= 0")
          end
        end
      end
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return opts, rest
end

-- --since: 30s, 10m, 2h, 3d ago, or a date "YYYY-MM-DD[ HH:MM[:SS]]".
local function since_time(text)
  local n, unit = text:match("^(%d+%.?%d*)([smhd])$")
  if n then
    local scale = { s = 1, m = 60, h = 3600, d = 86400 }
    return os.time() - tonumber(n) * scale[unit]
  end
  local y, mo, d, rest = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if y then
    local h, mi, s = rest:match("^[ T](%d%d):(%d%d):?(%d*)$")
    if rest ~= "" and not h then usage_error("bad --since " .. text) end
    return os.time { year = tonumber(y), month = tonumber(mo),
      day = tonumber(d), hour = tonumber(h) or 0, min = tonumber(mi) or 0,
      sec = tonumber(s) or 0 }
  end
  usage_error("--since takes 30s, 10m, 2h, 3d or a date YYYY-MM-DD[ HH:MM]")
end

-- A state filter: a type (FAILED) or a name (Cached), any case.
local function state_filter(text)
  local up = text:upper()
  for i = 0, #TYPES do
    if TYPES[i] == up then return "state_type = " .. i end
  end
  for i = 0, #NAMES do
    if NAMES[i]:upper() == up then return "state_name = " .. i end
  end
  usage_error("unknown state " .. text .. " (a type like FAILED or a name "
    .. "like Cached)")
end

-- }======

-- {====== Queries ======

local TREE = [[WITH RECURSIVE tree(id) AS (SELECT ?1 UNION
  SELECT r.id FROM runs r JOIN tree t ON r.flow = t.id)]]

-- The run named by text: an id, or the newest run with that name.
local function find_run(db, text)
  local id = math.tointeger(tonumber(text))
  local rows = id and db:query("SELECT * FROM runs WHERE id = ?", id)
    or db:query("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1",
      text)
  if not rows[1] then error({ message = "no run " .. text .. " in the store" }, 0) end
  return rows[1]
end

local function counts_text(counts)
  local parts = {}
  for _, c in ipairs(counts) do
    parts[#parts + 1] = fmt("%d %s", c.n, NAMES[c.state_name] or "?")
  end
  return #parts > 0 and table.concat(parts, ", ") or "-"
end

local function task_counts(db, id)
  return db:query([[SELECT state_name, count(*) AS n FROM runs
    WHERE flow = ? AND kind = 0 GROUP BY state_name
    ORDER BY n DESC, state_name]], id)
end

-- Every state of run r: its history blob, or (NULL: nothing the times do
-- not say) Pending at created, Running at started, the state at ended.
local function history_of(r)
  local blob = r.history
  local states, pos = {}, 1
  if not blob then
    states[1] = { type = "PENDING", name = "Pending", time = r.created }
    if r.started then
      states[2] = { type = "RUNNING", name = "Running", time = r.started }
    end
    if r.ended then
      states[#states + 1] = { type = TYPES[r.state_type],
        name = NAMES[r.state_name], time = r.ended }
    end
    return states
  end
  while pos + 8 <= #blob do
    local b, t
    b, t, pos = string.unpack("<Bd", blob, pos)
    states[#states + 1] = { type = TYPES[b >> 4], name = NAMES[b & 15],
      time = t }
  end
  return states
end

local function run_record(r)
  local type_, name = state_of(r)
  return { id = r.id, name = r.name, task = r.task,
    kind = r.kind == 1 and "flow" or "task", parent = r.parent, flow = r.flow,
    state = type_, state_name = name, created = r.created,
    started = r.started, ended = r.ended, attempts = r.attempts,
    tags = r.tags, parameters = r.parameters, message = r.message,
    traceback = r.traceback, history = history_of(r),
    process_gone = is_gone(r) or nil }
end

-- }======

-- {====== Commands ======

local function runs(db, args)
  local opts = parse(args, { name = "string", state = "string",
    since = "string", limit = "number", json = "flag" })
  local where, params = { "kind = 1" }, {}
  if opts.name then
    where[#where + 1] = opts.name:find("[*?]") and "name GLOB ?"
      or "(name = ? OR task = ?)"
    params[#params + 1] = opts.name
    if not opts.name:find("[*?]") then params[#params + 1] = opts.name end
  end
  if opts.state then where[#where + 1] = state_filter(opts.state) end
  if opts.since then
    where[#where + 1] = "created >= ?"
    params[#params + 1] = since_time(opts.since)
  end
  params[#params + 1] = opts.limit or 20
  local rows = db:query("SELECT * FROM runs WHERE " ..
    table.concat(where, " AND ") .. " ORDER BY created DESC, id DESC LIMIT ?",
    table.unpack(params))
  if opts.json then
    local out = {}
    for i, r in ipairs(rows) do
      local rec = run_record(r)
      rec.history, rec.traceback = nil, nil
      rec.task_runs = {}
      for _, c in ipairs(task_counts(db, r.id)) do
        rec.task_runs[NAMES[c.state_name] or "?"] = c.n
      end
      out[i] = rec
    end
    print_json(out)
    return 0
  end
  if #rows == 0 then
    print("no flow runs recorded" .. (#where > 1 and " that match" or ""))
    return 0
  end
  local lines = {}
  for i, r in ipairs(rows) do
    lines[i] = { tostring(r.id), r.name, state_text(r), when(r.started or r.created),
      duration(r.started, r.ended), counts_text(task_counts(db, r.id)) }
  end
  table_print({ "ID", "FLOW RUN", "STATE", "START", "DURATION", "TASK RUNS" },
    lines)
  return 0
end

local function print_failure(r, indent)
  indent = indent or ""
  if r.message then print(indent .. "error: " .. r.message) end
  if r.traceback and r.traceback ~= r.message then
    local first = true
    for line in r.traceback:gmatch("[^\n]+") do
      if not (first and line == r.message) then print(indent .. "  " .. line) end
      first = false
    end
  end
end

local function describe(r)
  return fmt("%s [%s] %s %s", r.name, r.id, state_text(r), duration(r.started, r.ended))
end

-- The tree of a small run: every run under it, by parent.
local function print_tree(db, root)
  local rows = db:query(TREE .. " SELECT r.* FROM runs r JOIN tree t ON r.id = t.id ORDER BY r.id", root.id)
  local children = {}
  for _, r in ipairs(rows) do
    if r.id ~= root.id then
      local p = r.parent or root.id
      children[p] = children[p] or {}
      table.insert(children[p], r)
    end
  end
  local function walk(r, prefix, last, top)
    print((top and "" or prefix .. (last and "└─ " or "├─ ")) .. describe(r))
    local kids = children[r.id] or {}
    for i, k in ipairs(kids) do
      walk(k, top and "" or prefix .. (last and "   " or "│  "), i == #kids)
    end
  end
  walk(root, "", true, true)
  return rows
end

local function show(db, args)
  local opts, rest = parse(args, { limit = "number", offset = "number",
    json = "flag" })
  if not rest[1] then usage_error("show needs a run: an id or a name") end
  local r = find_run(db, rest[1])
  local total = db:query(TREE .. " SELECT count(*) AS n FROM tree", r.id)[1].n - 1
  local limit = opts.limit or 50
  if opts.json then
    local rec = run_record(r)
    rec.runs_inside = total
    rec.by_task = db:query(TREE .. [[ SELECT task, state_name, count(*) AS n,
      avg(ended - started) AS avg_duration FROM runs WHERE id IN tree
      AND id != ?1 GROUP BY task, state_name ORDER BY task]], r.id)
    for _, g in ipairs(rec.by_task) do g.state_name = NAMES[g.state_name] end
    local page = db:query(TREE .. [[ SELECT * FROM runs WHERE id IN tree
      AND id != ?1 ORDER BY id LIMIT ?2 OFFSET ?3]], r.id, limit,
      opts.offset or 0)
    rec.runs = {}
    for i, x in ipairs(page) do rec.runs[i] = run_record(x) end
    print_json(rec)
    return 0
  end
  print(fmt("%s run %s (id %d): %s", r.kind == 1 and "flow" or "task",
    r.name, r.id, state_text(r)))
  print(fmt("  task %s; created %s; started %s; duration %s; attempts %d",
    r.task or "?", when(r.created), when(r.started),
    duration(r.started, r.ended), r.attempts or 0))
  if r.parameters then print("  parameters: " .. r.parameters) end
  if r.tags then print("  tags: " .. r.tags) end
  local states = {}
  for _, s in ipairs(history_of(r)) do
    states[#states + 1] = fmt("%s %s", s.name, os.date("%H:%M:%S", math.floor(s.time))
      .. fmt(".%03d", math.floor((s.time % 1) * 1000)))
  end
  print("  states: " .. table.concat(states, " -> "))
  print_failure(r, "  ")
  if total == 0 then return 0 end
  print("")
  if total <= limit and not opts.offset then
    local rows = print_tree(db, r)
    for _, x in ipairs(rows) do
      if x.id ~= r.id and x.message and x.state_type ~= 3 then
        print("")
        print(describe(x))
        print_failure(x, "  ")
      end
    end
    return 0
  end
  -- Many runs: aggregated per task and state, then a page of them.
  print(fmt("%d runs inside; by task and state:", total))
  local groups = db:query(TREE .. [[ SELECT task, state_name, count(*) AS n,
    avg(ended - started) AS avg, max(ended - started) AS max FROM runs
    WHERE id IN tree AND id != ?1 GROUP BY task, state_name
    ORDER BY task, n DESC]], r.id)
  local lines = {}
  for i, g in ipairs(groups) do
    lines[i] = { g.task or "?", NAMES[g.state_name] or "?", tostring(g.n),
      g.avg and duration(0, g.avg) or "-", g.max and duration(0, g.max) or "-" }
  end
  table_print({ "TASK", "STATE", "RUNS", "AVG", "MAX" }, lines)
  local failed = db:query(TREE .. [[ SELECT * FROM runs WHERE id IN tree
    AND id != ?1 AND state_type IN (4, 5) ORDER BY id LIMIT 5]], r.id)
  for _, x in ipairs(failed) do
    print("")
    print(describe(x))
    print_failure(x, "  ")
  end
  local offset = opts.offset or 0
  local page = db:query(TREE .. [[ SELECT * FROM runs WHERE id IN tree
    AND id != ?1 ORDER BY id LIMIT ?2 OFFSET ?3]], r.id, limit, offset)
  print("")
  print(fmt("runs %d to %d of %d:", offset + 1, offset + #page, total))
  lines = {}
  for i, x in ipairs(page) do
    lines[i] = { tostring(x.id), x.name, state_text(x),
      duration(x.started, x.ended) }
  end
  table_print({ "ID", "RUN", "STATE", "DURATION" }, lines)
  if offset + #page < total then
    print(fmt("(more: moonflow show %s --offset %d)", rest[1], offset + #page))
  end
  return 0
end

local function logs(db, args)
  local opts, rest = parse(args, { json = "flag", limit = "number" })
  if not rest[1] then usage_error("logs needs a run: an id or a name") end
  local r = find_run(db, rest[1])
  local rows = db:query(TREE .. [[ SELECT l.time, l.level, l.message,
    r.name AS run FROM logs l LEFT JOIN runs r ON r.id = l.run
    WHERE l.run IN tree ORDER BY l.id LIMIT ?2]], r.id, opts.limit or -1)
  if opts.json then
    for _, l in ipairs(rows) do l.level = LEVELS[l.level] or l.level end
    print_json(rows)
    return 0
  end
  if #rows == 0 then print("no log lines for run " .. r.name) end
  for _, l in ipairs(rows) do
    print(fmt("%s.%03d %-7s %s | %s", os.date("%H:%M:%S", math.floor(l.time)),
      math.floor((l.time % 1) * 1000), LEVELS[l.level] or tostring(l.level),
      l.run or "-", l.message))
  end
  return 0
end

-- }======

local commands = { runs = runs, show = show, logs = logs }

-- The program's entry: main(command, path or nil, args...) -> exit status.
function M.main(command, path, ...)
  local args = { ... }
  if not path then
    io.stderr:write("moonflow: the run store is off (MOONFLOW_STORE=off, or "
      .. "no HOME)\n")
    return 1
  end
  if path ~= ":memory:" then
    local f = io.open(path, "rb")
    if not f then
      io.stderr:write("moonflow: no run store at " .. path ..
        " (nothing recorded yet)\n")
      return 1
    end
    f:close()
  end
  local ok, status = pcall(function()
    local db = core.store_reader(path)
    current_db = db
    local result = commands[command](db, args)
    db:close()
    return result
  end)
  if ok then return status end
  local err = status
  io.stderr:write("moonflow: ", type(err) == "table" and tostring(err.message)
    or tostring(err), "\n")
  return type(err) == "table" and err.usage and 2 or 1
end

return M
