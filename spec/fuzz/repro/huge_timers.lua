-- Known item 12: timers that cannot be held in milliseconds.  A rate limit
-- of 1e-17/s (or 1e-300) spaces starts 1e17 s apart: rearm computes the
-- delay as (uint64_t)ceil(delay * 1000), which overflows, the libuv timer
-- fires at once, the waiter is not due, and the loop spins for ever at
-- 100% CPU (engine/timers.c rearm/on_timer).  mf.sleep(math.huge) and a
-- wait timeout of math.huge convert inf the same way (UB).
-- Expected: the second run waits (parked, no CPU) until cancelled; the
-- sleep(0.01) below returns after 0.01 s.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
mf.rate_limit("slow", 1e-17)
local t = mf.task({ tags = { "slow" } }, function() return 1 end)
local a, b = t:submit(), t:submit()
local t0 = mf.now()
mf.sleep(0.01) -- spins here, never returns
print("slept", mf.now() - t0)
b:cancel()
print(a:result(), b:state().name)
