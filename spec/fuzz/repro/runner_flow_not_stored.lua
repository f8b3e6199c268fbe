-- NEW (api fuzzer, group runners, with mf.configure{store = ":memory:"}):
-- a flow with the option task_runner was marked by setting its
-- mf_run_data to a key of the runners' (bindings/task.c), and the store's
-- observer, which takes mf_run_data ~= its Lua state for "not a run of
-- mine", skipped it: the flow was never recorded, and the note carrying
-- its error to its final state was never freed (LeakSanitizer: direct
-- leak from mfl_note_of, store_lua.c, under the sanitizers).
-- Expected: the flow is recorded with its final state; nothing leaks.
--   MF_MODULE_DIR=build lua5.4 spec/fuzz/repro/runner_flow_not_stored.lua
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local core = require "moonflow.core"
local path = os.tmpname()
os.remove(path)
mf.configure { store = path }
local pool = mf.runners.threads { workers = 1 }
local fl = mf.flow({ name = "pooled", task_runner = pool }, function()
  error("fails", 0)
end)
local f = fl:submit()
pcall(f.result, f) -- (read: not reported unhandled)
core.store_flush()
local db = core.store_reader(path)
local rows = db:query("SELECT name, state_type FROM runs WHERE name = 'pooled-1'")
db:close()
mf.configure { store = "off" }
os.remove(path); os.remove(path .. "-wal"); os.remove(path .. "-shm")
assert(#rows == 1, "the flow pooled-1 is not in the store")
assert(rows[1].state_type == 4, "pooled-1 recorded with state " .. tostring(rows[1].state_type))
print("ok")
