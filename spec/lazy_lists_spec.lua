-- The FutureList of a map over one array makes its runs' Futures only when
-- they are asked for (bindings/group.c, issue 11): a run that returns one
-- value completes without one, and list:result() reads the results from the
-- map's group.  Everything a FutureList promises (api.md: #list, list[i],
-- ipairs, wait, result) holds as for a list of Futures made up front; a
-- write makes it a plain table of Futures; raw reads see only what was
-- written (the documented difference).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"

local double = mf.task({ name = "double" }, function(x) return x * 2 end)
local napper = mf.task({ name = "napper" }, function(x)
  mf.sleep(0.001)
  return x
end)
local picky = mf.task({ name = "picky" }, function(x)
  if x == 3 then error({ kind = "BadRow", message = "bad row", row = x }) end
  return x
end)

local range = h.range

-- The finalizer tests' armed objects still waiting for a collection: run
-- now, not in a later test, where they would call mf.context() at random.
local function collect_armed()
  collectgarbage()
  collectgarbage()
end

-- count objects whose finalizers ask for mf.context() and arm another, up
-- to 100,000 calls or until stopped; the calls that got a context counted.
local function context_askers(count)
  local askers = { finalized = 0, contexts = 0, stopped = false }
  local function arm()
    setmetatable({}, { __gc = function()
      if askers.stopped then return end
      askers.finalized = askers.finalized + 1
      local ok, context = pcall(mf.context)
      if ok and context then askers.contexts = askers.contexts + 1 end
      if askers.finalized < 100000 then arm() end
    end })
  end
  for _ = 1, count do arm() end
  return askers
end

