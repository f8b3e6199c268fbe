-- Waiting on a long list inside a run works in slices (issue 11): list:wait,
-- list:result, mf.wait and as_completed's wait copy the list at the call,
-- then take its runs, wait for those not final and build their results in
-- chunks, yielding to the loop when the caller's slice is used up -- so
-- other runs go on while a run collects 200,000 results.  Outside a run
-- (and where the caller cannot yield) it is one call, as before.  Asserted
-- with counters and events: what happened between a call's start and its
-- return.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"

local DEFAULT_SLICE = 0.01
local N = 200000 -- the main test's size; the others take fewer
local M = 20000

local ticker = h.ticker

local range, in_run = h.range, h.in_run

local double = mf.task({ name = "double" }, function(x) return x * 2 end)

-- n finished futures of double (map, then waited for).
local function finished(n)
  local list = double:map(range(n))
  lu.assertTrue(list:wait())
  return list
end

local function assert_doubles(results, n)
  lu.assertEquals(results.n, n)
  for i = 1, n do
    if results[i] ~= 2 * i then lu.fail(("result %d is %s"):format(i, tostring(results[i]))) end
  end
end

TestCollectSlices = {}

function TestCollectSlices:tearDown()
  mf.configure { slice = DEFAULT_SLICE, preempt = true }
  h.stop_tickers()
end

