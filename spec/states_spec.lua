-- States (api.md, "States"): the fields and methods of a State, the states a
-- run goes through, and what a Failed state keeps.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

local TYPES = { PENDING = true, SCHEDULED = true, RUNNING = true,
  COMPLETED = true, FAILED = true, CRASHED = true, CANCELLED = true }

-- The fields every State has, whatever its kind.
local function assert_common_fields(state, fut)
  lu.assertEquals(type(state), "table")
  lu.assertTrue(TYPES[state.type], "bad type: " .. tostring(state.type))
  lu.assertIsString(state.name)
  lu.assertIsNumber(state.timestamp)
  lu.assertEquals(state.run_id, fut.id)
  lu.assertEquals(state.run_name, fut.name)
  lu.assertIsFunction(state.is_completed)
  lu.assertIsFunction(state.is_failed)
  lu.assertIsFunction(state.is_final)
  lu.assertIsFunction(state.result)
end

local function names(history)
  local list = {}
  for i, state in ipairs(history) do list[i] = state.name end
  return list
end

local function types(history)
  local list = {}
  for i, state in ipairs(history) do list[i] = state.type end
  return list
end

TestStates = {}

-- {====== Fields and methods ======

function TestStates:test_pending_state()
  local t = mf.task({ name = "later" }, function() return 1 end)
  local fut = t:submit()
  local state = fut:state()
  assert_common_fields(state, fut)
  lu.assertEquals(state.type, "PENDING")
  lu.assertEquals(state.name, "Pending")
  lu.assertFalse(state:is_completed())
  lu.assertFalse(state:is_failed())
  lu.assertFalse(state:is_final())
  lu.assertNil(state.traceback)
  fut:wait()
end

function TestStates:test_running_state()
  h.shared_memory("a task sets the test's variables (or waits on its gate)")
  local gate = h.gate() -- the run ends once the test opens it
  local started = false
  local t = mf.task({ name = "sleeper" }, function() started = true gate:wait() return 1 end)
  local fut = t:submit()
  h.eventually(function() return started end, "the run to start")
  local state = fut:state()
  assert_common_fields(state, fut)
  lu.assertEquals(state.type, "RUNNING")
  lu.assertEquals(state.name, "Running")
  lu.assertEquals(state.attempt, 1)
  lu.assertFalse(state:is_completed())
  lu.assertFalse(state:is_failed())
  lu.assertFalse(state:is_final())
  lu.assertFalse(fut:done())
  gate:open()
  fut:wait()
end

function TestStates:test_completed_state()
  h.shared_memory("a task sets the test's variables")
  local ctx
  local t = mf.task({ name = "answer" }, function()
    ctx = mf.context()
    return 42
  end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), 42)
  local state = fut:state()
  assert_common_fields(state, fut)
  lu.assertEquals(state.type, "COMPLETED")
  lu.assertEquals(state.name, "Completed")
  lu.assertEquals(state.run_name, "answer-1")
  lu.assertEquals(state.run_id, ctx.id)
  lu.assertEquals(state.run_name, ctx.name)
  lu.assertEquals(state.attempt, 1)
  lu.assertEquals(state.attempt, ctx.attempt)
  lu.assertNil(state.traceback)
  lu.assertTrue(state:is_completed())
  lu.assertFalse(state:is_failed())
  lu.assertTrue(state:is_final())
  lu.assertEquals(state:result(), 42)
end

function TestStates:test_completed_state_result_gives_all_values()
  local t = mf.task(function() return 1, nil, "three" end)
  local fut = t:submit()
  fut:wait()
  local r = table.pack(fut:state():result())
  lu.assertEquals(r, { 1, nil, "three", n = 3 })
end

local function failing_body()
  error("boom in the body", 0)
end

function TestStates:test_failed_state()
  local t = mf.task({ name = "boomer" }, function() failing_body() end)
  local fut = t:submit()
  fut:wait()
  local state = fut:state()
  assert_common_fields(state, fut)
  lu.assertEquals(state.type, "FAILED")
  lu.assertEquals(state.name, "Failed")
  lu.assertEquals(state.run_name, "boomer-1")
  lu.assertEquals(state.attempt, 1)
  lu.assertIsString(state.message)
  lu.assertStrContains(state.message, "boom in the body")
  lu.assertIsString(state.traceback)
  lu.assertStrContains(state.traceback, "states_spec.lua")
  lu.assertStrContains(state.traceback, "failing_body")
  lu.assertFalse(state:is_completed())
  lu.assertTrue(state:is_failed())
  lu.assertTrue(state:is_final())
  local ok, err = pcall(state.result, state)
  lu.assertFalse(ok)
  lu.assertEquals(err, "boom in the body")
