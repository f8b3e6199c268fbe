-- NEW (api fuzzer; hazard gc_by_hand, seen once the io actions parked the
-- main chunk): a run whose one argument is a Future whose __gc was called
-- by hand after the submit started with the "simple attempt" of
-- bindings/runner.c -- not protected, on the claim that nothing in it can
-- raise -- and resolving the argument raised UsageError ("this Future was
-- collected ...") out of the engine's step: the engine kept that run as
-- its current one (mf.context() in the main chunk named it afterwards,
-- waits there were refused as "inside a coroutine created within run"),
-- and the state's close crashed in mf__waiters_notify (SIGSEGV; UBSan:
-- misaligned mf_wait_node, engine/wait.c).
-- Expected: the run fails with that UsageError; nothing else changes.
--   MF_MODULE_DIR=build lua5.4 spec/fuzz/repro/dead_future_argument.lua
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local function context_name() return mf.context() and mf.context().name end
local before = context_name() -- (nil; the program runs the script as a flow "main")
local echo = mf.task(function(...) return ... end)
local up = echo:submit(1)
up:wait()
local down = echo:submit(up) -- starts at the next turn of the loop
debug.getmetatable(up).__gc(up)
local ok, err = pcall(down.result, down)
assert(not ok and type(err) == "table" and err.kind == "UsageError",
  "down ended " .. tostring(ok) .. " " .. tostring(err))
assert(context_name() == before, "the main chunk is inside run " .. tostring(context_name()))
assert(echo:submit(2):result() == 2)
print("ok")