function TestCollectSlices:test_loop_turns_while_results_of_finished_runs_are_collected()
  -- Every run is final already: nothing is waited for, so each tick during
  -- a call comes from the call yielding between chunks.
  mf.configure { slice = 0.0001 }
  local list = finished(N)
  local tk = ticker()
  local during = in_run(function()
    local counts = {}
    local t0 = tk.ticks
    local results = list:result()
    counts.result = tk.ticks - t0
    assert_doubles(results, N)
    t0 = tk.ticks
    lu.assertTrue(list:wait())
    counts.wait = tk.ticks - t0
    t0 = tk.ticks
    local done, not_done = mf.wait(list)
    counts.mf_wait = tk.ticks - t0
    lu.assertEquals(#done, N)
    lu.assertEquals(#not_done, 0)
    lu.assertIs(done[1], list[1])
    lu.assertIs(done[N], list[N])
    return counts
  end)
  tk.stop = true
  lu.assertTrue(during.result > 0, "the ticker never ran while list:result() collected")
  lu.assertTrue(during.wait > 0, "the ticker never ran while list:wait() collected")
  lu.assertTrue(during.mf_wait > 0, "the ticker never ran while mf.wait collected")
  tk.future:wait()
end

function TestCollectSlices:test_waiting_for_more_runs_than_one_chunk()
  -- 20,000 runs parked on one promise: more than a chunk of the engine's
  -- wait.  Each wait form ends only when all are final.
  local n = 20000
  local gate, open = mf.promise("gate")
  local started = 0
  local held = mf.task({ name = "held" }, function(x, g)
    started = started + 1
    return x + g
  end)
  local list = held:map(range(n), mf.unmapped(gate))
  local ev = h.recorder()
  local caller = mf.task({ name = "caller" }, function()
    ev("waiting")
    local ok = list:wait()
    ev("waited")
    local results = list:result()
    local done = mf.wait(list)
    return ok, results, #done
  end):submit()
  h.eventually(function() return #ev.list > 0 end, "the caller to wait")
  mf.sleep(0.01)
  lu.assertEquals(ev:count("waited"), 0)
  lu.assertFalse(caller:done())
  open(100)
  local ok, results, ndone = caller:result()
  lu.assertTrue(ok)
  lu.assertEquals(results.n, n)
  for i = 1, n do
    if results[i] ~= i + 100 then lu.fail(("result %d is %s"):format(i, tostring(results[i]))) end
  end
  lu.assertEquals(ndone, n)
  lu.assertEquals(started, n)
end

function TestCollectSlices:test_timeouts_across_chunks()
  local n = 20000
  local gate, open = mf.promise("gate")
  local held = mf.task({ name = "held" }, function(_, g) return g end)
  local list = held:map(range(n), mf.unmapped(gate))
  local ok, err, done, not_done = in_run(function()
    local w = list:wait(0.02)
    local _, e = pcall(list.result, list, 0.02)
    local d, nd = mf.wait(list, 0.02)
    return w, e, d, nd
  end)
  lu.assertFalse(ok)
  lu.assertEquals(type(err), "table")
  lu.assertEquals(err.kind, "Timeout")
  lu.assertStrContains(err.message, ("%d (of %d) futures unfinished"):format(n, n))
  lu.assertEquals(#done, 0)
  lu.assertEquals(#not_done, n)
  lu.assertIs(not_done[n], list[n])
  open(1)
  lu.assertTrue(in_run(function() return list:wait(h.PATIENCE) end))
end

function TestCollectSlices:test_fail_fast_beyond_the_first_chunk()
  -- One failure among 20,000 runs that stay parked: result() raises it
  -- without waiting for the others, wherever the failing run is.
  local n = 20000
  local gate, open = mf.promise("gate")
  local fail_gate, fail_now = mf.promise("fail_gate")
  local held = mf.task({ name = "held" }, function(_, g) return g end)
  local boom = mf.task({ name = "boom" }, function(g)
    error { kind = "Boom", message = "failed " .. g }
  end)
  local list = held:map(range(n), mf.unmapped(gate))
  list[n + 1] = boom:submit(fail_gate)
  local ev = h.recorder()
  local caller = mf.task({ name = "caller" }, function()
    ev("collecting")
    return list:result()
  end):submit()
  h.eventually(function() return #ev.list > 0 end, "the caller to start")
  fail_now("now")
  lu.assertTrue(caller:wait(h.PATIENCE), "result() did not fail fast")
  lu.assertEquals(caller:state().name, "Failed")
  local err = caller:result(nil, false)
  lu.assertEquals(err.kind, "Boom")
  lu.assertFalse(list[1]:done())
  open(0)
  lu.assertTrue(list:wait())
end

function TestCollectSlices:test_the_snapshot_is_taken_at_the_call()
  -- While the caller collects (in slices), the ticker changes the list:
  -- the call sees the list as it was when called.
  mf.configure { slice = 0.0001 }
  local list = finished(M)
  local other = double:submit(-1)
  lu.assertEquals(other:result(), -2)
  local first = list[1]
  local collecting, changed = false, false
  local tk = ticker()
  tk.each = function()
    if collecting and not changed then
      list[1] = other
      list[M + 1] = other
      changed = true
    end
  end
  local results, done = in_run(function()
    collecting = true
    local r = list:result()
    collecting = false
    list[1], list[M + 1], changed = first, nil, false
    collecting = true
    local d = mf.wait(list)
    collecting = false
    return r, d
  end)
  tk.stop = true
  lu.assertTrue(changed, "the ticker never ran during the collection")
  assert_doubles(results, M)
  lu.assertEquals(#done, M)
  lu.assertIs(done[1], first)
  tk.future:wait()
end

function TestCollectSlices:test_mf_wait_removes_duplicates_in_order()
  mf.configure { slice = 0.0001 }
  local list = finished(5000)
  local doubled = {}
  for i = 1, 5000 do doubled[i] = list[i] end
  for i = 1, 5000 do doubled[5000 + i] = list[5001 - i] end
  local done, not_done = in_run(function() return mf.wait(doubled) end)
  lu.assertEquals(#done, 5000)
  lu.assertEquals(#not_done, 0)
  for i = 1, 5000 do
    if done[i] ~= list[i] then lu.fail("done[" .. i .. "] is not the list's") end
  end
end

function TestCollectSlices:test_a_non_future_element_is_named()
  mf.configure { slice = 0.0001 }
  local list = finished(3000)
  local xs = {}
  for i = 1, 3000 do xs[i] = list[i] end
  xs[2500] = 42
  for _, call in ipairs {
    function() return mf.wait(xs) end,
    function() return core.FutureList.wait(xs) end,
    function() return core.FutureList.result(xs) end,
  } do
    local err = h.raises_kind("UsageError", in_run, call)
    lu.assertStrContains(err.message, "element 2500 is not a Future (number)")
  end
end

function TestCollectSlices:test_cancelling_the_caller_mid_collection()
  mf.configure { slice = 0.0001 }
  local list = finished(M)
  local live0 = core.live()
  local collecting, returned = false, false
  local caller = mf.task({ name = "caller" }, function()
    collecting = true
    local r = list:result()
    returned = true
    return r
  end)
  local fut
  -- A run that yields (mf.sleep(0)) until the caller collects, then cancels
  -- it: it gets its turn between two of the caller's slices however fast
  -- the machine is (a ticker's timer may come due only after the end).
  local canceller = mf.task({ name = "canceller" }, function()
    while not (collecting and fut) do mf.sleep(0) end
    fut:cancel()
  end):submit()
  fut = caller:submit()
  lu.assertTrue(fut:wait(h.PATIENCE))
  lu.assertEquals(fut:state().name, "Cancelled", tostring(fut:state().message))
  lu.assertFalse(returned, "result() went on after its caller was cancelled")
  canceller:wait()
  h.eventually(function() return core.live() <= live0 end, "the caller to be released")
  collectgarbage()
  collectgarbage()
  -- The list is intact and still readable.
  assert_doubles(list:result(), M)
end

function TestCollectSlices:test_caller_past_its_timeout_is_stopped()
  mf.configure { slice = 0.0001 }
  local list = finished(M)
  local calls = 0
  local caller = mf.task({ name = "collector", timeout = 0.02 }, function()
    -- No machine collects 20,000 results 200 times within 20 ms.
    for _ = 1, 200 do
      list:result()
      calls = calls + 1
    end
  end):submit()
  caller:wait()
  lu.assertEquals(caller:state().name, "TimedOut")
  lu.assertTrue(calls < 200)
  assert_doubles(list:result(), M)
end

function TestCollectSlices:test_no_yield_with_preemption_off()
  mf.configure { slice = 0.0001, preempt = false }
  local list = finished(20000)
  local tk = ticker()
  local ticks, results = in_run(function()
    local t0 = tk.ticks
    local r = list:result()
    return tk.ticks - t0, r
  end)
  tk.stop = true
  lu.assertEquals(ticks, 0)
  assert_doubles(results, 20000)
  tk.future:wait()
end

function TestCollectSlices:test_top_level_collection_is_one_call()
  if h.in_program then return end -- the main chunk is a run there
  mf.configure { slice = 0.0001 }
  local list = finished(20000)
  local tk = ticker()
  local t0 = tk.ticks
  local results = list:result()
  lu.assertEquals(tk.ticks, t0)
  assert_doubles(results, 20000)
  tk.stop = true
  tk.future:wait()
end

-- map checks a long array inside a run in slices too (before it makes any
-- run): the loop turns while it checks, a bad key found late is still a
-- UsageError with no run made, and an array changed between two slices of
-- the check is a UsageError that says so.
function TestCollectSlices:test_map_checks_a_long_array_in_slices()
  mf.configure { slice = 0.0001 }
  local made = 0
  local counted = mf.task({ name = "counted" }, function(x)
    made = made + 1
    return x
  end)
  local n = 100000
  local tk = ticker()
  local ticks, results = in_run(function()
    local t0 = tk.ticks
    local list = counted:map(range(n))
    return tk.ticks - t0, list:result()
  end)
  lu.assertTrue(ticks > 0, "the ticker never ran while map checked and made its runs")
  lu.assertEquals(results.n, n)
  lu.assertEquals(results[n], n)
  made = 0
  local bad = range(n)
  bad.name = "late"
  local err = in_run(function()
    local ok, e = pcall(counted.map, counted, bad)
    lu.assertFalse(ok)
    return e
  end)
  lu.assertEquals(err.kind, "UsageError")
  lu.assertStrContains(err.message, "argument #1")
  local holed = range(n)
  holed[n // 2] = nil
  err = in_run(function()
    local ok, e = pcall(counted.map, counted, holed)
    lu.assertFalse(ok)
    return e
  end)
  lu.assertEquals(err.kind, "UsageError")
  lu.assertEquals(made, 0, "no run made for a bad array")
  -- Changed while checked: the ticker grows it once the check began.
  local grown = range(n)
  local checking = false
  tk.each = function()
    if checking and grown[n + 1] == nil then
      for i = n + 1, n + 10 do grown[i] = i end
    end
  end
  err = in_run(function()
    checking = true
    local ok, e = pcall(counted.map, counted, grown)
    checking = false
    lu.assertFalse(ok)
    return e
  end)
  tk.each = nil
  tk.stop = true
  tk.future:wait()
  lu.assertEquals(err.kind, "UsageError")
  lu.assertStrContains(err.message, "changed while map was checking it")
  lu.assertEquals(made, 0)
end

h.run()
