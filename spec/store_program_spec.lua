-- The run store from the `moonflow` program: recording by default, the
-- CLI (runs, show, logs), and the faults: SIGKILL halfway then a rerun that
-- reuses the cached runs, SIGKILL during batch writes, a full disk, a
-- read-only directory, a foreign file, Ctrl-C, two processes on one file.
-- Every case runs the program as a subprocess; bounds on time only catch
-- hangs (generously).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local lu = h.lu

-- {====== Subprocesses ======

local capture = h.capture

local read_file = h.read_file

local write_file = h.write_file

local quote = h.shell_quote

local CWD = capture("pwd"):gsub("\n$", "")
local function absolute(path) return path:sub(1, 1) == "/" and path or CWD .. "/" .. path end
local PROG = absolute(os.getenv("MF_PROGRAM") or "build/moonflow")
local DIR = capture("unset LD_PRELOAD; mktemp -d /tmp/mf-storeprog.XXXXXX"):gsub("\n$", "")
os.execute("chmod 755 " .. quote(DIR)) -- the read-only case runs as nobody
local counter = 0

local function new_dir()
  counter = counter + 1
  local d = string.format("%s/%d", DIR, counter)
  os.execute("mkdir -p " .. quote(d) .. " && chmod 755 " .. quote(d))
  return d
end

-- Runs the program with env (a table) and args (a string of quoted
-- arguments); returns { code, out, err }.
local function program(dir, env, args, prefix)
  local vars = { "env -u LD_PRELOAD -u MOONFLOW_LOG_LEVEL" }
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. quote(v) end
  local cmd = string.format("%stimeout -k 5 300 %s %s %s >%s 2>%s </dev/null",
    prefix or "", table.concat(vars, " "), quote(PROG), args,
    quote(dir .. "/out"), quote(dir .. "/err"))
  local ok, kind, status = os.execute(cmd)
  local code = ok and 0 or (kind == "exit" and status or 128 + (status or 0))
  return { code = code, out = read_file(dir .. "/out") or "",
    err = read_file(dir .. "/err") or "" }
end

local function describe(r)
  return string.format("exit %s\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.out, r.err)
end

-- Starts the program in the background; returns its pid.
local function start(dir, env, args)
  local vars = { "env -u LD_PRELOAD -u MOONFLOW_LOG_LEVEL" }
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. quote(v) end
  local pid = capture(string.format("%s %s %s >%s 2>%s </dev/null & echo $!",
    table.concat(vars, " "), quote(PROG), args, quote(dir .. "/bg-out"),
    quote(dir .. "/bg-err")))
  return tonumber(pid:match("%d+"))
end

local function sql(db, query)
  return (capture("sqlite3 " .. quote(db) .. " " .. quote(query) .. " 2>&1"):gsub("\n$", ""))
end

-- Polls until check() is true; the bound only catches a hang.
local function eventually(what, check)
  for _ = 1, 6000 do
    if check() then return end
    os.execute("sleep 0.05")
  end
  lu.fail("never happened: " .. what)
end

local function script(dir, code)
  local path = dir .. "/script.lua"
  write_file(path, code)
  return path
end

local function count_lines(text, pattern)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if line:find(pattern) then n = n + 1 end
  end
  return n
end

-- }======

TestStoreProgram = {}

local FLOW = [[
local mf = require "moonflow"
local sq = mf.task({ name = "sq" }, function(x)
  mf.log.warning("squaring " .. x)
  return x * x
end)
local bad = mf.task({ name = "bad" }, function() error("broken on purpose") end)
local many = mf.task({ name = "many" }, function(x) return x end)
local fl = mf.flow({ name = "cli-flow" }, function()
  local s = 0
  for _, v in ipairs(sq:map({ 1, 2 }):result()) do s = s + v end
  local b = bad:submit()
  b:wait()
  if b:state().type ~= "FAILED" then error("bad did not fail") end
  return s
end)
local big = mf.flow({ name = "big-flow" }, function()
  return #many:map((function() local t = {} for i = 1, 120 do t[i] = i end return t end)()):result()
end)
print(fl(), big())
]]

function TestStoreProgram:test_records_by_default_and_the_cli_reads()
  local d = new_dir()
  local env = { MOONFLOW_HOME = d .. "/home", MOONFLOW_STORE = "" }
  local r = program(d, env, quote(script(d, FLOW)))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "5\t120\n")
  lu.assertNotNil(read_file(d .. "/home/moonflow.db"), "no store in MOONFLOW_HOME")

  r = program(d, env, "runs")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertStrContains(r.out, "FLOW RUN")
  lu.assertStrContains(r.out, "cli-flow-1")
  lu.assertStrContains(r.out, "2 Completed, 1 Failed")
  lu.assertStrContains(r.out, "120 Completed")

  r = program(d, env, "runs --json")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertStrContains(r.out, '"name":"cli-flow-1"')
  lu.assertStrContains(r.out, '"task_runs":{"Completed":2,"Failed":1}')

  r = program(d, env, "runs --state FAILED")
  lu.assertStrContains(r.out, "no flow runs recorded that match")
  r = program(d, env, "runs --name big-flow --since 1h")
  lu.assertStrContains(r.out, "big-flow-1")
  lu.assertNotStrContains(r.out, "cli-flow-1")

  r = program(d, env, "show cli-flow-1")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertStrContains(r.out, "├─ sq-1")
  lu.assertStrContains(r.out, "└─ bad-1")
  lu.assertStrContains(r.out, "broken on purpose")
  lu.assertStrContains(r.out, "stack traceback")

  -- Many runs: aggregated per task and state, paged.
  r = program(d, env, "show big-flow-1 --limit 50")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertStrContains(r.out, "120 runs inside")
  lu.assertStrContains(r.out, "runs 1 to 50 of 120")
  lu.assertStrContains(r.out, "--offset 50")
  lu.assertEquals(count_lines(r.out, "^%d+%s+many%-"), 50)

  r = program(d, env, "logs cli-flow-1")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertStrContains(r.out, "sq-2 | squaring 2")

  r = program(d, env, "show 999999")
  lu.assertEquals(r.code, 1, describe(r))
  lu.assertStrContains(r.err, "no run 999999")
  r = program(d, env, "runs --bogus")
  lu.assertEquals(r.code, 2, describe(r))
