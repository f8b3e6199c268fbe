-- The run store's events on their way to the file (bindings/store_writer.c):
-- a run's events folded into one row (its start time and end state both
-- there), texts of every length through the ring's cells (inline, spilling
-- into the next cells, malloc'd past them, wrapping around a small ring),
-- and a task's name and tags, which the loop hands over once per task and
-- store (past the 1024 the store keeps, each submit carries its own).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"

local capture, quote = h.capture, h.shell_quote
local temp_path, query = h.temp_paths("mf-storeev"), h.store_query

local COMPLETED, FAILED = 3, 4

local function off() mf.configure { store = "off" } end

-- The lengths around the cells' edges: an event's first cell holds 19
-- bytes of text, each next one 64, 32 cells at most (2003 bytes).
local LENGTHS = { 0, 1, 17, 18, 19, 20, 63, 82, 83, 84, 146, 147, 148, 1000,
  2001, 2002, 2003, 2004, 5000, 70000 }

-- The message logged for length n: not a repeat of one byte, so that a
-- cell copied out of place shows.
local function text_of(n)
  local parts, i, len = {}, 0, 0
  while len < n do
    i = i + 1
    parts[i] = string.format("%d;", i)
    len = len + #parts[i]
  end
  return table.concat(parts):sub(1, n)
end

-- Runs code as a script of the program ($MF_PROGRAM, else build/moonflow)
-- in a process of its own (the store reads its settings from the
-- environment at opening), recording into a fresh store.db, with env's
-- variables set; stderr goes where the redirection `stderr` says.  Returns
-- the store's path and what the script printed.
local function run_recorded(name, code, env, stderr)
  local dir = temp_path(name)
  os.execute("mkdir -p " .. quote(dir))
  local db, script = dir .. "/store.db", dir .. "/script.lua"
  h.write_file(script, code)
  local vars = {}
  for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. quote(v) end
  local prog = os.getenv("MF_PROGRAM") or "build/moonflow"
  local out = capture(string.format("env -u LD_PRELOAD MOONFLOW_STORE=%s %s %s %s %s",
    quote(db), table.concat(vars, " "), quote(prog), quote(script), stderr))
  return db, out
end

TestStoreEvents = {}
function TestStoreEvents:tearDown() off() end

