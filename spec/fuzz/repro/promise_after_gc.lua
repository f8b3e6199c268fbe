-- NEW (api fuzzer, group promise): resolve/reject of a settled promise
-- whose Future's __gc has run -- called by hand, or by the collector when
-- a finalizer still holds the resolve function (at the state's close,
-- every finalizer runs in turn) -- read f->run, NULL by then: UBSan "member
-- access within null pointer of type 'const struct mf_run'" in
-- mf_run_is_final (engine/run.c) from settle (bindings/io_promise.c), a
-- SIGSEGV without the sanitizers.
-- Expected: the promise stands for no run any more: settling it does
-- nothing and returns false, as a second settle does.
--   MF_MODULE_DIR=build lua5.4 spec/fuzz/repro/promise_after_gc.lua
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local fut, resolve, reject = mf.promise("gone")
assert(resolve(0) == true)
local gc = debug.getmetatable(fut).__gc
gc(fut)
local ok, r = pcall(resolve, 1)
assert(ok and r == false, "resolve after __gc: " .. tostring(ok) .. " " .. tostring(r))
ok, r = pcall(reject, "x")
assert(ok and r == false, "reject after __gc: " .. tostring(ok) .. " " .. tostring(r))
-- and from a finalizer that runs after the Future's own, at the close
local fut2, resolve2 = mf.promise("closing")
resolve2("now")
setmetatable({}, { __gc = function() resolve2("late") end })
fut2 = nil -- luacheck: ignore
print("ok")
