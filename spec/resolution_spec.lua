-- Resolution of futures in arguments (api.md, "Resolution of futures in
-- arguments"): futures replaced by their first result, plain tables searched
-- and copied, tables with a metatable and mf.quote left alone, NotReady and
-- UpstreamFailed, mf.allow_failure, and the per-call options wait_for and
-- return_state.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

-- value(s, ...) sleeps s seconds, then returns the other arguments.
local value = mf.task({ name = "value" }, function(s, ...)
  mf.sleep(s)
  return ...
end)

-- fail(err, s?) sleeps (if asked), then raises err as it is.
local fail = mf.task({ name = "fail" }, function(err, s)
  if s then mf.sleep(s) end
  error(err, 0)
end)

-- echo(...) returns its arguments as they arrived: count and a packed table.
local echo = mf.task({ name = "echo" }, function(...)
  return table.pack(...)
end)

local function cancel_all(...)
  for _, fut in ipairs({ ... }) do
    fut:cancel()
    fut:state()
  end
end

local function assert_not_ready(fut)
  lu.assertTrue(fut:done(), "a NotReady run is final: done() is true")
  local st = fut:state()
  lu.assertEquals(st.type, "PENDING")
  lu.assertEquals(st.name, "NotReady")
  lu.assertTrue(st:is_final())
  lu.assertFalse(st:is_completed())
  for _, entry in ipairs(fut:history()) do
    lu.assertNotEquals(entry.type, "RUNNING", "a NotReady run never starts")
  end
end

-- {====== Futures in arguments ======

TestResolution = {}

function TestResolution:test_future_argument_is_its_first_result()
  local up = value:submit(0.01, "first", "second")
  local got = echo:submit(up):result()
  lu.assertEquals(got.n, 1)
  lu.assertEquals(got[1], "first")
end

function TestResolution:test_future_of_a_run_returning_nothing_is_nil()
  local up = mf.task(function() end):submit()
  local got = echo:submit(up, "after"):result()
  lu.assertEquals(got.n, 2)
  lu.assertIsNil(got[1])
  lu.assertEquals(got[2], "after")
end

function TestResolution:test_several_futures_among_plain_arguments()
  local a, b = value:submit(0.02, 1), value:submit(0.01, 2)
  local got = echo:submit("x", a, 3, b, nil):result()
  lu.assertEquals(got.n, 5)
  lu.assertEquals({ got[1], got[2], got[3], got[4], got[5] }, { "x", 1, 3, 2, nil })
end

function TestResolution:test_the_same_future_twice()
  local a = value:submit(0.01, 7)
  local got = echo:submit(a, { a, k = a }):result()
  lu.assertEquals(got[1], 7)
  lu.assertEquals(got[2], { 7, k = 7 })
end

function TestResolution:test_futures_nested_in_plain_tables()
  local a, b, c = value:submit(0.01, "A", "ignored"), value:submit(0, "B"), value:submit(0.02, "C")
  local arg = { a, name = b, deep = { { { c } }, plain = 4 } }
  local got = echo:submit(arg):result()[1]
  lu.assertEquals(got, { "A", name = "B", deep = { { { "C" } }, plain = 4 } })
end

function TestResolution:test_integer_keys_of_every_kind()
  -- Integer keys take a shorter path in the copy (args.c): inside and past
  -- the array, negative, huge, beside float and string keys, with a future
  -- that gives nil (the key is then absent) and plain values.
  local a, b, c = value:submit(0, "A"), value:submit(0.01, "B"), value:submit(0, "C")
  local nothing = value:submit(0) -- returns nothing: nil in a table
  local arg = { a, "plain", nothing, b, [7] = c, [-3] = a, [2 ^ 40] = b,
    [1.5] = c, [0] = "zero", x = a }
  local got = echo:submit(arg):result()[1]
  lu.assertEquals(got, { "A", "plain", nil, "B", [7] = "C", [-3] = "A",
    [2 ^ 40] = "B", [1.5] = "C", [0] = "zero", x = "A" })
  local keys = 0
  for _ in pairs(got) do keys = keys + 1 end
  lu.assertEquals(keys, 9, "the key whose future gave nil is absent")
  lu.assertEquals(arg[1], a, "the argument table is not changed")
end

function TestResolution:test_futures_as_table_keys()
  local k = value:submit(0.01, "key")
  local got = echo:submit({ [k] = true }):result()[1]
  lu.assertEquals(got, { key = true })
end

function TestResolution:test_resolved_before_the_run_starts()
  h.shared_memory("a task holds a Future of the test")
  local up_done_at_start
  local up = value:submit(0.04, "v")
  local down = mf.task(function(v)
    up_done_at_start = up:done()
    return v
  end)
  lu.assertEquals(down:submit(up):result(), "v")
  lu.assertTrue(up_done_at_start)
end

function TestResolution:test_waiting_for_inputs_blocks_nothing()
  h.shared_memory("a task sets the test's variables")
  local order = {}
  -- up is released by the ticker: down can only run after the ticker did.
  local gate = h.gate()
  local up = mf.task(function() gate:wait() return 1 end):submit()
  local down = mf.task(function(v) order[#order + 1] = "down" return v end):submit(up)
  lu.assertFalse(up:done(), "submit waited for its input")
  local ticker = mf.task(function()
    mf.sleep(0.01)
    order[#order + 1] = "ticker"
    gate:open()
  end):submit()
  lu.assertEquals(down:result(), 1)
  ticker:wait()
  lu.assertEquals(order, { "ticker", "down" })
end

function TestResolution:test_table_holding_futures_is_copied_not_changed()
  local a = value:submit(0.01, "A")
  local inner = { a }
  local arg = { x = a, inner = inner, n = 1 }
  local got = echo:submit(arg):result()[1]
  lu.assertNotIs(got, arg)
  lu.assertNotIs(got.inner, inner)
  lu.assertEquals(got, { x = "A", inner = { "A" }, n = 1 })
  -- The caller's tables still hold the future.
  lu.assertIs(arg.x, a)
  lu.assertIs(arg.inner, inner)
  lu.assertIs(inner[1], a)
  lu.assertEquals(arg.n, 1)
end

function TestResolution:test_cycle_back_to_the_argument_table()
  h.shared_memory("a cycle inside the argument is seen as the caller's table")
  local a = value:submit(0.01, "A")
  local arg = { f = a }
  arg.self = arg
  arg.inner = { back = arg, g = a }
  local got = echo:submit(arg):result()[1]
  lu.assertNotIs(got, arg)
  lu.assertEquals(got.f, "A")
  lu.assertEquals(got.inner.g, "A")
  -- The copy is made once the table is done: a cycle sees the original.
  lu.assertIs(got.self, arg)
  lu.assertIs(got.inner.back, arg)
  lu.assertIs(arg.f, a)
end

function TestResolution:test_future_reached_only_through_a_cycle_is_waited_for()
  h.shared_memory("the copy leads back to the caller's table, holding the Future")
  local a = value:submit(0.02, "A")
  local arg = { inner = {} }
  arg.inner.back = arg
  arg.inner.f = a
  local got = echo:submit(arg):result()[1]
  lu.assertTrue(a:done(), "the run started before its input")
  lu.assertEquals(got.inner.f, "A")
end

function TestResolution:test_shared_subtable_is_copied_once()
  local a = value:submit(0.01, "A")
  local shared = { a }
  local got = echo:submit({ x = shared, y = shared, { shared } }):result()[1]
  lu.assertIs(got.x, got.y)
  lu.assertIs(got[1][1], got.x)
  lu.assertEquals(got.x, { "A" })
end

function TestResolution:test_futures_as_keys_are_resolved()
  local k = value:submit(0.01, "key")
  local v = value:submit(0.01, "value")
  local got = echo:submit({ [k] = v, [{ k }] = 1 }):result()[1]
  lu.assertEquals(got.key, "value")
  local n = 0
  for key, val in pairs(got) do
    n = n + 1
    if type(key) == "table" then
      lu.assertEquals(key, { "key" })
      lu.assertEquals(val, 1)
    end
  end
  lu.assertEquals(n, 2)
end

function TestResolution:test_table_without_futures_is_the_same_table()
  h.shared_memory("the identity of the table a task gets and changes")
  local arg = { 1, 2, { 3 } }
  local t = mf.task(function(tbl) tbl.touched = true return tbl end)
  local got = t:submit(arg):result()
  lu.assertIs(got, arg)
  lu.assertTrue(arg.touched)
end

function TestResolution:test_plain_subtable_without_futures_kept_inside_a_copy()
  local a = value:submit(0, "A")
  local plain = { 1, 2 }
  local got = echo:submit({ a, plain }):result()[1]
  lu.assertEquals(got[1], "A")
  h.assert_same(got[2], plain)
end

function TestResolution:test_tables_with_a_metatable_are_not_searched()
  h.shared_memory("a task holds a Future of the test")
  local up = value:submit(0.1, "late")
  local arg = setmetatable({ f = up, inner = { up } }, {})
  local saw_done
  local t = mf.task(function(tbl)
    saw_done = up:done()
    return tbl
  end)
  local got = t:submit(arg):result()
  lu.assertIs(got, arg)
  lu.assertIs(got.f, up)
  lu.assertIs(got.inner[1], up)
  lu.assertFalse(saw_done, "the run waited for a future inside a table with a metatable")
  cancel_all(up)
end

function TestResolution:test_metatable_table_nested_in_a_plain_table()
  h.shared_memory("a table with a metatable of the test's own is not copied")
  local up = value:submit(0.1, "late")
  local a = value:submit(0, "A")
  local opaque = setmetatable({ up }, {})
  local got = echo:submit({ a, opaque }):result()[1]
  lu.assertEquals(got[1], "A")
  lu.assertIs(got[2], opaque)
  lu.assertIs(opaque[1], up)
  lu.assertFalse(up:done())
  cancel_all(up)
end

function TestResolution:test_quote_passes_a_table_unsearched()
  h.shared_memory("a task holds a Future of the test")
  local up = value:submit(0.1, "late")
  local tbl = { up, k = { up } }
  local saw_done
  local t = mf.task(function(x)
    saw_done = up:done()
    return x
  end)
  local got = t:submit(mf.quote(tbl)):result()
  lu.assertIs(got, tbl)
  lu.assertIs(got[1], up)
  lu.assertIs(got.k[1], up)
  lu.assertFalse(saw_done, "the run waited for a future inside mf.quote")
  cancel_all(up)
end

function TestResolution:test_quote_inside_a_plain_table()
  h.shared_memory("a task gets a Future of the test, quoted")
  local up = value:submit(0.1, "late")
  local a = value:submit(0, "A")
  local quoted = { up }
  local got = echo:submit({ a, q = mf.quote(quoted) }):result()[1]
  lu.assertEquals(got[1], "A")
  lu.assertIs(got.q, quoted)
  lu.assertIs(quoted[1], up)
  lu.assertFalse(up:done())
  cancel_all(up)
end

function TestResolution:test_quote_of_a_table_without_futures()
  local tbl = { 1, 2 }
  local got = echo:submit(mf.quote(tbl)):result()
  lu.assertEquals(got.n, 1)
  h.assert_same(got[1], tbl)
end

-- }======

-- {====== NotReady and UpstreamFailed ======

TestNotReady = {}

function TestNotReady:test_failed_input_downstream_never_starts()
  local started = false
  local up = fail:submit({ why = "up" }, 0.01)
  local down = mf.task(function() started = true end):submit(up)
  lu.assertIs(down:wait(), true)
  assert_not_ready(down)
  lu.assertFalse(started)
  local err = h.raises_kind("UpstreamFailed", down.result, down)
  lu.assertStrContains(err.message, up.name)
end

function TestNotReady:test_raise_on_failure_false_returns_the_upstream_failed_error()
  local up = fail:submit("x")
  local down = echo:submit(up)
  local err = down:result(nil, false)
  lu.assertEquals(type(err), "table", tostring(err))
  lu.assertEquals(err.kind, "UpstreamFailed")
  lu.assertStrContains(err.message, up.name)
  assert_not_ready(down)
end

function TestNotReady:test_cancelled_input()
  local up = value:submit(0.1, 1)
  local down = echo:submit(up)
  up:cancel()
  down:wait()
  assert_not_ready(down)
  local err = h.raises_kind("UpstreamFailed", down.result, down)
  lu.assertStrContains(err.message, up.name)
end

function TestNotReady:test_failed_input_nested_in_a_table()
  local ok_up = value:submit(0, 1)
  local up = fail:submit("x", 0.01)
  local down = echo:submit({ ok_up, deeper = { up } })
  down:wait()
  assert_not_ready(down)
  local err = h.raises_kind("UpstreamFailed", down.result, down)
  lu.assertStrContains(err.message, up.name)
end

function TestNotReady:test_cascades_downstream()
  local started = false
  local up = fail:submit("root")
  local mid = echo:submit(up)
  local leaf = mf.task(function() started = true end):submit({ mid })
  lu.assertIs(leaf:wait(), true)
  assert_not_ready(mid)
  assert_not_ready(leaf)
  lu.assertFalse(started)
  local err = h.raises_kind("UpstreamFailed", leaf.result, leaf)
  local names_one = err.message:find(mid.name, 1, true) ~= nil
    or err.message:find(up.name, 1, true) ~= nil
  lu.assertTrue(names_one, "does not name an upstream run: " .. err.message)
  h.raises_kind("UpstreamFailed", mid.result, mid)
end

function TestNotReady:test_counted_as_not_completed_in_fail_fast_lists()
  local gate = h.gate() -- slow ends once the test opens it (it never does)
  local slow = mf.task(function() gate:wait() return "slow" end):submit()
  local up = fail:submit("x")
  local downs = echo:map({ slow, up })
  lu.assertEquals(#downs, 2)
  local err = h.raises_kind("UpstreamFailed", downs.result, downs)
  lu.assertFalse(slow:done(), "the list waited for the slow run")
  lu.assertStrContains(err.message, up.name)
  lu.assertFalse(downs[1]:done())
  cancel_all(slow, downs[1])
  assert_not_ready(downs[2])
end

function TestNotReady:test_list_result_without_raising_holds_the_error()
  local up = fail:submit("x")
  local downs = echo:map({ 1, up, 3 })
  local r = downs:result(nil, false)
  lu.assertEquals(r.n, 3)
  lu.assertEquals(r[1], { 1, n = 1 })
  lu.assertEquals(type(r[2]), "table")
  lu.assertEquals(r[2].kind, "UpstreamFailed")
  lu.assertEquals(r[3], { 3, n = 1 })
end

function TestNotReady:test_mapping_over_a_future_list_with_a_failure()
  local src = mf.task(function(x)
    if x == 2 then error("two", 0) end
    return x
  end):map({ 1, 2, 3 })
  local downs = echo:map(src)
  downs:wait()
  lu.assertEquals(downs[1]:result()[1], 1)
  assert_not_ready(downs[2])
  lu.assertEquals(downs[3]:result()[1], 3)
  local err = h.raises_kind("UpstreamFailed", downs[2].result, downs[2])
  lu.assertStrContains(err.message, src[2].name)
end

-- }======

-- {====== mf.allow_failure ======

TestAllowFailure = {}

function TestAllowFailure:test_downstream_receives_the_error_value()
  local e = { why = "upstream broke" }
  local up = fail:submit(e, 0.01)
  local down = mf.task(function(v, other) return v, other end)
  local fut = down:submit(mf.allow_failure(up), "other")
  local v, other = fut:result()
  h.assert_same(v, e)
  lu.assertEquals(other, "other")
  lu.assertEquals(fut:state().type, "COMPLETED")
end

function TestAllowFailure:test_string_error_value()
  local up = fail:submit("broken")
  local got = echo:submit(mf.allow_failure(up)):result()
  lu.assertEquals(got[1], "broken")
end

function TestAllowFailure:test_successful_upstream_gives_its_result()
  local up = value:submit(0.01, "fine", "dropped")
  local got = echo:submit(mf.allow_failure(up)):result()
  lu.assertEquals(got.n, 1)
  lu.assertEquals(got[1], "fine")
end

function TestAllowFailure:test_inside_a_plain_table()
  local e = { "E" }
  local up = fail:submit(e)
  local ok_up = value:submit(0, 2)
  local got = echo:submit({ a = mf.allow_failure(up), b = ok_up }):result()[1]
  h.assert_same(got.a, e)
  lu.assertEquals(got.b, 2)
end

function TestAllowFailure:test_waits_for_the_upstream()
  h.shared_memory("a task holds a Future of the test")
  local up = fail:submit("late", 0.04)
  local saw_done
  local t = mf.task(function(v) saw_done = up:done() return v end)
  lu.assertEquals(t:submit(mf.allow_failure(up)):result(), "late")
  lu.assertTrue(saw_done)
end

-- }======

-- {====== wait_for ======

TestWaitFor = {}

function TestWaitFor:test_waits_without_taking_values()
  h.shared_memory("a task holds a Future of the test")
  local a, b = value:submit(0.03, "A"), value:submit(0.01, "B")
  local done_at_start
  local t = mf.task(function(...)
    done_at_start = a:done() and b:done()
    return table.pack(...)
  end)
  local fut = t:with({ wait_for = { a, b } }):submit("x")
  lu.assertFalse(a:done() or b:done(), "submit waited")
  local got = fut:result()
  lu.assertEquals(got.n, 1)
  lu.assertEquals(got[1], "x")
  lu.assertTrue(done_at_start)
end

function TestWaitFor:test_failed_wait_for_makes_not_ready()
  local started = false
  local bad = fail:submit("x", 0.01)
  local good = value:submit(0, 1)
  local fut = mf.task(function() started = true end):with({ wait_for = { good, bad } }):submit()
  lu.assertIs(fut:wait(), true)
  assert_not_ready(fut)
  lu.assertFalse(started)
  local err = h.raises_kind("UpstreamFailed", fut.result, fut)
  lu.assertStrContains(err.message, bad.name)
end

function TestWaitFor:test_with_map()
  h.shared_memory("a task holds a Future of the test")
  local gate = value:submit(0.03, "gate")
  local starts = {}
  local t = mf.task(function(x) starts[#starts + 1] = gate:done() return x * 2 end)
  local list = t:with({ wait_for = { gate } }):map({ 1, 2, 3 })
  lu.assertEquals(list:result(), { 2, 4, 6, n = 3 })
  lu.assertEquals(starts, { true, true, true })
end

function TestWaitFor:test_with_keeps_the_task_unchanged()
  h.shared_memory("a task holds a Future of the test")
  local gate = h.gate() -- slow ends once the test opens it (it never does)
  local slow = mf.task(function() gate:wait() return 1 end):submit()
  local t = mf.task(function() return slow:done() end)
  local _ = t:with({ wait_for = { slow } })
  lu.assertIs(t:submit():result(), false)
  cancel_all(slow)
end

-- }======

-- {====== return_state ======

TestReturnState = {}

function TestReturnState:test_submit_waits_and_returns_the_final_state()
  local t = value:with({ return_state = true })
  local t0 = mf.now()
  local st = t:submit(0.03, "a", "b")
  lu.assertTrue(mf.now() - t0 >= 0.025, "submit did not wait")
  lu.assertEquals(type(st), "table")
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(st.name, "Completed")
  lu.assertTrue(st:is_final())
  lu.assertTrue(st:is_completed())
  local a, b = st:result()
  lu.assertEquals({ a, b }, { "a", "b" })
end

function TestReturnState:test_failed_run_gives_its_state_without_raising()
  local e = { e = 1 }
  local t = fail:with({ return_state = true })
  local ok, st = pcall(t.submit, t, e, 0.01)
  lu.assertTrue(ok, tostring(st))
  lu.assertEquals(st.type, "FAILED")
  lu.assertTrue(st:is_failed())
  lu.assertTrue(st:is_final())
  local rok, err = pcall(st.result, st)
  lu.assertFalse(rok)
  h.assert_same(err, e)
  h.assert_same(st:result(false), e)
end

function TestReturnState:test_not_ready_state()
  local up = fail:submit("x")
  local st = echo:with({ return_state = true }):submit(up)
  lu.assertEquals(st.type, "PENDING")
  lu.assertEquals(st.name, "NotReady")
  lu.assertTrue(st:is_final())
end

function TestReturnState:test_map_returns_states_in_input_order()
  local t = mf.task(function(x, s)
    mf.sleep(s)
    if x < 0 then error("negative", 0) end
    return x * 10
  end):with({ return_state = true })
  local t0 = mf.now()
  local states = t:map({ 1, -2, 3 }, { 0.03, 0.01, 0.02 })
  lu.assertTrue(mf.now() - t0 >= 0.025, "map did not wait")
  lu.assertEquals(#states, 3)
  for _, st in ipairs(states) do
    lu.assertEquals(type(st), "table")
    lu.assertTrue(st:is_final())
  end
  lu.assertEquals(states[1].type, "COMPLETED")
  lu.assertEquals(states[1]:result(), 10)
  lu.assertEquals(states[2].type, "FAILED")
  lu.assertEquals(states[2]:result(false), "negative")
  lu.assertEquals(states[3].type, "COMPLETED")
  lu.assertEquals(states[3]:result(), 30)
end

-- }======

h.run()
