-- map inside a run makes its runs in chunks (issue 11): when the caller's
-- time slice is used up it yields to the loop between two runs, so other
-- runs, timers and the runs already made go on while a long map is made.
-- Outside a run (and where the caller cannot yield) map makes every run in
-- one call, as before.  Everything here is asserted with counters and
-- events: which things happened between map's start and its return.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"

local DEFAULT_SLICE = 0.01

local ticker = h.ticker

local range, in_run = h.range, h.in_run

-- A task that returns its argument, and the count of its runs started.
local function counting()
  local c = { started = 0 }
  c.task = mf.task({ name = "id" }, function(x)
    c.started = c.started + 1
    return x
  end)
  return c
end

TestMapSlices = {}

function TestMapSlices:tearDown()
  mf.configure { slice = DEFAULT_SLICE, preempt = true }
  core.slot_geometry(65536, 12)
  h.stop_tickers()
end

function TestMapSlices:test_loop_turns_while_a_big_map_is_made()
  -- 200,000 runs take many default slices to make on any machine.
  local n = 200000
  local started = 0
  local t = mf.task({ name = "double" }, function(x)
    started = started + 1
    return x * 2
  end)
  local tk = ticker()
  local xs = range(n)
  local ticks_during, started_during, list = in_run(function()
    local ticks0 = tk.ticks
    local l = t:map(xs)
    return tk.ticks - ticks0, started, l
  end)
  tk.stop = true
  lu.assertTrue(ticks_during > 0, "the ticker never ran while map was made")
  lu.assertTrue(started_during > 0, "no mapped run started before map returned")
  -- The same FutureList: every future, in order.
  lu.assertEquals(#list, n)
  local results = list:result()
  lu.assertEquals(results.n, n)
  for i = 1, n do
    if results[i] ~= 2 * i then lu.fail(("result %d is %s"):format(i, tostring(results[i]))) end
  end
  tk.future:wait()
end

function TestMapSlices:test_a_big_map_in_a_run_keeps_every_slot()
  -- Past 65,536 runs, a map made inside a run keeps its runs' arguments
  -- and results in chunks of 4,096 (group.c), not in one table that
  -- doubles (its new half touched at once, in one step).  Every way a slot
  -- is written and read, on both sides of that line and across chunks:
  -- the argument of a first attempt and of a retry, a result, a run that
  -- returns nothing, one that fails, one that parks, a Future asked for
  -- after its run gave its record back, and the results collected inside
  -- the run (in slices) and outside it.
  local flat, chunk = 65536, 4096
  local n = flat + 3 * chunk + 7
  local retried = { [flat] = true, [flat + 1] = true, [flat + chunk] = true,
                    [flat + chunk + 1] = true, [n] = true }
  local nothing, failing, parking = flat + 2 * chunk + 5, flat + chunk + 9, n - 1
  local attempts = {}
  local t = mf.task({ name = "slot", retries = 1 }, function(x)
    attempts[x] = (attempts[x] or 0) + 1
    if retried[x] and attempts[x] == 1 then error("first attempt of " .. x) end
    if x == failing then error({ failed = x }) end
    if x == parking then mf.sleep(0.001) end
    if x == nothing then return end
    return 2 * x
  end)
  local function check(results, where)
    lu.assertEquals(results.n, n, where)
    for i = 1, n do
      if i == failing then
        lu.assertEquals(results[i].failed, failing, where)
      elseif i == nothing then
        lu.assertNil(results[i], where)
      elseif results[i] ~= 2 * i then
        lu.fail(("%s: result %d is %s"):format(where, i, tostring(results[i])))
      end
    end
  end
  local list, inside, late = in_run(function()
    local l = t:map(range(n))
    local r = l:result(nil, false)
    return l, r, l[flat + chunk + 100]:result()
  end)
  check(inside, "collected inside the run")
  check(list:result(nil, false), "collected outside")
  lu.assertEquals(late, 2 * (flat + chunk + 100))
  for i in pairs(retried) do lu.assertEquals(attempts[i], 2, "element " .. i) end
  lu.assertEquals(attempts[failing], 2)
  lu.assertEquals(attempts[flat + 3], 1)
  lu.assertEquals(list[parking]:result(), 2 * parking)
  lu.assertEquals(list[n]:result(), 2 * n)
end

function TestMapSlices:test_small_chunks_of_slots()
  -- The same ways in and out of a slot as above, with chunks of 2 past the
  -- first 3 slots (core.slot_geometry), and a slot's Future asked for
  -- before its run started, while it waits, and after it completed; the
  -- list mapped again, inside the run and outside.
  core.slot_geometry(3, 1)
  local n = 21
  local attempts, gate = {}, h.gate()
  local t = mf.task({ name = "small", retries = 1 }, function(x)
    attempts[x] = (attempts[x] or 0) + 1
    if x % 5 == 0 and attempts[x] == 1 then error("first attempt of " .. x) end
    if x == 7 then error({ failed = 7 }) end
    if x == 8 then gate:wait() end
    if x == 9 then return end
    return 2 * x
  end)
  local up = mf.task({ name = "up" }, function(y) return y + 1 end)
  local list, inside, again, early = in_run(function()
    local l = t:map(range(n))
    local early = l[n] -- asked for before its run started
    local a = up:map(l) -- run i waits for l[i]
    gate:open()
    return l, l:result(nil, false), a:result(nil, false), early
  end)
  local function check(results, where)
    lu.assertEquals(results.n, n, where)
    for i = 1, n do
      if i == 7 then
        lu.assertEquals(results[i].failed, 7, where)
      elseif i == 9 then
        lu.assertNil(results[i], where)
      else
        lu.assertEquals(results[i], 2 * i, where .. " " .. i)
      end
    end
  end
  check(inside, "inside")
  check(list:result(nil, false), "outside")
  lu.assertEquals(early:result(), 2 * n)
  lu.assertIs(list[n], early)
  for i = 5, n, 5 do lu.assertEquals(attempts[i], 2, "element " .. i) end
  lu.assertEquals(attempts[4], 1)
  lu.assertEquals(list[8]:result(), 16)
  -- (up fails for the failed run and for the one that returned nothing)
  for i = 1, n do
    if i ~= 7 and i ~= 9 then lu.assertEquals(again[i], 2 * i + 1, "again " .. i) end
  end
end

function TestMapSlices:test_chunks_keep_every_argument_kind_in_order()
  -- A tiny slice: the caller yields between most chunks of 64 runs.
  mf.configure { slice = 0.0001 }
  local n = 5000
  local tk = ticker()
  local up = mf.task({ name = "up" }, function(x) return x + 1 end)
  local seven = mf.task({ name = "seven" }, function() return 7 end)
  local add = mf.task({ name = "add" }, function(a, b, c, d, e)
    return a + b + c + d + e
  end)
  local xs = range(n)
  local ticks_during, list, ups = in_run(function()
    local u = up:map(xs)           -- a FutureList argument
    local s = seven:submit()       -- a future broadcast to every run
    local ticks0 = tk.ticks
    local l = add:map(u, xs, mf.unmapped(s), 10, mf.quote(xs))
    return tk.ticks - ticks0, l, u
  end)
  tk.stop = true
  lu.assertTrue(ticks_during > 0, "map never yielded with a 0.1 ms slice")
  lu.assertEquals(#list, n)
  for i = 1, n, 499 do
    lu.assertEquals(list[i]:result(), (i + 1) + i + 7 + 10 + i)
  end
  lu.assertEquals(list[n]:result(), (n + 1) + n + 7 + 10 + n)
  lu.assertTrue(ups:wait())
  tk.future:wait()
end

function TestMapSlices:test_return_state_after_chunks()
  -- With return_state map waits for its runs anyway; what shows the chunks
  -- is that the first run started while map was still making the others:
  -- the runs not final then (the caller and those made) are fewer than n.
  mf.configure { slice = 0.0001 }
  local n = 3000
  local first_live
  local t = mf.task({ name = "st", return_state = true }, function(x)
    first_live = first_live or core.live()
    return x
  end)
  local live0 = core.live()
  local states = in_run(function() return t:map(range(n)) end)
  lu.assertTrue(first_live < live0 + 1 + n,
    "the first mapped run started only after every run was made")
  lu.assertEquals(#states, n)
  for i = 1, n, 250 do
    lu.assertEquals(states[i].name, "Completed")
    lu.assertEquals(states[i]:result(), i)
  end
end

function TestMapSlices:test_cancelling_the_caller_mid_map()
  mf.configure { slice = 0.0001 }
  local n = 200000
  local live0 = core.live()
  local started, returned = 0, false
  local t = mf.task({ name = "mapped" }, function()
    started = started + 1
    mf.sleep(h.LONG) -- still going when the caller is cancelled
  end)
  local caller = mf.task({ name = "caller" }, function()
    local l = t:map(range(n))
    returned = true
    return l
  end):submit()
  -- A mapped run started: map yielded with runs made and more to make.
  h.eventually(function() return started > 0 end, "a mapped run to start")
  lu.assertFalse(returned)
  lu.assertTrue(caller:cancel())
  local state = caller:wait() and caller:state()
  lu.assertEquals(state.name, "Cancelled")
  lu.assertFalse(returned, "map went on after its caller was cancelled")
  -- The runs made were the caller's children: cancelled with it; none is
  -- left going (the live count is back where it was).
  h.eventually(function() return core.live() == live0 end,
    "every run made before the cancel to be final")
  lu.assertTrue(started < n)
  collectgarbage()
  collectgarbage()
end

function TestMapSlices:test_caller_past_its_timeout_is_stopped_mid_map()
  -- No machine makes a million runs within the caller's 20 ms timeout: the
  -- caller is stopped at a chunk's end, with part of the runs made.
  local n = 1000000
  local live0 = core.live()
  local returned = false
  local t = mf.task({ name = "mapped" }, function(x)
    if x == "probe" then return mf.context().name end
    mf.sleep(h.LONG)
  end)
  local xs = range(n)
  local mapper = mf.task({ name = "mapper", timeout = 0.02 }, function()
    t:map(xs)
    returned = true
  end):submit()
  mapper:wait()
  lu.assertEquals(mapper:state().name, "TimedOut")
  lu.assertFalse(returned)
  h.eventually(function() return core.live() == live0 end,
    "every run the mapper made to be final")
  -- The task's next run is numbered after the runs map made.
  local name = t:submit("probe"):result()
  local made = tonumber(name:match("^mapped%-(%d+)$")) - 1
  lu.assertTrue(made < n, "map made all its runs after its caller's deadline")
end

function TestMapSlices:test_map_in_a_coroutine_of_the_users_does_not_yield()
  -- Inside coroutine.wrap in a run, a yield would go to the wrap's caller:
  -- map must make every run in one call there.
  mf.configure { slice = 0.0001 }
  local n = 5000
  local tk = ticker()
  local t = mf.task({ name = "id" }, function(x) return x end)
  local ticks_during, list = in_run(function()
    local ticks0 = tk.ticks
    local l = coroutine.wrap(function() return t:map(range(n)) end)()
    return tk.ticks - ticks0, l
  end)
  tk.stop = true
  lu.assertEquals(ticks_during, 0)
  lu.assertEquals(#list, n)
  lu.assertEquals(list[n]:result(), n)
  tk.future:wait()
end

function TestMapSlices:test_no_yield_with_preemption_off()
  mf.configure { slice = 0.0001, preempt = false }
  local n = 5000
  local tk = ticker()
  local t = mf.task({ name = "id" }, function(x) return x end)
  local ticks_during, list = in_run(function()
    local ticks0 = tk.ticks
    local l = t:map(range(n))
    return tk.ticks - ticks0, l
  end)
  tk.stop = true
  lu.assertEquals(ticks_during, 0)
  lu.assertEquals(#list, n)
  tk.future:wait()
end

function TestMapSlices:test_top_level_map_lets_the_loop_turn()
  -- Outside any run (stock lua5.4's main chunk), the loop takes a turn
  -- every 4,096 runs a map makes, as a wait there would: timers fire and
  -- the runs made so far start, before map returns.
  if h.in_program then return end -- the main chunk is a run there
  local tk = ticker()
  local c = counting()
  local n = 3 * 4096 + 1
  local ticks0 = tk.ticks
  local list = c.task:map(range(n))
  lu.assertTrue(tk.ticks > ticks0, "the ticker did not tick while map made its runs")
  lu.assertTrue(c.started > 0, "no run started while map made its runs")
  lu.assertTrue(c.started < n, "every run started before map returned")
  tk.stop = true
  local results = list:result()
  lu.assertEquals(results.n, n)
  for i = 1, n do
    if results[i] ~= i then lu.fail(("result %d is %s"):format(i, tostring(results[i]))) end
  end
  lu.assertEquals(c.started, n)
  tk.future:wait()
end

function TestMapSlices:test_top_level_submits_let_the_loop_turn()
  -- The same for submits outside any run: every 4,096 the loop turns.
  if h.in_program then return end
  local tk = ticker()
  local c = counting()
  local n = 3 * 4096 + 1
  local ticks0 = tk.ticks
  local futures = {}
  for i = 1, n do futures[i] = c.task:submit(i) end
  lu.assertTrue(tk.ticks > ticks0, "the ticker did not tick while runs were submitted")
  lu.assertTrue(c.started > 0, "no run started while runs were submitted")
  tk.stop = true
  for i = 1, n do
    if futures[i]:result() ~= i then lu.fail("result " .. i) end
  end
  lu.assertEquals(c.started, n)
  tk.future:wait()
end

function TestMapSlices:test_map_in_a_run_lets_runs_start_every_4096()
  -- Inside a run, whatever the slice (an hour here: no slice ends), map
  -- parks every 4,096 runs made, and the runs made so far start.
  mf.configure { slice = 3600 }
  local c = counting()
  local n = 3 * 4096 + 1
  local started_at_return, results = in_run(function()
    local list = c.task:map(range(n))
    return c.started, list:result()
  end)
  lu.assertTrue(started_at_return > 0, "no run started while map made its runs")
  lu.assertTrue(started_at_return < n, "every run started before map returned")
  lu.assertEquals(results.n, n)
  for i = 1, n do
    if results[i] ~= i then lu.fail(("result %d is %s"):format(i, tostring(results[i]))) end
  end
end

function TestMapSlices:test_small_map_in_a_run_is_made_whole()
  -- Up to 4,096 runs, with a slice that does not end, a map in a run makes
  -- them all before it returns: no run has started then.
  mf.configure { slice = 3600 }
  local c = counting()
  local started_at_return = in_run(function()
    local list = c.task:map(range(4096))
    local started = c.started
    lu.assertEquals(list:result()[4096], 4096)
    return started
  end)
  lu.assertEquals(started_at_return, 0)
  lu.assertEquals(c.started, 4096)
end

function TestMapSlices:test_submits_in_a_run_let_runs_start_every_4096()
  -- The same for a loop of submits inside a run: every 4,096th gives up
  -- the caller's slice, and the runs submitted so far start.
  mf.configure { slice = 3600 }
  local c = counting()
  local n = 3 * 4096 + 1
  local first_seen = in_run(function()
    local futures, seen = {}, nil
    for i = 1, n do
      futures[i] = c.task:submit(i)
      seen = seen or (c.started > 0 and i)
    end
    for i = 1, n do
      if futures[i]:result() ~= i then lu.fail("result " .. i) end
    end
    return seen
  end)
  -- (the count of submits is the state's: the first turn comes within
  -- the first 4,096 of this loop, wherever the count stood)
  lu.assertNotNil(first_seen, "no run started while runs were submitted")
  lu.assertTrue(first_seen <= 4096, "the first run started after submit " .. tostring(first_seen))
  lu.assertEquals(c.started, n)
end

function TestMapSlices:test_small_top_level_map_is_one_call()
  -- Up to 4,096 runs, a top-level map makes them all before the loop
  -- turns: no run has started when it returns.
  if h.in_program then return end
  local c = counting()
  local list = c.task:map(range(4096))
  lu.assertEquals(c.started, 0)
  lu.assertEquals(list:result()[4096], 4096)
  lu.assertEquals(c.started, 4096)
end

h.run()
