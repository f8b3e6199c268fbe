-- Running work (api.md, "Running work"): mf.sleep, mf.now, mf.context,
-- mf.run, and many concurrent sleeping tasks.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

-- {====== mf.sleep ======

TestSleep = {}

function TestSleep:test_sleep_waits_that_long()
  local t0 = mf.now()
  mf.sleep(0.05)
  local elapsed = mf.now() - t0
  lu.assertTrue(elapsed >= 0.049, "woke too early: " .. elapsed)
  lu.assertTrue(elapsed < h.PATIENCE, "never woke: " .. elapsed)
end

function TestSleep:test_sleep_inside_task_waits_that_long()
  local t = mf.task(function()
    local t0 = mf.now()
    mf.sleep(0.05)
    return mf.now() - t0
  end)
  local elapsed = t()
  lu.assertTrue(elapsed >= 0.049, "woke too early: " .. elapsed)
  lu.assertTrue(elapsed < h.PATIENCE, "never woke: " .. elapsed)
end

function TestSleep:test_sleep_parks_so_sleepers_overlap()
  -- Overlap is counted, not timed: every sleeper is asleep before the
  -- first one wakes.
  local asleep, peak = 0, 0
  local t = mf.task(function(s)
    asleep = asleep + 1
    peak = math.max(peak, asleep)
    mf.sleep(s)
    asleep = asleep - 1
    return s
  end)
  local t0 = mf.now()
  local list = t:map({ 0.1, 0.1, 0.1, 0.1 })
  lu.assertEquals(list:result(), { 0.1, 0.1, 0.1, 0.1, n = 4 })
  local elapsed = mf.now() - t0
  lu.assertTrue(elapsed >= 0.099, "too fast: " .. elapsed)
  lu.assertEquals(peak, 4, "sleeps did not overlap")
end

function TestSleep:test_sleeping_run_lets_others_progress()
  local worker_ran, seen_on_wake = false, nil
  local sleeper = mf.task(function()
    mf.sleep(0.03)
    seen_on_wake = worker_ran
  end)
  local worker = mf.task(function() worker_ran = true end)
  local a = sleeper:submit()
  local b = worker:submit()
  mf.wait({ a, b })
  lu.assertTrue(seen_on_wake, "the sleeper blocked the other run")
end

function TestSleep:test_sleep_zero_yields_once_inside_run()
  local t = mf.task(function()
    local ran = false
    local other = mf.task(function() ran = true end)
    other:submit()
    local before = ran
    mf.sleep(0)
    return before, ran
  end)
  local before, after = t()
  lu.assertFalse(before, "submit ran the other run at once")
  lu.assertTrue(after, "mf.sleep(0) did not let the other run progress")
end

function TestSleep:test_sleep_zero_lets_others_progress_at_top_level()
  local ran = false
  local other = mf.task(function() ran = true end)
  local fut = other:submit()
  lu.assertFalse(ran)
  mf.sleep(0)
  lu.assertTrue(ran, "mf.sleep(0) did not let the submitted run progress")
  lu.assertTrue(fut:done())
end

function TestSleep:test_sleep_zero_interleaves_runs()
  local order = {}
  local function stepper(tag)
    return mf.task(function()
      for i = 1, 3 do
        order[#order + 1] = tag .. i
        mf.sleep(0)
      end
    end)
  end
  local outer = mf.task(function()
    local b = stepper("b"):submit()
    local a = stepper("a")
    -- run a's body in this run: it yields between steps, b progresses
    a:submit():result()
    b:result()
  end)
  outer()
  -- each step of one runner is followed by a step of the other before its
  -- next one: neither runs its three steps in a row
  local s = table.concat(order, ",")
  lu.assertEquals(#order, 6)
  lu.assertNotStrContains(s, "a1,a2,a3")
  lu.assertNotStrContains(s, "b1,b2,b3")
end

-- How quick mf.sleep(0) is: bench/latency.lua.  Here: it ends.
function TestSleep:test_sleep_zero_returns()
  local t0 = mf.now()
  for _ = 1, 100 do mf.sleep(0) end
  lu.assertTrue(mf.now() - t0 < h.PATIENCE)
end

function TestSleep:test_negative_sleep_is_usage_error()
  h.raises_kind("UsageError", mf.sleep, -1)
  h.raises_kind("UsageError", mf.sleep, -0.001)
end

function TestSleep:test_negative_sleep_inside_task_is_usage_error()
  local t = mf.task(function() mf.sleep(-0.5) return "slept" end)
  local fut = t:submit()
  h.raises_kind("UsageError", fut.result, fut)
end

-- }======

-- {====== mf.now ======

TestNow = {}

function TestNow:test_now_is_float()
  local n = mf.now()
  lu.assertEquals(math.type(n), "float")
end

function TestNow:test_now_is_monotonic()
  local prev = mf.now()
  for _ = 1, 10000 do
    local n = mf.now()
    lu.assertTrue(n >= prev)
    prev = n
  end
end

function TestNow:test_now_advances_with_sleep()
  local a = mf.now()
  mf.sleep(0.02)
  local b = mf.now()
  lu.assertTrue(b - a >= 0.019, "advanced only " .. (b - a))
  lu.assertTrue(b - a < h.PATIENCE, "seconds, not milliseconds: " .. (b - a))
end

function TestNow:test_now_measures_seconds_inside_run()
  local t = mf.task(function()
    local a = mf.now()
    mf.sleep(0.03)
    return mf.now() - a
  end)
  local d = t()
  lu.assertTrue(d >= 0.029 and d < h.PATIENCE, "measured " .. d)
end

-- }======

-- {====== mf.context ======

TestContext = {}

function TestContext:test_context_inside_task()
  local t = mf.task({ name = "ctx_task", tags = { "alpha", "beta" } },
    function() return mf.context() end)
  local fut = t:submit()
  local ctx = fut:result()
  lu.assertEquals(type(ctx), "table")
  lu.assertEquals(ctx.id, fut.id)
  lu.assertEquals(ctx.name, fut.name)
  lu.assertStrMatches(ctx.name, "ctx_task%-%d+")
  lu.assertEquals(ctx.attempt, 1)
  lu.assertEquals(ctx.tags, { "alpha", "beta" })
end

function TestContext:test_context_tags_default_empty()
  local t = mf.task(function() return mf.context().tags end)
  lu.assertEquals(t(), {})
end

function TestContext:test_context_differs_per_run()
  local t = mf.task(function() mf.sleep(0) return mf.context().id end)
  local a, b = t:submit(), t:submit()
  lu.assertEquals(a:result(), a.id)
  lu.assertEquals(b:result(), b.id)
  lu.assertNotEquals(a.id, b.id)
end

function TestContext:test_context_survives_parking()
  local t = mf.task({ name = "parker" }, function()
    local before = mf.context()
    mf.sleep(0.01)
    local after = mf.context()
    return before.id, after.id, after.name
  end)
  local other = mf.task(function() mf.sleep(0.005) return mf.context().id end)
  local fut = t:submit()
  local o = other:submit()
  local b, a, name = fut:result()
  lu.assertEquals(b, fut.id)
  lu.assertEquals(a, fut.id)
  lu.assertEquals(name, fut.name)
  lu.assertEquals(o:result(), o.id)
end

function TestContext:test_task_in_flow_has_flow_run()
  local t = mf.task(function() return mf.context() end)
  local flow_fut
  local f = mf.flow({ name = "ctx_flow" }, function()
    return t:submit():result(), mf.context()
  end)
  flow_fut = f:submit()
  local task_ctx, flow_ctx = flow_fut:result()
  lu.assertEquals(flow_ctx.id, flow_fut.id)
  lu.assertEquals(flow_ctx.name, flow_fut.name)
  lu.assertEquals(type(task_ctx.flow_run), "table")
  lu.assertEquals(task_ctx.flow_run.id, flow_fut.id)
  lu.assertEquals(task_ctx.flow_run.name, flow_fut.name)
  lu.assertNotEquals(task_ctx.id, flow_fut.id)
end

function TestContext:test_flow_run_of_flow_is_itself()
  local f = mf.flow({ name = "selfflow" }, function() return mf.context() end)
  local fut = f:submit()
  local ctx = fut:result()
  lu.assertEquals(ctx.flow_run.id, fut.id)
  lu.assertEquals(ctx.flow_run.name, fut.name)
end

function TestContext:test_nested_task_sees_nearest_flow()
  local leaf = mf.task(function() return mf.context().flow_run.id end)
  local mid = mf.task(function() return leaf(), mf.context().flow_run.id end)
  local sub_fut
  local sub = mf.flow(function() return mid() end)
  local outer = mf.flow(function()
    sub_fut = sub:submit()
    local a, b = sub_fut:result()
    return a, b, mf.context().id
  end)
  local a, b, outer_id = outer()
  lu.assertEquals(a, sub_fut.id)
  lu.assertEquals(b, sub_fut.id)
  lu.assertNotEquals(outer_id, sub_fut.id)
end

function TestContext:test_context_nil_outside_any_run()
  if h.in_program then
    -- the main chunk is itself a run under the moonflow program
    local ctx = mf.context()
    lu.assertEquals(type(ctx), "table")
    lu.assertIsString(ctx.id)
    lu.assertIsString(ctx.name)
  else
    lu.assertNil(mf.context())
    local t = mf.task(function() return mf.context() end)
    lu.assertNotNil(t())
    lu.assertNil(mf.context(), "context leaked out of a finished run")
  end
end

-- }======

-- {====== mf.run ======

TestRun = {}

function TestRun:test_run_drives_loop_until_all_final()
  if h.in_program then return end
  local finished = {}
  local grandchild
  local t = mf.task(function(i) mf.sleep(0.01 * i) finished[#finished + 1] = i end)
  local spawner = mf.task(function()
    grandchild = t:submit(4)
  end)
  local futs = { t:submit(1), t:submit(2), t:submit(3), spawner:submit() }
  local t0 = mf.now()
  mf.run()
  local elapsed = mf.now() - t0
  for _, fut in ipairs(futs) do lu.assertTrue(fut:done()) end
  lu.assertTrue(grandchild:done())
  table.sort(finished)
  lu.assertEquals(finished, { 1, 2, 3, 4 })
  lu.assertTrue(elapsed >= 0.039, "returned too early: " .. elapsed)
  lu.assertTrue(elapsed < h.PATIENCE, "never returned: " .. elapsed)
end

function TestRun:test_run_runs_submitted_runs()
  if h.in_program then return end
  local ran = false
  local t = mf.task(function() ran = true end)
  local fut = t:submit()
  mf.run()
  lu.assertTrue(ran)
  lu.assertEquals(fut:state().type, "COMPLETED")
end

function TestRun:test_run_with_nothing_to_do_returns()
  if h.in_program then return end
  local t0 = mf.now()
  mf.run()
  lu.assertTrue(mf.now() - t0 < h.PATIENCE)
end

function TestRun:test_run_in_program_is_usage_error()
  if not h.in_program then return end
  h.raises_kind("UsageError", mf.run)
end

function TestRun:test_run_inside_task_is_usage_error()
  local t = mf.task(function() return pcall(mf.run) end)
  local ok, err = t()
  lu.assertFalse(ok)
  lu.assertEquals(type(err), "table")
  lu.assertEquals(err.kind, "UsageError")
end

-- }======

-- {====== Many sleeping tasks ======

TestMany = {}

-- How fast 10,000 sleepers finish is bench/sleep.lua's; here: they all
-- finish, sleep at least their 0.1 s, and sleep at once (a counter of the
-- runs asleep goes above 1; one after another they would take 1000 s).
local function counted_sleeper(value)
  local counts = { asleep = 0, peak = 0 }
  local t = mf.task(function(i)
    counts.asleep = counts.asleep + 1
    counts.peak = math.max(counts.peak, counts.asleep)
    mf.sleep(0.1)
    counts.asleep = counts.asleep - 1
    return value(i)
  end)
  return t, counts
end

function TestMany:test_ten_thousand_sleeping_tasks()
  local t, counts = counted_sleeper(function(i) return i end)
  local t0 = mf.now()
  local futs = {}
  for i = 1, 10000 do futs[i] = t:submit(i) end
  local done, not_done = mf.wait(futs)
  local elapsed = mf.now() - t0
  lu.assertEquals(#done, 10000)
  lu.assertEquals(#not_done, 0)
  lu.assertTrue(elapsed >= 0.099, "too fast: " .. elapsed)
  lu.assertTrue(counts.peak > 1, "the sleeps did not overlap")
  lu.assertTrue(elapsed < 3 * h.PATIENCE, "10,000 sleeping tasks took " .. elapsed .. " s")
  for i = 1, 10000, 997 do lu.assertEquals(futs[i]:result(), i) end
end

function TestMany:test_ten_thousand_sleeping_mapped_tasks()
  local t, counts = counted_sleeper(function(i) return i * 2 end)
  local xs = {}
  for i = 1, 10000 do xs[i] = i end
  local t0 = mf.now()
  local r = t:map(xs):result()
  local elapsed = mf.now() - t0
  lu.assertEquals(r.n, 10000)
  lu.assertEquals(r[10000], 20000)
  lu.assertTrue(elapsed >= 0.099, "too fast: " .. elapsed)
  lu.assertTrue(counts.peak > 1, "the sleeps did not overlap")
  lu.assertTrue(elapsed < 3 * h.PATIENCE, "10,000 sleeping tasks took " .. elapsed .. " s")
end

-- }======

h.run()
