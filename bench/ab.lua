-- bench/ab.lua: two moonflow programs side by side, in turn, a fresh
-- process each, on bench/workloads.lua: the comparison to read on a
-- shared machine, where the cold figures of bench/compare.lua move by more
-- from one run to the next than most changes do.
-- usage: lua5.4 bench/ab.lua [ROUNDS] PROGRAM_A PROGRAM_B [WORKLOAD N]...
--   (default workloads: map-noop 100000, map-noop 1000000, chain 100000,
--   fan-in-dag 1000; the store off unless MOONFLOW_STORE is set)
-- prints per workload: the medians of A and B in µs per task, B/A, and
-- both sorted lists.
local args = { ... }
local rounds = 7
if tonumber(args[1]) then rounds = tonumber(table.remove(args, 1)) end
local a, b = args[1], args[2]
if not a or not b then
  io.stderr:write("usage: lua5.4 bench/ab.lua [ROUNDS] PROGRAM_A PROGRAM_B [WORKLOAD N]...\n")
  os.exit(2)
end
local workloads = {}
for i = 3, #args, 2 do
  local n = tonumber(args[i + 1])
  if not n then
    io.stderr:write("bench/ab.lua: " .. args[i] .. " needs a count\n")
    os.exit(2)
  end
  workloads[#workloads + 1] = { args[i], n }
end
if #workloads == 0 then
  workloads = { { "map-noop", 100000 }, { "map-noop", 1000000 }, { "chain", 100000 },
    { "fan-in-dag", 1000 } }
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local store = os.getenv("MOONFLOW_STORE") or "off"

-- One fresh process: its µs per task (the 4th field workloads.lua prints).
local function once(program, w)
  local cmd = string.format("MOONFLOW_STORE=%s %s bench/workloads.lua %s %d", quote(store),
    quote(program), w[1], w[2])
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok = p:close()
  local us = tonumber(out:match("^%S+ %d+ %S+ (%S+)"))
  if not ok or not us then error("failed: " .. cmd .. "\n" .. out) end
  return us
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

local times = {}
for _, w in ipairs(workloads) do times[w] = { {}, {} } end
for _ = 1, rounds do -- in turn, so that the machine's moods fall on both
  for _, w in ipairs(workloads) do
    table.insert(times[w][1], once(a, w))
    table.insert(times[w][2], once(b, w))
  end
end
print(string.format("A = %s, B = %s, store %s, %d rounds, µs per task (medians)", a, b,
  store, rounds))
for _, w in ipairs(workloads) do
  local ta, tb = times[w][1], times[w][2]
  local ma, mb = median(ta), median(tb)
  local function list(xs)
    local t = {}
    for i, x in ipairs(xs) do t[i] = string.format("%.3g", x) end
    return table.concat(t, " ")
  end
  print(string.format("%-12s %8d  A %.3f  B %.3f  B/A %.2f   A: %s   B: %s", w[1], w[2], ma,
    mb, mb / ma, list(ta), list(tb)))
end
