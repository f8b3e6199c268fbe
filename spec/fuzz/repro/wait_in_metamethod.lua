-- Known item 16, through a metamethod: inside a run, moonflow's C code
-- calls a __len (luaL_len in mf.wait / FutureList.wait), which waits (here
-- t() ).  The wait parks the run in the engine, then Lua refuses the yield
-- ("attempt to yield across a C-call boundary", a plain error); the run is
-- left registered as parked while it goes on, and is later resumed by the
-- scheduler out of turn: its next mf.sleep(0.05) ends when t ends.  In the
-- fuzzer this ended in a SEGV in lua_geti (ASan, the moonflow program).
-- Expected: a UsageError ("cannot wait here: Lua cannot yield"), nothing
-- parked, and the run returns "done".
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() mf.sleep(0.01) return 1 end)
local body = mf.task(function()
  local fake = setmetatable({}, { __len = function() t() return 0 end })
  print("inside", pcall(mf.wait, fake))
  local t0 = mf.now()
  mf.sleep(0.05)
  -- the program prints ~0.01 (woken by t's end); lua5.4 ~0.1
  print("slept (expected 0.05)", mf.now() - t0)
  return "done"
end)
local f = body:submit()
print("result", pcall(f.result, f, 5))
