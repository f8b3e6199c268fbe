-- Futures (api.md, "Futures"): wait, result, state, history, done, cancel,
-- add_done_callback, id and name; waiting never blocks the loop (and is a
-- UsageError where nothing could resume it); FutureList; mf.wait,
-- mf.as_completed, mf.result; negative timeouts.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

-- sleep_then(seconds, ...) sleeps, then returns the other arguments.
local sleep_then = mf.task({ name = "sleep_then" }, function(s, ...)
  mf.sleep(s)
  return ...
end)

-- fail(err, seconds?) sleeps (if asked), then raises err as it is.
local fail = mf.task({ name = "fail" }, function(err, s)
  if s then mf.sleep(s) end
  error(err, 0)
end)

local function elapsed_since(t0) return mf.now() - t0 end

-- held(...) submits a run that returns its arguments once the gate it
-- returns is opened (it gives up after h.PATIENCE): a run that is surely
-- still going whenever the test looks, however slow the machine.
local holder = mf.task({ name = "held" }, function(gate, ...)
  gate:wait()
  return ...
end)
local function held(...)
  local gate = h.gate()
  return holder:submit(gate, ...), gate
end

local function names(states)
  local out = {}
  for i, st in ipairs(states) do out[i] = st.name end
  return out
end

-- Cancels what a test left running, so nothing outlives it.
local function cancel_all(...)
  for _, fut in ipairs({ ... }) do
    fut:cancel()
    fut:state()
  end
end

-- {====== fut:wait ======

TestFutureWait = {}

function TestFutureWait:test_returns_true_when_done()
  local fut = sleep_then:submit(0.01, "x")
  lu.assertIs(fut:wait(), true)
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:state().type, "COMPLETED")
end

function TestFutureWait:test_returns_true_for_a_failed_run()
  local fut = fail:submit("bad")
  lu.assertIs(fut:wait(), true)
  lu.assertEquals(fut:state().type, "FAILED")
end

function TestFutureWait:test_returns_false_on_timeout()
  local fut, gate = held("late")
  local t0 = mf.now()
  lu.assertIs(fut:wait(0.03), false)
  local took = elapsed_since(t0)
  lu.assertTrue(took >= 0.025, "returned after " .. took)
  lu.assertTrue(took < h.PATIENCE, "returned after " .. took)
  lu.assertFalse(fut:done())
  -- The run went on: a later wait sees it finish.
  gate:open()
  lu.assertIs(fut:wait(), true)
  lu.assertEquals(fut:result(), "late")
end

function TestFutureWait:test_timeout_long_enough_returns_true()
  local fut = sleep_then:submit(0.01, 1)
  lu.assertIs(fut:wait(h.PATIENCE), true)
end

function TestFutureWait:test_already_final_returns_true_at_once()
  -- At once: without letting a run that is ready take a step.
  local fut = sleep_then:submit(0, 1)
  fut:wait()
  local stepped = false
  local other = mf.task(function() stepped = true end):submit()
  lu.assertIs(fut:wait(), true)
  lu.assertIs(fut:wait(0), true)
  lu.assertFalse(stepped, "the wait on a final run let the loop turn")
  other:wait()
end

-- }======

-- {====== fut:result ======

TestFutureResult = {}

function TestFutureResult:test_returns_all_the_values()
  local fut = sleep_then:submit(0.01, 1, nil, "three", nil)
  local n = select("#", fut:result())
  lu.assertEquals(n, 4)
  local a, b, c, d = fut:result()
  lu.assertEquals({ a, b, c, d }, { 1, nil, "three", nil })
end

function TestFutureResult:test_no_values()
  local fut = mf.task(function() end):submit()
  lu.assertEquals(select("#", fut:result()), 0)
end

function TestFutureResult:test_waits_first()
  local t0 = mf.now()
  local fut = sleep_then:submit(0.05, "v")
  lu.assertEquals(fut:result(), "v")
  lu.assertTrue(elapsed_since(t0) >= 0.045)
  lu.assertTrue(fut:done())
end

function TestFutureResult:test_reraises_the_error_table_unchanged()
  local e = { code = 7 }
  local fut = fail:submit(e)
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  h.assert_same(err, e)
  -- Again, and with raise_on_failure == true said explicitly.
  ok, err = pcall(fut.result, fut, nil, true)
  lu.assertFalse(ok)
  h.assert_same(err, e)
end

function TestFutureResult:test_reraises_the_error_string_unchanged()
  local fut = fail:submit("plain message", 0.01)
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertEquals(err, "plain message")
end

function TestFutureResult:test_raise_on_failure_false_returns_the_error_value()
  local e = { code = 8 }
  local fut = fail:submit(e, 0.01)
  local ok, got = pcall(fut.result, fut, nil, false)
  lu.assertTrue(ok, tostring(got))
  h.assert_same(got, e)
  local fut2 = fail:submit("text")
  lu.assertEquals(fut2:result(nil, false), "text")
end

function TestFutureResult:test_raise_on_failure_false_on_success_returns_values()
  local fut = sleep_then:submit(0, 5, 6)
  local a, b = fut:result(nil, false)
  lu.assertEquals({ a, b }, { 5, 6 })
end

function TestFutureResult:test_timeout_raises_Timeout()
  local fut, gate = held("late")
  local t0 = mf.now()
  h.raises_kind("Timeout", fut.result, fut, 0.03)
  local took = elapsed_since(t0)
  lu.assertTrue(took >= 0.025 and took < h.PATIENCE, "raised after " .. took)
  lu.assertFalse(fut:done())
  -- The run is not affected by the caller's timeout.
  gate:open()
  lu.assertEquals(fut:result(), "late")
end

function TestFutureResult:test_timeout_not_reached_returns_values()
  local fut = sleep_then:submit(0.01, "in time", 2)
  local a, b = fut:result(h.PATIENCE)
  lu.assertEquals({ a, b }, { "in time", 2 })
end

function TestFutureResult:test_timeout_raises_even_with_raise_on_failure_false()
  local fut = held("late")
  h.raises_kind("Timeout", fut.result, fut, 0.02, false)
  cancel_all(fut)
end

-- }======