end

function TestStoreProgram:test_store_off()
  local d = new_dir()
  local r = program(d, { MOONFLOW_HOME = d .. "/home", MOONFLOW_STORE = "off" },
    quote(script(d, FLOW)))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertNil(read_file(d .. "/home/moonflow.db"))
  r = program(d, { MOONFLOW_STORE = "off" }, "runs")
  lu.assertEquals(r.code, 1)
  lu.assertStrContains(r.err, "the run store is off")
end

-- A run that waits, alone in its process, until the file arg[1] exists.
local WAITER = [[
local mf = require "moonflow"
local go = arg[1]
local waiter = mf.task({ name = "waiter" }, function()
  while true do
    local f = io.open(go)
    if f then f:close() break end
    mf.sleep(0.01)
  end
  return 7
end)
print(waiter())
]]

-- A run that waits, with nothing else happening in its process, is seen
-- running in the store (from another process) while it waits; then
-- completed, its history the plain one the times tell.
function TestStoreProgram:test_a_run_that_waits_is_seen_running()
  local d = new_dir()
  local db, go = d .. "/store.db", d .. "/go"
  local pid = start(d, { MOONFLOW_STORE = db }, quote(script(d, WAITER)) .. " " .. quote(go))
  eventually("the waiting run recorded as running", function()
    return sql(db, "SELECT state_type, started IS NOT NULL, ended IS NULL FROM runs"
      .. " WHERE task = 'waiter'") == "2|1|1"
  end)
  write_file(go, "")
  eventually("the process gone", function()
    return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
  end)
  lu.assertEquals(read_file(d .. "/bg-out"), "7\n")
  lu.assertEquals(sql(db, "SELECT state_type, started <= ended, history IS NULL FROM runs"
    .. " WHERE task = 'waiter'"), "3|1|1")
