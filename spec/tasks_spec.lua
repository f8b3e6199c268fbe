-- Tasks (api.md, "Tasks"): definition, submit, map, call, with, naming,
-- option checks, deep recursion and long chains.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

TestTasks = {}

function TestTasks:test_submit_returns_future_and_result()
  local double = mf.task({ name = "double" }, function(x) return x * 2 end)
  local fut = double:submit(21)
  lu.assertEquals(fut:result(), 42)
  lu.assertStrMatches(fut.name, "double%-%d+")
  lu.assertIsString(fut.id)
end

function TestTasks:test_call_runs_and_waits_with_all_results()
  local t = mf.task(function(a, b) return a + b, a * b, nil end)
  local s, p, z = t(3, 4)
  lu.assertEquals({ s, p, z }, { 7, 12, nil })
  lu.assertEquals(select("#", t(1, 1)), 3)
end

function TestTasks:test_default_name_is_definition_place()
  local t = mf.task(function() end)
  lu.assertStrMatches(t.name, "tasks_spec%.lua:%d+")
end

function TestTasks:test_run_names_count_from_one()
  local t = mf.task({ name = "count" }, function() end)
  local a, b, c = t:submit(), t:submit(), t:submit()
  lu.assertEquals({ a.name, b.name, c.name }, { "count-1", "count-2", "count-3" })
  mf.wait({ a, b, c })
end

function TestTasks:test_function_forms()
  local t = mf.task(function(x) return x + 1 end)
  lu.assertEquals(mf.submit(t, 1):result(), 2)
  lu.assertEquals(mf.map(t, { 1, 2 }):result(), { 2, 3, n = 2 })
  lu.assertEquals(mf.result(t:submit(5)), 6)
end

function TestTasks:test_with_replaces_options_and_keeps_function()
  local t = mf.task({ name = "a" }, function(x) return x end)
  local u = t:with({ name = "b" })
  lu.assertEquals(u.name, "b")
  lu.assertEquals(t.name, "a")
  lu.assertEquals(u(7), 7)
end

function TestTasks:test_submit_never_blocks()
  h.shared_memory("a task sets the test's variables")
  local order = {}
  local t = mf.task(function() order[#order + 1] = "ran" end)
  local fut = t:submit()
  order[#order + 1] = "submitted"
  fut:wait()
  lu.assertEquals(order, { "submitted", "ran" })
end

function TestTasks:test_tasks_submit_and_wait_inside_tasks()
  local leaf = mf.task(function(x) mf.sleep(0) return x * 10 end)
  local mid = mf.task(function(x)
    local a = leaf:submit(x)
    return a:result() + leaf(x + 1)
  end)
  lu.assertEquals(mid(1), 30)
end

function TestTasks:test_recursion_ten_thousand_deep()
  local rec
  rec = mf.task(function(n)
    if n == 0 then return 0 end
    return rec:submit(n - 1):result() + 1
  end)
  lu.assertEquals(rec(10000), 10000)
end

function TestTasks:test_chain_of_hundred_thousand_futures()
  local inc = mf.task(function(v) return v + 1 end)
  local fut = inc:submit(0)
  for _ = 2, 100000 do fut = inc:submit(fut) end
  lu.assertEquals(fut:result(), 100000)
end

function TestTasks:test_unknown_option_is_usage_error()
  local err = h.raises_kind("UsageError", mf.task, { nmae = "x" }, function() end)
  lu.assertStrContains(err.message, "nmae")
end

function TestTasks:test_wrong_option_type_is_usage_error()
  local err = h.raises_kind("UsageError", mf.task, { name = 3 }, function() end)
  lu.assertStrContains(err.message, "name")
  err = h.raises_kind("UsageError", mf.task, { tags = "x" }, function() end)
  lu.assertStrContains(err.message, "tags")
end

function TestTasks:test_bad_definition_arguments()
  h.raises_kind("UsageError", mf.task, 42)
  h.raises_kind("UsageError", mf.task, {}, "not a function")
end

function TestTasks:test_submit_with_dot_is_usage_error()
  local t = mf.task(function() end)
  local err = h.raises_kind("UsageError", t.submit, 1)
  lu.assertStrContains(err.message, "t:submit")
end

function TestTasks:test_dropped_runs_are_freed()
  local t = mf.task(function(x) return x end)
  local core = require "moonflow.core"
  local floor = h.in_program and 1 or 0
  local function batch()
    for i = 1, 20000 do t:submit(i) end
    -- Patience counts from the last run that ended: a machine slow enough
    -- to take longer than PATIENCE over the whole batch still ends it.
    local left, since = core.live(), mf.now()
    while core.live() > floor do
      if core.live() < left then left, since = core.live(), mf.now() end
      if mf.now() - since > h.PATIENCE then
        lu.fail(string.format("no run ended in %g s (%d left)", h.PATIENCE, left))
      end
      mf.sleep(0.002)
    end
  end
  -- The heap after a batch moves up and down with how many runs were in
  -- flight at once (tables grow to that and shrink at their next rehash;
  -- on runners that copy, by up to 600 KiB): the lowest of two batches is
  -- compared, before and after 200,000 more runs, against a budget of
  -- about 5 bytes a run (1 MiB), well above that noise.  A leak raises it.
  local function heap_after_batches()
    local lowest = math.huge
    for _ = 1, 2 do
      batch()
      collectgarbage(); collectgarbage()
      lowest = math.min(lowest, collectgarbage("count"))
    end
    return lowest
  end
  local before = heap_after_batches()
  for _ = 1, 10 do batch() end
  local after = heap_after_batches()
  lu.assertTrue(after - before < 1024, string.format("grew %.0f KiB", after - before))
end

h.run()