-- {====== fut:state, fut:history, fut:done ======

TestFutureState = {}

function TestFutureState:test_never_blocks()
  -- Had state() waited, the state would be final.
  local fut = held(1)
  local st = fut:state()
  lu.assertFalse(st:is_final())
  lu.assertTrue(st.type == "PENDING" or st.type == "RUNNING" or st.type == "SCHEDULED",
    st.type)
  lu.assertFalse(fut:done())
  cancel_all(fut)
end

function TestFutureState:test_completed_state()
  local fut = sleep_then:submit(0, 1)
  fut:wait()
  local st = fut:state()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(st.name, "Completed")
  lu.assertTrue(st:is_completed())
  lu.assertFalse(st:is_failed())
  lu.assertTrue(st:is_final())
  lu.assertEquals(st.run_id, fut.id)
  lu.assertEquals(st.run_name, fut.name)
  lu.assertIsNumber(st.timestamp)
end

function TestFutureState:test_failed_state()
  local fut = fail:submit("nope")
  fut:wait()
  local st = fut:state()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.name, "Failed")
  lu.assertTrue(st:is_failed())
  lu.assertFalse(st:is_completed())
  lu.assertTrue(st:is_final())
end

function TestFutureState:test_state_follows_the_run()
  local fut = sleep_then:submit(0.02, 1)
  lu.assertFalse(fut:state():is_final())
  fut:wait()
  lu.assertTrue(fut:state():is_final())
end

TestFutureHistory = {}

function TestFutureHistory:test_every_state_in_order()
  local fut = sleep_then:submit(0.01, 1)
  fut:wait()
  local hist = fut:history()
  lu.assertEquals(names(hist), { "Pending", "Running", "Completed" })
  lu.assertEquals(hist[1].type, "PENDING")
  lu.assertEquals(hist[2].type, "RUNNING")
  lu.assertEquals(hist[3].type, "COMPLETED")
  for i = 2, #hist do
    lu.assertTrue(hist[i].timestamp >= hist[i - 1].timestamp)
  end
  lu.assertTrue(hist[3].timestamp - hist[2].timestamp >= 0.005)
  for _, st in ipairs(hist) do lu.assertEquals(st.run_id, fut.id) end
end

function TestFutureHistory:test_failed_run_history()
  local fut = fail:submit("x")
  fut:wait()
  fut:state()
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "Failed" })
end

