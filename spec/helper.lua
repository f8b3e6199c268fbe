-- spec/helper.lua: what every spec shares.  Specs run both under stock
-- lua5.4 (the module; waits at top level drive the loop) and under the
-- moonflow program (the main chunk is a run; waits park it).
--
--   local h = require "helper"
--   local mf, lu = h.mf, h.lu
--   ... tests ...
--   h.run()            -- at the end: runs luaunit, raises if any failed
-- Each spec starts with: package.path = "spec/?.lua;" .. package.path
--
-- {====== Time in tests ======
-- The tests run on busy machines (two cores, other builds, the sanitizers):
-- a step that takes a millisecond here may take a hundred there.  So:
--  * Never assert that something was fast.  Order, concurrency and "did not
--    wait for X" are asserted with events and counters: a run records that
--    it started (h.eventually waits for that), X is not done() when the
--    call returned, a counter moved while another run was still going.
--    Speed is measured in bench/, never in a test.
--  * A run that must still be going when the test looks at it waits on a
--    gate the test opens (h.gate), never on a short sleep a slow machine
--    could outlast.
--  * Where a test is about time (a sleep lasts its duration, a timeout
--    fires), the lower bound stays exact and the upper bound is
--    h.PATIENCE: it shows that the thing ends, not how fast.
--
--   h.PATIENCE       seconds (10; MF_TEST_PATIENCE overrides): how long a
--                    spec waits for something quick before calling it hung
--   h.LONG           seconds (3 x PATIENCE): a sleep no test waits out; a
--                    run sleeping h.LONG is still asleep when the test
--                    looks, unless something (a timeout, a cancel) stopped it
--   h.eventually(pred, what[, patience])
--                    waits until pred() is true, in 2 ms sleeps (they park
--                    a run, and drive the loop at top level); fails with
--                    "gave up after N s waiting for: what"
--   h.gate()         a latch: g:open(); g:wait([patience]) parks until it
--                    is open (true), or gives up after PATIENCE (false),
--                    so a test that forgets to open it ends all the same
--   h.recorder()     an event log: ev("name") records; ev.list;
--                    ev:count(name); ev:assert_order(a, b, ...) asserts
--                    each was recorded, in that order
--   h.spin_until(pred[, patience])
--                    computes without ever yielding until pred() is true
--                    (true) or patience passed (false): the body of a run
--                    that preemption must interrupt
-- }======
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local lu = require "luaunit"
local mf = require "moonflow"

local M = { mf = mf, lu = lu }

M.PATIENCE = tonumber(os.getenv("MF_TEST_PATIENCE")) or 10
M.LONG = 3 * M.PATIENCE

