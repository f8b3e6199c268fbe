-- spec/helper.lua: what every spec shares.  Specs run both under stock
-- lua5.4 (the module; waits at top level drive the loop) and under the
-- moonflow program (the main chunk is a run; waits park it).
--
--   local h = require "helper"
--   local mf, lu = h.mf, h.lu
--   ... tests ...
--   h.run()            -- at the end: runs luaunit, raises if any failed
-- Each spec starts with: package.path = "spec/?.lua;" .. package.path
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local lu = require "luaunit"
local mf = require "moonflow"

local M = { mf = mf, lu = lu }

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

function M.run()
  local status = lu.LuaUnit.run("--verbose")
  collectgarbage()
  if status ~= 0 then error(string.format("%d spec(s) failed", status), 0) end
end

return M
