-- Flows (api.md, "Flows"): definition, calling, subflows, submit, run,
-- structured concurrency, cancellation on error, returned futures, and the
-- rules of the final state (own error, returned futures, unhandled failures).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

-- A task that raises err (after an optional sleep).
local function failing(err, delay, name)
  return mf.task({ name = name or "bad" }, function()
    if delay then mf.sleep(delay) end
    error(err, 0)
  end)
end

local function noop_task(name)
  return mf.task({ name = name or "ok" }, function(...) return ... end)
end

-- {====== Definition and calling ======

TestFlowDefinition = {}

function TestFlowDefinition:test_flow_of_function_is_callable()
  local f = mf.flow(function(a, b) return a + b, a * b end)
  local s, p = f(3, 4)
  lu.assertEquals({ s, p }, { 7, 12 })
end

function TestFlowDefinition:test_call_returns_all_values_including_nil()
  local f = mf.flow(function() return 1, nil, 3 end)
  lu.assertEquals(select("#", f()), 3)
  local a, b, c = f()
  lu.assertEquals({ a, b, c }, { 1, nil, 3 })
end

function TestFlowDefinition:test_opts_name()
  local f = mf.flow({ name = "etl" }, function() return mf.context().name end)
  lu.assertEquals(f.name, "etl")
  local fut = f:submit()
  local run_name = fut:result()
  lu.assertEquals(run_name, fut.name)
  lu.assertStrMatches(fut.name, "etl.*")
end

function TestFlowDefinition:test_unknown_option_is_usage_error()
  local err = h.raises_kind("UsageError", mf.flow, { nmae = "x" }, function() end)
  lu.assertStrContains(err.message, "nmae")
end

function TestFlowDefinition:test_wrong_name_type_is_usage_error()
  local err = h.raises_kind("UsageError", mf.flow, { name = 42 }, function() end)
  lu.assertStrContains(err.message, "name")
end

function TestFlowDefinition:test_call_raises_if_failed()
  local f = mf.flow(function() error("boom", 0) end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertEquals(err, "boom")
end

function TestFlowDefinition:test_call_raises_own_error_table_unchanged()
  local e = { code = 7 }
  local f = mf.flow(function() error(e) end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFlowDefinition:test_flow_inside_task_is_subflow()
  local sub = mf.flow({ name = "sub" }, function(x)
    mf.sleep(0.01)
    return x * 2, mf.context().flow_run.name
  end)
  local t = mf.task(function(x) return sub(x) end)
  local fut = t:submit(21)
  local v, fname = fut:result()
  lu.assertEquals(v, 42)
  lu.assertStrMatches(fname, "sub.*")
end

-- }======

-- {====== Subflows, submit, run ======

TestSubflows = {}

function TestSubflows:test_subflow_parks_caller_without_blocking_loop()
  local order = {}
  local mark = mf.task(function() order[#order + 1] = "task" end)
  local sub = mf.flow(function()
    mf.sleep(0.03)
    order[#order + 1] = "sub"
    return "s"
  end)
  local outer = mf.flow(function()
    local fut = mark:submit()
    local r = sub()
    order[#order + 1] = "after"
    fut:result()
    return r
  end)
  lu.assertEquals(outer(), "s")
  lu.assertEquals(order, { "task", "sub", "after" })
end

function TestSubflows:test_subflow_error_raises_in_caller()
  local e = { "sub failed" }
  local sub = mf.flow(function() error(e) end)
  local outer = mf.flow(function()
    local ok, err = pcall(sub)
    return ok, err
  end)
  local ok, err = outer()
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestSubflows:test_submit_returns_future()
  local f = mf.flow({ name = "sf" }, function(x) return x + 1 end)
  local fut = f:submit(1)
  lu.assertIsString(fut.id)
  lu.assertIsString(fut.name)
  lu.assertEquals(fut:result(), 2)
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:state().type, "COMPLETED")
end

-- A flow sleeping 0.1 s that counts the flows asleep at once: parallel
-- means both are asleep before either wakes.
local function counted_sleeping_flow()
  local counts = { asleep = 0, peak = 0 }
  local f = mf.flow(function(v)
    counts.asleep = counts.asleep + 1
    counts.peak = math.max(counts.peak, counts.asleep)
    mf.sleep(0.1)
    counts.asleep = counts.asleep - 1
    return v
  end)
  return f, counts
end

function TestSubflows:test_submitted_flows_run_in_parallel_top_level()
  local f, counts = counted_sleeping_flow()
  local t0 = mf.now()
  local a, b = f:submit(1), f:submit(2)
  lu.assertEquals({ a:result(), b:result() }, { 1, 2 })
  local elapsed = mf.now() - t0
  lu.assertTrue(elapsed >= 0.09, "too fast: " .. elapsed)
  lu.assertEquals(counts.peak, 2, "not parallel")
end

function TestSubflows:test_submitted_subflows_run_in_parallel_inside_flow()
  local sub, counts = counted_sleeping_flow()
  local outer = mf.flow(function()
    local t0 = mf.now()
    local a, b = sub:submit("a"), sub:submit("b")
    local r = a:result() .. b:result()
    return r, mf.now() - t0
  end)
  local r, elapsed = outer()
  lu.assertEquals(r, "ab")
  lu.assertTrue(elapsed >= 0.09, "too fast: " .. elapsed)
  lu.assertEquals(counts.peak, 2, "not parallel")
end

function TestSubflows:test_run_returns_completed_state()
  local f = mf.flow(function() return 5 end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(st.name, "Completed")
  lu.assertTrue(st:is_completed())
  lu.assertTrue(st:is_final())
  lu.assertEquals(st:result(), 5)
end

function TestSubflows:test_run_passes_arguments()
  local f = mf.flow(function(a, b) return a .. b end)
  lu.assertEquals(f:run("x", "y"):result(), "xy")
end

function TestSubflows:test_run_never_raises()
  local f = mf.flow(function() error("nope", 0) end)
  local ok, st = pcall(f.run, f)
  lu.assertTrue(ok, "f:run raised: " .. tostring(st))
  lu.assertEquals(st.type, "FAILED")
  lu.assertTrue(st:is_failed())
  lu.assertTrue(st:is_final())
end

function TestSubflows:test_run_inside_flow_never_raises()
  local sub = mf.flow(function() error("inner", 0) end)
  local outer = mf.flow(function()
    local st = sub:run()
    return st.type
  end)
  lu.assertEquals(outer(), "FAILED")
end

-- }======

-- {====== Structured concurrency ======

TestStructured = {}

function TestStructured:test_flow_waits_for_task_it_did_not_wait_for()
  local finished = false
  local child
  local slow = mf.task(function() mf.sleep(0.05) finished = true end)
  local f = mf.flow(function() child = slow:submit() return "early" end)
  lu.assertEquals(f(), "early")
  lu.assertTrue(finished)
  lu.assertTrue(child:done())
  lu.assertEquals(child:state().type, "COMPLETED")
end

function TestStructured:test_flow_waits_for_runs_started_by_its_tasks()
  local finished = false
  local grandchild
  local leaf = mf.task(function() mf.sleep(0.05) finished = true end)
  local spawner = mf.task(function() grandchild = leaf:submit() return "spawned" end)
  local f = mf.flow(function() return spawner:submit():result() end)
  lu.assertEquals(f(), "spawned")
  lu.assertTrue(finished, "grandchild not finished when the flow returned")
  lu.assertTrue(grandchild:done())
end

function TestStructured:test_flow_waits_at_any_depth()
  local finished = false
  local leaf = mf.task(function() mf.sleep(0.03) finished = true end)
  local mid2 = mf.task(function() leaf:submit() end)
  local mid1 = mf.task(function() mid2:submit() end)
  local f = mf.flow(function() mid1:submit() end)
  f()
  lu.assertTrue(finished)
end

function TestStructured:test_submitted_flow_future_done_only_after_children()
  local finished = false
  local slow = mf.task(function() mf.sleep(0.05) finished = true end)
  local f = mf.flow(function() slow:submit() end)
  local fut = f:submit()
  fut:wait()
  lu.assertTrue(finished)
  lu.assertEquals(fut:state().type, "COMPLETED")
end

function TestStructured:test_flow_waits_for_subflow_it_submitted()
  local finished = false
  local sub = mf.flow(function() mf.sleep(0.04) finished = true end)
  local f = mf.flow(function() sub:submit() end)
  f()
  lu.assertTrue(finished)
end

-- The children below sleep h.LONG: awaited instead of cancelled, the flow
-- would not end before PATIENCE, and they would end COMPLETED.
function TestStructured:test_error_cancels_running_children_first()
  local child, grandchild, done_child
  local long = mf.task(function() mf.sleep(h.LONG) end)
  local spawner = mf.task(function() grandchild = long:submit() mf.sleep(h.LONG) end)
  local quick = mf.task(function() return 1 end)
  local f = mf.flow(function()
    done_child = quick:submit()
    done_child:wait()
    child = spawner:submit()
    mf.sleep(0.01)
    error("stop", 0)
  end)
  local t0 = mf.now()
  local st = f:run()
  local elapsed = mf.now() - t0
  lu.assertEquals(st.type, "FAILED")
  lu.assertTrue(elapsed < h.PATIENCE, "children were awaited, not cancelled: " .. elapsed)
  lu.assertTrue(child:done())
  lu.assertEquals(child:state().type, "CANCELLED")
  lu.assertTrue(grandchild:done())
  lu.assertEquals(grandchild:state().type, "CANCELLED")
  lu.assertEquals(done_child:state().type, "COMPLETED")
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertEquals(err, "stop")
end

function TestStructured:test_error_cancels_pending_and_submitted_subflow()
  local sub_fut, waiting
  local sub = mf.flow(function() mf.sleep(h.LONG) end)
  local slow = mf.task(function() mf.sleep(h.LONG) return 1 end)
  local t = noop_task()
  local f = mf.flow(function()
    sub_fut = sub:submit()
    waiting = t:submit(slow:submit())   -- waits on its input
    mf.sleep(0)
    error("stop", 0)
  end)
  local t0 = mf.now()
  lu.assertEquals(f:run().type, "FAILED")
  lu.assertTrue(mf.now() - t0 < h.PATIENCE, "children were awaited, not cancelled")
  lu.assertEquals(sub_fut:state().type, "CANCELLED")
  lu.assertEquals(waiting:state().type, "CANCELLED")
end

-- }======

-- {====== Returned futures ======

TestReturnedFutures = {}

function TestReturnedFutures:test_returned_future_is_replaced_by_result()
  local t = mf.task(function(x) mf.sleep(0.01) return x * 3 end)
  local f = mf.flow(function() return t:submit(2) end)
  lu.assertEquals(f(), 6)
end

function TestReturnedFutures:test_futures_in_several_return_values()
  local t = mf.task(function(x) return x end)
  local f = mf.flow(function() return t:submit("a"), 1, t:submit("b") end)
  local a, one, b = f()
  lu.assertEquals({ a, one, b }, { "a", 1, "b" })
end

function TestReturnedFutures:test_futures_inside_returned_table_are_replaced()
  local t = mf.task(function(x) mf.sleep(0.01) return x end)
  local f = mf.flow(function()
    return { first = t:submit(1), nested = { t:submit(2), { deep = t:submit(3) } }, plain = "p" }
  end)
  local r = f()
  lu.assertEquals(r, { first = 1, nested = { 2, { deep = 3 } }, plain = "p" })
end

function TestReturnedFutures:test_returned_future_list_is_replaced_by_results()
  local t = mf.task(function(x) return x * x end)
  local f = mf.flow(function() return t:map({ 1, 2, 3 }) end)
  local r = f()
  lu.assertEquals(type(r), "table")
  lu.assertEquals(#r, 3)
  lu.assertEquals({ r[1], r[2], r[3] }, { 1, 4, 9 })
end

function TestReturnedFutures:test_state_result_has_resolved_values()
  local t = mf.task(function(x) return x end)
  local f = mf.flow(function() return { v = t:submit(9) } end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(st:result(), { v = 9 })
end

function TestReturnedFutures:test_submitted_flow_result_is_resolved()
  local t = mf.task(function(x) return x + 1 end)
  local f = mf.flow(function() return t:submit(1) end)
  lu.assertEquals(f:submit():result(), 2)
end

-- }======

-- {====== Final state ======

TestFinalState = {}

-- Rule 1

function TestFinalState:test_rule1_own_error_fails_flow()
  local e = { reason = "own" }
  local f = mf.flow(function() error(e) end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFinalState:test_rule1_own_error_wins_over_unhandled_failure()
  local bad = failing("task error")
  local f = mf.flow(function()
    mf.wait({ bad:submit() })
    error("own error", 0)
  end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertEquals(err, "own error")
end

-- Rule 2

function TestFinalState:test_rule2_returned_cancelled_future()
  local slow = mf.task(function() mf.sleep(0.1) return 1 end)
  local f = mf.flow(function()
    local fut = slow:submit()
    mf.sleep(0)
    fut:cancel()
    return fut
  end)
  local st = f:run()
  lu.assertEquals(st.type, "CANCELLED")
  lu.assertEquals(st.message, "1/1 states cancelled.")
  local ok = pcall(f)
  lu.assertFalse(ok, "f() of a cancelled flow returned")
end

function TestFinalState:test_rule2_cancelled_count_among_returned()
  local slow = mf.task(function() mf.sleep(0.1) return 1 end)
  local quick = noop_task()
  local f = mf.flow(function()
    local a, b, c = quick:submit(1), slow:submit(), quick:submit(3)
    b:cancel()
    return { a, b, c }
  end)
  local st = f:run()
  lu.assertEquals(st.type, "CANCELLED")
  lu.assertEquals(st.message, "1/3 states cancelled.")
end

function TestFinalState:test_rule2_returned_failed_future()
  local bad = failing("x")
  local quick = noop_task()
  local f = mf.flow(function()
    return quick:submit(1), bad:submit(), bad:submit()
  end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.message, "2/3 states failed.")
  lu.assertFalse(pcall(f))
end

function TestFinalState:test_rule2_returned_failed_future_in_table()
  local bad = failing("x")
  local quick = noop_task()
  local f = mf.flow(function()
    return { ok = quick:submit(1), bad = bad:submit() }
  end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.message, "1/2 states failed.")
end

function TestFinalState:test_rule2_returned_future_list_with_failure()
  local t = mf.task(function(x)
    if x == 2 then error("two", 0) end
    return x
  end)
  local f = mf.flow(function() return t:map({ 1, 2, 3, 4 }) end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.message, "1/4 states failed.")
end

function TestFinalState:test_rule2_returned_not_ready_counts_as_failed()
  local bad = failing("up")
  local down = noop_task("down")
  local f = mf.flow(function()
    return down:submit(bad:submit())
  end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.message, "1/1 states failed.")
end

function TestFinalState:test_rule2_cancelled_wins_over_failed()
  local slow = mf.task(function() mf.sleep(0.1) end)
  local bad = failing("x")
  local f = mf.flow(function()
    local a, b = bad:submit(), slow:submit()
    b:cancel()
    return a, b
  end)
  local st = f:run()
  lu.assertEquals(st.type, "CANCELLED")
  lu.assertEquals(st.message, "1/2 states cancelled.")
end

-- Rule 3

function TestFinalState:test_rule3_unhandled_failure_fails_flow()
  local e = { "task failed" }
  local bad = failing(e)
  local f = mf.flow(function() bad:submit() return "done" end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  local ok, err = pcall(f)
  lu.assertFalse(ok, "a flow with an unhandled failure returned")
  lu.assertTrue(rawequal(err, e), "f() did not raise the run's error unchanged")
end

function TestFinalState:test_rule3_unhandled_string_error_raised_unchanged()
  local bad = failing("plain string error")
  local f = mf.flow(function() bad:submit() end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertEquals(err, "plain string error")
end

function TestFinalState:test_rule3_failure_after_flow_returned()
  local e = { "late" }
  local bad = failing(e, 0.02)
  local f = mf.flow(function() bad:submit() return 1 end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFinalState:test_rule3_failure_of_grandchild()
  local e = { "deep" }
  local bad = failing(e)
  local spawner = mf.task(function() bad:submit() return "ok" end)
  local f = mf.flow(function() return spawner:submit():result() end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFinalState:test_rule3_message_counts_and_names_first()
  local first_err, second_err = { "first" }, { "second" }
  local bad1 = failing(first_err, nil, "bad_one")
  local bad2 = failing(second_err, 0.02, "bad_two")
  local fut1
  local f = mf.flow(function()
    fut1 = bad1:submit()
    bad2:submit()
  end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertIsString(st.message)
  lu.assertStrContains(st.message, "2")
  lu.assertStrContains(st.message, fut1.name)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, first_err))
end

function TestFinalState:test_rule3_wait_alone_does_not_handle()
  local bad = failing("x")
  local fut
  local f = mf.flow(function()
    fut = bad:submit()
    fut:wait()
    mf.wait({ fut })
  end)
  lu.assertEquals(f:run().type, "FAILED")
  lu.assertTrue(fut:done())
end

function TestFinalState:test_rule3_state_before_final_does_not_handle()
  local bad = failing("x", 0.02)
  local early_type
  local f = mf.flow(function()
    local fut = bad:submit()
    early_type = fut:state().type
  end)
  lu.assertEquals(f:run().type, "FAILED")
  lu.assertNotEquals(early_type, "FAILED")
end

function TestFinalState:test_rule3_unhandled_not_ready_fails_flow()
  local e = { "up" }
  local bad = failing(e)
  local down = noop_task("down")
  local f = mf.flow(function() down:submit(bad:submit()) end)
  lu.assertEquals(f:run().type, "FAILED")
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFinalState:test_rule3_unhandled_not_ready_alone_fails_flow()
  local bad = failing("up")
  local down = noop_task("down")
  local b
  local f = mf.flow(function()
    local a = bad:submit()
    a:wait()
    a:state()                -- the upstream failure is handled
    b = down:submit(a)       -- but its NotReady downstream is not
  end)
  lu.assertEquals(f:run().type, "FAILED")
  lu.assertEquals(b:state().name, "NotReady")
  local err = h.raises_kind("UpstreamFailed", f)
  lu.assertIsString(err.message)
end

-- Handled failures: rule 4, COMPLETED.

function TestFinalState:test_handled_by_result_after_final()
  local bad = failing("x")
  local f = mf.flow(function()
    local fut = bad:submit()
    fut:wait()
    return fut:result(nil, false)
  end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(f(), "x")
end

function TestFinalState:test_handled_by_raising_result()
  local e = { "x" }
  local bad = failing(e, 0.01)
  local f = mf.flow(function()
    local fut = bad:submit()
    local ok, err = pcall(fut.result, fut)
    return ok, rawequal(err, e)
  end)
  lu.assertEquals(f:run().type, "COMPLETED")
  local ok, same = f()
  lu.assertEquals({ ok, same }, { false, true })
end

function TestFinalState:test_handled_by_state_after_final()
  local bad = failing("x")
  local f = mf.flow(function()
    local fut = bad:submit()
    fut:wait()
    return fut:state().type
  end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(f(), "FAILED")
end

function TestFinalState:test_handled_by_done_callback()
  local called, fut, arg = false, nil, nil
  local bad = failing("x", 0.01)
  local f = mf.flow(function()
    fut = bad:submit()
    fut:add_done_callback(function(a) called, arg = true, a end)
  end)
  local st = f:run()
  lu.assertTrue(called, "done callback had not run when the flow ended")
  lu.assertTrue(rawequal(arg, fut), "done callback got " .. tostring(arg))
  lu.assertEquals(st.type, "COMPLETED")
end

function TestFinalState:test_handled_by_done_callback_added_after_final()
  local called = false
  local bad = failing("x")
  local f = mf.flow(function()
    local fut = bad:submit()
    fut:wait()
    fut:add_done_callback(function() called = true end)
  end)
  lu.assertEquals(f:run().type, "COMPLETED")
  lu.assertTrue(called)
end

function TestFinalState:test_handled_by_allow_failure()
  local e = { "upstream" }
  local bad = failing(e)
  local got
  local down = mf.task(function(v) got = v return "down ran" end)
  local f = mf.flow(function()
    return down:submit(mf.allow_failure(bad:submit()))
  end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertTrue(rawequal(got, e))
  lu.assertEquals(f(), "down ran")
end

function TestFinalState:test_handled_through_not_ready_downstream_state()
  local bad = failing("x")
  local down = noop_task("down")
  local f = mf.flow(function()
    local b = down:submit(bad:submit())
    b:wait()
    return b:state().name
  end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(f(), "NotReady")
end

function TestFinalState:test_handled_through_not_ready_downstream_result()
  local bad = failing("x")
  local down = noop_task("down")
  local down2 = noop_task("down2")
  local f = mf.flow(function()
    local c = down2:submit(down:submit(bad:submit()))
    local ok, err = pcall(c.result, c)
    return ok, type(err) == "table" and err.kind
  end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  local ok, kind = f()
  lu.assertEquals({ ok, kind }, { false, "UpstreamFailed" })
end

function TestFinalState:test_only_handled_failures_complete()
  local bad = failing("x")
  local bad2 = failing("y", nil, "bad2")
  local f = mf.flow(function()
    local a = bad:submit()
    a:wait()
    a:state()
    bad2:submit()
  end)
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertEquals(err, "y")
end

-- Rule 4

function TestFinalState:test_rule4_completed()
  local t = noop_task()
  local f = mf.flow(function() t:submit(1) return "fine" end)
  local st = f:run()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(st.name, "Completed")
  lu.assertEquals(st:result(), "fine")
end

-- Nested failures

function TestFinalState:test_task_error_in_nested_subflow_propagates()
  local e = { "deep task error" }
  local bad = failing(e)
  local inner = mf.flow({ name = "inner" }, function() return bad(1) end)
  local outer = mf.flow({ name = "outer" }, function() return inner() end)
  local ok, err = pcall(outer)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
  local st = outer:run()
  lu.assertEquals(st.type, "FAILED")
end

function TestFinalState:test_unhandled_task_error_in_nested_subflow_propagates()
  local e = { "unhandled deep" }
  local bad = failing(e)
  local inner = mf.flow(function() bad:submit() return "inner done" end)
  local outer = mf.flow(function() return inner() end)
  local ok, err = pcall(outer)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFinalState:test_submitted_subflow_failure_unhandled_fails_outer()
  local e = { "sub" }
  local bad = failing(e)
  local inner = mf.flow(function() bad:submit() end)
  local outer = mf.flow(function() inner:submit() end)
  local ok, err = pcall(outer)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e))
end

function TestFinalState:test_subflow_failure_caught_in_outer_completes()
  local e = { "sub" }
  local bad = failing(e)
  local inner = mf.flow(function() return bad(1) end)
  local outer = mf.flow(function()
    local ok, err = pcall(inner)
    return ok, rawequal(err, e)
  end)
  local st = outer:run()
  lu.assertEquals(st.type, "COMPLETED")
  local ok, same = outer()
  lu.assertEquals({ ok, same }, { false, true })
end

-- }======

h.run()
