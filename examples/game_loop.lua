-- game_loop.lua -- the game logic that examples/game_loop.c runs on its
-- 60 Hz frame loop.  The host loads this file with mf_lua_run_file (it runs
-- as a flow once, defining the globals below) and then submits the flows
-- by name with mf_lua_call_flow:
--   tick(frame)             the per-frame map over every entity
--   npc(period, naps)       an NPC that naps across frames
--   sleepers(n, seconds)    n runs that sleep (longer than the measurement)
-- Before each frame's loop turn the host sets host_prev_turn (when the last
-- frame's turn started) and host_prev_caught_up (the last frame ended with
-- no run left ready); NPCs read them to tell whether a wake-up came a loop
-- turn late.
local mf = require "moonflow"

-- {====== Entities: one trivial task per entity per tick ======

ENTITIES = 1000 -- the host checks its count against this

-- Built once: map reads the same id array every tick.
local ids = {}
for i = 1, ENTITIES do ids[i] = i end

-- An entity's x at a frame: a start position plus a velocity of -3..3 per
-- frame.  A closed form, so that the host can check every result without
-- keeping any state of its own (game_loop.c has the same formula).
local update = mf.task({ name = "update" }, function(id, frame)
  return (id * 37) % 1000 + (id % 7 - 3) * frame
end)

-- The flow returns the array of new positions, in entity order; the host
-- collects it on the next frame.
tick = mf.flow({ name = "tick" }, function(frame)
  return update:map(ids, frame):result()
end)

-- }======

-- {====== NPCs: sleeping across frames ======

host_prev_turn, host_prev_caught_up = 0, false

-- How much later than its deadline the previous loop turn may have started
-- without it counting as a missed turn: the engine's libuv timer counts
-- whole milliseconds of a cached clock, so it may fire up to about 1 ms
-- after the deadline.
local TURN_SLACK = 0.002

-- Naps naps of period seconds each.  Returns how many naps ended, the
-- earliest wake-up relative to its deadline (negative: early), and how many
-- wake-ups missed a loop turn that started after their deadline.  A turn
-- counts only if its frame caught up with every ready run: otherwise the
-- wake-up may have been on time and the run merely queued behind others
-- (a frame's budget running out is not a timer bug).
npc = mf.flow({ name = "npc" }, function(period, naps)
  local wakes, earliest, missed = 0, math.huge, 0
  for _ = 1, naps do
    local deadline = mf.now() + period
    mf.sleep(period)
    local now = mf.now()
    if now - deadline < earliest then earliest = now - deadline end
    if host_prev_turn >= deadline + TURN_SLACK and host_prev_caught_up then
      missed = missed + 1
    end
    wakes = wakes + 1
  end
  return wakes, earliest, missed
end)

-- }======

-- {====== Sleepers: many parked runs that never wake while measured ======

asleep, woke = 0, 0

local doze = mf.task({ name = "doze" }, function(_, seconds)
  asleep = asleep + 1
  mf.sleep(seconds)
  woke = woke + 1
end)

-- The host cancels the flow once it has measured; cancelling it cancels
-- every doze run still asleep.
sleepers = mf.flow({ name = "sleepers" }, function(n, seconds)
  asleep, woke = 0, 0
  local idx = {}
  for i = 1, n do idx[i] = i end
  doze:map(idx, seconds):wait()
end)

-- }======

return "ready"