end

function TestStates:test_failed_state_with_table_error_keeps_name_and_traceback()
  local e = { code = 7 }
  local t = mf.task({ name = "tabler" }, function() error(e) end)
  local fut = t:submit()
  fut:wait()
  local state = fut:state()
  lu.assertEquals(state.type, "FAILED")
  lu.assertEquals(state.run_name, "tabler-1")
  lu.assertEquals(state.run_name, fut.name)
  lu.assertIsString(state.traceback)
  lu.assertIsString(state.message)
  local ok, err = pcall(state.result, state)
  lu.assertFalse(ok)
  h.assert_same(err, e)
end

function TestStates:test_state_timestamps_are_seconds()
  local t = mf.task(function() mf.sleep(0.05) end)
  local fut = t:submit()
  fut:wait()
  local history = fut:history()
  local running, completed = history[#history - 1], history[#history]
  lu.assertEquals(running.name, "Running")
  local gap = completed.timestamp - running.timestamp
  -- Seconds, not milliseconds (that would be 50).
  lu.assertTrue(gap >= 0.04 and gap < h.PATIENCE,
    string.format("Running -> Completed took %s for a 0.05 s sleep", gap))
end

function TestStates:test_state_never_blocks_and_is_a_snapshot()
  local t = mf.task(function() mf.sleep(0.03) return 1 end)
  local fut = t:submit()
  local pending = fut:state()
  lu.assertFalse(fut:done(), "state() blocked")
  fut:wait()
  lu.assertEquals(pending.name, "Pending")
  lu.assertEquals(fut:state().name, "Completed")
end

function TestStates:test_cancelled_state()
  local t = mf.task({ name = "never" }, function() return 1 end)
  local fut = t:submit()
  lu.assertTrue(fut:cancel())
  fut:wait()
  local state = fut:state()
  assert_common_fields(state, fut)
  lu.assertEquals(state.type, "CANCELLED")
  lu.assertEquals(state.name, "Cancelled")
  lu.assertFalse(state:is_completed())
  lu.assertFalse(state:is_failed())
  lu.assertTrue(state:is_final())
  h.raises_kind("Cancelled", state.result, state)
end

function TestStates:test_not_ready_state()
  local bad = mf.task(function() error("upstream", 0) end)
  local after = mf.task(function(x) return x end)
  local up = bad:submit()
  local down = after:submit(up)
  down:wait()
  local state = down:state()
  assert_common_fields(state, down)
  lu.assertEquals(state.type, "PENDING")
  lu.assertEquals(state.name, "NotReady")
  lu.assertTrue(state:is_final())
  lu.assertTrue(down:done())
  lu.assertFalse(state:is_completed())
  lu.assertFalse(state:is_failed())
  h.raises_kind("UpstreamFailed", state.result, state)
  lu.assertEquals(up:state().name, "Failed")
end

-- }======

-- {====== History ======

function TestStates:test_history_pending_running_completed()
  local t = mf.task({ name = "hist" }, function() mf.sleep(0.01) return 1 end)
  local fut = t:submit()
  fut:wait()
  local history = fut:history()
  lu.assertEquals(names(history), { "Pending", "Running", "Completed" })
  lu.assertEquals(types(history), { "PENDING", "RUNNING", "COMPLETED" })
  for i, state in ipairs(history) do
    assert_common_fields(state, fut)
    if i > 1 then
      lu.assertTrue(state.timestamp >= history[i - 1].timestamp,
        "timestamps go forward")
    end
  end
  lu.assertEquals(history[2].attempt, 1)
  lu.assertEquals(history[3].attempt, 1)
  lu.assertFalse(history[1]:is_final())
  lu.assertFalse(history[2]:is_final())
  lu.assertTrue(history[3]:is_completed())
  local last = fut:state()
  lu.assertEquals(last.name, history[3].name)
  lu.assertEquals(last.timestamp, history[3].timestamp)
end

function TestStates:test_history_grows_as_the_run_goes()
  h.shared_memory("a task sets the test's variables (or waits on its gate)")
  local gate = h.gate() -- the run ends once the test opens it
  local started = false
  local t = mf.task(function() started = true gate:wait() end)
  local fut = t:submit()
  lu.assertEquals(names(fut:history()), { "Pending" })
  h.eventually(function() return started end, "the run to start")
  lu.assertEquals(names(fut:history()), { "Pending", "Running" })
  gate:open()
  fut:wait()
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "Completed" })
end

