package.path = "spec/?.lua;" .. package.path
-- luv's shared loop (README, "Embedding"): under stock lua5.4, when luv is
-- required before moonflow, moonflow runs on luv's loop, and luv handles
-- and moonflow runs share one uv.run().
--
-- luv must be loaded before helper.lua requires moonflow.  Under the
-- moonflow program moonflow is loaded first (and the main chunk is a run),
-- so luv is not loaded there and the tests are skipped; so they are when
-- luv is not installed.
local uv
if not package.loaded.moonflow then
  local ok, mod = pcall(require, "luv")
  if ok then uv = mod end
end
local h = require "helper"
local mf, lu = h.mf, h.lu

local function need_luv()
  lu.skipIf(h.in_program, "under the moonflow program moonflow is loaded before luv")
  lu.skipIf(uv == nil, "luv is not installed")
end

-- A one-shot luv timer calling fn.
local function after(ms, fn)
  local timer = uv.new_timer()
  timer:start(ms, 0, function()
    timer:close()
    fn()
  end)
  return timer
end

TestLuvLoop = {}

function TestLuvLoop:test_luv_timers_and_moonflow_sleeps_interleave_in_one_run()
  need_luv()
  local order = {}
  local function note(what) order[#order + 1] = what end
  -- luv's timers count from the loop's cached time, which may be stale by
  -- whatever ran since the loop last turned: refreshed first, they count
  -- from now, as moonflow's sleeps do.
  uv.update_time()
  after(40, function() note("luv 40") end)
  after(120, function() note("luv 120") end)
  local sleeper = mf.task({ name = "sleeper" }, function()
    mf.sleep(0.08)
    note("mf 80")
    mf.sleep(0.08)
    note("mf 160")
    return "slept"
  end)
  local fut = sleeper:submit()
  uv.run() -- returns only once both luv's timers and moonflow's runs are done
  lu.assertEquals(order, { "luv 40", "mf 80", "luv 120", "mf 160" })
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:result(), "slept")
end

function TestLuvLoop:test_task_submitted_before_run_runs_during_it()
  need_luv()
  local mode -- luv's loop mode when the task ran: "default" inside uv.run()
  local t = mf.task({ name = "double" }, function(x)
    mode = uv.loop_mode()
    return 2 * x
  end)
  local fut = t:submit(21)
  lu.assertFalse(fut:done())
  uv.run()
  lu.assertTrue(fut:done()) -- before anything waited on it
  lu.assertEquals(mode, "default")
  lu.assertEquals(fut:result(), 42)
end

function TestLuvLoop:test_flow_with_tasks_runs_inside_uv_run()
  need_luv()
  local inc = mf.task({ name = "inc" }, function(x) mf.sleep(0.001) return x + 1 end)
  local f = mf.flow({ name = "luv-flow" }, function(xs)
    return inc:map(xs):result()
  end)
  local fut = f:submit({ 1, 2, 3 })
  uv.run()
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:result(), { 2, 3, 4, n = 3 })
end

function TestLuvLoop:test_waiting_in_a_luv_callback_is_a_usage_error()
  need_luv()
  local slow = mf.task({ name = "slow" }, function() mf.sleep(0.05) return 1 end)
  local fut = slow:submit()
  local result_ok, result_err, wait_ok, wait_err, sleep_ok, sleep_err
  after(0, function()
    result_ok, result_err = pcall(fut.result, fut)
    wait_ok, wait_err = pcall(fut.wait, fut)
    sleep_ok, sleep_err = pcall(mf.sleep, 0.01)
  end)
  uv.run() -- never hangs: the waits raise at once
  lu.assertFalse(result_ok)
  lu.assertIsTable(result_err)
  lu.assertEquals(result_err.kind, "UsageError", tostring(result_err))
  lu.assertFalse(wait_ok)
  lu.assertEquals(type(wait_err) == "table" and wait_err.kind, "UsageError")
  lu.assertFalse(sleep_ok)
  lu.assertEquals(type(sleep_err) == "table" and sleep_err.kind, "UsageError")
  -- The run itself was not disturbed, and at top level the wait works.
  lu.assertEquals(fut:result(), 1)
end

function TestLuvLoop:test_waiting_at_top_level_before_run_works()
  need_luv()
  local t = mf.task({ name = "inc" }, function(x) mf.sleep(0.01) return x + 1 end)
  lu.assertEquals(t:submit(1):result(), 2)
  lu.assertEquals(t(2), 3)
  local done, not_done = mf.wait({ t:submit(3), t:submit(4) })
  lu.assertEquals(#done, 2)
  lu.assertEquals(#not_done, 0)
  -- The loop is luv's: a luv timer fires while moonflow waits on it.
  local fired = false
  after(0, function() fired = true end)
  lu.assertEquals(t:submit(5):result(), 6)
  lu.assertTrue(fired)
  uv.run() -- nothing left: returns at once
end

h.run()