-- MF_RUNNER=threads|processes: the spec runs again with every task on that
-- runner (ctest does it for the specs of the shared suite).  Tests that
-- need what only the coroutine runner gives (a task changing the test's
-- own variables: shared memory) call h.shared_memory() first.
M.runner = os.getenv("MF_RUNNER")
if M.runner and M.runner ~= "coroutines" then
  mf.configure { task_runner = mf.runners[M.runner] { workers = 2 } }
  -- Its workers start now, before the first test times anything (no wait
  -- here: require cannot yield in the program's main run).
  mf.task(function(x) return x end):map({ 1, 2 })
end
M.copying = M.runner ~= nil and M.runner ~= "coroutines"

-- Skips the test on a runner that copies, saying why: what it needs only
-- the coroutine runner gives (a task changing the test's variables, a task
-- holding one of the test's Futures, the identity of a table).
function M.shared_memory(why)
  if M.copying then
    lu.skip("needs shared memory (" .. (why or "a task changes the test's variables")
      .. "): not on the " .. M.runner .. " runner")
  end
end

-- The value a run got or gave back is the test's own: the same value
-- with the coroutine runner; an equal copy (the same fields and
-- metatable) with a runner that copies (api.md, "Running work").
function M.assert_same(actual, expected, msg)
  if not M.copying or type(expected) ~= "table" then
    return lu.assertIs(actual, expected, msg)
  end
  lu.assertEquals(actual, expected, msg)
  lu.assertIs(getmetatable(actual), getmetatable(expected), msg)
end

-- Asserts that fn(...) raises a moonflow error of that kind; returns it.
function M.raises_kind(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected a " .. kind .. " error, got success")
  lu.assertEquals(type(err), "table", "expected an error table, got: " .. tostring(err))
  lu.assertEquals(err.kind, kind, "wrong kind: " .. tostring(err))
  lu.assertIsString(err.message)
  return err
end

-- True when the spec runs under the moonflow program (main chunk is a run).
M.in_program = mf.context() ~= nil

-- The array 1..n, to map over.
function M.range(n)
  local xs = {}
  for i = 1, n do xs[i] = i end
  return xs
end

-- Runs fn(...) inside a run (a spec's main chunk is one only under the
-- program) and returns what it returns.
function M.in_run(fn, ...)
  return mf.task({ name = "caller" }, fn)(...)
end

-- {====== Events instead of clocks ======

function M.eventually(pred, what, patience)
  patience = patience or M.PATIENCE
  local t0 = mf.now()
  while not pred() do
    if mf.now() - t0 > patience then
      lu.fail(string.format("gave up after %g s waiting for: %s", patience, what))
    end
    mf.sleep(0.002)
  end
end

function M.gate()
  local g = { opened = false }
  function g:open() self.opened = true end
  function g:wait(patience)
    local t0 = mf.now()
    patience = patience or M.PATIENCE
    while not self.opened do
      if mf.now() - t0 > patience then return false end
      mf.sleep(0.002)
    end
    return true
  end
  return g
end

-- A run that ticks at each pass of the loop it gets (mf.sleep(0)) until
-- stopped, calling tk.each (if set) at each tick.  A pass, not a timer: one
-- yield of a run beside it is then a tick however fast that run's call.
-- M.stop_tickers() (in a tearDown) stops those a failed test left going:
-- the program waits for every run still going before it exits, and a
-- ticker never ends by itself.
local tickers = {}

function M.ticker()
  local tk = { ticks = 0, stop = false }
  tk.future = mf.task({ name = "ticker" }, function()
    while not tk.stop do
      mf.sleep(0)
      tk.ticks = tk.ticks + 1
      if tk.each then tk.each() end
    end
  end):submit()
  tickers[#tickers + 1] = tk
  M.eventually(function() return tk.ticks > 0 end, "the ticker to tick")
  return tk
end

function M.stop_tickers()
  for i, tk in ipairs(tickers) do
    tk.each, tk.stop = nil, true
    tk.future:wait()
    tickers[i] = nil
  end
end

local Recorder = {}
Recorder.__index = Recorder
Recorder.__call = function(self, name) self.list[#self.list + 1] = name end

function Recorder:count(name)
  local n = 0
  for _, v in ipairs(self.list) do if v == name then n = n + 1 end end
  return n
end

function Recorder:assert_order(...)
  local at = 0
  for _, name in ipairs({ ... }) do
    local found
    for i = at + 1, #self.list do
      if self.list[i] == name then found = i break end
    end
    lu.assertNotNil(found, string.format("no %q after position %d in: %s", name, at,
      table.concat(self.list, ", ")))
    at = found
  end
end

function M.recorder() return setmetatable({ list = {} }, Recorder) end

function M.spin_until(pred, patience)
  local t0 = mf.now()
  patience = patience or M.PATIENCE
  while not pred() do
    if mf.now() - t0 > patience then return false end
  end
  return true
end

-- }======

-- {====== Files and commands ======
-- For the specs that run the program or other processes.

-- The output of a shell command.
function M.capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local s = p:read("a")
  p:close()
  return s
end

-- A file's whole content, or nil when it cannot be opened.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- s as one word of a POSIX shell command.
function M.shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A function giving a new path at each call ("<n>-<name>", name
-- "store.db" by default) in a fresh directory /tmp/<prefix>.XXXXXX, and
-- that directory.
function M.temp_paths(prefix)
  local dir = M.capture("unset LD_PRELOAD; mktemp -d /tmp/" .. prefix .. ".XXXXXX")
    :gsub("\n$", "")
  local counter = 0
  return function(name)
    counter = counter + 1
    return string.format("%s/%d-%s", dir, counter, name or "store.db")
  end, dir
end

-- The rows of a query on the run store at path, once every event queued
-- so far is committed.
function M.store_query(path, sql, ...)
  local core = require "moonflow.core"
  core.store_flush()
  local db = core.store_reader(path)
  local rows = db:query(sql, ...)
  db:close()
  return rows
end

-- }======

-- Runs the spec's tests; the script's arguments pick some
-- (`build/moonflow spec/x_spec.lua TestClass.test_name`, or a -p pattern).
function M.run()
  local status = lu.LuaUnit.run("--verbose", table.unpack(arg or {}))
  collectgarbage()
  if status ~= 0 then
    -- Exit now: the program would wait for runs a failed test left going
    -- (a ticker never stopped), and a hang hides the failure until ctest's
    -- timeout.
    io.stderr:write(string.format("%d spec(s) failed\n", status))
    os.exit(1)
  end
end

return M
