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
