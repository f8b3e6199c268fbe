-- bench/codec.lua: throughput of the value codec (core.encode/core.decode)
-- on one large nested table: N records (default 100000) of mixed fields,
-- a nested record and a small array each, in one array.  Compared in the
-- same run with lua-cjson (if installed: Debian lua-cjson; JSON, so floats
-- lose their last digits and there are no shared refs) and with a floor:
-- a hand-written string.pack/unpack of this very schema in Lua.
-- MB/s is of each format's own output; ratios compare times for the same
-- records.  CPU time (os.clock), best of REPS runs.
-- Run: build/moonflow bench/codec.lua [N [REPS]]   or   lua5.4 bench/codec.lua
package.cpath = "build/?.so;" .. package.cpath
require "moonflow"
local core = require "moonflow.core"
local has_cjson, cjson = pcall(require, "cjson")

local N = tonumber(arg and arg[1]) or 100000
local REPS = tonumber(arg and arg[2]) or 5

local function make(n)
  local records = {}
  for i = 1, n do
    records[i] = {
      id = i,
      name = "user" .. i,
      email = "user" .. i .. "@example.com",
      score = i * 0.5 + 0.25,
      active = i % 3 == 0,
      tags = { "alpha", "beta", i % 7 == 0 and "gamma" or "delta" },
      pos = { x = i % 1000, y = -(i % 77) },
    }
  end
  return records
end

-- The floor: this schema only, nothing shared, no checks.
local pack, unpack, concat = string.pack, string.unpack, table.concat
local FMT = "<i8s4s4dBs4s4s4i8i8"
local function floor_encode(records)
  local parts = { pack("<i8", #records) }
  for i = 1, #records do
    local r = records[i]
    parts[i + 1] = pack(FMT, r.id, r.name, r.email, r.score, r.active and 1 or 0,
                        r.tags[1], r.tags[2], r.tags[3], r.pos.x, r.pos.y)
  end
  return concat(parts)
end
local function floor_decode(s)
  local n, at = unpack("<i8", s)
  local records = {}
  for i = 1, n do
    local id, name, email, score, active, t1, t2, t3, x, y
    id, name, email, score, active, t1, t2, t3, x, y, at = unpack(FMT, s, at)
    records[i] = { id = id, name = name, email = email, score = score,
                   active = active == 1, tags = { t1, t2, t3 }, pos = { x = x, y = y } }
  end
  return records
end

local function best(fn, arg1)
  local best_t, out = math.huge, nil
  for _ = 1, REPS do
    collectgarbage()
    local t0 = os.clock()
    out = fn(arg1)
    local t = os.clock() - t0
    if t < best_t then best_t = t end
  end
  return best_t, out
end

local records = make(N)
local rows = {}
local function measure(name, enc, dec)
  local te, bytes = best(enc, records)
  local td, back = best(dec, bytes)
  assert(#back == N and back[N].name == records[N].name and back[7].tags[3] == "gamma",
         name .. " did not round-trip")
  rows[#rows + 1] = { name = name, te = te, td = td, size = #bytes }
end

measure("codec", core.encode, core.decode)
if has_cjson then measure("cjson", cjson.encode, cjson.decode) end
measure("string.pack", floor_encode, floor_decode)

print(string.format("codec bench: %d records, best of %d (CPU seconds)", N, REPS))
print(string.format("%-12s %10s %10s %10s %10s %12s", "format", "enc MB/s",
                    "dec MB/s", "enc ms", "dec ms", "bytes/record"))
for _, r in ipairs(rows) do
  print(string.format("%-12s %10.1f %10.1f %10.1f %10.1f %12.1f", r.name,
                      r.size / r.te / 1e6, r.size / r.td / 1e6, r.te * 1e3,
                      r.td * 1e3, r.size / N))
end
local codec = rows[1]
for i = 2, #rows do
  local r = rows[i]
  print(string.format("codec vs %s: encode %.2fx, decode %.2fx as fast; %.2fx the size",
                      r.name, r.te / codec.te, r.td / codec.td, codec.size / r.size))
end
-- One small message, as a runner sends per run: its arguments, then the
-- task's function with them (functions = true: bytecode and upvalues).
local function per_call(value, opts)
  local n = 100000
  local s = core.encode(value, opts)
  local te = best(function() for _ = 1, n do core.encode(value, opts) end end)
  local td = best(function() for _ = 1, n do core.decode(s, opts) end end)
  return #s, te / n * 1e6, td / n * 1e6
end
local args = { 42, "alice", { x = 1, y = 2.5 } }
local function task(a, b, c) return a + #b + c.x * c.y end
print(string.format("small message %-22s %4d bytes: encode %.2f us, decode %.2f us",
                    "{42, \"alice\", {x, y}}", per_call(args)))
print(string.format("small message %-22s %4d bytes: encode %.2f us, decode %.2f us",
                    "{task, args}", per_call({ task, args }, { functions = true })))
if not has_cjson then print("(lua-cjson not installed: apt-get install lua-cjson)") end