-- A map's runs start and end within one batch: one row each, written
-- once, with the time it started and the state it ended in (and the
-- history left NULL: Pending at created, Running at started, the final
-- state at ended say it all).
function TestStoreEvents:test_a_run_folded_in_one_batch_keeps_its_start_and_end()
  local path = temp_path()
  mf.configure { store = path }
  local t = mf.task({ name = "folded", tags = { "x" } }, function(i) return i end)
  -- Its Running committed before it ends: inserted, then updated.
  local late = mf.task({ name = "late", on_running = { function() core.store_flush() end } },
    function(i) return i end)
  local n = 300
  local fl = mf.flow({ name = "folds" }, function()
    local res = t:map(h.range(n)):result()
    return #res, late(7)
  end)
  local count, seven = fl()
  lu.assertEquals(count, n)
  lu.assertEquals(seven, 7)
  -- (by local_id, the engine's id, in submit order: the store's own id
  -- follows the order rows are written, and a run waits to be written
  -- until it starts or a flush)
  local rows = query(path, "SELECT * FROM runs WHERE task = 'folded' ORDER BY local_id")
  lu.assertEquals(#rows, n)
  for i, r in ipairs(rows) do
    lu.assertEquals(r.name, "folded-" .. i)
    lu.assertEquals(r.parameters, tostring(i))
    lu.assertEquals(r.tags, "x")
    lu.assertEquals(r.state_type, COMPLETED)
    lu.assertEquals(r.attempts, 1)
    lu.assertNotNil(r.started)
    lu.assertNotNil(r.ended)
    lu.assertTrue(r.created <= r.started and r.started <= r.ended)
    lu.assertNil(r.history)
  end
  local l = query(path, "SELECT * FROM runs WHERE task = 'late'")[1]
  lu.assertEquals(l.state_type, COMPLETED)
  lu.assertTrue(l.created <= l.started and l.started <= l.ended)
  lu.assertEquals(l.parameters, "7")
end

-- Error messages and tracebacks of every length come out as they went
-- in (log lines: in the small ring's test, whose process's stderr is not
-- the test's).
function TestStoreEvents:test_errors_of_every_length()
  local path = temp_path()
  mf.configure { store = path }
  local fails = mf.task({ name = "fails" }, function(n) error(text_of(n), 0) end)
  -- (the flow fails with its runs' failures, left unhandled)
  mf.flow({ name = "texts" }, function() fails:map(LENGTHS):wait() end):submit():wait()
  local failed = query(path, "SELECT * FROM runs WHERE task = 'fails'")
  lu.assertEquals(#failed, #LENGTHS)
  for _, r in ipairs(failed) do
    lu.assertEquals(r.state_type, FAILED)
    local n = tonumber(r.parameters)
    if n > 0 then
      lu.assertStrContains(r.message, text_of(n))
      lu.assertStrContains(r.traceback, "stack traceback")
    end
  end
end

-- More tasks than the store keeps the names and tags of (1024): the
-- others' submits carry theirs; every row has its own.
function TestStoreEvents:test_more_tasks_than_the_store_keeps()
  local path = temp_path()
  mf.configure { store = path }
  local n = 1100
  local tasks = {}
  for i = 1, n do
    tasks[i] = mf.task({ name = "many-" .. i, tags = { "g" .. i, "all" } },
      function(x) return x end)
  end
  mf.flow({ name = "many" }, function()
    for round = 1, 2 do
      for i = 1, n do tasks[i]:submit(round) end
    end
  end)()
  local rows = query(path, [[SELECT task, tags, name, parameters FROM runs
    WHERE task LIKE 'many-%' ORDER BY local_id]])
  lu.assertEquals(#rows, 2 * n)
  for k, r in ipairs(rows) do
    local i, round = (k - 1) % n + 1, (k - 1) // n + 1
    lu.assertEquals(r.task, "many-" .. i)
    lu.assertEquals(r.tags, "g" .. i .. ",all")
    lu.assertEquals(r.name, "many-" .. i .. "-" .. round)
    lu.assertEquals(r.parameters, tostring(round))
  end
end

-- A task keeps the store's copy of its name and tags: a store opened
-- after the first is given its own.
function TestStoreEvents:test_one_task_two_stores()
  local t = mf.task({ name = "twice", tags = { "a", "b" } }, function(x) return x end)
  local first, second = temp_path(), temp_path()
  mf.configure { store = first }
  lu.assertEquals(t(1), 1)
  mf.configure { store = second }
  lu.assertEquals(t(2), 2)
  for _, case in ipairs({ { first, "twice-1", "1" }, { second, "twice-2", "2" } }) do
    local rows = query(case[1], "SELECT name, task, tags, parameters FROM runs")
    lu.assertEquals(#rows, 1)
    lu.assertEquals(rows[1].name, case[2])
    lu.assertEquals(rows[1].task, "twice")
    lu.assertEquals(rows[1].tags, "a,b")
    lu.assertEquals(rows[1].parameters, case[3])
  end
end

-- A run's parameters column: a short text of each of its first eight
-- arguments, by type (bindings/store_lua.c summarize).
function TestStoreEvents:test_parameters_summarize_each_argument()
  local path = temp_path()
  mf.configure { store = path }
  local t = mf.task({ name = "params" }, function() return 1 end)
  local x32 = string.rep("x", 32)
  t(-12, 2.5, "short", x32, x32 .. "yz", "a\0b", true, false)
  t(nil, {}, print, 1, 2, 3, 4, 5, 6)
  t(string.rep("y", 200))
  t(t:submit(1)) -- a Future: by its type
  local s40 = string.rep("z", 40) -- eight of them: past the text's 191 bytes
  t(s40, s40, s40, s40, s40, s40, s40, s40)
  local rows = query(path, "SELECT parameters FROM runs ORDER BY local_id")
  local got = {}
  for i, r in ipairs(rows) do got[i] = r.parameters end
  lu.assertEquals(got, {
    '-12, 2.5, "short", "' .. x32 .. '", "' .. x32 .. '...", "a", true, false',
    "nil, {...}, function, 1, 2, 3, 4, 5, ...",
    '"' .. string.rep("y", 32) .. '..."',
    "1",
    "userdata",
    string.rep('"' .. string.rep("z", 32) .. '...", ', 8):sub(1, 191),
  })
end

-- A ring of 64 cells, which events of up to 32 cells fill and wrap
-- around again and again: the loop waits for room, nothing is lost or
-- garbled (a process of its own: the ring's size is read at opening, from
-- its environment).
function TestStoreEvents:test_a_small_ring_wraps_texts_of_every_length()
  local code = [[
local mf = require "moonflow"
local core = require "moonflow.core"
local LENGTHS = { ]] .. table.concat(LENGTHS, ", ") .. [[ }
local text_of = load(]] .. string.format("%q", string.dump(text_of)) .. [[)
local level = core.log_level()
local t = mf.task({ name = "ring" }, function(n) core.log(level, text_of(n)) return n end)
mf.flow({ name = "ring-flow" }, function()
  for _ = 1, 20 do t:map(LENGTHS):wait() end
end)()
core.store_flush()
local s = core.store_stats()
local rows = core.store_reader(core.store_stats().path):query(
  "SELECT r.parameters AS n, l.message FROM logs l JOIN runs r ON r.id = l.run")
local bad = 0
for _, r in ipairs(rows) do
  if r.message ~= text_of(tonumber(r.n)) then bad = bad + 1 end
end
print(#rows, bad, s.waits > 0, s.error == nil)]]
  local _, out = run_recorded("ring", code, { MOONFLOW_STORE_RING = "64" }, "2>/dev/null")
  lu.assertEquals(out, string.format("%d\t0\ttrue\ttrue\n", 20 * #LENGTHS))
end

-- Checkpoints (copying the WAL's pages into the file) run on a thread of
-- their own, not in the writer (bindings/store_checkpoint.c): with a
-- threshold of 8 pages, a program recording 3,000 runs has the thread run
-- one at least, and exits without checkpointing (SQLite's checkpoint on
-- close is off), so the file holds the runs' pages only if the thread
-- copied them.
function TestStoreEvents:test_checkpoints_run_on_their_own_thread()
  local db, out = run_recorded("checkpoint", [[
local mf = require "moonflow"
local core = require "moonflow.core"
local t = mf.task({ name = "ck" }, function(x) return x end)
local xs = {}
for i = 1, 1000 do xs[i] = string.rep("p", 200) .. i end
for _ = 1, 3 do
  t:map(xs):wait()
  core.store_flush() -- (a commit, after which the WAL hook looks)
end
local t0 = mf.now()
while core.store_stats().checkpoints == 0 and mf.now() - t0 < 60 do
  mf.sleep(0.01)
end
local s = core.store_stats()
print(s.checkpoints > 0, s.error == nil)]], { MOONFLOW_STORE_CHECKPOINT = "8" }, "2>&1")
  lu.assertEquals(out, "true\ttrue\n")
  local f = assert(io.open(db, "rb"))
  local size = f:seek("end")
  f:close()
  -- A checkpoint done copied the first map's rows at least (some 28
  -- pages of 4 KiB); without one, the file holds its first page only.
  lu.assertTrue(size >= 16 * 4096, "the file holds " .. size .. " bytes")
  local rows = query(db, "SELECT count(*) AS n FROM runs WHERE task = 'ck'")
  lu.assertEquals(rows[1].n, 3000)
end

-- A program that exits while checkpoints keep running (a threshold of 8
-- pages: one after nearly every commit) interrupts the one under way; the
-- file it leaves is whole and holds every run.
function TestStoreEvents:test_exit_during_checkpoints_leaves_the_file_whole()
  local db, out = run_recorded("checkpoint-exit", [[
local mf = require "moonflow"
local t = mf.task({ name = "ckx" }, function(x) return x end)
local xs = {}
for i = 1, 20000 do xs[i] = i end
for _ = 1, 3 do t:map(xs):wait() end
print("done")]], { MOONFLOW_STORE_CHECKPOINT = "8" }, "2>&1")
  lu.assertEquals(out, "done\n")
  lu.assertEquals(query(db, "PRAGMA integrity_check")[1].integrity_check, "ok")
  local rows = query(db, "SELECT count(*) AS n FROM runs WHERE task = 'ckx'")
  lu.assertEquals(rows[1].n, 60000)
end

os.exit(h.run())