function TestFutureHistory:test_history_so_far_while_running()
  local fut = sleep_then:submit(0.1, 1)
  local hist = fut:history()
  lu.assertTrue(#hist >= 1)
  lu.assertEquals(hist[1].name, "Pending")
  lu.assertFalse(hist[#hist]:is_final())
  cancel_all(fut)
end

function TestFutureHistory:test_last_entry_is_the_current_state()
  local fut = sleep_then:submit(0, 1)
  fut:wait()
  local hist, st = fut:history(), fut:state()
  lu.assertEquals(hist[#hist].type, st.type)
  lu.assertEquals(hist[#hist].name, st.name)
end

TestFutureDone = {}

function TestFutureDone:test_false_until_final_then_true()
  local fut = sleep_then:submit(0.02, 1)
  lu.assertIs(fut:done(), false)
  fut:wait()
  lu.assertIs(fut:done(), true)
end

function TestFutureDone:test_true_for_failed_and_cancelled()
  local f1 = fail:submit("x")
  f1:wait()
  lu.assertIs(f1:done(), true)
  f1:state()
  local f2 = sleep_then:submit(0.1)
  f2:cancel()
  lu.assertIs(f2:done(), true)
end

function TestFutureDone:test_matches_state_is_final()
  local futs = { sleep_then:submit(0.02), fail:submit("x"), sleep_then:submit(0.1) }
  futs[3]:cancel()
  for _ = 1, 2 do
    for _, fut in ipairs(futs) do
      lu.assertEquals(fut:done(), fut:state():is_final())
    end
    mf.wait(futs)
  end
end

-- }======

-- {====== fut:cancel ======

TestFutureCancel = {}

local function assert_cancelled(fut)
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertEquals(fut:state().name, "Cancelled")
  h.raises_kind("Cancelled", fut.result, fut)
end

function TestFutureCancel:test_pending_run()
  local ran = false
  local t = mf.task(function() ran = true end)
  local fut = t:submit()
  lu.assertIs(fut:cancel(), true)
  assert_cancelled(fut)
  mf.sleep(0.01)
  lu.assertFalse(ran)
end

function TestFutureCancel:test_sleeping_run()
  h.shared_memory("a task sets the test's variables")
  -- The run sleeps 1 s: the cancel ends before that (any machine cancels
  -- faster); then the test sleeps past it to see the body did not go on.
  local after = false
  local asleep_at
  local t = mf.task(function()
    asleep_at = mf.now()
    mf.sleep(1)
    after = true
  end)
  local fut = t:submit()
  h.eventually(function() return asleep_at end, "the run to sleep")
  lu.assertFalse(fut:done())
  lu.assertIs(fut:cancel(), true)
  assert_cancelled(fut)
  lu.assertTrue(mf.now() - asleep_at < 1, "the cancel waited for the sleep")
  mf.sleep(math.max(0, asleep_at + 1 - mf.now()) + 0.01)
  lu.assertFalse(after)
end

function TestFutureCancel:test_run_waiting_on_inputs()
  local started = false
  local up = sleep_then:submit(0.05, 1)
  local down = mf.task(function() started = true end):submit(up)
  lu.assertIs(down:cancel(), true)
  assert_cancelled(down)
  -- The upstream is not affected.
  lu.assertEquals(up:result(), 1)
  mf.sleep(0.01)
  lu.assertFalse(started)
end

function TestFutureCancel:test_running_run_parked_in_a_wait()
  h.shared_memory("a task holds a Future of the test")
  local slow, gate = held(1)
  local after = false
  local waiting = false
  local waiter = mf.task(function()
    waiting = true
    slow:result()
    after = true
  end):submit()
  h.eventually(function() return waiting end, "the run to wait")
  lu.assertEquals(waiter:state().type, "RUNNING")
  lu.assertIs(waiter:cancel(), true)
  assert_cancelled(waiter)
  gate:open()
  lu.assertEquals(slow:result(), 1)
  mf.sleep(0.01)
  lu.assertFalse(after)
end

function TestFutureCancel:test_false_when_already_final()
  local fut = sleep_then:submit(0, "v")
  fut:wait()
  lu.assertIs(fut:cancel(), false)
  lu.assertEquals(fut:state().type, "COMPLETED")
  lu.assertEquals(fut:result(), "v")
  local failed = fail:submit("x")
  failed:wait()
  lu.assertIs(failed:cancel(), false)
  lu.assertEquals(failed:state().type, "FAILED")
end

function TestFutureCancel:test_second_cancel_is_false()
  local fut = sleep_then:submit(0.1)
  lu.assertIs(fut:cancel(), true)
  lu.assertIs(fut:cancel(), false)
  lu.assertEquals(fut:state().type, "CANCELLED")
end

function TestFutureCancel:test_from_inside_another_run()
  h.shared_memory("a task holds a Future of the test")
  local victim = sleep_then:submit(0.1, 1)
  local canceller = mf.task(function()
    mf.sleep(0.01)
    return victim:cancel()
  end)
  lu.assertIs(canceller:submit():result(), true)
  assert_cancelled(victim)
end

-- }======

-- {====== fut:add_done_callback ======

TestDoneCallback = {}

function TestDoneCallback:test_called_once_when_final_with_the_future()
  local calls = {}
  local fut = sleep_then:submit(0.02, "v")
  fut:add_done_callback(function(f)
    calls[#calls + 1] = { f = f, done = f:done(), type = f:state().type }
  end)
  lu.assertEquals(#calls, 0)
  fut:wait()
  mf.sleep(0.01)
  lu.assertEquals(#calls, 1)
  lu.assertIs(calls[1].f, fut)
  lu.assertTrue(calls[1].done)
  lu.assertEquals(calls[1].type, "COMPLETED")
  mf.sleep(0.01)
  lu.assertEquals(#calls, 1)
end

function TestDoneCallback:test_at_once_when_already_final()
  local fut = sleep_then:submit(0, 1)
  fut:wait()
  local got
  fut:add_done_callback(function(f) got = f end)
  lu.assertIs(got, fut)
end

function TestDoneCallback:test_every_callback_runs()
  local seen = {}
  local fut = sleep_then:submit(0.01)
  for i = 1, 3 do fut:add_done_callback(function() seen[#seen + 1] = i end) end
  fut:wait()
  mf.sleep(0.01)
  table.sort(seen)
  lu.assertEquals(seen, { 1, 2, 3 })
end

function TestDoneCallback:test_called_for_failed_and_cancelled_runs()
  local got = {}
  local f1 = fail:submit("x", 0.01)
  f1:add_done_callback(function(f) got[#got + 1] = f:state().type end)
  local f2 = sleep_then:submit(0.1)
  f2:add_done_callback(function(f) got[#got + 1] = f:state().type end)
  f2:cancel()
  f1:wait()
  mf.sleep(0.01)
  table.sort(got)
  lu.assertEquals(got, { "CANCELLED", "FAILED" })
end

-- Waiting inside a plain callback: a UsageError that says why, never a hang.
-- `other` is held: had a wait in the callback waited, it would not raise.
local function try_wait_in_callback(fut, other)
  local outcome = {}
  fut:add_done_callback(function()
    local t0 = mf.now()
    outcome.wait_ok, outcome.wait_err = pcall(other.wait, other)
    outcome.result_ok, outcome.result_err = pcall(other.result, other)
    outcome.took = mf.now() - t0
    outcome.other_done = other:done()
  end)
  return outcome
end

local function assert_usage_in_callback(outcome)
  lu.assertNotNil(outcome.took, "the callback did not run")
  lu.assertFalse(outcome.other_done, "the callback waited for the other run")
  for _, what in ipairs({ "wait", "result" }) do
    lu.assertFalse(outcome[what .. "_ok"], what .. " did not raise")
    local err = outcome[what .. "_err"]
    lu.assertEquals(type(err), "table", tostring(err))
    lu.assertEquals(err.kind, "UsageError", tostring(err))
    lu.assertStrContains(err.message, "callback")
  end
  lu.assertTrue(outcome.took < h.PATIENCE)
end

function TestDoneCallback:test_waiting_in_a_callback_is_usage_error()
  local other = held()
  local fut = sleep_then:submit(0.01)
  local outcome = try_wait_in_callback(fut, other)
  fut:wait()
  mf.sleep(0.01)
  assert_usage_in_callback(outcome)
  lu.assertFalse(other:done())
  cancel_all(other)
end

function TestDoneCallback:test_waiting_in_a_callback_run_at_once_is_usage_error()
  local other = held()
  local fut = sleep_then:submit(0)
  fut:wait()
  local outcome = try_wait_in_callback(fut, other)
  assert_usage_in_callback(outcome)
  lu.assertFalse(other:done())
  cancel_all(other)
end

-- }======

-- {====== fut.id, fut.name ======

TestFutureIdName = {}

function TestFutureIdName:test_id_and_name_are_strings()
  local t = mf.task({ name = "named" }, function() end)
  local a, b = t:submit(), t:submit()
  lu.assertIsString(a.id)
  lu.assertIsString(a.name)
  lu.assertNotEquals(a.id, b.id)
  lu.assertStrMatches(a.name, "named%-%d+")
  lu.assertStrMatches(b.name, "named%-%d+")
  lu.assertNotEquals(a.name, b.name)
  mf.wait({ a, b })
  lu.assertEquals(a:state().run_id, a.id)
  lu.assertEquals(a:state().run_name, a.name)
end

-- }======

-- {====== Waiting never blocks the loop ======

TestWaitingNeverBlocks = {}

function TestWaitingNeverBlocks:test_a_wait_lets_other_runs_go_on()
  h.shared_memory("a task holds a Future of the test")
  -- slow finishes only after the ticker ran: the waiter waited meanwhile.
  local order = {}
  local slow, gate = held()
  local waiter = mf.task(function()
    slow:wait()
    order[#order + 1] = "waiter"
  end):submit()
  local ticker = mf.task(function()
    mf.sleep(0.01)
    order[#order + 1] = "ticker"
    gate:open()
  end):submit()
  waiter:wait()
  ticker:wait()
  lu.assertEquals(order, { "ticker", "waiter" })
end

function TestWaitingNeverBlocks:test_many_runs_wait_at_once()
  h.shared_memory("a task holds a Future of the test")
  -- Counted: all five are parked on slow before it finishes.
  local slow, gate = held(2)
  local waiting = 0
  local waiter = mf.task(function(i)
    waiting = waiting + 1
    return slow:result() * i
  end)
  local futs = {}
  for i = 1, 5 do futs[i] = waiter:submit(i) end
  h.eventually(function() return waiting == 5 end, "five runs waiting")
  lu.assertFalse(slow:done())
  for i = 1, 5 do lu.assertFalse(futs[i]:done()) end
  gate:open()
  for i = 1, 5 do lu.assertEquals(futs[i]:result(), 2 * i) end
end

function TestWaitingNeverBlocks:test_the_main_chunk_waits_while_runs_progress()
  h.shared_memory("a task sets the test's variables")
  -- slow finishes once the ticker ticked 5 times: only if the main
  -- chunk's wait let the ticker run.
  local ticks = 0
  local ticker = mf.task(function()
    for _ = 1, 5 do mf.sleep(0.005) ticks = ticks + 1 end
  end):submit()
  local slow = mf.task(function()
    h.eventually(function() return ticks == 5 end, "5 ticks")
  end):submit()
  slow:wait()
  lu.assertEquals(ticks, 5)
  lu.assertEquals(slow:state().type, "COMPLETED")
  ticker:wait()
end

function TestWaitingNeverBlocks:test_coroutine_created_inside_a_run_raises_usage_error()
  h.shared_memory("a task holds a Future of the test")
  local slow = held()
  local probe = mf.task(function()
    local out = {}
    local t0 = mf.now()
    for _, what in ipairs({ "wait", "result" }) do
      local co = coroutine.create(function() return slow[what](slow) end)
      local ok, err = coroutine.resume(co)
      -- The error ends the coroutine: it never yields to the run.
      out[what] = { ok = ok, err = err, status = coroutine.status(co) }
    end
    out.took = mf.now() - t0
    return out
  end)
  local out = probe:submit():result()
  for _, what in ipairs({ "wait", "result" }) do
    local r = out[what]
    lu.assertFalse(r.ok, what .. " did not raise")
    lu.assertEquals(type(r.err), "table", tostring(r.err))
    lu.assertEquals(r.err.kind, "UsageError", tostring(r.err))
    lu.assertStrContains(r.err.message, "coroutine")
    lu.assertEquals(r.status, "dead")
  end
  lu.assertTrue(out.took < h.PATIENCE)
  lu.assertFalse(slow:done(), "a wait in the coroutine waited")
  cancel_all(slow)
end

function TestWaitingNeverBlocks:test_coroutine_wrap_inside_a_run_raises_usage_error()
  h.shared_memory("a task holds a Future of the test")
  local slow = held()
  local probe = mf.task(function()
    local ok, err = pcall(coroutine.wrap(function() return slow:result() end))
    return ok, err
  end)
  local ok, err = probe:submit():result()
  lu.assertFalse(ok)
  lu.assertEquals(type(err), "table", tostring(err))
  lu.assertEquals(err.kind, "UsageError")
  cancel_all(slow)
end

function TestWaitingNeverBlocks:test_coroutine_in_the_main_chunk_of_the_program()
  if not h.in_program then return end   -- the main chunk is a run only there
  local slow = held()
  local co = coroutine.create(function() return slow:result() end)
  local ok, err = coroutine.resume(co)
  lu.assertFalse(ok)
  lu.assertEquals(type(err), "table", tostring(err))
  lu.assertEquals(err.kind, "UsageError")
  cancel_all(slow)
end

-- }======

-- {====== FutureList ======

TestFutureList = {}

local square = mf.task({ name = "square" }, function(x, s)
  if s then mf.sleep(s) end
  return x * x, "second"
end)

function TestFutureList:test_length_index_ipairs()
  local list = square:map({ 1, 2, 3 })
  lu.assertEquals(#list, 3)
  local seen = 0
  for i, fut in ipairs(list) do
    seen = seen + 1
    lu.assertIs(fut, list[i])
    lu.assertEquals(fut:result(), i * i)
  end
  lu.assertEquals(seen, 3)
  lu.assertIsNil(list[4])
end

function TestFutureList:test_wait()
  local list = square:map({ 1, 2 }, 0.01)
  lu.assertIs(list:wait(), true)
  for _, fut in ipairs(list) do lu.assertTrue(fut:done()) end
end

-- held_square: x * x, run 2 held until the gate opens.
local function held_square()
  local gate = h.gate()
  local t = mf.task(function(x)
    if x == 2 then gate:wait() end
    return x * x
  end)
  return t, gate
end

function TestFutureList:test_wait_timeout_returns_false()
  local t, gate = held_square()
  local list = t:map({ 1, 2 })
  lu.assertIs(list:wait(0.03), false)
  lu.assertTrue(list[1]:done())
  lu.assertFalse(list[2]:done())
  gate:open()
  lu.assertIs(list:wait(), true)
end

function TestFutureList:test_result_first_values_in_input_order_with_n()
  -- Finish order is the reverse of input order.
  local list = square:map({ 1, 2, 3 }, { 0.03, 0.02, 0.01 })
  lu.assertEquals(list:result(), { 1, 4, 9, n = 3 })
end

function TestFutureList:test_result_field_n_counts_nil_results()
  local maybe = mf.task(function(x) if x % 2 == 0 then return x end end)
  local r = maybe:map({ 1, 2, 3 }):result()
  lu.assertEquals(r.n, 3)
  lu.assertEquals(r[2], 2)
  lu.assertIsNil(r[1])
  lu.assertIsNil(r[3])
end

function TestFutureList:test_empty_list()
  local list = square:map({})
  lu.assertEquals(#list, 0)
  lu.assertIs(list:wait(), true)
  lu.assertEquals(list:result(), { n = 0 })
end

local maybe_fail = mf.task({ name = "maybe_fail" }, function(x, s)
  mf.sleep(s)
  if type(x) ~= "number" then error(x, 0) end
  return x
end)

function TestFutureList:test_fail_fast_while_earlier_runs_go_on()
  -- Run 1 is held: the failure of run 2 raises while it is still going.
  local e = { which = "second" }
  local gate = h.gate()
  local t = mf.task(function(x)
    if x == 1 then gate:wait() return x end
    mf.sleep(0.01)
    error(x, 0)
  end)
  local list = t:map({ 1, e })
  local ok, err = pcall(list.result, list)
  lu.assertFalse(ok)
  h.assert_same(err, e)
  lu.assertFalse(list[1]:done(), "the list waited for run 1")
  cancel_all(list[1])
end

function TestFutureList:test_fail_fast_raises_the_first_failure_to_finish()
  local first, later = { n = 1 }, { n = 2 }
  local list = maybe_fail:map({ 0, later, first }, { 0, 0.06, 0.01 })
  local ok, err = pcall(list.result, list)
  lu.assertFalse(ok)
  h.assert_same(err, first)
  list:wait()
  list[2]:state()
end

function TestFutureList:test_raise_on_failure_false_puts_the_error_at_its_index()
  local e = { bad = true }
  local list = maybe_fail:map({ 10, e, 30 }, { 0.03, 0, 0.01 })
  local ok, r = pcall(list.result, list, nil, false)
  lu.assertTrue(ok, tostring(r))
  lu.assertEquals(r.n, 3)
  lu.assertEquals(r[1], 10)
  h.assert_same(r[2], e)
  lu.assertEquals(r[3], 30)
  -- It waited for every run.
  for _, fut in ipairs(list) do lu.assertTrue(fut:done()) end
end

function TestFutureList:test_result_timeout_raises_Timeout()
  local t = held_square()
  local list = t:map({ 1, 2 })
  h.raises_kind("Timeout", list.result, list, 0.03)
  lu.assertFalse(list[2]:done())
  cancel_all(list[2])
end

-- }======

-- {====== mf.wait ======

TestMfWait = {}

function TestMfWait:test_done_and_not_done()
  local a, b = sleep_then:submit(0.01), sleep_then:submit(0.02)
  local done, not_done = mf.wait({ a, b })
  lu.assertEquals(#done, 2)
  lu.assertEquals(#not_done, 0)
  local set = {}
  for _, f in ipairs(done) do set[f] = true end
  lu.assertTrue(set[a] and set[b])
end

function TestMfWait:test_failed_runs_are_done()
  local a, b = sleep_then:submit(0), fail:submit("x")
  local done, not_done = mf.wait({ a, b })
  lu.assertEquals(#done, 2)
  lu.assertEquals(#not_done, 0)
  b:state()
end

function TestMfWait:test_duplicates_removed()
  local a, b = sleep_then:submit(0.01), sleep_then:submit(0)
  local done, not_done = mf.wait({ a, b, a, b, a })
  lu.assertEquals(#done, 2)
  lu.assertEquals(#not_done, 0)
  lu.assertNotIs(done[1], done[2])
end

-- Thousands of Futures, each three times in the list, in a shuffled order:
-- each is done once, where it first came (the set of runs seen probes
-- past collisions and wraps round its array).
function TestMfWait:test_duplicates_removed_among_thousands()
  local n = 5000
  local list = mf.task({ name = "id" }, function(x) return x end):map(h.range(n))
  local futures, input = {}, {}
  for i = 1, n do futures[i] = list[i] end
  for round = 1, 3 do
    for i = 1, n do
      local k = round == 2 and n + 1 - i or ((i * 7919) % n) + 1
      input[#input + 1] = futures[k]
    end
  end
  local done, not_done = mf.wait(input)
  lu.assertEquals(#not_done, 0)
  lu.assertEquals(#done, n)
  for i = 1, n do
    if done[i] ~= futures[((i * 7919) % n) + 1] then
      lu.fail(string.format("done[%d] is not the Future first seen there", i))
    end
  end
end

function TestMfWait:test_timeout_returns_never_raises()
  -- The timeout (0.5 s) leaves the fast run (0.01 s) time to finish even
  -- on a loop that starts it late.
  local fast, slow = sleep_then:submit(0.01), held()
  local t0 = mf.now()
  local ok, done, not_done = pcall(mf.wait, { fast, slow, slow }, 0.5)
  local took = elapsed_since(t0)
  lu.assertTrue(ok, tostring(done))
  lu.assertTrue(took >= 0.495 and took < h.PATIENCE, "returned after " .. took)
  lu.assertEquals(#done, 1)
  lu.assertIs(done[1], fast)
  lu.assertEquals(#not_done, 1)
  lu.assertIs(not_done[1], slow)
  cancel_all(slow)
end

function TestMfWait:test_empty()
  local done, not_done = mf.wait({})
  lu.assertEquals(done, {})
  lu.assertEquals(not_done, {})
end

-- }======

-- {====== mf.as_completed ======

TestAsCompleted = {}

local function collect(iter)
  local out = {}
  for fut in iter do out[#out + 1] = fut end
  return out
end

-- A run that returns value once the future get() gives is final: finish
-- orders made by construction, not by sleep lengths.
local after = mf.task({ name = "after" }, function(get, value)
  get():wait()
  return value
end)

function TestAsCompleted:test_already_final_first_then_finish_order()
  h.shared_memory("the order of sleeps 20 ms apart on different workers: no longer the timers of one loop")
  -- Submitted b, c, d; they finish c, d, b.
  local ready = sleep_then:submit(0, "ready")
  ready:wait()
  local c, d
  local b = after:submit(function() return d end, "b")
  c = sleep_then:submit(0.02, "c")
  d = after:submit(function() return c end, "d")
  local got = collect(mf.as_completed({ b, c, d, ready }))
  lu.assertEquals(#got, 4)
  lu.assertIs(got[1], ready)
  lu.assertIs(got[2], c)
  lu.assertIs(got[3], d)
  lu.assertIs(got[4], b)
end

function TestAsCompleted:test_each_future_once()
  local a, b = sleep_then:submit(0.01), sleep_then:submit(0.02)
  local got = collect(mf.as_completed({ a, b, a, b, b }))
  lu.assertEquals(#got, 2)
  lu.assertNotIs(got[1], got[2])
  for _, fut in ipairs(got) do lu.assertTrue(fut == a or fut == b) end
  if not h.copying then -- one loop's timers; on workers, two loops' timers
    lu.assertIs(got[1], a)
    lu.assertIs(got[2], b)
  end
end

function TestAsCompleted:test_yields_failed_runs_too()
  local bad = fail:submit("x", 0.01)
  -- (good starts once bad is final: the order is not left to two sleeps,
  -- which a busy machine or two workers' timers may swap)
  local good = sleep_then:with({ wait_for = { mf.allow_failure(bad) } }):submit(0)
  local got = collect(mf.as_completed({ good, bad }))
  lu.assertEquals(#got, 2)
  lu.assertIs(got[1], bad)
  lu.assertIs(got[2], good)
  bad:state()
end

function TestAsCompleted:test_a_future_list()
  h.shared_memory("the order of sleeps 10 ms apart on different workers: no longer the timers of one loop")
  -- They finish 2, 3, 1: run 3 waits for run 2, run 1 for run 3.
  local list
  local t = mf.task(function(x)
    if x == 3 then list[2]:wait() elseif x == 1 then list[3]:wait() end
    return x * x
  end)
  list = t:map({ 1, 2, 3 })
  local got = collect(mf.as_completed(list))
  lu.assertEquals(#got, 3)
  lu.assertIs(got[1], list[2])
  lu.assertIs(got[2], list[3])
  lu.assertIs(got[3], list[1])
end

-- Runs that end one at a time, each after the caller took the one before:
-- every iteration waits anew, with the rest still going.
function TestAsCompleted:test_runs_ending_one_by_one_come_in_that_order()
  h.shared_memory("promises settled from the test")
  local n = 300
  local promises, futures = {}, {}
  for i = 1, n do
    local p, resolve = mf.promise("p" .. i)
    promises[i] = resolve
    futures[i] = p
  end
  local order = {}
  for i = 1, n do order[i] = i end
  local seed = 12345
  for i = n, 2, -1 do -- a fixed shuffle (Fisher-Yates on a fixed LCG)
    seed = (seed * 1103515245 + 12345) % 2147483648
    local j = seed % i + 1
    order[i], order[j] = order[j], order[i]
  end
  local iter = mf.as_completed(futures)
  local mover = mf.task({ name = "mover" }, function()
    for k = 1, n do
      mf.sleep(0) -- the caller is back to waiting before the next one ends
      promises[order[k]](k)
    end
  end):submit()
  for k = 1, n do
    local fut = iter()
    lu.assertIs(fut, futures[order[k]], "iteration " .. k)
    lu.assertEquals(fut:result(), k)
  end
  lu.assertNil(iter())
  mover:result()
end

function TestAsCompleted:test_timeout_raises_with_the_count()
  -- The fast run is over before the call (a loaded machine may start it
  -- late); the two held ones never finish.
  local fast = sleep_then:submit(0.01)
  fast:wait()
  local s1, s2 = held(), held()
  local got = {}
  local t0 = mf.now()
  local ok, err = pcall(function()
    for fut in mf.as_completed({ s1, fast, s2 }, 0.5) do got[#got + 1] = fut end
  end)
  local took = elapsed_since(t0)
  lu.assertFalse(ok)
  lu.assertEquals(type(err), "table", tostring(err))
  lu.assertEquals(err.kind, "Timeout")
  lu.assertEquals(err.message, "2 (of 3) futures unfinished")
  lu.assertEquals(tostring(err), "Timeout: 2 (of 3) futures unfinished")
  lu.assertEquals(#got, 1)
  lu.assertIs(got[1], fast)
  lu.assertTrue(took >= 0.495 and took < h.PATIENCE, "raised after " .. took)
  cancel_all(s1, s2)
end

function TestAsCompleted:test_timeout_counts_from_the_call()
  -- The first iteration comes after the timeout (0.5 s) passed: it raises
  -- at once.  Counted from the first iteration, it would wait 0.5 s more,
  -- and a run sleeping 0.4 s, submitted just before it, would be done.
  -- (0.4 s: a loop waking late by less than that cannot finish it first.)
  local slow = held()
  local t0 = mf.now()
  local iter = mf.as_completed({ slow }, 0.5)
  mf.sleep(0.55)
  local witness = sleep_then:submit(0.4)
  local ok, err = pcall(iter)
  local took = elapsed_since(t0)
  lu.assertFalse(ok)
  lu.assertEquals(err.kind, "Timeout")
  lu.assertEquals(err.message, "1 (of 1) futures unfinished")
  lu.assertFalse(witness:done(), "raised " .. took .. " s after the call: counted from the iteration")
  cancel_all(slow, witness)
end

function TestAsCompleted:test_in_time_no_error()
  local a = sleep_then:submit(0.01)
  local got = collect(mf.as_completed({ a }, h.PATIENCE))
  lu.assertEquals(#got, 1)
end

-- }======

-- {====== Negative timeouts, mf.result ======

TestNegativeTimeout = {}

function TestNegativeTimeout:test_every_wait_raises_usage_error()
  -- Raised by the call: had any of them waited, the runs would be done.
  local fut = sleep_then:submit(0.01)
  local list = square:map({ 1 })
  h.raises_kind("UsageError", fut.wait, fut, -1)
  h.raises_kind("UsageError", fut.result, fut, -0.5)
  h.raises_kind("UsageError", mf.result, fut, -1)
  h.raises_kind("UsageError", list.wait, list, -1)
  h.raises_kind("UsageError", list.result, list, -1)
  h.raises_kind("UsageError", mf.wait, { fut }, -1)
  lu.assertFalse(fut:done(), "a negative timeout waited")
  lu.assertFalse(list[1]:done(), "a negative timeout waited")
  fut:wait()
  list:wait()
end

function TestNegativeTimeout:test_as_completed_raises_at_the_call()
  local fut = sleep_then:submit(0.01)
  h.raises_kind("UsageError", mf.as_completed, { fut }, -1)
  fut:wait()
end

TestMfResult = {}

function TestMfResult:test_same_as_the_method()
  local fut = sleep_then:submit(0.01, "a", nil, "c")
  lu.assertEquals(select("#", mf.result(fut)), 3)
  local a, b, c = mf.result(fut)
  lu.assertEquals({ a, b, c }, { "a", nil, "c" })
  local e = { e = 1 }
  local bad = fail:submit(e)
  local ok, err = pcall(mf.result, bad)
  lu.assertFalse(ok)
  h.assert_same(err, e)
  h.assert_same(mf.result(bad, nil, false), e)
  local slow = sleep_then:submit(0.15)
  h.raises_kind("Timeout", mf.result, slow, 0.01)
  cancel_all(slow)
end

-- }======

h.run()
