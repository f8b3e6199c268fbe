-- NEW (api fuzzer, the cleanup's f:state() of a case whose runs returned
-- tables of each other's futures; a family of future_tostring_cycle.lua):
-- tostring of a Future describes its value, and a table value describes
-- the Futures in it, each by its own value again: nothing bounds the
-- depth across Futures (each show() starts afresh), and a value holding
-- its Future several times makes the work grow as 4^depth until the C
-- stack overflows 200 levels down -- a process computing for ever (the
-- fuzzer's HANG), in tostring, mf.log, error reports.
-- Expected: a Future inside the value of a Future being described is
-- named, not described again.  (Before the fix this never ends: run it
-- under `timeout 20`.)
--   MF_MODULE_DIR=build timeout 20 lua5.4 spec/fuzz/repro/future_tostring_fanout.lua
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local f
local t = mf.task(function() return { f, f, f, f } end)
f = t:submit()
f:wait()
local text = tostring(f)
assert(#text < 1000, "a description of " .. #text .. " bytes")
print(text)
local g
local bad = mf.task(function() error({ g, g, g, g }, 0) end)
g = bad:submit()
g:wait()
text = tostring(g)
assert(#text < 1000, "a description of " .. #text .. " bytes")
print(text)