function TestStates:test_history_of_failed_run_keeps_name_and_traceback()
  local t = mf.task({ name = "fails" }, function() failing_body() end)
  local fut = t:submit()
  fut:wait()
  local history = fut:history()
  lu.assertEquals(names(history), { "Pending", "Running", "Failed" })
  lu.assertEquals(types(history), { "PENDING", "RUNNING", "FAILED" })
  local last = history[3]
  lu.assertEquals(last.run_name, "fails-1")
  lu.assertIsString(last.traceback)
  lu.assertStrContains(last.traceback, "failing_body")
  lu.assertTrue(last:is_failed())
  lu.assertEquals(fut:state().run_name, "fails-1")
end

-- }======

-- {====== Flows ======

function TestStates:test_flow_run_returns_its_final_state()
  local f = mf.flow({ name = "okflow" }, function(x) return x + 1 end)
  local state = f:run(1)
  lu.assertEquals(state.type, "COMPLETED")
  lu.assertEquals(state.name, "Completed")
  lu.assertStrMatches(state.run_name, "okflow%-%d+")
  lu.assertIsString(state.run_id)
  lu.assertEquals(state.attempt, 1)
  lu.assertTrue(state:is_completed())
  lu.assertEquals(state:result(), 2)
end

function TestStates:test_failed_flow_state_keeps_name_and_traceback()
  local f = mf.flow({ name = "badflow" }, function() failing_body() end)
  local state = f:run()
  lu.assertEquals(state.type, "FAILED")
  lu.assertEquals(state.name, "Failed")
  lu.assertStrMatches(state.run_name, "badflow%-%d+")
  lu.assertIsString(state.traceback)
  lu.assertStrContains(state.traceback, "failing_body")
  lu.assertTrue(state:is_failed())
  lu.assertTrue(state:is_final())
  local ok, err = pcall(state.result, state)
  lu.assertFalse(ok)
  lu.assertEquals(err, "boom in the body")
end

function TestStates:test_table_error_message_is_readable()
  local fut = mf.task({ name = "tabler" }, function() error({ code = 7, why = "x" }) end):submit()
  fut:wait()
  local state = fut:state()
  lu.assertEquals(state.message, '{code = 7, why = "x"}')
  lu.assertStrContains(state.traceback, '{code = 7, why = "x"}\nstack traceback:')
end

function TestStates:test_state_of_a_run_that_passed_an_error_on_keeps_the_full_detail()
  -- The flow re-raised the task's error: its State's traceback is its own,
  -- unfiltered (moonflow's frames too), then the task run's.
  local inner = mf.task({ name = "inner" }, function() failing_body() end)
  local outer = mf.flow({ name = "outer" }, function() return inner() end)
  local state = outer:run()
  lu.assertEquals(state.type, "FAILED")
  local own, rest = state.traceback:match("^(.-)\n%(the error came from run (.*)$")
  lu.assertNotNil(own, state.traceback)
  lu.assertStrContains(own, "boom in the body\nstack traceback:")
  lu.assertStrContains(own, "[moonflow] moonflow.flow")
  lu.assertStrMatches(rest, "inner%-%d+:\n.*boom in the body\nstack traceback:\n.*failing_body.*%)")
end

function TestStates:test_state_of_a_deep_chain_keeps_the_nearest_runs_and_the_origin()
  h.shared_memory("the runs a task starts inside a worker are numbered by the worker")
  -- 50 runs each re-raising the error of the one it called: the State
  -- shows the three nearest and the one that raised it first, not all.
  local rec
  rec = mf.task({ name = "rec" }, function(n)
    if n == 0 then error("bottom", 0) end
    local v = rec(n - 1)
    return v
  end)
  local fut = rec:submit(50)
  fut:wait()
  local tb = fut:state().traceback
  local links = {}
  for name in tb:gmatch("%(the error came from run ([^:]+):") do links[#links + 1] = name end
  lu.assertEquals(links, { "rec-2", "rec-3", "rec-4", "rec-51" }, tb)
  lu.assertStrContains(tb, "(... passed on by 46 more runs)")
end

-- }======

h.run()
