package.path = "spec/?.lua;" .. package.path
-- Limits (api.md, "Running work"; issue 4): mf.limit(tag, n) — at most n
-- runs carrying tag execute at once, FIFO, slots taken once the inputs are
-- ready and given back on every exit and during retry delays, Deadlock for
-- a holder waiting on runs that need its full limit; mf.rate_limit(tag,
-- per_second) — attempts start evenly spaced; mf.limits() — each limit's
-- capacity, holders and waiters.
-- Limits are global: every test uses tags of its own.
local h = require "helper"
local mf, lu = h.mf, h.lu

-- {====== Helpers ======

local EARLY = 0.001 -- timers may fire up to a millisecond early

local function raise(err) error(err, 0) end

-- Counts how many runs of a tracker are inside their body at once.
local function tracker()
  local self = { active = 0, max = 0, order = {} }
  function self.enter(id)
    self.active = self.active + 1
    if self.active > self.max then self.max = self.active end
    self.order[#self.order + 1] = id
  end
  function self.leave() self.active = self.active - 1 end
  return self
end

-- A task carrying tags whose body enters tr, sleeps, leaves, returns id.
local function tracked_task(tags, tr, seconds)
  return mf.task({ tags = tags }, function(id)
    tr.enter(id)
    mf.sleep(seconds or 0)
    mf.sleep(0)
    tr.leave()
    return id
  end)
end

-- holders / waiters may be counts or lists of runs.
local function count(v)
  if type(v) == "table" then return #v end
  return v
end

local function limit_info(tag)
  local all = mf.limits()
  lu.assertEquals(type(all), "table")
  local info = all[tag]
  if info == nil then
    for _, entry in ipairs(all) do
      if entry.tag == tag then info = entry end
    end
  end
  lu.assertNotNil(info, "mf.limits() has no entry for " .. tag)
  return info
end

local range = h.range

-- }======

-- {====== mf.limit ======

TestLimit = {}

function TestLimit:test_thousand_runs_never_exceed_three_and_all_finish()
  mf.limit("thousand", 3)
  local tr = tracker()
  local t = tracked_task({ "thousand" }, tr)
  local list = t:map(range(1000))
  local res = list:result()
  lu.assertEquals(res.n, 1000)
  for i = 1, 1000 do lu.assertEquals(res[i], i) end
  lu.assertTrue(tr.max <= 3, "at once: " .. tr.max)
  lu.assertEquals(tr.max, 3, "the limit was never used fully")
  local info = limit_info("thousand")
  lu.assertEquals(info.capacity, 3)
  lu.assertEquals(count(info.holders), 0)
  lu.assertEquals(count(info.waiters), 0)
end

function TestLimit:test_fifo_order()
  mf.limit("fifo", 1)
  local tr = tracker()
  local t = tracked_task({ "fifo" }, tr, 0.001)
  local futs = {}
  for i = 1, 10 do futs[i] = t:submit(i) end
  mf.wait(futs)
  lu.assertEquals(tr.order, range(10))
  lu.assertEquals(tr.max, 1)
end

function TestLimit:test_fifo_order_across_tasks_and_maps()
  mf.limit("fifo2", 2)
  local tr = tracker()
  local a = tracked_task({ "fifo2" }, tr, 0.002)
  local b = tracked_task({ "fifo2" }, tr, 0.002)
  local l1 = a:map({ 1, 2, 3 })
  local f4 = b:submit(4)
  local l2 = b:map({ 5, 6 })
  l1:wait() f4:wait() l2:wait()
  lu.assertEquals(tr.order, range(6))
  lu.assertEquals(tr.max, 2)
end

function TestLimit:test_list_result_waits_for_runs_queued_on_a_limit()
  mf.limit("list-wait", 1)
  local t = mf.task({ tags = { "list-wait" } }, function(i) mf.sleep(0.02) return i end)
  local list = t:map({ 1, 2, 3 })
  list[1]:wait()
  lu.assertEquals(list:result(), { 1, 2, 3, n = 3 })
  for i = 1, 3 do lu.assertTrue(list[i]:done()) end
end

function TestLimit:test_tag_without_a_limit_is_free()
  -- All 20 are inside their bodies at once (held there until then).
  local tr = tracker()
  local gate = h.gate()
  local t = mf.task({ tags = { "no-limit-on-this-tag" } }, function(id)
    tr.enter(id)
    gate:wait()
    tr.leave()
    return id
  end)
  local list = t:map(range(20))
  h.eventually(function() return tr.active == 20 end, "20 runs inside at once")
  gate:open()
  list:wait()
  lu.assertEquals(tr.max, 20)
end

function TestLimit:test_runs_with_several_tags_obey_every_limit()
  mf.limit("multi-a", 3)
  mf.limit("multi-b", 1)
  local tr = tracker()
  local t = tracked_task({ "multi-a", "multi-b" }, tr, 0.002)
  t:map(range(6)):wait()
  lu.assertEquals(tr.max, 1)
end

function TestLimit:test_with_tags()
  mf.limit("with-tags", 1)
  local tr = tracker()
  local t = tracked_task(nil, tr, 0.002)
  t:with({ tags = { "with-tags" } }):map(range(5)):wait()
  lu.assertEquals(tr.max, 1)
end

function TestLimit:test_slot_taken_only_once_inputs_are_ready()
  mf.limit("inputs", 1)
  local gate = h.gate() -- a's input finishes once the test opens it
  local up = mf.task(function() gate:wait() return 10 end)
  local t = mf.task({ tags = { "inputs" } }, function(x) return x + 1 end)
  local up_fut = up:submit()
  local a = t:submit(up_fut)   -- waits for its input, without a slot
  local b = t:submit(1)        -- needs the slot now
  lu.assertEquals(b:result(h.PATIENCE), 2)
  lu.assertFalse(up_fut:done(), "b waited for a's input")
  gate:open()
  lu.assertEquals(a:result(), 11)
end

function TestLimit:test_slot_given_back_on_failure()
  mf.limit("fail", 1)
  local bad = mf.task({ tags = { "fail" } }, function() raise("no") end)
  local good = mf.task({ tags = { "fail" } }, function() return "ran" end)
  local a = bad:submit()
  local b = good:submit()
  lu.assertEquals(b:result(h.PATIENCE), "ran")
  lu.assertEquals(a:state().name, "Failed")
  lu.assertEquals(count(limit_info("fail").holders), 0)
end

function TestLimit:test_slot_given_back_on_cancel_of_holder()
  -- The holder sleeps h.LONG: only the cancel can give its slot back
  -- before b's result() gives up.
  mf.limit("cancel-holder", 1)
  local started = false
  local slow = mf.task({ tags = { "cancel-holder" } }, function()
    started = true
    mf.sleep(h.LONG)
  end)
  local quick = mf.task({ tags = { "cancel-holder" } }, function() return "ran" end)
  local a = slow:submit()
  local b = quick:submit()
  h.eventually(function() return started end, "the holder to start")
  mf.sleep(0.01)
  lu.assertFalse(b:done())
  a:cancel()
  lu.assertEquals(b:result(h.PATIENCE), "ran", "the slot did not come back")
end

function TestLimit:test_cancel_of_a_run_waiting_for_a_slot()
  mf.limit("cancel-waiter", 1)
  local ran = {}
  local gate = h.gate() -- a holds the slot until the test opens it
  local t = mf.task({ tags = { "cancel-waiter" } }, function(id)
    ran[#ran + 1] = id
    gate:wait()
    return id
  end)
  local a, b, c = t:submit("a"), t:submit("b"), t:submit("c")
  h.eventually(function() return #ran == 1 end, "a to hold the slot")
  lu.assertTrue(b:cancel())
  b:wait()
  lu.assertEquals(b:state().type, "CANCELLED")
  gate:open()
  lu.assertEquals(a:result(), "a")
  lu.assertEquals(c:result(), "c")
  lu.assertEquals(ran, { "a", "c" })
  local info = limit_info("cancel-waiter")
  lu.assertEquals(count(info.holders), 0)
  lu.assertEquals(count(info.waiters), 0)
end

function TestLimit:test_slot_given_back_on_timeout()
  mf.limit("timeout", 1)
  local stuck = mf.task({ tags = { "timeout" }, timeout = 0.03 }, function()
    while true do end
  end)
  local quick = mf.task({ tags = { "timeout" } }, function() return "ran" end)
  local a = stuck:submit()
  local b = quick:submit()
  lu.assertEquals(b:result(h.PATIENCE), "ran")
  lu.assertEquals(a:state().name, "TimedOut")
end

function TestLimit:test_timeout_counts_after_the_slot_is_taken()
  -- The slot is held longer (0.4 s) than the timeout (0.3 s); the body
  -- itself takes no time (it does not even yield).
  mf.limit("timeout-after-slot", 1)
  local holder = mf.task({ tags = { "timeout-after-slot" } }, function() mf.sleep(0.4) end)
  local limited = mf.task({ tags = { "timeout-after-slot" }, timeout = 0.3 },
    function() return "in time" end)
  local a = holder:submit()
  local b = limited:submit()
  lu.assertEquals(b:result(), "in time")
  a:result()
end

function TestLimit:test_slot_given_back_during_retry_delay()
  mf.limit("retry", 1)
  local log = {}
  local n = 0
  local flaky = mf.task({ tags = { "retry" }, retries = 1, retry_delay = 0.08 }, function()
    n = n + 1
    log[#log + 1] = "flaky" .. n
    if n == 1 then raise("once") end
  end)
  local other = mf.task({ tags = { "retry" } }, function() log[#log + 1] = "other" end)
  local a = flaky:submit()
  local b = other:submit()
  a:result()
  b:result()
  lu.assertEquals(log, { "flaky1", "other", "flaky2" })
end

function TestLimit:test_holder_counts_and_waiters()
  mf.limit("report", 2)
  local gate = h.gate() -- the holders hold until the test opens it
  local inside = 0
  local t = mf.task({ tags = { "report" } }, function()
    inside = inside + 1
    gate:wait()
  end)
  local list = t:map(range(3))
  h.eventually(function() return inside == 2 end, "two holders")
  local info = limit_info("report")
  lu.assertEquals(info.capacity, 2)
  lu.assertEquals(count(info.holders), 2)
  lu.assertEquals(count(info.waiters), 1)
  gate:open()
  list:wait()
  info = limit_info("report")
  lu.assertEquals(count(info.holders), 0)
  lu.assertEquals(count(info.waiters), 0)
end

function TestLimit:test_limits_lists_every_limit()
  mf.limit("listed-1", 1)
  mf.limit("listed-2", 5)
  lu.assertEquals(limit_info("listed-1").capacity, 1)
  lu.assertEquals(limit_info("listed-2").capacity, 5)
end

function TestLimit:test_bad_arguments_are_usage_errors()
  for _, bad in ipairs({ -1, 1.5, "2", true, {}, 0 / 0 }) do
    local ok, err = pcall(mf.limit, "bad-limit", bad)
    lu.assertFalse(ok, "mf.limit(tag, " .. tostring(bad) .. ") was accepted")
    lu.assertEquals(type(err) == "table" and err.kind, "UsageError", tostring(err))
  end
  for _, bad in ipairs({ {}, true }) do
    local ok, err = pcall(mf.limit, bad, 1)
    lu.assertFalse(ok)
    lu.assertEquals(type(err) == "table" and err.kind, "UsageError", tostring(err))
  end
  h.raises_kind("UsageError", mf.limit, "no-count")
  for _, bad in ipairs({ 0, -1, "fast", true, 0 / 0 }) do
    local ok, err = pcall(mf.rate_limit, "bad-rate", bad)
    lu.assertFalse(ok, "mf.rate_limit(tag, " .. tostring(bad) .. ") was accepted")
    lu.assertEquals(type(err) == "table" and err.kind, "UsageError", tostring(err))
  end
  local ok, err = pcall(mf.rate_limit, {}, 1)
  lu.assertFalse(ok)
  lu.assertEquals(type(err) == "table" and err.kind, "UsageError", tostring(err))
end

-- }======

-- {====== No deadlocks, and Deadlock ======

TestLimitDeadlock = {}

function TestLimitDeadlock:test_chain_of_limited_runs()
  mf.limit("chain", 1)
  local inc = mf.task({ tags = { "chain" } }, function(v) return v + 1 end)
  local fut = inc:submit(0)
  for _ = 2, 200 do fut = inc:submit(fut) end
  lu.assertEquals(fut:result(), 200)
end

function TestLimitDeadlock:test_streamed_maps_of_limited_runs()
  mf.limit("stream", 2)
  local tr = tracker()
  local a = mf.task({ tags = { "stream" } }, function(x)
    tr.enter(x) mf.sleep(0.001) tr.leave() return x * 2
  end)
  local b = mf.task({ tags = { "stream" } }, function(x)
    tr.enter(x) mf.sleep(0.001) tr.leave() return x + 1
  end)
  local res = b:map(a:map(range(50))):result()
  for i = 1, 50 do lu.assertEquals(res[i], 2 * i + 1) end
  lu.assertTrue(tr.max <= 2)
end

function TestLimitDeadlock:test_fan_in_of_limited_runs()
  mf.limit("fanin", 1)
  local leaf = mf.task({ tags = { "fanin" } }, function(x) mf.sleep(0) return x end)
  local sum = mf.task({ tags = { "fanin" } }, function(xs)
    local s = 0
    for _, x in ipairs(xs) do s = s + x end
    return s
  end)
  local futs = {}
  for i = 1, 20 do futs[i] = leaf:submit(i) end
  lu.assertEquals(sum:submit(futs):result(), 210)
end

function TestLimitDeadlock:test_holder_waiting_on_a_run_needing_its_full_limit()
  mf.limit("self-dead", 1)
  local inner = mf.task({ tags = { "self-dead" } }, function() return "inner" end)
  local inner_fut
  local outer = mf.task({ tags = { "self-dead" } }, function()
    inner_fut = inner:submit()
    local ok, err = pcall(inner_fut.result, inner_fut)
    if ok then return "no deadlock" end
    return type(err) == "table" and err.kind or tostring(err)
  end)
  lu.assertEquals(outer:submit():result(h.PATIENCE), "Deadlock")
  -- Once the outer run gave its slot back, the inner one runs.
  lu.assertEquals(inner_fut:result(h.PATIENCE), "inner")
end

function TestLimitDeadlock:test_every_holder_parked_on_runs_needing_the_limit()
  mf.limit("all-dead", 2)
  local inner = mf.task({ tags = { "all-dead" } }, function(x) return x end)
  local inners = {}
  local outer = mf.task({ tags = { "all-dead" } }, function(i)
    mf.sleep(0.01) -- both outer runs hold their slots by now
    inners[i] = inner:submit(i)
    local ok, err = pcall(inners[i].result, inners[i])
    if ok then return "ok" end
    return type(err) == "table" and err.kind or tostring(err)
  end)
  local list = outer:map({ 1, 2 })
  local res = list:result(h.PATIENCE)
  local deadlocks = 0
  for i = 1, 2 do
    if res[i] == "Deadlock" then deadlocks = deadlocks + 1 end
  end
  lu.assertTrue(deadlocks >= 1, "no Deadlock: " .. tostring(res[1]) .. ", " .. tostring(res[2]))
  for i = 1, 2 do lu.assertEquals(inners[i]:result(h.PATIENCE), i) end
end

function TestLimitDeadlock:test_holder_waiting_when_limit_not_full_is_fine()
  mf.limit("not-full", 2)
  local inner = mf.task({ tags = { "not-full" } }, function() mf.sleep(0.01) return "inner" end)
  local outer = mf.task({ tags = { "not-full" } }, function()
    return inner:submit():result()
  end)
  lu.assertEquals(outer:submit():result(h.PATIENCE), "inner")
end

function TestLimitDeadlock:test_holder_waiting_with_timeout_is_not_deadlock()
  mf.limit("timed-wait", 1)
  local inner = mf.task({ tags = { "timed-wait" } }, function() return "inner" end)
  local inner_fut
  local outer = mf.task({ tags = { "timed-wait" } }, function()
    inner_fut = inner:submit()
    local ok, err = pcall(inner_fut.result, inner_fut, 0.03)
    return ok and "ok" or (type(err) == "table" and err.kind or tostring(err))
  end)
  lu.assertEquals(outer:submit():result(h.PATIENCE), "Timeout")
  lu.assertEquals(inner_fut:result(h.PATIENCE), "inner")
end

function TestLimitDeadlock:test_holder_waiting_on_unlimited_run_is_fine()
  mf.limit("holder-unlimited", 1)
  local free = mf.task(function() mf.sleep(0.01) return "free" end)
  local outer = mf.task({ tags = { "holder-unlimited" } }, function()
    return free:submit():result()
  end)
  lu.assertEquals(outer:map({ 1, 2, 3 }):result(h.PATIENCE), { "free", "free", "free", n = 3 })
end

-- }======

-- {====== mf.rate_limit ======

TestRateLimit = {}

local function fmt_list(xs)
  local parts = {}
  for i, x in ipairs(xs) do parts[i] = string.format("%.4f", x) end
  return table.concat(parts, " ")
end

local function gaps_of(times)
  table.sort(times)
  local gaps = {}
  for i = 2, #times do gaps[i - 1] = times[i] - times[i - 1] end
  return gaps
end

-- Starts measured in the bodies lag the engine's start times by whatever
-- kept the process from running between the two (on a busy machine, up to
-- some milliseconds), so one gap may look a little short when the run
-- before it was measured late; the rate itself must hold over every
-- stretch: k starts never within less than (k - 1) intervals, give or take
-- that lag.  The intervals (0.05 s) are long beside it.
local LATENCY = 0.02

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  return s[(#s + 1) // 2]
end

local function assert_spaced(starts, interval)
  table.sort(starts)
  local gaps = gaps_of(starts)
  for i = 1, #starts do
    for j = i + 1, #starts do
      local span = starts[j] - starts[i]
      lu.assertTrue(span >= (j - i) * interval - LATENCY, string.format(
        "%d starts within %.4f s, at %s/s: gaps %s", j - i + 1, span, 1 / interval,
        fmt_list(gaps)))
    end
  end
  return gaps
end

function TestRateLimit:test_attempts_start_evenly_spaced()
  -- Evenly: never closer than the interval (exact, but for the lag), and
  -- the typical gap not far from it -- the median under twice the interval,
  -- which leaves a whole interval for a late loop.  How late the starts
  -- come is bench/latency.lua's figure.
  mf.rate_limit("rate20", 20) -- one start every 0.05 s
  local starts = {}
  local t = mf.task({ tags = { "rate20" } }, function(i)
    starts[#starts + 1] = mf.now()
    return i
  end)
  local t0 = mf.now()
  lu.assertEquals(t:map(range(10)):result(), { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, n = 10 })
  local elapsed = mf.now() - t0
  local gaps = assert_spaced(starts, 0.05)
  lu.assertTrue(median(gaps) < 2 * 0.05, "starts spaced far more than 0.05 s: " .. fmt_list(gaps))
  lu.assertTrue(elapsed >= 9 * 0.05 - EARLY and elapsed < h.PATIENCE, "took " .. elapsed)
end

function TestRateLimit:test_retries_are_attempts_too()
  mf.rate_limit("rate-retry", 20) -- every 0.05 s
  local starts = {}
  local n = {}
  local t = mf.task({ tags = { "rate-retry" }, retries = 1 }, function(i)
    starts[#starts + 1] = mf.now()
    n[i] = (n[i] or 0) + 1
    if n[i] == 1 then raise("first attempt fails") end
    return i
  end)
  lu.assertEquals(t:map(range(4)):result(), { 1, 2, 3, 4, n = 4 })
  lu.assertEquals(#starts, 8)
  assert_spaced(starts, 0.05)
end

function TestRateLimit:test_rate_limited_runs_do_not_block_others()
  -- At one start a second, the second limited run waits a second: the free
  -- run is done long before.
  mf.rate_limit("rate-slow", 1)
  local t = mf.task({ tags = { "rate-slow" } }, function(i) return i end)
  local free = mf.task(function() return "free" end)
  local list = t:map(range(3))
  lu.assertEquals(free(), "free")
  lu.assertFalse(list[2]:done(), "the free run waited for the limited ones")
  lu.assertEquals(list[1]:result(), 1)
  list[2]:cancel()
  list[3]:cancel()
  list:wait()
end

function TestRateLimit:test_rate_and_concurrency_limit_together()
  mf.limit("rate-and-limit", 1)
  mf.rate_limit("rate-and-limit", 20)
  local tr = tracker()
  local starts = {}
  local t = mf.task({ tags = { "rate-and-limit" } }, function(i)
    starts[#starts + 1] = mf.now()
    tr.enter(i)
    mf.sleep(0.001)
    tr.leave()
    return i
  end)
  t:map(range(6)):result()
  lu.assertEquals(tr.max, 1)
  assert_spaced(starts, 0.05)
  local info = limit_info("rate-and-limit")
  lu.assertEquals(info.capacity, 1)
end

-- }======

h.run()
