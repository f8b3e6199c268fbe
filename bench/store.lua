-- bench/store.lua: what the run store costs.  W1 (map N trivial tasks,
-- results collected) with the store off and on, in the same process, wall
-- time, best of 3; the store's sustained write rate (events committed per
-- second while it is the bottleneck); the file's size per task run.
-- Run: build/moonflow bench/store.lua [N]   or   lua5.4 bench/store.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"
local core = require "moonflow.core"

local N = tonumber(arg and arg[1]) or 100000
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local counter = 0

local task = mf.task({ name = "double" }, function(x) return x * 2 end)
local xs = {}
for i = 1, N do xs[i] = i end

-- One W1 run; returns the map's seconds and (store on) the seconds until
-- everything is committed.
local function w1()
  collectgarbage()
  collectgarbage()
  local t0 = core.now()
  local res = task:map(xs):result()
  local t1 = core.now()
  assert(res[N] == 2 * N, "wrong result")
  core.store_flush()
  return t1 - t0, core.now() - t0
end

local function fresh(path)
  os.remove(path)
  os.remove(path .. "-wal")
  os.remove(path .. "-shm")
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

local best = { off = math.huge, on = math.huge, committed = math.huge }
local events, size_per_run = 0, 0
for round = 1, 3 do
  mf.configure { store = "off" }
  best.off = math.min(best.off, (w1()))
  counter = counter + 1
  local path = string.format("%s/store-%d.db", dir, counter)
  fresh(path)
  mf.configure { store = path }
  local before = core.store_stats().events
  local map_s, committed_s = w1()
  if committed_s < best.committed then
    events = core.store_stats().events - before
  end
  best.on = math.min(best.on, map_s)
  best.committed = math.min(best.committed, committed_s)
  local waits = core.store_stats().waits
  mf.configure { store = "off" } -- closes it: the WAL goes into the file
  size_per_run = file_size(path) / N
  io.stderr:write(string.format("round %d: ring full %d times\n", round, waits))
  fresh(path)
end

local us = 1e6 / N
print(string.format("W1 N=%d (wall time, best of 3)", N))
print(string.format("%-34s %10s", "", "us/task"))
print(string.format("%-34s %10.3f", "store off", best.off * us))
print(string.format("%-34s %10.3f", "store on (map returns)", best.on * us))
print(string.format("%-34s %10.3f", "store on (all committed)", best.committed * us))
print(string.format("added per task run: %.3f us, ratio %.2fx (target: <= 1 us, never > 1.5x)",
  (best.on - best.off) * us, best.on / best.off))
print(string.format("sustained write rate: %.0f events/s (%d events in %.3f s)",
  events / best.committed, events, best.committed))
print(string.format("file size: %.0f bytes per task run", size_per_run))
os.execute("rm -rf " .. dir)
