-- bench/store.lua: what the run store costs.  W1 (a flow maps N trivial
-- tasks, results collected) with the store off and on, in the same
-- process, best of 3: wall time, and CPU time of the loop thread and of the
-- store's writer thread apart (on a busy machine the CPU figures are the
-- steadier ones).  Also the store's sustained write rate (events committed
-- per second of wall time while it is the bottleneck, and per second of
-- the writer's CPU) and the file's size per task run.
-- Run: build/moonflow bench/store.lua [N]   or   lua5.4 bench/store.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"
local core = require "moonflow.core"

local N = tonumber(arg and arg[1]) or 100000
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local task = mf.task({ name = "double" }, function(x) return x * 2 end)
local xs = {}
for i = 1, N do xs[i] = i end
local w1 = mf.flow({ name = "w1" }, function() return task:map(xs):result() end)

local function fresh(path)
  for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- One W1: wall seconds until the map's results are in, wall seconds until
-- all is committed, process CPU seconds, writer CPU seconds.
local function run_w1()
  collectgarbage()
  collectgarbage()
  local stats0 = core.store_stats()
  local c0, t0 = os.clock(), core.now()
  local res = w1()
  local t1 = core.now()
  assert(res[N] == 2 * N, "wrong result")
  core.store_flush()
  local t2, c2 = core.now(), os.clock()
  local stats = core.store_stats()
  local writer = stats and stats.writer_cpu - stats0.writer_cpu or 0
  local events = stats and stats.events - stats0.events or 0
  return { map = t1 - t0, committed = t2 - t0, cpu = c2 - c0, writer = writer,
    events = events, waits = stats and stats.waits - stats0.waits or 0 }
end

local function best(list, key)
  local b = math.huge
  for _, r in ipairs(list) do b = math.min(b, r[key]) end
  return b
end

local off, on = {}, {}
local size_per_run
for round = 1, 3 do
  mf.configure { store = "off" }
  off[round] = run_w1()
  local path = string.format("%s/store-%d.db", dir, round)
  fresh(path)
  mf.configure { store = path }
  on[round] = run_w1()
  mf.configure { store = "off" }
  -- The WAL into the file, then its size.
  local db = core.store_reader(path)
  db:query("PRAGMA wal_checkpoint(TRUNCATE)")
  db:close()
  size_per_run = file_size(path) / (N + 1)
  fresh(path)
end

local us = 1e6 / N
local function main_cpu(r) return r.cpu - r.writer end
for _, r in ipairs(on) do r.main = main_cpu(r) end
for _, r in ipairs(off) do r.main = main_cpu(r) end
print(string.format("W1 N=%d in a flow, best of 3, us per task run", N))
print(string.format("%-28s %10s %10s %10s %10s", "", "wall", "loop CPU", "writer CPU", "committed"))
print(string.format("%-28s %10.3f %10.3f %10s %10s", "store off", best(off, "map") * us,
  best(off, "main") * us, "-", "-"))
print(string.format("%-28s %10.3f %10.3f %10.3f %10.3f", "store on", best(on, "map") * us,
  best(on, "main") * us, best(on, "writer") * us, best(on, "committed") * us))
print(string.format("added per task run: wall %.3f us (ratio %.2fx), loop CPU %.3f us (target: <= 1 us, never > 1.5x)",
  (best(on, "map") - best(off, "map")) * us, best(on, "map") / best(off, "map"),
  (best(on, "main") - best(off, "main")) * us))
local events = on[1].events
print(string.format("sustained write rate: %.0f events/s of wall time, %.0f events/s of writer CPU (%d events per W1; the ring was full %d times)",
  events / best(on, "committed"), events / best(on, "writer"), events, on[1].waits))
print(string.format("file size: %.0f bytes per task run", size_per_run))
os.execute("rm -rf " .. dir)
