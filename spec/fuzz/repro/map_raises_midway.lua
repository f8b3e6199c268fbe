-- NEW (api fuzzer: the program's exit status 1 for runs
-- "failed and nothing handled it" that the fuzzer never saw): t:map(...)
-- checks its arguments before making any run (plan_map, bindings/task.c),
-- but an element can still raise while the runs are made -- a Future
-- whose __gc ran (UsageError "this Future was collected"), an input that
-- is a flow containing the new run (Deadlock) -- and the runs made before
-- it are left going with no FutureList returned: nobody can wait for
-- them, cancel them or read their failures.
-- Expected: no run is left behind by a map that raised: the runs it had
-- made are cancelled (the map's job is a to-be-closed slot).
--   MF_MODULE_DIR=build lua5.4 spec/fuzz/repro/map_raises_midway.lua
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local echo = mf.task(function(...) return ... end)
local started = 0
local t = mf.task(function() started = started + 1 end)
local up = echo:submit(1)
up:wait()
debug.getmetatable(up).__gc(up)
local ok, err = pcall(t.map, t, { 1, 2, up, 4 })
assert(not ok and err.kind == "UsageError", tostring(err))
mf.sleep(0.05)
assert(started == 0, started .. " run(s) of a map that raised were left going")
print("ok")
