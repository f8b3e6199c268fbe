-- NEW: an error while a run's arguments are resolved escapes from the
-- scheduler.  A Future used as a key of a plain table argument is replaced
-- by its result; when that result is NaN, lua_rawset in resolve_table
-- raises "table index is NaN" inside op_step/push_call, which run
-- unprotected: the plain error surfaces in whatever wait drove the loop,
-- and the engine is left with the run as its current run -- every later
-- wait raises "UsageError: cannot wait inside a coroutine created within
-- run ...", and the state is unusable (also at close: known item 5).
-- Expected: the run ends FAILED with a typed error (or UsageError at
-- submit); nothing escapes to other callers; later waits work.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local nan = mf.task(function() return 0 / 0 end)
local echo = mf.task(function(x) return x end)
local key = nan:submit()
local f = echo:submit({ [key] = true })
print("first wait", pcall(f.wait, f))
print("later wait", pcall(function() return echo:submit(1):wait() end))