end

-- Steps 1..5 finish; 6..10 wait until GO is set.  Each step appends its
-- number to the file arg[1] when it finishes.
local RESUME = [[
local mf = require "moonflow"
local out = arg[1]
local step = mf.task({ name = "step", cache_key = function(i) return "step-" .. i end },
  function(i)
    if i > 5 and not os.getenv("GO") then
      while true do mf.sleep(0.02) end
    end
    local f = assert(io.open(out, "a"))
    f:write(i, "\n")
    f:close()
    return i * 10
  end)
local fl = mf.flow({ name = "resume" }, function()
  local s = 0
  for _, v in ipairs(step:map({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }):result()) do s = s + v end
  return s
end)
print(fl())
]]

function TestStoreProgram:test_sigkill_halfway_then_rerun_reuses_cached_runs()
  local d = new_dir()
  local db, done = d .. "/store.db", d .. "/done"
  local path = script(d, RESUME)
  local pid = start(d, { MOONFLOW_STORE = db }, quote(path) .. " " .. quote(done))
  eventually("5 steps committed", function()
    return sql(db, "SELECT count(*) FROM runs WHERE task = 'step' AND state_type = 3") == "5"
  end)
  os.execute("kill -9 " .. pid)
  eventually("the killed process gone", function()
    return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
  end)
  local r = program(d, { MOONFLOW_STORE = db, GO = "1" }, quote(path) .. " " .. quote(done))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "550\n")
  -- Every step ran once over both processes: 1..5 in the first, 6..10 in
  -- the second.
  local seen = {}
  for n in (read_file(done) or ""):gmatch("%d+") do
    n = tonumber(n)
    lu.assertNil(seen[n], "step " .. n .. " ran twice")
    seen[n] = true
  end
  for i = 1, 10 do lu.assertTrue(seen[i], "step " .. i .. " never ran") end
  -- The second flow's history: five Cached, five Completed.
  local second = sql(db, [[SELECT state_name, count(*) FROM runs WHERE flow =
    (SELECT max(id) FROM runs WHERE kind = 1) GROUP BY state_name ORDER BY state_name]])
  lu.assertEquals(second, "3|5\n9|5")
  lu.assertEquals(sql(db, "PRAGMA integrity_check"), "ok")
  -- The killed flow never ends: `runs` says its process is gone.
  r = program(d, { MOONFLOW_STORE = db }, "runs")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertStrContains(r.out, "resume-1  RUNNING (process gone)")
  lu.assertStrContains(r.out, "5 Running, 5 Completed")
  lu.assertStrContains(r.out, "5 Completed, 5 Cached")
end

