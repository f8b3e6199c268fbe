-- Errors (api.md, "Errors"): typed error tables, a run's error reaching
-- result() unchanged, Deadlock, and cancellation.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

-- Asserts the shape every moonflow error has: { kind, message } whose
-- tostring is "kind: message".
local function assert_typed(err, kind)
  lu.assertEquals(type(err), "table", "not an error table: " .. tostring(err))
  lu.assertEquals(err.kind, kind, "wrong kind: " .. tostring(err))
  lu.assertIsString(err.message)
  lu.assertTrue(#err.message > 0, "empty message")
  lu.assertEquals(tostring(err), kind .. ": " .. err.message)
end

-- pcall(fn, ...) that must fail; returns the error value.
local function failure(fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected an error, got success")
  return err
end

TestErrors = {}

-- {====== Typed errors ======

function TestErrors:test_usage_error_is_typed()
  assert_typed(failure(mf.sleep, -1), "UsageError")
  assert_typed(failure(mf.task, 42), "UsageError")
  local t = mf.task(function(x) return x end)
  assert_typed(failure(t.map, t, { a = 1 }), "UsageError")
end

function TestErrors:test_timeout_is_typed()
  local gate = h.gate() -- the run ends once the test opens it
  local t = mf.task(function() gate:wait() end)
  local fut = t:submit()
  lu.assertFalse(fut:wait(0.01))
  assert_typed(failure(fut.result, fut, 0.01), "Timeout")
  gate:open()
  fut:wait()
end

function TestErrors:test_mapping_errors_are_typed()
  local t = mf.task(function(x) return x end)
  assert_typed(failure(t.map, t, { 1, 2 }, { 1 }), "MappingLengthMismatch")
  assert_typed(failure(t.map, t, 5), "MappingMissingIterable")
end

function TestErrors:test_upstream_failed_is_typed()
  local bad = mf.task(function() error("no", 0) end)
  local after = mf.task(function(x) return x end)
  local up = bad:submit()
  local down = after:submit(up)
  local err = failure(down.result, down)
  assert_typed(err, "UpstreamFailed")
  lu.assertStrContains(err.message, up.name)
  lu.assertEquals(up:state().name, "Failed")
end

function TestErrors:test_cancelled_is_typed()
  local t = mf.task(function() return 1 end)
  local fut = t:submit()
  fut:cancel()
  assert_typed(failure(fut.result, fut), "Cancelled")
end

function TestErrors:test_deadlock_is_typed()
  h.shared_memory("a task holds a Future of the test")
  local me
  local t = mf.task(function()
    local ok, err = pcall(me.result, me)
    return ok, err
  end)
  me = t:submit()
  local ok, err = me:result()
  lu.assertFalse(ok)
  assert_typed(err, "Deadlock")
end

function TestErrors:test_moonflow_error_raised_in_a_run_keeps_its_kind()
  local t = mf.task(function() mf.sleep(-1) end)
  local fut = t:submit()
  assert_typed(failure(fut.result, fut), "UsageError")
end

-- }======

-- {====== A run's error reaches result() unchanged ======

function TestErrors:test_table_error_is_the_same_table()
  local e = { code = 42 }
  local t = mf.task(function() error(e) end)
  local fut = t:submit()
  h.assert_same(failure(fut.result, fut), e, "result()")
  h.assert_same(failure(t), e, "t()")
  h.assert_same(fut:result(nil, false), e, "raise_on_failure false")
end

function TestErrors:test_table_error_with_metatable_keeps_it()
  h.shared_memory("an error whose metatable is the test's own travels as its text")
  local mt = { __tostring = function(self) return "custom " .. self.code end }
  local e = setmetatable({ code = 1 }, mt)
  local t = mf.task(function() error(e) end)
  local fut = t:submit()
  local err = failure(fut.result, fut)
  lu.assertTrue(rawequal(err, e))
  lu.assertTrue(rawequal(getmetatable(err), mt))
  lu.assertEquals(tostring(err), "custom 1")
end

function TestErrors:test_string_error_is_the_same_string()
  local function body() error("plain boom") end
  local _, direct = pcall(body)
  local t = mf.task(body)
  local fut = t:submit()
  lu.assertEquals(failure(fut.result, fut), direct)
  lu.assertEquals(fut:result(nil, false), direct)
  lu.assertEquals(failure(t), direct)
  local bare = mf.task(function() error("bare", 0) end)
  lu.assertEquals(failure(bare), "bare")
end

function TestErrors:test_non_string_error_value_unchanged()
  local t = mf.task(function() error(42) end)
  local fut = t:submit()
  local err = failure(fut.result, fut)
  lu.assertEquals(math.type(err), "integer")
  lu.assertEquals(err, 42)
end

function TestErrors:test_error_reaches_futurelist_result_unchanged()
  local e = { which = 2 }
  local t = mf.task(function(x)
    if x == 2 then error(e) end
    return x
  end)
  local list = t:map({ 1, 2, 3 })
  h.assert_same(failure(list.result, list), e)
  local values = list:result(nil, false)
  lu.assertEquals(values[1], 1)
  h.assert_same(values[2], e)
  lu.assertEquals(values[3], 3)
end

function TestErrors:test_error_from_a_nested_run_passes_through_unchanged()
  local e = { deep = true }
  local inner = mf.task(function() error(e) end)
  local outer = mf.task(function() return inner() end)
  local fut = outer:submit()
  h.assert_same(failure(fut.result, fut), e)
end

function TestErrors:test_failed_state_keeps_run_name_and_traceback()
  local t = mf.task({ name = "raiser" }, function() error({ code = 3 }) end)
  local fut = t:submit()
  fut:wait()
  local state = fut:state()
  lu.assertEquals(state.run_name, "raiser-1")
  lu.assertIsString(state.traceback)
  lu.assertStrContains(state.traceback, "errors_spec.lua")
end

-- }======

-- {====== Deadlock ======

TestDeadlock = {}

function TestDeadlock:test_run_waiting_on_itself_via_context()
  h.shared_memory("a task holds a Future of the test")
  local runs = {}
  local t = mf.task(function()
    local me = runs[mf.context().id]
    local ok1, err1 = pcall(me.result, me)
    local ok2, err2 = pcall(me.wait, me)
    local ok3, err3 = pcall(mf.wait, { me })
    return { ok1, err1, ok2, err2, ok3, err3 }
  end)
  local fut = t:submit()
  runs[fut.id] = fut
  local r = fut:result()
  lu.assertFalse(r[1])
  assert_typed(r[2], "Deadlock")
  lu.assertFalse(r[3])
  assert_typed(r[4], "Deadlock")
  lu.assertFalse(r[5])
  assert_typed(r[6], "Deadlock")
end

function TestDeadlock:test_run_waiting_on_itself_via_future_passed_in()
  h.shared_memory("a task holds a Future of the test")
  local t = mf.task(function(box)
    local ok, err = pcall(box.me.result, box.me)
    return ok, err
  end)
  local box = {}
  local fut = t:submit(box)
  box.me = fut
  local ok, err = fut:result()
  lu.assertFalse(ok)
  assert_typed(err, "Deadlock")
end

function TestDeadlock:test_uncaught_deadlock_fails_the_run()
  h.shared_memory("a task holds a Future of the test")
  local me
  local t = mf.task(function() return me:result() end)
  me = t:submit()
  local err = failure(me.result, me)
  assert_typed(err, "Deadlock")
  lu.assertEquals(me:state().type, "FAILED")
end

function TestDeadlock:test_two_runs_waiting_on_each_other()
  h.shared_memory("a task holds a Future of the test")
  local fa, fb
  local a = mf.task(function()
    local ok, v = pcall(fb.result, fb)
    return ok, v
  end)
  local b = mf.task(function()
    mf.sleep(0.01) -- a is waiting on b by now
    local ok, err = pcall(fa.result, fa)
    return ok, err
  end)
  local t0 = mf.now()
  fa, fb = a:submit(), b:submit()
  local ok_b, err_b = fb:result()
  lu.assertFalse(ok_b)
  assert_typed(err_b, "Deadlock")
  local ok_a, v_a = fa:result()
  lu.assertTrue(ok_a, "a's wait was not a deadlock when it started")
  lu.assertEquals(v_a, false)
  lu.assertTrue(mf.now() - t0 < h.PATIENCE)
end

function TestDeadlock:test_transitive_cycle_of_three()
  h.shared_memory("a task holds a Future of the test")
  local fa, fb, fc
  local function waiter(delay, target)
    return mf.task(function()
      mf.sleep(delay)
      local fut = target()
      local ok, err = pcall(fut.result, fut)
      if ok then return "ok" end
      return type(err) == "table" and err.kind or tostring(err)
    end)
  end
  local a = waiter(0, function() return fb end)
  local b = waiter(0.01, function() return fc end)
  local c = waiter(0.02, function() return fa end)
  local t0 = mf.now()
  fa, fb, fc = a:submit(), b:submit(), c:submit()
  lu.assertEquals(fc:result(), "Deadlock")
  lu.assertEquals(fb:result(), "ok")
  lu.assertEquals(fa:result(), "ok")
  lu.assertTrue(mf.now() - t0 < h.PATIENCE)
end

function TestDeadlock:test_waiting_on_a_run_that_waits_on_it_through_an_input()
  h.shared_memory("a task holds a Future of the test")
  local fa, fdown
  local after = mf.task(function(x) return x end)
  local a = mf.task(function()
    fdown = after:submit(fa) -- fdown waits for a (its input)
    local ok, err = pcall(fdown.result, fdown)
    return ok, err
  end)
  fa = a:submit()
  local ok, err = fa:result()
  lu.assertFalse(ok)
  assert_typed(err, "Deadlock")
  fdown:wait()
  lu.assertTrue(fdown:state():is_completed())
end

function TestDeadlock:test_run_waiting_on_the_flow_that_contains_it()
  h.shared_memory("a task holds a Future of the test")
  local ff
  local inner = mf.task(function()
    local ok, err = pcall(ff.result, ff)
    return ok, err
  end)
  local f = mf.flow(function()
    local ok, err = inner()
    return { ok = ok, err = err }
  end)
  ff = f:submit()
  local r = ff:result()
  lu.assertFalse(r.ok)
  assert_typed(r.err, "Deadlock")
end

function TestDeadlock:test_flow_waiting_on_itself()
  local ff
  local f = mf.flow(function()
    local ok, err = pcall(ff.wait, ff)
    return { ok = ok, err = err }
  end)
  ff = f:submit()
  local r = ff:result()
  lu.assertFalse(r.ok)
  assert_typed(r.err, "Deadlock")
end

function TestDeadlock:test_run_in_a_subflow_waiting_on_the_outer_flow()
  h.shared_memory("a task holds a Future of the test")
  local ff
  local inner = mf.task(function()
    local ok, err = pcall(ff.result, ff)
    return { ok = ok, err = err }
  end)
  local sub = mf.flow(function() return inner() end)
  local outer = mf.flow(function() return sub() end)
  ff = outer:submit()
  local r = ff:result()
  lu.assertFalse(r.ok)
  assert_typed(r.err, "Deadlock")
end

function TestDeadlock:test_input_that_is_a_flow_containing_the_new_run()
  local ff
  local t = mf.task(function(x) return x end)
  local f = mf.flow(function()
    local r = {}
    r.ok1, r.err1 = pcall(t.submit, t, ff)
    r.ok2, r.err2 = pcall(t.submit, t, { nested = { ff } })
    return r
  end)
  ff = f:submit()
  local r = ff:result()
  lu.assertFalse(r.ok1)
  assert_typed(r.err1, "Deadlock")
  lu.assertFalse(r.ok2)
  assert_typed(r.err2, "Deadlock")
end

function TestDeadlock:test_input_flow_submitted_from_a_task_inside_it()
  h.shared_memory("a task holds a Future of the test")
  local ff
  local t = mf.task(function(x) return x end)
  local submitter = mf.task(function()
    local ok, err = pcall(t.submit, t, ff)
    return { ok = ok, err = err }
  end)
  local f = mf.flow(function() return submitter() end)
  ff = f:submit()
  local r = ff:result()
  lu.assertFalse(r.ok)
  assert_typed(r.err, "Deadlock")
end

function TestDeadlock:test_input_flow_outside_it_is_no_deadlock()
  local f = mf.flow(function() mf.sleep(0.01) return 5 end)
  local t = mf.task(function(x) return x + 1 end)
  local ff = f:submit()
  lu.assertEquals(t:submit(ff):result(), 6)
end

function TestDeadlock:test_cycle_through_two_flows_never_hangs()
  h.shared_memory("a task holds a Future of the test")
  local ff, gg, fu
  local kinds = {}
  local function record(who, fut)
    local ok, err = pcall(fut.result, fut)
    kinds[who] = ok and "ok" or (type(err) == "table" and err.kind or tostring(err))
  end
  local t = mf.task(function() record("t", gg) end)
  local u = mf.task(function() mf.sleep(0.01) record("u", ff) end)
  local F = mf.flow(function() t() end)
  local G = mf.flow(function() fu = u:submit() fu:wait() end)
  local t0 = mf.now()
  ff, gg = F:submit(), G:submit()
  mf.wait({ ff, gg })
  lu.assertTrue(mf.now() - t0 < h.PATIENCE)
  lu.assertEquals(kinds.u, "Deadlock")
  lu.assertEquals(kinds.t, "ok")
  ff:state(); gg:state()
end

function TestDeadlock:test_cycle_through_a_wait_for_any_never_hangs()
  h.shared_memory("a task holds a Future of the test")
  local fa, fb, fc
  local kinds = {}
  local function record(who, fn)
    local ok, err = pcall(fn)
    kinds[who] = ok and "ok" or (type(err) == "table" and err.kind or tostring(err))
  end
  local a = mf.task(function()
    record("a", function() for _ in mf.as_completed({ fb, fc }) do break end end)
  end)
  local b = mf.task(function() mf.sleep(0.01) record("b", function() fa:wait() end) end)
  local c = mf.task(function() mf.sleep(0.02) record("c", function() fa:wait() end) end)
  local t0 = mf.now()
  fa, fb, fc = a:submit(), b:submit(), c:submit()
  mf.wait({ fa, fb, fc })
  lu.assertTrue(mf.now() - t0 < h.PATIENCE, "it hung")
  local deadlocks = 0
  for _, who in ipairs({ "a", "b", "c" }) do
    if kinds[who] == "Deadlock" then deadlocks = deadlocks + 1 end
  end
  lu.assertTrue(deadlocks >= 1, "no Deadlock raised")
  for _, fut in ipairs({ fa, fb, fc }) do
    lu.assertTrue(fut:state():is_completed())
  end
end

function TestDeadlock:test_wait_on_a_wait_for_any_that_can_still_finish_is_no_deadlock()
  h.shared_memory("a task holds a Future of the test")
  -- a waits for the first of b and c; b waits on a; c finishes on its own,
  -- so a finishes, so b's wait finishes: nothing is deadlocked.
  local fa, fb, fc
  local a = mf.task(function()
    for fut in mf.as_completed({ fb, fc }) do return fut.name end
  end)
  local b = mf.task(function()
    mf.sleep(0.01)
    local ok, v = pcall(fa.result, fa)
    return { ok = ok, v = v }
  end)
  local c = mf.task(function() mf.sleep(0.03) return "c" end)
  fa, fb, fc = a:submit(), b:submit(), c:submit()
  local r = fb:result()
  lu.assertTrue(r.ok, "b's wait raised: " .. tostring(r.v))
  lu.assertEquals(r.v, fc.name)
  lu.assertEquals(fa:result(), fc.name)
  lu.assertEquals(fc:result(), "c")
end

function TestDeadlock:test_wait_with_timeout_on_itself_is_never_a_deadlock()
  h.shared_memory("a task holds a Future of the test")
  local me
  local t = mf.task(function()
    local r = {}
    r.waited = me:wait(0.02)
    r.ok, r.err = pcall(me.result, me, 0.02)
    r.done, r.not_done = mf.wait({ me }, 0.02)
    return r
  end)
  me = t:submit()
  local r = me:result()
  lu.assertFalse(r.waited)
  lu.assertFalse(r.ok)
  assert_typed(r.err, "Timeout")
  lu.assertEquals(#r.done, 0)
  lu.assertEquals(#r.not_done, 1)
end

function TestDeadlock:test_mutual_waits_with_timeouts_are_never_deadlocks()
  h.shared_memory("a task holds a Future of the test")
  local fa, fb
  local a = mf.task(function() return fb:wait(0.03) end)
  local b = mf.task(function()
    mf.sleep(0.005)
    -- A timeout that surely outlasts a's own (a 0.15 s one could fire in
    -- the same turn of a late loop as a's, before a has finished).
    local ok, v = pcall(fa.wait, fa, h.PATIENCE)
    return ok, v
  end)
  fa, fb = a:submit(), b:submit()
  lu.assertEquals(fa:result(), false)
  local ok, v = fb:result()
  lu.assertTrue(ok, "b's wait raised: " .. tostring(v))
  lu.assertTrue(v)
end

-- }======

-- {====== Cancellation ======

TestCancel = {}

function TestCancel:test_cancel_pending_run()
  local ran = false
  local t = mf.task(function() ran = true end)
  local fut = t:submit()
  lu.assertTrue(fut:cancel())
  lu.assertTrue(fut:wait())
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertEquals(fut:state().name, "Cancelled")
  h.raises_kind("Cancelled", fut.result, fut)
  mf.sleep(0.01)
  lu.assertFalse(ran)
  lu.assertFalse(fut:cancel(), "already final")
end

-- Runs that sleep SLEEP seconds: a cancel that waited for the sleep would
-- show (any machine cancels in less); then the test sleeps past SLEEP to
-- see that nothing went on.
local SLEEP = 1

local function sleep_past(t)
  mf.sleep(math.max(0, t - mf.now()) + 0.01)
end

function TestCancel:test_cancel_sleeping_run()
  h.shared_memory("a task sets the test's variables (or waits on its gate)")
  local after_sleep = false
  local asleep_at
  local t = mf.task(function()
    asleep_at = mf.now()
    mf.sleep(SLEEP)
    after_sleep = true
  end)
  local fut = t:submit()
  h.eventually(function() return asleep_at end, "the run to sleep")
  lu.assertEquals(fut:state().name, "Running")
  lu.assertTrue(fut:cancel())
  h.raises_kind("Cancelled", fut.result, fut)
  lu.assertTrue(mf.now() - asleep_at < SLEEP, "result waited for the sleep")
  lu.assertEquals(fut:state().type, "CANCELLED")
  sleep_past(asleep_at + SLEEP)
  lu.assertFalse(after_sleep)
end

function TestCancel:test_cancel_run_waiting_on_inputs()
  local gate = h.gate() -- the input finishes once the test opens it
  local up_task = mf.task(function() gate:wait() return 1 end)
  local ran = false
  local down_task = mf.task(function(x) ran = true return x end)
  local up = up_task:submit()
  local down = down_task:submit(up)
  mf.sleep(0.005)
  lu.assertTrue(down:cancel())
  h.raises_kind("Cancelled", down.result, down)
  gate:open()
  lu.assertEquals(up:result(), 1)
  mf.sleep(0.005)
  lu.assertFalse(ran)
  lu.assertEquals(down:state().type, "CANCELLED")
end

function TestCancel:test_cancel_completed_run_returns_false()
  local t = mf.task(function() return 1 end)
  local fut = t:submit()
  fut:wait()
  lu.assertFalse(fut:cancel())
  lu.assertEquals(fut:state().type, "COMPLETED")
  lu.assertEquals(fut:result(), 1)
end

function TestCancel:test_cancelling_a_flow_cancels_its_tree()
  h.shared_memory("a task sets the test's variables (or waits on its gate)")
  local futs = {}
  local continued = 0
  local asleep, first_asleep = 0, nil
  local sleeper = mf.task(function()
    asleep = asleep + 1
    first_asleep = first_asleep or mf.now()
    mf.sleep(SLEEP)
    continued = continued + 1
  end)
  local sub = mf.flow(function()
    futs.deep = sleeper:submit()
    futs.deep:wait()
    continued = continued + 1
  end)
  local f = mf.flow(function()
    futs.a = sleeper:submit()
    futs.b = sleeper:submit()
    futs.sub = sub:submit()
    mf.sleep(SLEEP)
    continued = continued + 1
  end)
  local ff = f:submit()
  h.eventually(function() return asleep == 3 end, "the tree to be built")
  lu.assertTrue(ff:cancel())
  h.raises_kind("Cancelled", ff.result, ff)
  lu.assertTrue(mf.now() - first_asleep < SLEEP, "cancel waited for the sleeps")
  lu.assertEquals(ff:state().type, "CANCELLED")
  for _, key in ipairs({ "a", "b", "sub", "deep" }) do
    lu.assertTrue(futs[key]:done(), key .. " not final")
    lu.assertEquals(futs[key]:state().type, "CANCELLED", key)
  end
  sleep_past(first_asleep + SLEEP)
  lu.assertEquals(continued, 0)
end

-- }======

h.run()
