-- bench/compare.lua: moonflow against Node.js and Lua on the peers' four
-- workloads (../shared/peers: W1 map-noop, W2 sleep-fanout, W3 chain,
-- W4 fan-in-dag), measured cold: every figure comes from a fresh process, as
-- a user runs a script (no warm-up, Node's JIT starts cold too), and checked
-- against the targets of issue 11.
--
-- Each process times itself from the first submit to the last result
-- (bench/workloads.lua and the peers' scripts print `WORKLOAD N seconds
-- per_task_us`); /usr/bin/time gives its peak RSS and whole wall time.
-- moonflow is run three ways: the program as a user runs it (run store on,
-- in a fresh MOONFLOW_HOME per process so ~/.moonflow is left alone), the
-- program with MOONFLOW_STORE=off, and stock lua5.4 with the module; the
-- peers are Node.js (Promise.all), bare Lua (a coroutine per task, no loop)
-- and Lua + luv (luv-queue).  The runners are interleaved within each
-- repetition so that the shared machine's noise falls on all of them;
-- figures are medians, ratios are to Node in the same run.  Also, each in
-- processes of their own: bytes per finished future held in a list (Lua heap
-- + C malloc), instructions per W1 task (callgrind: the difference of two
-- sizes, so start-up cancels), the loop's longest stall while a run maps
-- 1M elements, the game-loop example's frames over budget, and the start-up
-- of a process that only loads moonflow.  A figure
-- that cannot be measured (a tool or peer missing) says why.
--
-- Run from the repository's root (make bench runs it):
--   MOONFLOW_STORE=off build/moonflow bench/compare.lua
--   or   MF_MODULE_DIR=build lua5.4 bench/compare.lua
-- (This process's own run store would record nothing of use, and open, and
-- prune, ~/.moonflow's while it measures; each runner sets the store its
-- way.  Until e69caf3 this process, blocked in a read inside its run,
-- woke 400 times a second and slowed the processes it measured.)
-- Environment: REPS (repetitions, default 5), QUICK=1 (1 repetition, smaller
-- sizes), MF_PEERS (the peers' directory, default ../shared/peers),
-- MF_PROGRAM (the moonflow program, default build/moonflow), MF_GAME_LOOP
-- (the example, default build/examples/game_loop).
-- Internal: `bench/compare.lua --memory N` and `--stall N` are the probes'
-- processes; `--startup` measures the start-up section alone.

local MEMORY_N = 100000

-- {====== The probes (each runs in a process of its own) ======

-- Bytes per finished future held in a list, as bench/map.lua counts them:
-- malloc's count (the Lua heap allocates through it) and the Lua heap alone.
local function memory_probe(n)
  package.cpath = (os.getenv("MF_MODULE_DIR") or "build") .. "/?.so;" .. package.cpath
  local mf = require "moonflow"
  local core = require "moonflow.core"
  local double = mf.task({ name = "double" }, function(x) return x * 2 end)
  local xs = {}
  for i = 1, n do xs[i] = i end
  collectgarbage(); collectgarbage()
  local before, lua_before = core.heap_in_use(), collectgarbage("count")
  local list = double:map(xs)
  list:wait()
  collectgarbage(); collectgarbage()
  local total = (core.heap_in_use() - before) / n
  local lua_bytes = (collectgarbage("count") - lua_before) * 1024 / n
  assert(#list == n)
  print(string.format("%.1f %.1f", total, lua_bytes))
end

-- How long the loop stalls while a run maps n elements: a ticker run sleeps
-- 1 ms at a time and keeps its longest gap between wake-ups (minus the
-- 1 ms).  First the ticker beside a run that only sleeps (the machine's own
-- noise), then beside a run that calls map(n) and waits for the results.
-- The last figure is the longest gap while map itself was making its runs
-- (from its call to its return: the gaps inside, and the parts of the gaps
-- across its ends), apart from the wait for the results that follows; the
-- fifth, the same for that wait (list:wait(): the snapshot of the list,
-- the wait for the runs still going).
-- The last figure is the longest scheduler pass from map's call to the end
-- of the wait (core.longest_pass): the longest the engine itself kept the
-- loop from its turn.  The ticker's gaps hold that and more: its timer's
-- own lateness (libuv counts whole milliseconds), its turn after a run woken
-- in the same batch, and the times the OS ran another thread on the loop's
-- CPU.
-- The slice is set to its default explicitly, so the figure it is compared
-- with is known.
-- Prints: slice_s quiet_stall_s map_stall_s making_stall_s collecting_stall_s
-- longest_pass_s
local function stall_probe(n)
  package.cpath = (os.getenv("MF_MODULE_DIR") or "build") .. "/?.so;" .. package.cpath
  local mf = require "moonflow"
  local core = require "moonflow.core"
  local slice = 0.01
  mf.configure { slice = slice }
  local double = mf.task({ name = "double" }, function(x) return x * 2 end)
  local xs = {}
  for i = 1, n do xs[i] = i end
  local function gaps_beside(work)
    local done, ticks = false, {}
    local ticker = mf.task({ name = "ticker" }, function()
      ticks[1] = mf.now()
      while not done do
        mf.sleep(0.001)
        ticks[#ticks + 1] = mf.now()
      end
    end):submit()
    local worker = mf.task({ name = "worker" }, function()
      mf.sleep(0.02) -- the ticker is ticking before the work starts
      work()
      done = true
    end):submit()
    worker:result()
    ticker:result()
    return ticks
  end
  -- The longest gap between ticks, cut to the window from..to.
  local function longest(ticks, from, to)
    local worst = 0
    for i = 2, #ticks do
      local a, b = math.max(ticks[i - 1], from), math.min(ticks[i], to)
      if b - a > worst then worst = b - a end
    end
    return math.max(worst - 0.001, 0)
  end
  local quiet = longest(gaps_beside(function() mf.sleep(0.3) end), -math.huge, math.huge)
  local made_from, made_to, waited_to, longest_pass
  local ticks = gaps_beside(function()
    core.longest_pass(true)
    made_from = mf.now()
    local list = double:map(xs)
    made_to = mf.now()
    list:wait()
    waited_to = mf.now()
    longest_pass = core.longest_pass()
    assert(#list == n)
  end)
  print(string.format("%.6f %.6f %.6f %.6f %.6f %.6f", slice, quiet,
    longest(ticks, -math.huge, math.huge), longest(ticks, made_from, made_to),
    longest(ticks, made_to, waited_to), longest_pass))
end

if arg and arg[1] == "--memory" then
  memory_probe(tonumber(arg[2]) or MEMORY_N)
  return
end
if arg and arg[1] == "--stall" then
  stall_probe(tonumber(arg[2]) or 1000000)
  return
end

-- }======

-- {====== Helpers ======

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function have(command)
  return os.execute("command -v " .. q(command) .. " >/dev/null 2>&1") == true
end

-- Runs a shell command; its stdout's lines and whether it exited 0.
local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  local ok = p:close()
  return lines, ok == true
end

local function first_line(cmd)
  local lines = capture(cmd .. " 2>/dev/null")
  return lines[1]
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function median(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  local m = #s // 2
  if #s % 2 == 1 then return s[m + 1] end
  return (s[m] + s[m + 1]) / 2
end

local function num(x)
  if x == nil then return "n/a" end
  local a = math.abs(x)
  if a >= 100 then return string.format("%.0f", x) end
  if a >= 10 then return string.format("%.1f", x) end
  if a >= 1 then return string.format("%.2f", x) end
  return string.format("%.3f", x)
end

local function loadavg()
  local s = read_file("/proc/loadavg")
  return s:match("^(%S+ %S+ %S+)") or "unknown"
end

-- }======

-- {====== What is run ======

local env = os.getenv
local QUICK = env("QUICK") == "1"
local REPS = tonumber(env("REPS") or "") or (QUICK and 1 or 5)
local PEERS = env("MF_PEERS") or "../shared/peers"
local PROGRAM = env("MF_PROGRAM") or "build/moonflow"
local SLEEP = 0.1 -- each W2 task sleeps this long (seconds)

if not exists("bench/workloads.lua") then
  error("run me from the repository's root: build/moonflow bench/compare.lua", 0)
end
if not exists(PROGRAM) then
  error(PROGRAM .. " is missing: build first (make build)", 0)
end

local cells = {
  { key = "w1", name = "W1 map-noop", workload = "map-noop", n = QUICK and 10000 or 100000 },
  { key = "w1big", name = "W1 map-noop", workload = "map-noop", n = QUICK and 100000 or 1000000 },
  { key = "w2", name = "W2 sleep-fanout (overhead)", workload = "sleep-fanout",
    n = QUICK and 1000 or 10000 },
  { key = "w3", name = "W3 chain", workload = "chain", n = QUICK and 10000 or 100000 },
  { key = "w4", name = "W4 fan-in-dag (leaves)", workload = "fan-in-dag", n = 1000 },
}
local CG_SIZES = QUICK and { 10000, 20000 } or { 20000, 40000 }

local tmp = first_line("mktemp -d /tmp/mf-compare.XXXXXX")
assert(tmp and tmp ~= "", "mktemp -d failed")
local HOME = tmp .. "/home" -- the store-on runs' MOONFLOW_HOME, fresh each time

local TIME = exists("/usr/bin/time") and "/usr/bin/time" or nil
local has_lua = have("lua5.4")
local has_node = have("node")
local node_script = PEERS .. "/scripts/node_promise.js"
local bare_script = PEERS .. "/scripts/lua_bare.lua"
local luv_script = PEERS .. "/scripts/lua_luv.lua"
local has_luv = has_lua and os.execute("lua5.4 -e 'require \"luv\"' >/dev/null 2>&1") == true
local GAME_LOOP = env("MF_GAME_LOOP") or "build/examples/game_loop"
local GAME_FRAMES = QUICK and 600 or 2400
local STALL_N = QUICK and 100000 or 1000000

-- Each runner: how to start a process for a workload, or why it cannot.
local runners = {
  { key = "mf", label = "moonflow",
    env = "env -u MOONFLOW_STORE MOONFLOW_HOME=" .. q(HOME),
    cmd = q(PROGRAM) .. " bench/workloads.lua", fresh_home = true },
  { key = "mfoff", label = "moonflow, store off",
    env = "env MOONFLOW_STORE=off", cmd = q(PROGRAM) .. " bench/workloads.lua" },
  { key = "mflua", label = "lua5.4 + module",
    cmd = "lua5.4 bench/workloads.lua",
    unavailable = not has_lua and "lua5.4 is not on PATH" or nil },
  { key = "node", label = "Node.js",
    cmd = "node " .. q(node_script),
    unavailable = (not has_node and "node is not on PATH")
      or (not exists(node_script) and ("no " .. node_script .. " (set MF_PEERS)")) or nil },
  { key = "bare", label = "bare Lua",
    cmd = "lua5.4 " .. q(bare_script),
    unavailable = (not has_lua and "lua5.4 is not on PATH")
      or (not exists(bare_script) and ("no " .. bare_script .. " (set MF_PEERS)")) or nil,
    skip = { ["sleep-fanout"] = "no event loop: cannot sleep without blocking" } },
  { key = "luv", label = "lua5.4 + luv",
    env = "env BENCH_VARIANT=queue", cmd = "lua5.4 " .. q(luv_script),
    unavailable = (not has_luv and "lua5.4 with luv (lua-luv) is not installed")
      or (not exists(luv_script) and ("no " .. luv_script .. " (set MF_PEERS)")) or nil },
}
-- The runners that are moonflow, for the ratios to Node and the probes.
local MOONFLOW = { "mf", "mfoff", "mflua" }

-- }======

-- {====== Measuring ======

-- One process: returns a sample {seconds, ntasks, us, rss_mb, wall} or nil
-- and why it failed.
local function measure(runner, cell)
  if runner.fresh_home then os.execute("rm -rf " .. q(HOME)) end
  local tf, ef = tmp .. "/time", tmp .. "/stderr"
  local cmd = (runner.env and runner.env .. " " or "")
    .. (TIME and (TIME .. " -o " .. q(tf) .. " -f '%M %e' ") or "")
    .. runner.cmd .. " " .. cell.workload .. " " .. cell.n .. " 2>" .. q(ef)
  local lines, ok = capture(cmd)
  if runner.fresh_home then os.execute("rm -rf " .. q(HOME)) end
  local seconds, ntasks
  for _, line in ipairs(lines) do
    local w, nt, s = line:match("^(%S+) (%d+) ([%d.]+)")
    if w == cell.workload then ntasks, seconds = tonumber(nt), tonumber(s) end
  end
  if not ok or not seconds then
    local err = read_file(ef):match("[^\n]+") or "no output"
    return nil, "failed: " .. err
  end
  local sample = { seconds = seconds, ntasks = ntasks }
  local base = cell.workload == "sleep-fanout" and SLEEP or 0
  sample.us = (seconds - base) / ntasks * 1e6
  local rss, wall = read_file(tf):match("(%d+) ([%d.]+)%s*$")
  sample.rss_mb = rss and tonumber(rss) / 1024
  sample.wall = wall and tonumber(wall)
  return sample
end

-- results[cell.key][runner.key] = { samples..., why = reason when none }
local results = {}

local function run_all()
  for _, cell in ipairs(cells) do
    local row = {}
    results[cell.key] = row
    for _, r in ipairs(runners) do row[r.key] = {} end
    for rep = 1, REPS do
      io.stderr:write(string.format("# %s %d: repetition %d/%d\n", cell.workload, cell.n, rep, REPS))
      for _, r in ipairs(runners) do
        local why = r.unavailable or (r.skip and r.skip[cell.workload])
        if why then
          row[r.key].why = why
        else
          local sample, err = measure(r, cell)
          if sample then
            table.insert(row[r.key], sample)
          else
            row[r.key].why = err
            io.stderr:write(string.format("#   %s: %s\n", r.label, err))
          end
        end
      end
    end
  end
end

-- The median of one field over a cell's samples for a runner, or nil.
local function med(cell_key, runner_key, field)
  local xs = {}
  for _, s in ipairs(results[cell_key][runner_key]) do xs[#xs + 1] = s[field] end
  if #xs == 0 then return nil end
  return median(xs), math.min(table.unpack(xs)), math.max(table.unpack(xs))
end

-- Runs this file as a probe (`--memory N`, `--stall N`) once under each
-- moonflow runner; out[runner.key] = the numbers of its last line, or
-- { why = reason } when it did not give them.
local function probe(flag, n)
  local by_key = {}
  for _, r in ipairs(runners) do by_key[r.key] = r end
  local out = {}
  for _, key in ipairs(MOONFLOW) do
    local r = by_key[key]
    if r.unavailable then
      out[key] = { why = r.unavailable }
    else
      local program = r.cmd:gsub(" bench/workloads%.lua$", "")
      local cmd = (r.env and r.env .. " " or "") .. program .. " bench/compare.lua "
        .. flag .. " " .. n .. " 2>" .. q(tmp .. "/stderr")
      io.stderr:write("# probe " .. flag .. " " .. n .. ": " .. r.label .. "\n")
      os.execute("rm -rf " .. q(HOME))
      local lines, ok = capture(cmd)
      os.execute("rm -rf " .. q(HOME))
      local xs = {}
      for x in (lines[#lines] or ""):gmatch("%S+") do xs[#xs + 1] = tonumber(x) end
      if ok and #xs > 0 then
        out[key] = xs
      else
        out[key] = { why = "failed: " .. (read_file(tmp .. "/stderr"):match("[^\n]+") or "no output") }
      end
    end
  end
  return out
end

-- Instructions per W1 task under callgrind: (I(n2) - I(n1)) / (n2 - n1), so
-- that start-up and exit cancel.  All threads are counted (callgrind's
-- totals), so the run store's writer thread is in the store-on figure.
-- Returns the figure, or nil and why not.
local function instructions(r)
  if r.unavailable then return nil, r.unavailable end
  local counts = {}
  for i, n in ipairs(CG_SIZES) do
    local out = tmp .. "/callgrind.out"
    os.remove(out)
    io.stderr:write("# callgrind map-noop " .. n .. ": " .. r.label .. "\n")
    os.execute("rm -rf " .. q(HOME))
    local _, ok = capture((r.env and r.env .. " " or "") .. "valgrind --tool=callgrind "
      .. "--callgrind-out-file=" .. q(out) .. " " .. r.cmd .. " map-noop " .. n .. " 2>/dev/null")
    os.execute("rm -rf " .. q(HOME))
    local total = read_file(out):match("\ntotals: (%d+)")
    os.remove(out)
    if not ok or not total then return nil, "the callgrind run failed" end
    counts[i] = tonumber(total)
  end
  return (counts[2] - counts[1]) / (CG_SIZES[2] - CG_SIZES[1])
end

-- The game-loop example (a C host stepping the engine in 60 Hz frames): its
-- own count of frames over the 16.67 ms budget in the mixed scenario
-- ("game: 1,000 NPCs+map"); --frames is split over its four scenarios.  Returns {frames, step,
-- step_cpu, engine, engine_cpu, frame, frame_cpu} or nil and why not.
local function game_loop()
  if not exists(GAME_LOOP) then
    return nil, GAME_LOOP .. " is missing (built with the examples: make build)"
  end
  io.stderr:write("# " .. GAME_LOOP .. " --frames " .. GAME_FRAMES .. "\n")
  local lines, ok = capture(q(GAME_LOOP) .. " --frames " .. GAME_FRAMES .. " 2>/dev/null")
  if not ok then return nil, GAME_LOOP .. " failed" end
  local g, section = {}, ""
  for _, line in ipairs(lines) do
    g.frames = g.frames or tonumber(line:match("(%d+) frames per scenario"))
    if line:match("^%S") then section = line end
    if section:match("^game") then
      local a, b, c, d, e, f = line:match("frames over 16%.67 ms: step (%d+) %(cpu (%d+)%), "
        .. "turn%+step (%d+) %(cpu (%d+)%), whole frame (%d+) %(cpu (%d+)%)")
      if a then
        g.step, g.step_cpu, g.engine, g.engine_cpu, g.frame, g.frame_cpu =
          tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e), tonumber(f)
      end
    end
  end
  if not (g.frames and g.step) then return nil, "no 'game' scenario in its output" end
  return g
end

-- Start-up: the whole life of a process whose script only loads moonflow
-- (what a user waits for before and after any work), for each moonflow
-- runner, beside `lua5.4 -e ''`, `node -e ''` and the shell running
-- /bin/true (the floor every figure includes: the shell's fork and exec).
-- STARTS processes each, interleaved; returns {label, median ms, min, max}
-- rows, or nil and why not.
local STARTS = QUICK and 5 or 21
local function startup()
  local okmf, mf = pcall(function()
    package.cpath = (os.getenv("MF_MODULE_DIR") or "build") .. "/?.so;" .. package.cpath
    return require "moonflow"
  end)
  if not okmf or not mf.now then return nil, "moonflow cannot be loaded here for its clock" end
  local script = tmp .. "/empty.lua"
  local f = assert(io.open(script, "w"))
  f:write('package.cpath = "build/?.so;" .. package.cpath\nlocal mf = require "moonflow"\n')
  f:close()
  local kinds = {
    { label = "moonflow", cmd = "env -u MOONFLOW_STORE MOONFLOW_HOME=" .. q(HOME) .. " "
      .. q(PROGRAM) .. " " .. q(script), fresh_home = true },
    { label = "moonflow, store off", cmd = "env MOONFLOW_STORE=off " .. q(PROGRAM) .. " " .. q(script) },
    { label = "lua5.4 + module", cmd = "lua5.4 " .. q(script), need = has_lua },
    { label = "lua5.4 -e ''", cmd = "lua5.4 -e ''", need = has_lua },
    { label = "node -e ''", cmd = "node -e ''", need = has_node },
    { label = "sh -c true", cmd = "true" },
  }
  local times = {}
  for _ = 1, STARTS do
    for i, k in ipairs(kinds) do
      if k.need ~= false then
        if k.fresh_home then os.execute("rm -rf " .. q(HOME)) end
        local t0 = mf.now()
        local ok = os.execute(k.cmd .. " >/dev/null 2>&1")
        local dt = mf.now() - t0
        if ok then
          times[i] = times[i] or {}
          table.insert(times[i], dt * 1e3)
        end
      end
    end
  end
  os.execute("rm -rf " .. q(HOME))
  local rows = {}
  for i, k in ipairs(kinds) do
    local xs = times[i]
    if xs and #xs > 0 then
      rows[#rows + 1] = { k.label, median(xs), math.min(table.unpack(xs)), math.max(table.unpack(xs)) }
    else
      rows[#rows + 1] = { k.label, why = k.need == false and "not installed" or "failed" }
    end
  end
  return rows
end

-- }======

-- {====== Printing ======

local function label_of(cell)
  local n = cell.n >= 1000000 and (cell.n // 1000000 .. "M")
    or cell.n >= 1000 and (cell.n // 1000 .. "k") or tostring(cell.n)
  return cell.name, n
end

local function runner_of(key)
  for _, r in ipairs(runners) do if r.key == key then return r end end
end

local function print_table(title, field, with_ratios, show)
  print("")
  print(title)
  print("")
  local head = { "workload", "N" }
  for _, r in ipairs(runners) do head[#head + 1] = r.label end
  if with_ratios then
    for _, k in ipairs(MOONFLOW) do head[#head + 1] = runner_of(k).label .. " / Node" end
  end
  print("| " .. table.concat(head, " | ") .. " |")
  print("|" .. string.rep("---|", #head))
  for _, cell in ipairs(cells) do
    local name, n = label_of(cell)
    local row = { name, n }
    for _, r in ipairs(runners) do
      row[#row + 1] = show(cell, r) or "n/a"
    end
    if with_ratios then
      local node = med(cell.key, "node", field)
      for _, k in ipairs(MOONFLOW) do
        local v = med(cell.key, k, field)
        row[#row + 1] = (v and node and node > 0) and string.format("%.2f", v / node) or "n/a"
      end
    end
    print("| " .. table.concat(row, " | ") .. " |")
  end
end

local function why_not()
  local seen = {}
  for _, cell in ipairs(cells) do
    for _, r in ipairs(runners) do
      local why = results[cell.key][r.key].why
      if why and not seen[r.label .. why] then
        seen[r.label .. why] = true
        print(string.format("- %s, %s: %s", r.label, cell.workload, why))
      end
    end
  end
end

local function verdict(ok, detail)
  if ok == nil then return "not measured" .. (detail and " (" .. detail .. ")" or "") end
  return (ok and "met" or "NOT met") .. " (" .. detail .. ")"
end

-- Each target of the issue, for each moonflow runner.
local function print_targets(m)
  local big = cells[2]
  local function time_le(key, cell_key, strict)
    local v, node = med(cell_key, key, "us"), med(cell_key, "node", "us")
    if not (v and node) then return verdict(nil, not node and "no Node figure" or "no figure") end
    local ok = strict and v < node or (not strict and v <= node)
    return verdict(ok, num(v) .. " vs " .. num(node) .. " µs, ratio " .. string.format("%.2f", v / node))
  end
  local targets = {
    { "W1 map-noop " .. cells[1].n .. ": time ≤ Node's",
      function(k) return time_le(k, "w1") end },
    { "W1 map-noop " .. big.n .. ": time ≤ Node's",
      function(k) return time_le(k, "w1big") end },
    { "W4 fan-in-dag: time ≤ Node's", function(k) return time_le(k, "w4") end },
    { "W3 chain " .. cells[4].n .. ": ahead of Node", function(k) return time_le(k, "w3", true) end },
    { "W2 sleep-fanout " .. cells[3].n .. ": overhead below Node's",
      function(k) return time_le(k, "w2", true) end },
    { "≤ 200 bytes per finished future", function(k)
      local x = m.memory[k]
      if not x[1] then return verdict(nil, x.why) end
      return verdict(x[1] <= 200, string.format("%.0f bytes", x[1]))
    end },
    { "W1 " .. big.n .. " peak RSS ≤ Node's", function(k)
      local v, node = med("w1big", k, "rss_mb"), med("w1big", "node", "rss_mb")
      if not (v and node) then return verdict(nil, not node and "no Node figure" or "no figure") end
      return verdict(v <= node, num(v) .. " vs " .. num(node) .. " MB")
    end },
    { "≤ 2,000 instructions per W1 task (callgrind)", function(k)
      local x = m.instr[k]
      if not x[1] then return verdict(nil, x.why) end
      return verdict(x[1] <= 2000, string.format("%.0f", x[1]))
    end },
    { "map(" .. STALL_N .. ") inside a run: loop never stalls > one slice", function(k)
      local x = m.stall[k]
      if not x[1] then return verdict(nil, x.why) end
      return verdict(x[3] <= x[1], string.format("longest stall %s ms (longest pass %s ms) vs %s ms slice",
        num(x[3] * 1e3), x[6] and num(x[6] * 1e3) or "?", num(x[1] * 1e3)))
    end },
    { "game loop, mixed scenario: 0 frames over 16.67 ms", function(k)
      if k ~= "mf" then return "(one C host: first column)" end
      local g = m.game
      if not g.frames then return verdict(nil, g.why) end
      return verdict(g.step_cpu == 0 and g.engine_cpu == 0, string.format(
        "engine step + loop turn over budget in %d of %d frames by CPU time, %d by wall clock; "
        .. "whole frames over by wall clock: %d", g.engine_cpu, g.frames, g.engine, g.frame))
    end },
  }
  print("")
  print("Targets of issue 11 (moonflow as a user runs it, with the store off, and under lua5.4):")
  print("")
  local head = { "target" }
  for _, k in ipairs(MOONFLOW) do head[#head + 1] = runner_of(k).label end
  print("| " .. table.concat(head, " | ") .. " |")
  print("|" .. string.rep("---|", #head))
  for _, t in ipairs(targets) do
    local row = { t[1] }
    for _, k in ipairs(MOONFLOW) do row[#row + 1] = t[2](k) end
    print("| " .. table.concat(row, " | ") .. " |")
  end
end

-- }======

local function main()
  print("# moonflow vs Node.js vs Lua, cold (one fresh process per figure)")
  print("")
  print("load average at start: " .. loadavg())
  print(string.format("commit %s; %s; node %s; %d repetitions%s, medians",
    first_line("git rev-parse --short HEAD") or "?",
    first_line("lua5.4 -v") or "no lua5.4",
    has_node and (first_line("node --version") or "?") or "missing",
    REPS, QUICK and " (QUICK sizes)" or ""))
  print("runners: moonflow = `" .. PROGRAM .. " bench/workloads.lua` with the run store on "
    .. "(default; a fresh MOONFLOW_HOME per process); store off = MOONFLOW_STORE=off; "
    .. "lua5.4 + module = `lua5.4 bench/workloads.lua` (no store); Node.js = `node "
    .. node_script .. "`; bare Lua = `lua5.4 " .. bare_script .. "` (coroutine per task, "
    .. "no loop, no futures); lua5.4 + luv = `lua5.4 " .. luv_script .. "` (luv-queue)")
  io.stdout:flush()

  run_all()
  local m = {}
  m.memory = probe("--memory", MEMORY_N)
  m.stall = probe("--stall", STALL_N)
  m.instr = {}
  local instr_bare, bare_why
  if not have("valgrind") then
    for _, k in ipairs(MOONFLOW) do m.instr[k] = { why = "valgrind is not installed" } end
    bare_why = "valgrind is not installed"
  else
    for _, k in ipairs(MOONFLOW) do
      local x, why = instructions(runner_of(k))
      m.instr[k] = x and { x } or { why = why }
    end
    instr_bare, bare_why = instructions(runner_of("bare"))
  end
  local game, game_why = game_loop()
  m.game = game or { why = game_why }
  io.stderr:write("# start-up, " .. STARTS .. " processes each\n")
  local starts, starts_why = startup()

  print_table("µs per task: median, in-process clock from the first submit to the last result "
    .. "(W2: overhead beyond the " .. SLEEP .. " s sleep, per task)", "us", true,
    function(cell, r) return num((med(cell.key, r.key, "us"))) end)
  print_table("spread: min–max µs per task", "us", false, function(cell, r)
    local _, lo, hi = med(cell.key, r.key, "us")
    return lo and (num(lo) .. "–" .. num(hi))
  end)
  if TIME then
    print_table("peak RSS, MB (median; whole process, /usr/bin/time %M)", "rss_mb", true,
      function(cell, r) return num((med(cell.key, r.key, "rss_mb"))) end)
    print_table("process wall time, s (median; start-up and exit included)", "wall", false,
      function(cell, r) return num((med(cell.key, r.key, "wall"))) end)
  else
    print("\n/usr/bin/time is missing: no peak RSS nor process wall time")
  end
  print("")
  why_not()

  print("")
  print(string.format("Memory per finished future held in a list of %d (Lua heap and C malloc "
    .. "together, after a full collection; its own process):", MEMORY_N))
  for _, k in ipairs(MOONFLOW) do
    local x = m.memory[k]
    print(x[1] and string.format("- %s: %.0f bytes (%.0f of them in the Lua heap)",
      runner_of(k).label, x[1], x[2]) or ("- " .. runner_of(k).label .. ": not measured (" .. x.why .. ")"))
  end

  print("")
  print(string.format("Instructions per W1 task (callgrind, all threads, map-noop %d and %d, "
    .. "difference / difference):", CG_SIZES[1], CG_SIZES[2]))
  for _, k in ipairs(MOONFLOW) do
    local x = m.instr[k]
    print(x[1] and string.format("- %s: %.0f%s", runner_of(k).label, x[1],
        instr_bare and string.format(" (%.2f x bare Lua)", x[1] / instr_bare) or "")
      or ("- " .. runner_of(k).label .. ": not measured (" .. x.why .. ")"))
  end
  print(instr_bare and string.format("- bare Lua (coroutine create + resume): %.0f", instr_bare)
    or ("- bare Lua: not measured (" .. bare_why .. ")"))

  print("")
  print(string.format("Loop stall while a run maps %d elements (a ticker run sleeping 1 ms at a "
    .. "time; its longest gap beyond the 1 ms; its own process):", STALL_N))
  for _, k in ipairs(MOONFLOW) do
    local x = m.stall[k]
    print(x[1] and string.format("- %s: %s ms (while map made its runs: %s ms; while "
        .. "list:wait() collected: %s ms; beside a run that only sleeps: %s ms; the longest "
        .. "scheduler pass: %s ms; slice %s ms)",
        runner_of(k).label, num(x[3] * 1e3), x[4] and num(x[4] * 1e3) or "?",
        x[5] and num(x[5] * 1e3) or "?", num(x[2] * 1e3), x[6] and num(x[6] * 1e3) or "?",
        num(x[1] * 1e3))
      or ("- " .. runner_of(k).label .. ": not measured (" .. x.why .. ")"))
  end

  print("")
  if starts then
    print(string.format("Start-up: a process whose script only loads moonflow, start to exit "
      .. "(ms, median and min–max of %d, interleaved; each includes the shell's fork and exec):",
      STARTS))
    for _, row in ipairs(starts) do
      print(row[2] and string.format("- %s: %s (%s–%s)", row[1], num(row[2]), num(row[3]), num(row[4]))
        or ("- " .. row[1] .. ": not measured (" .. row.why .. ")"))
    end
  else
    print("Start-up: not measured (" .. starts_why .. ")")
  end

  print("")
  if game then
    print(string.format("Game loop (`%s --frames %d`, mixed scenario 'game', %d frames): frames "
      .. "over 16.67 ms: engine step %d (cpu %d), loop turn + step %d (cpu %d), whole frame %d (cpu %d)",
      GAME_LOOP, GAME_FRAMES, game.frames, game.step, game.step_cpu, game.engine, game.engine_cpu,
      game.frame, game.frame_cpu))
  else
    print("Game loop: not measured (" .. game_why .. ")")
  end

  print_targets(m)
  print("")
  print("load average at end: " .. loadavg())
  os.execute("rm -rf " .. q(tmp))
end

if arg and arg[1] == "--startup" then -- that section alone
  local rows, why = startup()
  for _, row in ipairs(rows or {}) do
    print(row[2] and string.format("%s: %s ms (%s–%s)", row[1], num(row[2]), num(row[3]), num(row[4]))
      or (row[1] .. ": " .. row.why))
  end
  if not rows then print("not measured: " .. why) end
  os.execute("rm -rf " .. q(tmp))
  return
end
main()
