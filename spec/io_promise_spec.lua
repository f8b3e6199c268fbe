-- I/O inside runs: mf.promise, the bridge from callback libraries into runs
-- (api.md, "I/O inside runs").  The luv tests load luv before moonflow
-- (moonflow then shares luv's loop): they run under stock lua5.4 only.
package.path = "spec/?.lua;" .. package.path
local uv
if not package.loaded.moonflow then
  local ok, mod = pcall(require, "luv")
  if ok then uv = mod end
end
local h = require "helper"
local mf, lu = h.mf, h.lu

TestPromise = {}

function TestPromise:test_resolve_completes_the_future_with_its_values()
  local fut, resolve, reject = mf.promise("answer")
  lu.assertEquals(fut.name, "answer")
  lu.assertFalse(fut:done())
  local waiter = mf.task(function() return fut:result() end):submit()
  lu.assertTrue(resolve(1, nil, "three"))
  lu.assertFalse(resolve(2)) -- the second settle is ignored
  lu.assertFalse(reject("late"))
  lu.assertEquals(fut:state().type, "COMPLETED")
  lu.assertEquals({ fut:result() }, { 1, nil, "three" })
  lu.assertEquals(waiter:result(), 1)
  local empty, done = mf.promise()
  lu.assertStrContains(empty.name, "promise-")
  done()
  lu.assertEquals(select("#", empty:result()), 0)
end

function TestPromise:test_reject_fails_it_and_downstream_runs_are_not_ready()
  local fut, _, reject = mf.promise()
  local err = { kind = "Mine", message = "no" }
  local use = mf.task({ name = "use" }, function(v) return v end)
  local down = use:submit(fut)
  local allowed = use:submit(mf.allow_failure(fut))
  lu.assertTrue(reject(err))
  lu.assertTrue(down:wait())
  lu.assertEquals(down:state().name, "NotReady")
  h.raises_kind("UpstreamFailed", down.result, down)
  lu.assertIs(allowed:result(), err)
  local ok, raised = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertIs(raised, err)
  local bare, _, reject2 = mf.promise("bare")
  reject2()
  ok, raised = pcall(bare.result, bare)
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(raised), "bare")
end

function TestPromise:test_settled_from_another_run_and_from_a_done_callback()
  local fut, resolve = mf.promise()
  local settler = mf.task(function() mf.sleep(0.01); return resolve("from a run") end)
  local waiter = mf.task(function() return fut:result() end)
  local w = waiter:submit()
  lu.assertTrue(settler:submit():result())
  lu.assertEquals(w:result(), "from a run")

  local fut2, resolve2 = mf.promise()
  local first = mf.task(function() return "done" end):submit()
  first:add_done_callback(function(f) resolve2("after " .. f:result()) end)
  lu.assertEquals(fut2:result(), "after done")
end

function TestPromise:test_a_cancelled_promise_cannot_be_settled()
  local fut, resolve = mf.promise()
  lu.assertTrue(fut:cancel())
  lu.assertFalse(resolve(1))
  lu.assertEquals(fut:state().type, "CANCELLED")
end

function TestPromise:test_a_promise_does_not_belong_to_the_run_that_made_it()
  -- The flow ends though its promise is unsettled, and leaves it going.
  local made = {}
  local f = mf.flow({ name = "maker" }, function()
    made.fut, made.resolve = mf.promise("outlives")
  end)
  lu.assertEquals(f:run().type, "COMPLETED")
  lu.assertFalse(made.fut:done())
  made.resolve("later")
  lu.assertEquals(made.fut:result(), "later")
end

function TestPromise:test_wrong_arguments_are_usage_errors()
  h.raises_kind("UsageError", mf.promise, 42)
end

TestBareYield = {}

function TestBareYield:test_coroutine_yield_in_a_task_yields_once()
  local order = {}
  local a = mf.task(function()
    order[#order + 1] = "a1"
    local r = coroutine.yield("ignored")
    order[#order + 1] = "a2"
    return r
  end)
  local b = mf.task(function() order[#order + 1] = "b" end)
  local fa, fb = a:submit(), b:submit()
  lu.assertNil(fa:result())
  fb:result()
  lu.assertEquals(order, { "a1", "b", "a2" })
  lu.assertEquals(fa:state().type, "COMPLETED")
end

function TestBareYield:test_resuming_a_parked_run_from_outside_points_to_promises()
  local co
  local parked = mf.task(function()
    co = coroutine.running()
    mf.sleep(0.05)
    return "untouched"
  end)
  local fut = parked:submit()
  mf.sleep(0.01)
  local ok, err = pcall(coroutine.resume, co, "hijack")
  lu.assertFalse(ok)
  lu.assertEquals(err.kind, "UsageError")
  lu.assertStrContains(err.message, "mf.promise")
  lu.assertEquals(fut:result(), "untouched")
end

TestLuvBridge = {}

local function need_luv()
  lu.skipIf(h.in_program, "under the moonflow program moonflow is loaded before luv")
  lu.skipIf(uv == nil, "luv is not installed")
end

function TestLuvBridge:test_a_luv_timer_settles_a_promise_a_task_waits_on()
  need_luv()
  local fut, resolve = mf.promise("tick")
  local timer = uv.new_timer()
  timer:start(20, 0, function()
    timer:close()
    resolve("tock")
  end)
  local waiter = mf.task(function() return "got " .. fut:result() end)
  lu.assertEquals(waiter:submit():result(), "got tock")
end

function TestLuvBridge:test_a_luv_tcp_server_callback_settles_a_promise()
  need_luv()
  local received, deliver = mf.promise("received")
  local server = uv.new_tcp()
  server:bind("127.0.0.1", 0)
  server:listen(16, function()
    local client = uv.new_tcp()
    server:accept(client)
    client:read_start(function(err, data)
      if data then deliver(data) end
      client:close()
    end)
  end)
  local port = server:getsockname().port
  local sender = mf.task(function()
    local c = mf.tcp.connect("127.0.0.1", port)
    c:write("through luv")
    local got = received:result()
    c:close()
    return got
  end)
  lu.assertEquals(sender:submit():result(), "through luv")
  server:close()
end

h.run()