-- Stops them and runs those left (Lua's collector as it was by default);
-- the work they ran beside went well, and some asked from inside a run.
local function stop_askers(askers, ok, err)
  askers.stopped = true
  collectgarbage("incremental", 200, 100, 13) -- Lua's defaults
  collect_armed()
  assert(ok, err)
  lu.assertTrue(askers.contexts > 0, "no finalizer ran inside a run")
end

TestLazyLists = {}

function TestLazyLists:test_results_without_reading_a_future()
  local list = double:map(range(1000))
  lu.assertEquals(#list, 1000)
  local r = list:result()
  lu.assertEquals(r.n, 1000)
  for i = 1, 1000 do lu.assertEquals(r[i], 2 * i) end
  -- Asked afterwards, each Future knows its run and its result.
  local f = list[500]
  lu.assertTrue(core.is_future(f))
  lu.assertEquals(f:result(), 1000)
  lu.assertEquals(f:state().type, "COMPLETED")
  lu.assertStrContains(f.name, "double-")
end

function TestLazyLists:test_a_future_is_made_once()
  local list = double:map({ 1, 2, 3 })
  local a = list[2]
  lu.assertTrue(rawequal(a, list[2]), "list[i] is the same Future each time")
  lu.assertTrue(rawequal(a, list[2.0]), "2.0 is the key 2, as in any table")
  lu.assertNil(list["2"])
  list:wait()
  lu.assertTrue(rawequal(a, list[2]))
  lu.assertEquals(a:result(), 4)
  lu.assertNil(list[0])
  lu.assertNil(list[4])
end

function TestLazyLists:test_ipairs_pairs_and_length_see_every_run()
  local list = double:map({ 5, 6, 7 })
  local seen = {}
  for i, f in ipairs(list) do seen[i] = f:result() end
  lu.assertEquals(seen, { 10, 12, 14 })
  local count = 0
  for k, f in pairs(list) do
    count = count + 1
    lu.assertTrue(rawequal(f, list[k]))
  end
  lu.assertEquals(count, 3)
  lu.assertEquals(tostring(double:map({ 1, 2 })), "<FutureList of 2>")
  lu.assertEquals(getmetatable(list), "moonflow.FutureList", "protected")
end

-- The documented difference: until something writes to it, the list is a
-- proxy, and raw reads find nothing in it.
function TestLazyLists:test_raw_reads_see_what_was_written()
  local list = double:map({ 1, 2, 3 })
  lu.assertEquals(rawlen(list), 0)
  lu.assertNil(next(list))
  local first = list[1]
  list[4] = "mine" -- a write: the list becomes a plain table of Futures
  lu.assertEquals(rawlen(list), 4)
  lu.assertTrue(rawequal(rawget(list, 1), first))
  lu.assertEquals(rawget(list, 4), "mine")
  list[4] = nil
  lu.assertEquals(#list, 3)
  lu.assertEquals(list:result(), { 2, 4, 6, n = 3 })
end

-- A value put there with rawset is the user's, as in any table: #list,
-- ipairs and list:result() all count it (#list said the map's length, and
-- list:result() the longer one: the API fuzzer, seed 1796500032 case 91).
function TestLazyLists:test_a_raw_write_counts_as_any_write()
  local list = double:map({ 1, 2 })
  local extra = double:submit(10)
  rawset(list, 3, extra)
  lu.assertEquals(#list, 3)
  lu.assertEquals(tostring(list), "<FutureList of 3>")
  local seen = 0
  for _ in ipairs(list) do seen = seen + 1 end
  lu.assertEquals(seen, 3)
  lu.assertEquals(list:result(), { 2, 4, 20, n = 3 })
  local empty = double:map({})
  rawset(empty, 1, extra)
  lu.assertEquals(#empty, 1)
  lu.assertEquals(empty:result(), { 20, n = 1 })
end

function TestLazyLists:test_a_list_changed_while_waited_gives_what_it_held()
  local list = napper:map({ 1, 2, 3 })
  list[1]:add_done_callback(function()
    for i = #list, 1, -1 do list[i] = nil end
  end)
  local r = list:result()
  lu.assertEquals({ r.n, r[1], r[2], r[3] }, { 3, 1, 2, 3 })
  lu.assertEquals(#list, 0)
end

function TestLazyLists:test_failures_fail_fast_or_stand_at_their_index()
  local list = picky:map({ 1, 2, 3, 4 })
  local err = h.raises_kind("BadRow", list.result, list)
  lu.assertEquals(err.row, 3)
  local r = list:result(nil, false)
  lu.assertEquals({ r[1], r[2], r[4], r.n }, { 1, 2, 4, 4 })
  lu.assertEquals(r[3].kind, "BadRow")
  lu.assertEquals(list[3]:state().type, "FAILED")
  lu.assertEquals(list[4]:state().type, "COMPLETED")
end

function TestLazyLists:test_runs_that_park_and_return_many()
  local many = mf.task({ name = "many" }, function(x) return x, x + 1 end)
  local none = mf.task({ name = "none" }, function() end)
  lu.assertEquals(napper:map(range(50)):result(), (function()
    local t = range(50); t.n = 50; return t
  end)())
  local list = many:map({ 1, 2 })
  lu.assertEquals(list:result(), { 1, 2, n = 2 })
  lu.assertEquals({ list[2]:result() }, { 2, 3 }, "its Future gives them all")
  local nothing = none:map({ 1, 2 })
  lu.assertEquals(nothing:result(), { n = 2 })
  lu.assertNil(nothing[1]:result())
end

function TestLazyLists:test_a_lazy_list_as_an_input()
  local doubled = double:map({ 1, 2, 3 })
  lu.assertEquals(double:map(doubled):result(), { 4, 8, 12, n = 3 })
  local sum = mf.task({ name = "sum" }, function(values)
    local s = 0
    for _, v in ipairs(values) do s = s + v end
    return s
  end)
  lu.assertEquals(sum:submit(double:map({ 1, 2, 3 })):result(), 12)
  local done, not_done = mf.wait(double:map({ 1, 2 }))
  lu.assertEquals({ #done, #not_done }, { 2, 0 })
  local got = {}
  local list = double:map({ 1, 2, 3 })
  for f in mf.as_completed(list) do got[#got + 1] = f:result() end
  table.sort(got)
  lu.assertEquals(got, { 2, 4, 6 })
  local after = mf.task({ name = "after" }, function() return "after" end)
  local waited = double:map({ 1, 2 })
  lu.assertEquals(after:with({ wait_for = waited }):submit():result(), "after")
  lu.assertEquals(waited[1]:state().type, "COMPLETED")
  local kinds = mf.task({ name = "kinds" }, function(values)
    local k = {}
    for i, v in ipairs(values) do k[i] = type(v) == "table" and v.kind or v end
    return k
  end)
  lu.assertEquals(kinds:submit(mf.allow_failure(picky:map({ 1, 3 }))):result(),
    { 1, "BadRow" }, "each run allowed to fail: the error value stands in")
end

function TestLazyLists:test_cancelled_before_they_start()
  local slow = mf.task({ name = "slow" }, function(x)
    mf.sleep(10)
    return x
  end)
  local list = slow:map({ 1, 2, 3 })
  for i = 1, #list do list[i]:cancel() end
  local r = list:result(nil, false)
  lu.assertEquals(r.n, 3)
  for i = 1, 3 do lu.assertEquals(list[i]:state().type, "CANCELLED") end
end

-- A map's runs outlive a dropped list while they run, and are released
-- with it afterwards.
function TestLazyLists:test_a_dropped_list_still_runs_and_is_collected()
  h.shared_memory("the task counts runs in a variable of the test")
  local ran = 0
  local counter = mf.task({ name = "counter" }, function() ran = ran + 1 end)
  local weak = setmetatable({}, { __mode = "v" })
  do
    weak[1] = counter:map(range(100))
  end
  collectgarbage()
  collectgarbage()
  h.eventually(function() return ran == 100 end, "every run of the dropped list")
  h.eventually(function()
    collectgarbage()
    return weak[1] == nil
  end, "the list to be collected")
end

-- A run that completed without its Future gives its record back once
-- nothing else refers to it (group.c: the group keeps a 48-byte summary);
-- its Future, asked for afterwards, is made again from the summary and
-- tells the same run: id, name, history, attempt, result.
function TestLazyLists:test_finished_runs_give_their_records_back()
  local none = mf.task({ name = "none" }, function() end)
  local n = 200
  local list = double:map(range(n))
  local empty = none:map(range(3))
  lu.assertEquals(list:result().n, n)
  empty:wait()
  if not h.copying then
    -- (runners that copy values make every Future: nothing retires there)
    lu.assertTrue(core.retired_runs(list) >= n - 1,
      "all but the last run retired: " .. core.retired_runs(list))
    lu.assertTrue(core.retired_runs(empty) >= 2)
  end
  local ids = {}
  local base = tonumber(list[1].name:match("%-(%d+)$")) - 1
  for i = 1, n do
    local f = list[i]
    lu.assertTrue(rawequal(f, list[i]), "made once")
    lu.assertEquals(f:result(), 2 * i)
    local s = f:state()
    lu.assertEquals({ s.type, s.name, s.attempt }, { "COMPLETED", "Completed", 1 })
    lu.assertEquals(s.run_name, "double-" .. base + i, "its own name")
    lu.assertEquals(f.name, s.run_name)
    local history = f:history()
    lu.assertEquals(#history, 3)
    lu.assertEquals({ history[1].type, history[2].type, history[3].type },
      { "PENDING", "RUNNING", "COMPLETED" })
    lu.assertTrue(history[1].timestamp <= history[2].timestamp
      and history[2].timestamp <= history[3].timestamp)
    lu.assertEquals(history[3].run_id, s.run_id)
    lu.assertTrue(f:done())
    lu.assertNil(ids[s.run_id], "ids stay distinct")
    ids[s.run_id] = true
  end
  lu.assertEquals(core.retired_runs(list), 0, "every record made again")
  lu.assertEquals(select("#", empty[1]:result()), 0, "it returned nothing")
  lu.assertEquals(empty:result(), { n = 3 })
  -- Callbacks added now run at once, as for any finished run.
  local called
  list[7]:add_done_callback(function(f) called = f:result() end)
  h.eventually(function() return called == 14 end, "done callback")
end

-- mf.wait on a map's list makes no Future when every run finishes: done
-- is another lazy list of the same runs (their Futures made when read, the
-- same as the list's), not_done is empty, and the runs give their records
-- back as after list:wait().  It made every Future before: three times the
-- time and memory of the map (README, bench/wait_list.lua).
function TestLazyLists:test_mf_wait_on_a_map_list_makes_no_future()
  local n = 300
  local list = double:map(range(n))
  local done, not_done = mf.wait(list)
  lu.assertEquals({ #done, #not_done }, { n, 0 })
  lu.assertEquals(rawlen(done), 0, "done is lazy")
  lu.assertEquals(rawlen(list), 0, "the list is left lazy")
  lu.assertNil(next(list))
  if not h.copying then
    lu.assertTrue(core.retired_runs(list) >= n - 1,
      "the runs retired: " .. core.retired_runs(list))
  end
  lu.assertEquals(tostring(done), ("<FutureList of %d>"):format(n))
  lu.assertTrue(rawequal(done[7], list[7]), "the same Future")
  lu.assertEquals(done[n]:result(), 2 * n)
  local seen = 0
  for i, f in ipairs(done) do
    seen = seen + 1
    if f:result() ~= 2 * i then lu.fail("done[" .. i .. "] is not run " .. i) end
  end
  lu.assertEquals(seen, n)
  lu.assertEquals(done:result(), list:result())
  lu.assertEquals(mf.wait(done)[n], list[n], "done waited on in turn")
  -- A write makes done a plain array of the Futures; the list stays lazy.
  done[n + 1] = "mine"
  lu.assertEquals(rawlen(done), n + 1)
  lu.assertTrue(rawequal(rawget(done, 1), list[1]))
  lu.assertEquals(rawlen(list), 0)
  -- A table given done's metatable by hand is no list of these runs.
  local other = mf.wait(double:map({ 1, 2 }))
  local forged = setmetatable({}, nil)
  debug.setmetatable(forged, debug.getmetatable(other))
  lu.assertEquals(#forged, 2, "lazy: its length is the group's")
  forged[1] = "x" -- expanded: it gets no Future
  lu.assertEquals(rawlen(forged), 1)
  lu.assertEquals(#other, 2)
  lu.assertEquals(other[2]:result(), 4)
end

-- Runs still going at the timeout: each Future is made, into done or
-- not_done, in input order, the same as the list's.
function TestLazyLists:test_mf_wait_on_a_map_list_with_a_timeout()
  local held = mf.task({ name = "held" }, function(x)
    if x > 3 then mf.sleep(60) end
    return x
  end)
  local list = held:map(range(6))
  local first, rest = mf.wait({ list[1], list[2], list[3] })
  lu.assertEquals({ #first, #rest }, { 3, 0 })
  local done, not_done = mf.wait(list, 0.01)
  lu.assertEquals({ #done, #not_done }, { 3, 3 })
  for i = 1, 3 do
    lu.assertTrue(rawequal(done[i], list[i]))
    lu.assertTrue(rawequal(not_done[i], list[i + 3]))
  end
  for _, f in ipairs(not_done) do f:cancel() end
  local all, none = mf.wait(list)
  lu.assertEquals({ #all, #none }, { 6, 0 })
  lu.assertEquals(list[6]:state().type, "CANCELLED")
  lu.assertEquals(list[2]:result(), 2)
end

-- Retired runs count as completed everywhere a list is read: waits,
-- results, a list as an input, wait_for, as_completed.
function TestLazyLists:test_retired_runs_read_as_completed()
  local list = double:map(range(50))
  list:wait()
  lu.assertEquals(list:wait(), true)
  lu.assertEquals(list:result()[50], 100)
  local sum = mf.task({ name = "sum" }, function(values)
    local s = 0
    for _, v in ipairs(values) do s = s + v end
    return s
  end)
  local again = double:map(range(20))
  again:wait()
  lu.assertEquals(sum:submit(again):result(), 420)
  local third = double:map(range(10))
  third:wait()
  local seen = 0
  for f in mf.as_completed(third) do seen = seen + f:result() end
  lu.assertEquals(seen, 110)
  -- Inside a run, collected in slices.
  local inner = mf.flow({ name = "inner" }, function()
    local l = double:map(range(100))
    l:wait()
    local r = l:result()
    return r[1] + r[100]
  end)
  lu.assertEquals(inner(), 202)
end

-- A finalizer that asks for the current run's Future (mf.context) while
-- that Future is being made (the collector runs at any allocation, here
-- at every one) is given the same Future, and the run's result is kept
-- (the fuzzer found two Futures made for one run and its result lost;
-- log_prints makes each run's step make its Future).
function TestLazyLists:test_a_finalizer_asking_for_the_future_being_made()
  local askers = context_askers(50)
  local echo = mf.task({ log_prints = true }, function(x) return x end)
  local n = 3000
  local list, res
  collectgarbage("incremental", 0, 100, 0) -- Lua's (zeros: pause, step as they are)
  local ok, err = pcall(function()
    list = echo:map(h.range(n))
    res = list:result()
  end)
  stop_askers(askers, ok, err)
  for i = 1, n do
    if res[i] ~= i then lu.fail(string.format("result %d is %s", i, tostring(res[i]))) end
    lu.assertEquals(list[i]:result(), i)
  end
end

-- The run asks for its own Future (the first of its group's to be made)
-- and a finalizer, run by an allocation of that very call, asks for it too:
-- the table of made Futures was made twice, the second write lost the
-- first's Future, and mf.context() got false (a crash, then CI's "a Future
-- expected, got boolean").  Minor collections at every 1% of growth call
-- the pending finalizers often enough to land there in every run.
function TestLazyLists:test_a_finalizer_asking_for_a_future_while_it_is_made()
  local askers = context_askers(50)
  local own = mf.task({ name = "own" }, function(x)
    return mf.context().name and x
  end)
  local n = 2000
  collectgarbage("generational", 1, 100)
  local ok, err = pcall(function()
    for i = 1, n do
      local res = own:map({ i, i + 1 }):result()
      if res[1] ~= i or res[2] ~= i + 1 then
        error(string.format("map %d gave %s, %s", i, tostring(res[1]),
          tostring(res[2])))
      end
    end
  end)
  stop_askers(askers, ok, err)
end

-- A finalizer calls list:result(), which retires the runs that ended,
-- while list[i] makes run i's Future (its record made again from the
-- summary): the record was freed under materialize (AddressSanitizer: a
-- use after free; a crash without it).  A thousand finalizers pending all
-- the time and Lua's incremental collector land there in every run (3 of 3
-- crashed before the fix).
function TestLazyLists:test_a_finalizer_retiring_runs_while_a_future_is_made()
  local finalized, list, failed = 0, nil, nil
  local function arm()
    setmetatable({}, { __gc = function()
      finalized = finalized + 1
      if list then
        local ok, err = pcall(list.result, list)
        if not ok then failed = failed or err end
      end
      if finalized < 100000000 then arm() end
    end })
  end
  for _ = 1, 1000 do arm() end
  local ok, err = pcall(function()
    for _ = 1, 40 do
      local l = double:map(range(100))
      l:result()
      list = l
      collectgarbage("incremental", 0, 100, 0) -- Lua's (zeros: pause, step as they are)
      for i = 1, 100 do
        local f = l[i]
        if f:result() ~= 2 * i then error("list[" .. i .. "] gave " .. tostring(f:result())) end
      end
      collectgarbage("incremental", 200, 100, 13) -- Lua's defaults
    end
  end)
  collectgarbage("incremental", 200, 100, 13)
  local calls = finalized
  list, finalized = nil, 100000000 -- (no more arming)
  collect_armed()
  assert(ok, err)
  lu.assertNil(failed, "list:result() in a finalizer")
  lu.assertTrue(calls > 1000, "the finalizers ran")
end

h.run()