function TestStoreProgram:test_sigkill_during_batch_writes()
  local d = new_dir()
  local db = d .. "/store.db"
  local path = script(d, [[
local mf = require "moonflow"
local w = mf.task({ name = "w" }, function(i) return i end)
local xs = {}
for i = 1, 20000 do xs[i] = i end
local fl = mf.flow({ name = "writes" }, function() return #w:map(xs):result() end)
while true do fl() end
]])
  local pid = start(d, { MOONFLOW_STORE = db }, quote(path))
  local committed = 0
  eventually("many runs committed", function()
    committed = tonumber(sql(db, "SELECT count(*) FROM runs")) or 0
    return committed >= 50000
  end)
  os.execute("kill -9 " .. pid) -- the writer is committing batches
  eventually("the killed process gone", function()
    return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
  end)
  lu.assertEquals(sql(db, "PRAGMA integrity_check"), "ok")
  local after = tonumber(sql(db, "SELECT count(*) FROM runs"))
  lu.assertTrue(after >= committed, string.format("lost runs: %d before, %d after", committed, after))
  -- And the file is still a store the next process writes to.
  local r = program(d, { MOONFLOW_STORE = db }, "-e " .. quote(
    "local mf = require 'moonflow'; print(mf.flow({name='after-kill'}, function() return 1 end)())"))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(sql(db, "SELECT state_type FROM runs WHERE name = 'after-kill-1'"), "3")
end

local SUM = [[
local mf = require "moonflow"
local t = mf.task({ name = "t" }, function(i) return i end)
local fl = mf.flow({ name = "summing" }, function(n)
  local xs = {}
  for i = 1, n do xs[i] = i end
  local s = 0
  for _, v in ipairs(t:map(xs):result()) do s = s + v end
  return s
end)
print(fl(3000))
]]

function TestStoreProgram:test_a_full_disk_stops_the_store_not_the_runs()
  local d = new_dir()
  local db = d .. "/store.db"
  local r = program(d, { MOONFLOW_STORE = db, MOONFLOW_STORE_MAX_PAGES = "12" },
    quote(script(d, SUM)))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "4501500\n")
  lu.assertEquals(count_lines(r.err, "run store"), 1, describe(r))
  lu.assertStrContains(r.err, "full")
  lu.assertStrContains(r.err, "runs go on")
  lu.assertEquals(sql(db, "PRAGMA integrity_check"), "ok")
end

function TestStoreProgram:test_a_read_only_directory()
  local d = new_dir()
  local ro = d .. "/ro"
  os.execute("mkdir -p " .. quote(ro) .. " && chmod 555 " .. quote(ro))
  local path = script(d, SUM)
  os.execute("chmod 644 " .. quote(path) .. "; chmod 777 " .. quote(d))
  -- root writes anywhere: run as nobody then.
  local prefix = capture("id -u"):match("^0") and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""
  local r = program(d, { MOONFLOW_STORE = ro .. "/store.db" }, quote(path), prefix)
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "4501500\n")
  lu.assertEquals(count_lines(r.err, "run store"), 1, describe(r))
  lu.assertStrContains(r.err, "runs are not recorded")
  lu.assertNil(read_file(ro .. "/store.db"))
end

function TestStoreProgram:test_a_foreign_file_is_left_untouched()
  local d = new_dir()
  local db = d .. "/notes.txt"
  local bytes = string.rep("these are someone's notes\n", 300)
  write_file(db, bytes)
  local r = program(d, { MOONFLOW_STORE = db }, quote(script(d, SUM)))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "4501500\n")
  lu.assertStrContains(r.err, "not a database")
  lu.assertEquals(read_file(db), bytes)
  lu.assertNil(read_file(db .. "-wal"))
  r = program(d, { MOONFLOW_STORE = db }, "runs")
  lu.assertEquals(r.code, 1, describe(r))
  lu.assertStrContains(r.err, "not a database")
  lu.assertEquals(read_file(db), bytes)
end

