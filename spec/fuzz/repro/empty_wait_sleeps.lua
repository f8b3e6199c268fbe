-- Known item 12: waiting on nothing sleeps the whole timeout under stock
-- lua5.4: mf.wait({}, 3), an empty FutureList's l:wait(3) (t:map({})), and
-- as_completed({}, 3) each block 3 s (with 1e9, for ever).
-- Expected: they return at once (nothing to wait for).
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() return 1 end)
local t0 = mf.now()
mf.wait({}, 3)
print("mf.wait({}, 3) took", mf.now() - t0)
t0 = mf.now()
t:map({}):wait(3)
print("t:map({}):wait(3) took", mf.now() - t0)
