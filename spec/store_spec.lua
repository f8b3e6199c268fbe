-- The run store and caching (api.md task options cache_key,
-- cache_expiration, refresh_cache, cache, persist_result), in process:
-- what is recorded, cache hits and misses, the store's checks of the file
-- at its path.  The program's side (default store, CLI, faults with
-- SIGKILL and disks) is spec/store_program_spec.lua.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"


local temp_path, DIR = h.temp_paths("mf-store")
local query = h.store_query

local read_file = h.read_file

local write_file = h.write_file

-- A fresh store for one test; returns its path and a reader of it.
local function fresh_store()
  local path = temp_path()
  mf.configure { store = path }
  return path
end

-- f:wait() then f:state().
local function final_state(f)
  f:wait()
  return f:state()
end

local COMPLETED, FAILED = 3, 4
local NAME_CACHED = 9

local function off()
  mf.configure { store = "off" }
  core.cache_clear()
end

-- {====== History ======

TestStoreHistory = {}
function TestStoreHistory:tearDown() off() end

function TestStoreHistory:test_runs_states_and_tree()
  local path = fresh_store()
  local sq = mf.task({ name = "sq", tags = { "math", "fast" } }, function(x)
    mf.log.warning("squaring", x)
    return x * x
  end)
  local tries = 0
  local flaky = mf.task({ name = "flaky", retries = 1 }, function()
    tries = tries + 1
    if tries == 1 then error("first try fails") end
    return "ok"
  end)
  local bad = mf.task({ name = "bad" }, function() error("always fails") end)
  local fl = mf.flow({ name = "store-flow" }, function(n)
    local total = 0
    for _, v in ipairs(sq:map({ 1, 2, n }):result()) do total = total + v end
    flaky()
    bad:submit():wait() -- left unhandled: the flow fails
    return total
  end)
  local run = fl:submit(3)
  run:wait()
  local state = run:state()
  lu.assertEquals(state.type, "FAILED") -- bad's failure is unhandled

  local flows = query(path, "SELECT * FROM runs WHERE kind = 1")
  lu.assertEquals(#flows, 1)
  local f = flows[1]
  lu.assertEquals(f.name, "store-flow-1")
  lu.assertEquals(f.task, "store-flow")
  lu.assertEquals(f.parameters, "3")
  lu.assertEquals(f.state_type, FAILED)
  lu.assertTrue(f.ended >= f.started and f.started >= f.created)

  local tasks = query(path, "SELECT * FROM runs WHERE flow = ? ORDER BY id", f.id)
  lu.assertEquals(#tasks, 5)
  local by_name = {}
  for _, t in ipairs(tasks) do
    by_name[t.name] = t
    lu.assertEquals(t.parent, f.id)
  end
  lu.assertEquals(by_name["sq-3"].parameters, "3")
  lu.assertEquals(by_name["sq-3"].tags, "math,fast")
  lu.assertEquals(by_name["sq-3"].state_type, COMPLETED)
  lu.assertEquals(by_name["flaky-1"].attempts, 2)
  lu.assertEquals(by_name["flaky-1"].state_type, COMPLETED)
  -- flaky's history: every transition, the retry included.
  local hist, pos = {}, 1
  local blob = by_name["flaky-1"].history
  lu.assertIsString(blob)
  while pos + 8 <= #blob do
    local b
    b, _, pos = string.unpack("<Bd", blob, pos)
    hist[#hist + 1] = b & 15
  end
  -- Pending, Running, AwaitingRetry, Retrying, Completed
  lu.assertEquals(hist, { 0, 2, 6, 5, 3 })
  local bad_run = by_name["bad-1"]
  lu.assertEquals(bad_run.state_type, FAILED)
  lu.assertStrContains(bad_run.message, "always fails")
  lu.assertStrContains(bad_run.traceback, "stack traceback")

  local logs = query(path, "SELECT l.message, r.name FROM logs l JOIN runs r ON r.id = l.run ORDER BY l.id")
  local texts = {}
  for _, l in ipairs(logs) do texts[#texts + 1] = l.name .. ": " .. l.message end
  local all = table.concat(texts, "\n")
  lu.assertStrContains(all, "sq-1: squaring 1")
  lu.assertStrContains(all, "flaky-1: attempt 1 failed: ")
  lu.assertStrContains(all, "first try fails")
end

function TestStoreHistory:test_nothing_dropped_when_the_writer_falls_behind()
  -- More events than the ring holds, made in one burst: the loop waits for
  -- room (the policy), so every run is recorded.
  local path = fresh_store()
  local t = mf.task({ name = "noop" }, function(x) return x end)
  local fl = mf.flow({ name = "burst" }, function()
    local xs = {}
    for i = 1, 40000 do xs[i] = i end
    return #t:map(xs):result()
  end)
  lu.assertEquals(fl(), 40000)
  local rows = query(path, [[SELECT count(*) AS n, sum(state_type = 3) AS done
    FROM runs WHERE task = 'noop']])
  lu.assertEquals(rows[1].n, 40000)
  lu.assertEquals(rows[1].done, 40000)
  local stats = core.store_stats()
  lu.assertNil(stats.error)
  lu.assertTrue(stats.events >= 120000)
end

function TestStoreHistory:test_runs_named_when_they_start()
  local path = fresh_store()
  local named = mf.task({ name = "named",
    task_run_name = function(x) return "named-for-" .. x end }, function(x) return x end)
  -- Recorded (Running committed) before the name is given: updated.
  local late = mf.task({ name = "late", task_run_name = function(x) return "late-for-" .. x end,
    on_running = { function() core.store_flush() end } }, function(x) return x end)
  lu.assertEquals(named(5), 5)
  lu.assertEquals(late(6), 6)
  local rows = query(path, "SELECT name FROM runs WHERE task IN ('named', 'late') ORDER BY id")
  lu.assertEquals(#rows, 2)
  lu.assertEquals(rows[1].name, "named-for-5")
  lu.assertEquals(rows[2].name, "late-for-6")
end

function TestStoreHistory:test_memory_store_and_off()
  mf.configure { store = ":memory:" }
  local t = mf.task({ name = "m" }, function() return 1 end)
  lu.assertEquals(t(), 1)
  core.store_flush()
  lu.assertEquals(core.store_stats().path, ":memory:")
  mf.configure { store = false }
  lu.assertNil(core.store_stats())
  h.raises_kind("UsageError", mf.configure, { store = 12 })
end

-- A flow with a task_runner is a run like any other (it was once marked
-- through mf_run_data, which the store goes by: never recorded).
function TestStoreHistory:test_a_flow_with_a_task_runner_is_recorded()
  local path = fresh_store()
  local double = mf.task({ name = "double" }, function(x) return 2 * x end)
  local fl = mf.flow({ name = "pooled", task_runner = mf.runners.threads { workers = 1 } },
    function(x) return double(x) end)
  lu.assertEquals(fl(21), 42)
  local rows = query(path, "SELECT name, state_type FROM runs ORDER BY id")
  lu.assertEquals(#rows, 2)
  lu.assertEquals(rows[1].name, "pooled-1")
  lu.assertEquals(rows[1].state_type, COMPLETED)
  lu.assertEquals(rows[2].name, "double-1")
end

-- }======

-- {====== The file at the store's path ======

TestStoreFile = {}
function TestStoreFile:tearDown() off() end

function TestStoreFile:test_a_foreign_file_is_refused_and_untouched()
  local garbage = temp_path("garbage.db")
  local bytes = string.rep("not a database\0\1\2", 400)
  write_file(garbage, bytes)
  local err = h.raises_kind("StoreError", mf.configure, { store = garbage })
  lu.assertStrContains(err.message, garbage)
  lu.assertEquals(read_file(garbage), bytes)

  -- Another application's SQLite database.
  local other = temp_path("other.db")
  os.execute("sqlite3 '" .. other .. "' 'CREATE TABLE t(x); INSERT INTO t VALUES(1)'")
  local before = read_file(other)
  lu.assertNotNil(before)
  err = h.raises_kind("StoreError", mf.configure, { store = other })
  lu.assertStrContains(err.message, "not a moonflow store")
  lu.assertEquals(read_file(other), before)
  lu.assertNil(read_file(other .. "-wal"))
  -- Runs go on without a store.
  lu.assertEquals(mf.task(function() return 5 end)(), 5)
end

-- Version 1 of the schema (before results were kept): a file written then.
local SCHEMA_1 = [[
PRAGMA application_id = 1296452695; PRAGMA user_version = 1;
CREATE TABLE processes(id INTEGER PRIMARY KEY, pid INTEGER, started REAL, ended REAL);
CREATE TABLE runs(id INTEGER PRIMARY KEY, process INTEGER NOT NULL,
 local_id INTEGER NOT NULL, parent INTEGER, flow INTEGER,
 kind INTEGER NOT NULL, name TEXT NOT NULL, task TEXT, tags TEXT,
 parameters TEXT, state_type INTEGER NOT NULL,
 state_name INTEGER NOT NULL, created REAL, started REAL, ended REAL,
 attempts INTEGER NOT NULL DEFAULT 0, history BLOB, message TEXT,
 traceback TEXT);
CREATE INDEX runs_flow ON runs(flow) WHERE flow IS NOT NULL;
CREATE INDEX runs_flows ON runs(created) WHERE kind = 1;
CREATE TABLE logs(id INTEGER PRIMARY KEY, run INTEGER, time REAL NOT NULL,
 level INTEGER NOT NULL, message TEXT NOT NULL);
CREATE INDEX logs_run ON logs(run);
INSERT INTO processes(pid, started) VALUES(1, unixepoch('now') - 3);
INSERT INTO runs(process, local_id, kind, name, task, state_type, state_name,
 created, started, ended, attempts) VALUES(1, 1, 1, 'old-flow-1', 'old-flow',
 3, 3, unixepoch('now') - 3, unixepoch('now') - 2, unixepoch('now') - 1, 1);
]] -- (times of now: a week older, the run would be pruned)

function TestStoreFile:test_an_older_schema_is_migrated()
  local path = temp_path("v1.db")
  local f = assert(io.popen("sqlite3 '" .. path .. "'", "w"))
  f:write(SCHEMA_1)
  f:close()
  mf.configure { store = path }
  local t = mf.task({ name = "after", cache_key = function() return "mig" end },
    function() return "kept" end)
  lu.assertEquals(t(), "kept")
  local old = query(path, "SELECT name FROM runs WHERE name = 'old-flow-1'")
  lu.assertEquals(#old, 1) -- what version 1 recorded is still there
  local version = query(path, "PRAGMA user_version")[1].user_version
  lu.assertEquals(version, 2)
  local kept = query(path, "SELECT key FROM results")
  lu.assertEquals(kept[1].key, "mig")
end

function TestStoreFile:test_a_newer_schema_is_refused()
  local path = temp_path("v9.db")
  os.execute("sqlite3 '" .. path .. "' 'PRAGMA application_id = 1296452695; PRAGMA user_version = 9; CREATE TABLE x(y)'")
  local before = read_file(path)
  local err = h.raises_kind("StoreError", mf.configure, { store = path })
  lu.assertStrContains(err.message, "newer moonflow")
  lu.assertEquals(read_file(path), before)
end

-- }======

-- {====== Caching ======

TestCache = {}
function TestCache:tearDown() off() end


local function counted(opts, fn)
  local calls = { n = 0 }
  local t = mf.task(opts, function(...)
    calls.n = calls.n + 1
    return fn(...)
  end)
  return t, calls
end

function TestCache:test_a_hit_does_not_call_the_function()
  off() -- no store: the results kept in this process
  local t, calls = counted({ name = "sq", cache_key = function(x) return "sq:" .. x end },
    function(x) return x * x, { x = x } end)
  local a, ta = t(4)
  local fut = t:submit(4)
  local b, tb = fut:result()
  lu.assertEquals(calls.n, 1)
  lu.assertEquals({ a, b }, { 16, 16 })
  lu.assertEquals(tb, { x = 4 })
  lu.assertFalse(rawequal(ta, tb)) -- a copy, decoded
  local state = fut:state()
  lu.assertEquals(state.type, "COMPLETED")
  lu.assertEquals(state.name, "Cached")
  lu.assertEquals(t(5), 25)
  lu.assertEquals(calls.n, 2)
end

function TestCache:test_nil_key_nil_and_many_results()
  off()
  local t, calls = counted({ name = "n", cache_key = function(x)
    if x == "skip" then return nil end
    return "n:" .. x
  end }, function(x)
    if x == "none" then return end
    return 1, nil, 3
  end)
  t("skip"); t("skip")
  lu.assertEquals(calls.n, 2) -- nil: never cached
  lu.assertEquals(select("#", t("none")), 0)
  lu.assertEquals(select("#", t("none")), 0)
  lu.assertEquals(calls.n, 3)
  local r = table.pack(t("many"))
  local s = table.pack(t("many"))
  lu.assertEquals(calls.n, 4)
  lu.assertEquals(s.n, 3)
  lu.assertEquals({ s[1], s[2], s[3] }, { r[1], r[2], r[3] })
end

function TestCache:test_expiration_and_refresh()
  off()
  local t, calls = counted({ name = "e", cache_key = function() return "e" end,
    cache_expiration = 0.05 }, function() return "e" end)
  t(); t()
  lu.assertEquals(calls.n, 1)
  mf.sleep(0.2) -- past the expiration: a miss
  t()
  lu.assertEquals(calls.n, 2)
  local r, rcalls = counted({ name = "r", cache_key = function() return "r" end },
    function() return "v" end)
  r()
  r:with({ refresh_cache = true })()
  r()
  lu.assertEquals(rcalls.n, 2) -- the refresh ran it, the last hit its value
end

function TestCache:test_default_key()
  off()
  local t, calls = counted({ name = "d", cache = true }, function(x) return x end)
  t({ a = 1, b = { 2, 3 } })
  t({ b = { 2, 3 }, a = 1 })
  lu.assertEquals(calls.n, 1)
  t({ a = 2 })
  lu.assertEquals(calls.n, 2)
  t("s"); t("s"); t(1); t(1.0)
  lu.assertEquals(calls.n, 5) -- 1 and 1.0 are different inputs
  -- Inputs without a stable key: not cached (a warning), still run.
  local f = function() end
  t(f); t(f)
  lu.assertEquals(calls.n, 7)
end

function TestCache:test_errors_in_keys_and_results()
  off()
  local bad_key = mf.task({ name = "bk", cache_key = function() return 12 end },
    function() return 1 end)
  local st = final_state(bad_key:submit())
  lu.assertEquals(st.type, "FAILED")
  lu.assertStrContains(tostring(st.message), "cache_key must return a string")
  local waits = mf.task({ name = "wk", cache_key = function()
    mf.sleep(0.01)
    return "k"
  end }, function() return 1 end)
  st = final_state(waits:submit())
  lu.assertEquals(st.type, "FAILED")
  lu.assertStrContains(tostring(st.message), "UsageError")
  -- A function in a kept result: an error naming its path.
  local fn_result = mf.task({ name = "fr", cache_key = function() return "fr" end },
    function() return { ok = 1, f = print } end)
  st = final_state(fn_result:submit())
  lu.assertEquals(st.type, "FAILED")
  lu.assertStrContains(tostring(st.message), "result[1].f")
  h.raises_kind("UsageError", mf.task, { cache_key = "k" }, function() end)
  h.raises_kind("UsageError", mf.task, { cache_expiration = -1 }, function() end)
  h.raises_kind("UsageError", mf.task, { refresh_cache = 1 }, function() end)
  h.raises_kind("UsageError", mf.task, { cache = "yes" }, function() end)
  h.raises_kind("UsageError", mf.task, { persist_result = 1 }, function() end)
  h.raises_kind("UsageError", mf.flow, { cache = true }, function() end)
end

-- A cache_key that takes the run past its timeout: the hit ends the run
-- TimedOut, and result() raises that TimedOut, not the cached value (the
-- engine's verdict and the binding's were taken apart: seed 1796154942 of
-- the API fuzzer, where Task:__call raised what the body returned).
function TestCache:test_a_hit_past_the_timeout_raises_timed_out()
  off()
  local slow = false
  local plain = mf.task({ name = "late", cache_key = function()
    if slow then
      local stop = mf.now() + 0.1 -- twice the timeout, from after it began
      while mf.now() < stop do end
    end
    return "late"
  end }, function() return "cached value" end)
  lu.assertEquals(plain(), "cached value") -- (no timeout: kept however slow)
  slow = true
  local t = plain:with({ timeout = 0.05 })
  local fut = t:submit()
  local err = h.raises_kind("TimedOut", fut.result, fut)
  lu.assertStrContains(err.message, "exceeded its timeout")
  lu.assertEquals(fut:state().name, "TimedOut")
  err = fut:result(nil, false)
  lu.assertEquals(err.kind, "TimedOut")
  h.raises_kind("TimedOut", t)
end

-- A body that returns in time completes, even when keeping its result (the
-- encoding, for the cache) takes the step past the deadline; whichever way
-- a slow machine makes it end, result() agrees with the state.
function TestCache:test_a_result_kept_past_the_timeout_agrees_with_the_state()
  off()
  local big = {}
  for i = 1, 200000 do big[i] = { i, "x" .. i } end
  local n = 0
  local t = mf.task({ name = "bigkept", timeout = 0.01, cache_key = function()
    n = n + 1
    return "bigkept:" .. n
  end }, function() return big end)
  for _ = 1, 3 do
    local fut = t:submit()
    local ok, r = pcall(fut.result, fut)
    local name = fut:state().name
    if name == "Completed" then
      lu.assertTrue(ok)
      lu.assertIs(r, big)
    else
      lu.assertEquals(name, "TimedOut")
      lu.assertFalse(ok)
      lu.assertEquals(type(r) == "table" and r.kind, "TimedOut")
    end
  end
end

function TestCache:test_kept_in_the_store_across_states()
  local path = fresh_store()
  local t, calls = counted({ name = "kept", cache_key = function(x) return "kept:" .. x end },
    function(x) return { v = x } end)
  t(1)
  core.store_flush()
  core.cache_clear() -- as a new process would be: only the store knows
  lu.assertEquals(t(1), { v = 1 })
  lu.assertEquals(calls.n, 1)
  local rows = query(path, "SELECT state_name FROM runs WHERE task = 'kept' ORDER BY id")
  lu.assertEquals(#rows, 2)
  lu.assertEquals(rows[2].state_name, NAME_CACHED) -- visible in the history
  local kept = query(path, "SELECT key, run FROM results")
  lu.assertEquals(#kept, 1)
  lu.assertEquals(kept[1].key, "kept:1")
  -- persist_result without a key: kept with its run, not reused.
  local p, pcalls = counted({ name = "p", persist_result = true }, function() return "pv" end)
  p(); p()
  lu.assertEquals(pcalls.n, 2)
  local persisted = query(path, [[SELECT count(*) AS n FROM results r
    JOIN runs x ON x.id = r.run WHERE x.task = 'p' AND r.key IS NULL]])
  lu.assertEquals(persisted[1].n, 2)
end

function TestCache:test_a_value_that_no_longer_decodes_is_a_miss()
  local path = fresh_store()
  local t, calls = counted({ name = "dv", cache_key = function() return "dv" end },
    function() return "fresh" end)
  t()
  core.store_flush()
  core.cache_clear()
  local db = core.store_reader(path)
  db:query("UPDATE results SET value = x'6d01ff00'")
  db:close()
  lu.assertEquals(t(), "fresh") -- ran again, with a warning
  lu.assertEquals(calls.n, 2)
  local logs = query(path, "SELECT message FROM logs WHERE message LIKE '%no longer decodes%'")
  lu.assertEquals(#logs, 1)
end

-- }======

local ok, err = pcall(h.run)
os.execute("rm -rf '" .. DIR .. "'")
if not ok then error(err, 0) end