function TestStoreProgram:test_a_corrupt_store_is_reported_once_and_untouched()
  local d = new_dir()
  local db = d .. "/store.db"
  local r = program(d, { MOONFLOW_STORE = db }, quote(script(d, SUM)))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(sql(db, "PRAGMA wal_checkpoint(TRUNCATE)"), "0|0|0")
  -- Every page after the first (the header and the schema) overwritten.
  local bytes = read_file(db)
  lu.assertTrue(#bytes > 8192)
  bytes = bytes:sub(1, 4096) .. string.rep("\xa5", #bytes - 4096)
  write_file(db, bytes)
  r = program(d, { MOONFLOW_STORE = db }, quote(script(d, SUM)))
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "4501500\n")
  lu.assertEquals(count_lines(r.err, "run store"), 1, describe(r))
  lu.assertStrContains(r.err, "malformed")
  lu.assertEquals(read_file(db), bytes)
  r = program(d, { MOONFLOW_STORE = db }, "runs")
  lu.assertEquals(r.code, 1, describe(r))
  lu.assertStrContains(r.err, "malformed")
  lu.assertEquals(read_file(db), bytes)
end

function TestStoreProgram:test_ctrl_c_flushes_what_was_queued()
  local d = new_dir()
  local db = d .. "/store.db"
  local path = script(d, [[
local mf = require "moonflow"
local marker = arg[1]
local slow = mf.task({ name = "slow" }, function() mf.sleep(3600) end)
local fl = mf.flow({ name = "interrupted" }, function()
  local fs = slow:map({ 1, 2, 3 })
  io.open(marker, "w"):close()
  fs:wait()
end)
fl()
]])
  local pid = start(d, { MOONFLOW_STORE = db }, quote(path) .. " " .. quote(d .. "/started"))
  eventually("the flow started", function() return read_file(d .. "/started") ~= nil end)
  os.execute("kill -INT " .. pid)
  eventually("the process ended", function()
    return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
  end)
  lu.assertEquals(sql(db, "SELECT state_type FROM runs WHERE name = 'interrupted-1'"), "6")
  lu.assertEquals(sql(db, "SELECT count(*) FROM runs WHERE task = 'slow' AND state_type = 6"), "3")
end

-- Runs the script after a preamble (mf, core, a task t) with the store in
-- a new directory and a ring of ring cells; returns the result and the
-- store's path.
local function with_ring(ring, script)
  local d = new_dir()
  local db = d .. "/store.db"
  local r = program(d, { MOONFLOW_STORE = db, MOONFLOW_STORE_RING = ring }, "-e " .. quote([[
local mf = require "moonflow"
local core = require "moonflow.core"
local t = mf.task({ name = "t" }, function(i) return i end)
]] .. script))
  return r, db
end

function TestStoreProgram:test_a_full_ring_makes_the_loop_wait_and_loses_nothing()
  -- A ring of 64 cells, no more than a map's chunk of 64 runs submits
  -- before it looks at the ring: the loop fills it and waits for room (the
  -- last resort); every run is recorded all the same.
  local r, db = with_ring("64", [[
local n = #mf.flow({ name = "full-ring" }, function()
  local xs = {}
  for i = 1, 5000 do xs[i] = i end
  return t:map(xs):result()
end)()
core.store_flush()
local s = core.store_stats()
print(n, s.waits > 0, s.error == nil)]])
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "5000\ttrue\ttrue\n")
  lu.assertEquals(sql(db, "SELECT count(*) FROM runs WHERE task = 't' AND state_type = 3"), "5000")
end

function TestStoreProgram:test_a_writer_behind_holds_new_runs_back_instead_of_the_loop()
  -- A ring of 2048 cells: a map of 20,000 runs inside a flow would fill it
  -- many times over, and so would a flow that submits 20,000 in a loop.
  -- The map's slices end, t:submit gives up the run's slice, and the
  -- engine's start gate holds runs to start while the ring is seven
  -- eighths full, so the loop never waits for room (waits = 0); every run
  -- is recorded all the same.
  local r, db = with_ring("2048", [[
local n = #mf.flow({ name = "behind" }, function()
  local xs = {}
  for i = 1, 20000 do xs[i] = i end
  return t:map(xs):result()
end)()
local m = #mf.flow({ name = "looping" }, function()
  local futures = {}
  for i = 1, 20000 do futures[i] = t:submit(i) end
  return futures -- (replaced by their results)
end)()
core.store_flush()
local s = core.store_stats()
print(n, m, s.waits, s.events > 40000, s.error == nil)]])
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "20000\t20000\t0\ttrue\ttrue\n")
  lu.assertEquals(sql(db, "SELECT count(*) FROM runs WHERE task = 't' AND state_type = 3"), "40000")
end

function TestStoreProgram:test_os_exit_flushes_what_was_queued()
  local d = new_dir()
  local db = d .. "/store.db"
  local r = program(d, { MOONFLOW_STORE = db }, "-e " .. quote([[
local mf = require "moonflow"
local t = mf.task({ name = "t" }, function(i) return i end)
local n = #mf.flow({ name = "exiting" }, function()
  local xs = {}
  for i = 1, 5000 do xs[i] = i end
  return t:map(xs):result()
end)()
os.exit(n == 5000 and 7 or 1)]]))
  lu.assertEquals(r.code, 7, describe(r))
  lu.assertEquals(sql(db, "SELECT count(*) FROM runs WHERE task = 't' AND state_type = 3"), "5000")
  lu.assertEquals(sql(db, "SELECT state_type FROM runs WHERE name = 'exiting-1'"), "3")
end

-- Processes that open a new file at once all take it for theirs: the one
-- that creates the schema does so in one transaction, and the others read
-- what they check (application_id, the tables) in one snapshot. Read one
-- by one, those reads could straddle the creation, and a process called
-- the new store "not a moonflow store" (4 of 30 trials of six processes
-- before; the test of two processes below failed that way in a clean
-- clone's ASan run).
function TestStoreProgram:test_processes_opening_a_new_file_at_once()
  for trial = 1, 8 do
    local d = new_dir()
    local db = d .. "/store.db"
    local cmds = {}
    for k = 1, 6 do
      cmds[k] = string.format("env -u LD_PRELOAD MOONFLOW_STORE=%s %s -e %s >%s 2>&1 </dev/null &",
        quote(db), quote(PROG), quote('print(#mf.task(function(x) return x end):map({1, 2, 3}):result())'),
        quote(d .. "/out" .. k))
    end
    os.execute("timeout -k 5 300 sh -c " .. quote(table.concat(cmds, " ") .. " wait"))
    for k = 1, 6 do
      lu.assertEquals(read_file(d .. "/out" .. k), "3\n", "trial " .. trial .. ", process " .. k)
    end
    lu.assertEquals(sql(db, "SELECT count(*) FROM processes"), "6")
  end
end

function TestStoreProgram:test_two_processes_on_one_file()
  local d = new_dir()
  local db = d .. "/store.db"
  local path = script(d, SUM)
  local a = start(d, { MOONFLOW_STORE = db }, quote(path))
  local d2 = new_dir()
  local r = program(d2, { MOONFLOW_STORE = db }, quote(path))
  eventually("the first process ended", function()
    return not os.execute("kill -0 " .. a .. " 2>/dev/null")
  end)
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "4501500\n")
  lu.assertEquals(read_file(d .. "/bg-out"), "4501500\n")
  lu.assertEquals(read_file(d .. "/bg-err"), "")
  lu.assertEquals(r.err, "")
  lu.assertEquals(sql(db, "SELECT count(*) FROM runs WHERE task = 't' AND state_type = 3"), "6000")
  lu.assertEquals(sql(db, "SELECT count(*) FROM processes WHERE ended IS NOT NULL"), "2")
end

-- {====== Retention ======

-- A store with runs of three processes made older than a week: the next
-- program start deletes what the default keep (7d) no longer keeps.
local OLD_PLAIN = [[
local mf = require "moonflow"
print(mf.task({ name = "plain" }, function(x) return x end):map({ 1, 2, 3 }):result()[3])
]]
local OLD = [[
local mf = require "moonflow"
mf.log.warning("outside any run")
local t = mf.task({ name = "old" }, function(x) mf.log.warning("old log", x) return x end)
t:map({ 1, 2, 3, 4, 5 }):result()
print(mf.task({ name = "keyed", cache_key = function() return "k1" end },
  function() return "v1" end)())
print(mf.task({ name = "expiring", cache_key = function() return "k2" end, cache_expiration = 3600 },
  function() return "v2" end)())
print(mf.task({ name = "persisted", persist_result = true }, function() return "p1" end)())
mf.task({ name = "left-running" }, function() mf.sleep(3600) end):submit()
mf.sleep(0.05) -- it runs
os.exit(0) -- its row stays Running: never final
]]
local NEW = [[
local mf = require "moonflow"
local core = require "moonflow.core"
print(mf.task({ name = "new" }, function() return "n" end)())
while core.store_stats().pruning do mf.sleep(0.01) end
local st = core.store_stats()
print(st.pruned, st.keep)
print(mf.task({ name = "keyed", cache_key = function() return "k1" end },
  function() return "recomputed" end)())
print(mf.task({ name = "expiring", cache_key = function() return "k2" end },
  function() return "recomputed" end)())
]]
local WEEK_AND_A_DAY = 8 * 86400

-- Two old processes' runs (aged with sqlite3), then NEW with env; returns
-- the store's path and NEW's result.
local function aged_store(env)
  local d = new_dir()
  local db = d .. "/store.db"
  env.MOONFLOW_STORE = db
  for _, code in ipairs({ OLD_PLAIN, OLD }) do
    local r = program(d, { MOONFLOW_STORE = db }, quote(script(d, code)))
    lu.assertEquals(r.code, 0, describe(r))
  end
  local age = function(t, cols)
    local sets = {}
    for _, c in ipairs(cols) do sets[#sets + 1] = string.format("%s = %s - %d", c, c, WEEK_AND_A_DAY) end
    return string.format("UPDATE %s SET %s;", t, table.concat(sets, ", "))
  end
  lu.assertEquals(sql(db, age("runs", { "created", "started", "ended" })
    .. age("logs", { "time" }) .. age("results", { "created", "expires" })
    .. age("processes", { "started", "ended" })), "")
  local r = program(d, env, quote(script(d, NEW)))
  lu.assertEquals(r.code, 0, describe(r))
  return db, r
end

function TestStoreProgram:test_runs_older_than_a_week_are_deleted()
  local db, r = aged_store({})
  -- 3 plain, 5 old, keyed, expiring, persisted: 11 runs deleted; the run
  -- left Running is kept (never final), and so are its process and the
  -- result under k1 (no expiry); k2's expired (aged an hour past it).
  lu.assertEquals(r.out, "n\n11\t604800.0\nv1\nrecomputed\n")
  lu.assertEquals(r.err, "")
  lu.assertEquals(sql(db, "SELECT group_concat(name, ' ') FROM (SELECT name FROM runs ORDER BY id)"),
    "left-running-1 new-1 keyed-1 expiring-1")
  lu.assertEquals(sql(db, "SELECT count(*) FROM logs"), "0")
  lu.assertEquals(sql(db, "SELECT group_concat(key, ' ') FROM (SELECT key FROM results ORDER BY key)"),
    "k1 k2") -- k2: the new run's
  lu.assertEquals(sql(db, "SELECT count(*) FROM processes"), "2") -- OLD's and NEW's
end

function TestStoreProgram:test_a_store_kept_forever_or_a_bad_keep_deletes_nothing()
  for _, keep in ipairs({ "forever", "7 days" }) do
    local db, r = aged_store({ MOONFLOW_STORE_KEEP = keep })
    lu.assertEquals(r.out, "n\n0\t0.0\nv1\nrecomputed\n", keep) -- k2 expired
    if keep == "forever" then
      lu.assertEquals(r.err, "")
    else
      lu.assertEquals(r.err, "moonflow: MOONFLOW_STORE_KEEP=7 days is not a duration (7d, 12h, "
        .. "30m, 90s or forever): runs are kept forever\n")
    end
    lu.assertEquals(sql(db, "SELECT count(*) FROM runs"), "15", keep)
    lu.assertEquals(sql(db, "SELECT count(*) FROM processes"), "3", keep)
  end
end

-- }======

local ok, err = pcall(h.run)
os.execute("rm -rf " .. quote(DIR))
if not ok then error(err, 0) end
