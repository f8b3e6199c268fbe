-- Task runners that copy (api.md, "Running work"): mf.runners.threads and
-- mf.runners.processes.  Every test of TestRunner runs once per runner
-- (TestThreads, TestProcesses); what only one of them has (killing a
-- worker process, corrupt frames, threads under ThreadSanitizer) has its
-- own tests.  The shared suite (tasks, futures, ...) runs again on each
-- runner through MF_RUNNER (spec/helper.lua): these are the rest.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"

-- {====== Helpers ======

local capture = h.capture

local read_file = h.read_file

local write_file = h.write_file

local quote = h.shell_quote

-- Stock lua5.4 and the program as subprocesses.  Under the sanitizers,
-- stock lua5.4 needs their runtime preloaded to load the instrumented
-- module; the instrumented program must not get it.
local PRELOAD = os.getenv("MF_SUBPROCESS_PRELOAD") or os.getenv("LD_PRELOAD")
local MODULE_DIR = os.getenv("MF_MODULE_DIR") or "build"
local function command(host)
  if host == "lua" then
    return "env MF_MODULE_DIR=" .. quote(MODULE_DIR)
      .. (PRELOAD and (" LD_PRELOAD=" .. quote(PRELOAD)) or "") .. " lua5.4"
  end
  return "env -u LD_PRELOAD MF_MODULE_DIR=" .. quote(MODULE_DIR) .. " "
    .. quote(os.getenv("MF_PROGRAM") or "build/moonflow")
end

local DIR = capture("unset LD_PRELOAD; mktemp -d /tmp/mf-runners.XXXXXX"):gsub("\n$", "")
local counter = 0
local function scratch(name)
  counter = counter + 1
  return string.format("%s/%d-%s", DIR, counter, name)
end

-- Waits (parked or driving the loop) until pred() holds; fails after a
-- bound no busy machine misses (the bound only catches a hang).
local function eventually(pred, what, limit)
  local t0 = mf.now()
  while not pred() do
    if mf.now() - t0 > (limit or 60) then lu.fail("never happened: " .. what) end
    mf.sleep(0.005)
  end
end

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  -- A zombie is dead (and reaped by nobody yet): not alive.
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

local function thread_count()
  return tonumber(read_file("/proc/self/status"):match("Threads:%s*(%d+)"))
end

-- A task that copies nothing of the test: its function's upvalues are
-- values (numbers, strings) or modules.
local function task_on(runner, opts, fn)
  opts = opts or {}
  opts.runner = runner
  return mf.task(opts, fn)
end

-- }======

-- {====== Every runner that copies ======

TestRunner = {}

function TestRunner:test_results_and_errors_come_back()
  local t = task_on(self.runner, { name = "calc" }, function(a, b)
    return a + b, a * b, nil, { sum = a + b, list = { a, b } }
  end)
  local r = table.pack(t(3, 4))
  lu.assertEquals(r.n, 4)
  lu.assertEquals({ r[1], r[2], r[3] }, { 7, 12, nil })
  lu.assertEquals(r[4], { sum = 7, list = { 3, 4 } })
  local fut = t:submit(1, 2)
  lu.assertEquals(fut.name, "calc-2")
  lu.assertEquals(fut:result(), 3)
  lu.assertEquals(fut:state().type, "COMPLETED")
end

function TestRunner:test_runs_in_another_lua_state()
  VISIBLE_IN_MAIN = "main's"
  local t = task_on(self.runner, {}, function()
    local seen = VISIBLE_IN_MAIN
    VISIBLE_IN_MAIN = "worker's"
    return seen
  end)
  lu.assertNil(t())
  lu.assertEquals(VISIBLE_IN_MAIN, "main's")
  VISIBLE_IN_MAIN = nil
end

-- Upvalues are copied when the attempt starts (the value the coroutine
-- runner's run would see then); what the worker changes stays there.
function TestRunner:test_upvalues_are_copied_when_the_attempt_starts()
  local n, list = 1, { 1 }
  local t = task_on(self.runner, {}, function()
    n = n + 10
    list[#list + 1] = "worker"
    return n, #list
  end)
  lu.assertEquals({ t() }, { 11, 2 })
  n = 5
  lu.assertEquals({ t() }, { 15, 2 })
  lu.assertEquals(n, 5)
  lu.assertEquals(list, { 1 })
end

function TestRunner:test_context_is_the_main_runs()
  local t = task_on(self.runner, { name = "ctx", tags = { "a", "b" }, retries = 1 },
    function()
      local c = mf.context()
      if c.attempt == 1 then error("first attempt", 0) end
      return c
    end)
  local f = mf.flow({ name = "outer" }, function()
    local fut = t:submit()
    return fut:result(), fut
  end)
  local c, fut = f()
  lu.assertEquals(c.name, fut.name)
  lu.assertEquals(c.id, fut.id)
  lu.assertEquals(c.attempt, 2)
  lu.assertEquals(c.tags, { "a", "b" })
  lu.assertEquals(c.flow_run.name, "outer-1")
end

function TestRunner:test_table_error_keeps_its_fields_and_the_error_metatable()
  local t = task_on(self.runner, {}, function(code)
    error({ code = code, detail = { "x", 2 } })
  end)
  local fut = t:submit(42)
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertEquals(err, { code = 42, detail = { "x", 2 } })
  lu.assertEquals(fut:result(nil, false), err)
  -- moonflow's own errors keep their metatable (tostring, kind).
  local typed = task_on(self.runner, {}, function()
    mf.sleep(-1) -- a UsageError raised inside the worker
  end)
  local e = h.raises_kind("UsageError", typed)
  lu.assertStrContains(tostring(e), "UsageError: ")
  lu.assertIs(getmetatable(e), getmetatable(core.error("X", "y")))
end

function TestRunner:test_string_error_and_traceback_name_the_users_line()
  local t = task_on(self.runner, { name = "boom" }, function()
    local function inner() error("kaboom") end
    inner()
  end)
  local fut = t:submit()
  fut:wait()
  local err = fut:result(nil, false)
  lu.assertStrMatches(err, ".*runners_spec%.lua:%d+: kaboom")
  local st = fut:state()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.run_name, "boom-1")
  lu.assertStrContains(st.traceback, "runners_spec.lua")
  lu.assertStrContains(st.traceback, "inner")
end

function TestRunner:test_an_argument_that_cannot_be_copied_is_a_usage_error()
  local t = task_on(self.runner, {}, function(x) return x end)
  local co = coroutine.create(function() end)
  local fut = t:submit({ conn = co })
  local err = h.raises_kind("UsageError", fut.result, fut)
  lu.assertStrContains(err.message, "args[1].conn")
  lu.assertEquals(err.path, "args[1].conn")
  lu.assertEquals(fut:state().type, "FAILED")
  -- The same for an upvalue of the function.
  local u = task_on(self.runner, {}, function() return co end)
  err = h.raises_kind("UsageError", u)
  lu.assertStrContains(err.message, "function.upvalue[co]")
end

function TestRunner:test_a_result_that_cannot_be_copied_is_a_usage_error()
  local t = task_on(self.runner, {}, function()
    return 1, { handle = coroutine.create(function() end) }
  end)
  local fut = t:submit()
  local err = h.raises_kind("UsageError", fut.result, fut)
  lu.assertStrContains(err.message, "result[2].handle")
  lu.assertEquals(fut:state().type, "FAILED")
end

function TestRunner:test_an_error_that_cannot_be_copied_comes_back_as_its_text()
  local t = task_on(self.runner, {}, function()
    error(setmetatable({}, { __tostring = function() return "opaque error" end }))
  end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(fut:result(nil, false), "opaque error")
  lu.assertEquals(fut:state().type, "FAILED")
end

function TestRunner:test_functions_travel_with_their_upvalues()
  local k = 3
  local function scale(x) return x * k end
  local t = task_on(self.runner, {}, function(f, x) return f(x), scale(x) end)
  lu.assertEquals({ t(function(v) return v + 1 end, 5) }, { 6, 15 })
  -- A function a run returns comes back too.
  local maker = task_on(self.runner, {}, function(n)
    return function(x) return x + n end
  end)
  lu.assertEquals(maker(10)(1), 11)
end

function TestRunner:test_map_uses_every_worker()
  local runner = self.make { workers = 2, setup = function()
    -- Its process and a table of its state: apart in threads and processes.
    WORKER_TOKEN = read_file("/proc/self/stat"):match("^%d+") .. tostring({})
  end }
  local t = task_on(runner, {}, function()
    mf.sleep(0.05)
    return WORKER_TOKEN
  end)
  local xs = {}
  for i = 1, 8 do xs[i] = i end
  local seen, distinct = {}, 0
  for _, token in ipairs(t:map(xs):result()) do
    if not seen[token] then seen[token], distinct = true, distinct + 1 end
  end
  lu.assertEquals(distinct, 2)
  runner:_shutdown()
end

function TestRunner:test_setup_runs_once_per_worker_before_its_first_run()
  local path = scratch("setup-count")
  local runner = self.make { workers = 2, setup = function()
    SETUP_RUNS = (SETUP_RUNS or 0) + 1
    local f = assert(io.open(path, "a"))
    f:write("setup\n")
    f:close()
    GREETING = string.format("hello %d", SETUP_RUNS)
  end }
  local t = task_on(runner, {}, function() return GREETING, SETUP_RUNS end)
  local list = t:map({ 1, 2, 3, 4, 5, 6 })
  for i = 1, 6 do
    lu.assertEquals({ list[i]:result() }, { "hello 1", 1 })
  end
  local _, lines = read_file(path):gsub("setup\n", "")
  lu.assertEquals(lines, 2)
  runner:_shutdown()
end

function TestRunner:test_a_failing_setup_fails_every_run_with_its_error()
  local runner = self.make { workers = 1, setup = function() error("no database", 0) end }
  local t = task_on(runner, {}, function() return 1 end)
  local err = h.raises_kind("UsageError", t)
  lu.assertStrContains(err.message, "setup")
  lu.assertStrContains(err.message, "no database")
  runner:_shutdown()
end

function TestRunner:test_os_exit_inside_a_worker_raises()
  local t = task_on(self.runner, {}, function() os.exit(3) end)
  local err = h.raises_kind("UsageError", t)
  lu.assertStrContains(err.message, "os.exit")
  -- The worker is still there.
  lu.assertEquals(task_on(self.runner, {}, function() return "alive" end)(), "alive")
end

function TestRunner:test_async_tasks_interleave_inside_a_worker()
  local runner = self.make { workers = 1 }
  local t = task_on(runner, {}, function(i)
    mf.sleep(0.2)
    return i
  end)
  local t0 = mf.now()
  local list = t:map({ 1, 2, 3, 4, 5, 6, 7, 8 })
  lu.assertEquals(list:result(), { 1, 2, 3, 4, 5, 6, 7, 8, n = 8 })
  -- One worker, eight sleeps of 0.2 s: they overlapped (in sequence they
  -- would take 1.6 s at least).
  lu.assertTrue(mf.now() - t0 < 1.6, "the sleeps did not overlap")
  runner:_shutdown()
end

function TestRunner:test_submit_inside_a_worker_runs_there_and_is_waited_for()
  local path = scratch("child")
  local leaf = mf.task({ name = "leaf" }, function(x)
    mf.sleep(0.05)
    return x * 10, mf.context().name
  end)
  local writer = mf.task({ name = "writer" }, function(p)
    mf.sleep(0.1)
    local f = assert(io.open(p, "w"))
    f:write("child ran")
    f:close()
  end)
  local t = task_on(self.runner, { name = "parent" }, function(x)
    writer:submit(path) -- not waited for by the function: by the job
    local a, name = leaf(x)
    return a + leaf:submit(x + 1):result(), name
  end)
  local sum, leaf_name = t(1)
  lu.assertEquals(sum, 30)
  lu.assertStrMatches(leaf_name, "leaf%-%d+")
  -- The run ended only after what it started did.
  lu.assertEquals(read_file(path), "child ran")
end

function TestRunner:test_recursive_task_travels()
  local fib
  fib = mf.task({ name = "fib", runner = self.runner }, function(n)
    if n < 2 then return n end
    return fib(n - 1) + fib:submit(n - 2):result()
  end)
  lu.assertEquals(fib(12), 144)
end

function TestRunner:test_retries_apply_to_remote_attempts()
  local t = task_on(self.runner, { retries = 3 }, function()
    local attempt = mf.context().attempt
    if attempt < 3 then error("attempt " .. attempt, 0) end
    return attempt
  end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), 3)
  local names = {}
  for i, st in ipairs(fut:history()) do names[i] = st.name end
  lu.assertEquals(names, { "Pending", "Running", "AwaitingRetry", "Retrying",
    "AwaitingRetry", "Retrying", "Completed" })
end

function TestRunner:test_timeout_stops_a_run_that_never_yields()
  local runner = self.make { workers = 1 }
  local spin = task_on(runner, { timeout = 0.2, name = "spin" }, function()
    local x = 0
    while true do x = x + 1 end
  end)
  local fut = spin:submit()
  fut:wait()
  lu.assertEquals(fut:state().type, "FAILED")
  lu.assertEquals(fut:state().name, "TimedOut")
  local err = h.raises_kind("TimedOut", fut.result, fut)
  lu.assertStrContains(err.message, fut.name)
  -- The worker was not lost: it runs the next job.
  lu.assertEquals(task_on(runner, {}, function() return "next" end)(), "next")
  runner:_shutdown()
end

function TestRunner:test_timeout_stops_a_sleeping_run_and_is_retried()
  local t = task_on(self.runner, { timeout = 0.2, retries = 1 }, function()
    if mf.context().attempt == 1 then mf.sleep(30) end
    return "second"
  end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), "second")
  lu.assertEquals(fut:history()[3].name, "AwaitingRetry")
end

function TestRunner:test_cancel_stops_the_run_in_its_worker()
  local started, finished = scratch("started"), scratch("finished")
  local child_done = scratch("child")
  local child = mf.task(function(p)
    mf.sleep(1)
    write_file(p, "child went on")
  end)
  local t = task_on(self.runner, { name = "long" }, function(s, f, c)
    write_file(s, "started")
    child:submit(c)
    mf.sleep(1)
    write_file(f, "went on")
  end)
  -- write_file is an upvalue: a local function travels.
  local fut = t:submit(started, finished, child_done)
  eventually(function() return read_file(started) ~= nil end, "the run started")
  lu.assertTrue(fut:cancel())
  fut:wait()
  lu.assertEquals(fut:state().type, "CANCELLED")
  mf.sleep(1.5)
  lu.assertNil(read_file(finished), "the run went on in its worker")
  lu.assertNil(read_file(child_done), "what it started went on")
  -- The worker is still usable.
  lu.assertEquals(task_on(self.runner, {}, function() return 1 end)(), 1)
end

function TestRunner:test_hooks_run_in_the_main_state()
  local log = {}
  local t = task_on(self.runner, {
    on_running = { function(_, run) log[#log + 1] = "running " .. run.name end },
    on_completion = { function(_, _, st) log[#log + 1] = "completed " .. st.type end },
  }, function() return 1 end)
  local fut = t:submit()
  fut:result()
  lu.assertEquals(log, { "running " .. fut.name, "completed COMPLETED" })
end

function TestRunner:test_limits_hold_across_workers()
  mf.limit("runners-limit", 1)
  local t = task_on(self.runner, { tags = { "runners-limit" } }, function()
    local t0 = mf.now() -- uv_hrtime: one clock for every thread and process
    mf.sleep(0.05)
    return { t0, mf.now() }
  end)
  local spans = t:map({ 1, 2, 3, 4 }):result()
  table.sort(spans, function(a, b) return a[1] < b[1] end)
  for i = 2, #spans do
    lu.assertTrue(spans[i][1] >= spans[i - 1][2], "two runs of a limit of 1 overlapped")
  end
end

function TestRunner:test_task_runner_of_a_flow_and_the_task_option()
  local where = function() return core.is_worker() end
  local plain = mf.task(where)
  local pinned_local = mf.task({ runner = mf.runners.coroutines() }, where)
  local f = mf.flow({ task_runner = self.runner }, function()
    local inner = mf.flow(function() return plain() end) -- inherits
    local own = mf.flow({ task_runner = mf.runners.coroutines() }, function()
      return plain()
    end)
    return plain(), pinned_local(), inner(), own()
  end)
  lu.assertEquals({ f() }, { true, false, true, false })
  lu.assertFalse(plain()) -- outside the flow: the default runner
end

-- The default runner (mf.configure{task_runner}) is read when each attempt
-- starts (docs/lua-api.md): a run submitted before a change and started
-- after it goes to the new default, and its values are that runner's: the
-- error itself in the main state, an equal copy from a worker.  (What the
-- API fuzzer took for untyped errors: seed 1796154941 case 57, seed
-- 1796159170 case 139.)
function TestRunner:test_the_default_runner_is_read_when_the_attempt_starts()
  local raised = { fuzz = 1 }
  local ok, err = pcall(function()
    -- submitted to the pool, started here: its userdata as it was raised
    mf.configure { task_runner = self.runner }
    local here = mf.task(function()
      if core.is_worker() then return "in a worker" end
      error(io.stdout, 0)
    end):submit()
    mf.configure { task_runner = mf.runners.coroutines() }
    local ok1, e1 = pcall(here.result, here)
    lu.assertFalse(ok1)
    lu.assertIs(e1, io.stdout)
    lu.assertIs(here:result(nil, false), io.stdout)
    -- submitted here, started in a worker: an equal copy of its table
    local there = mf.task(function() error(raised, 0) end):submit()
    mf.configure { task_runner = self.runner }
    local ok2, e2 = pcall(there.result, there)
    lu.assertFalse(ok2)
    lu.assertEquals(e2, raised)
    lu.assertFalse(rawequal(e2, raised))
  end)
  mf.configure { task_runner = mf.runners.coroutines() }
  if not ok then error(err, 0) end
end

function TestRunner:test_log_prints_and_logs_under_the_run_name()
  local path = scratch("log.lua")
  write_file(path, string.format([[
    package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
    local mf = require "moonflow"
    local r = mf.runners[%q] { workers = 1 }
    local t = mf.task({ name = "talker", runner = r, log_prints = true }, function()
      print("printed in a worker")
      mf.log.warning("logged in a worker")
    end)
    t()
  ]], self.kind))
  local err = capture(string.format("MOONFLOW_LOG_LEVEL=INFO timeout -k 5 120 %s %s "
    .. "2>&1 >/dev/null", command("lua"), quote(path)))
  lu.assertStrMatches(err, ".*INFO%s+talker%-1 | printed in a worker.*")
  lu.assertStrMatches(err, ".*WARNING%s+talker%-1 | logged in a worker.*")
end

local function runner_tests(kind)
  local class = { kind = kind }
  function class:setUp()
    self.kind = kind
    self.make = mf.runners[kind]
    self.runner = self.runner or self.make { workers = 2 }
    class.runner = self.runner
  end
  for name, fn in pairs(TestRunner) do class[name] = fn end
  return class
end

TestThreads = runner_tests("threads")
TestProcesses = runner_tests("processes")
TestRunner = nil

-- }======

-- {====== Options ======

TestRunnerOptions = {}

function TestRunnerOptions:test_bad_options_are_usage_errors()
  for _, kind in ipairs({ "threads", "processes" }) do
    local make = mf.runners[kind]
    lu.assertStrContains(h.raises_kind("UsageError", make, { workerz = 2 }).message, "workerz")
    h.raises_kind("UsageError", make, { workers = 0 })
    h.raises_kind("UsageError", make, { workers = 1.5 })
    h.raises_kind("UsageError", make, { setup = "not a function" })
    h.raises_kind("UsageError", make, "threads")
  end
  local err = h.raises_kind("UsageError", mf.runners.redis, { url = "redis://x" })
  lu.assertStrContains(err.message, "redis")
  err = h.raises_kind("UsageError", mf.task, { runner = "threads" }, function() end)
  lu.assertStrContains(err.message, "runner")
  err = h.raises_kind("UsageError", mf.flow, { task_runner = {} }, function() end)
  lu.assertStrContains(err.message, "task_runner")
  h.raises_kind("UsageError", mf.flow, { runner = mf.runners.coroutines() }, function() end)
  h.raises_kind("UsageError", mf.configure, { task_runner = 3 })
end

function TestRunnerOptions:test_runner_objects()
  local r = mf.runners.threads { workers = 3 }
  lu.assertEquals(r.kind, "threads")
  lu.assertEquals(r.workers, 3)
  lu.assertStrContains(tostring(r), "threads")
  lu.assertEquals(mf.runners.coroutines().kind, "coroutines")
  lu.assertIs(mf.runners.coroutines(), mf.runners.coroutines())
  r:_shutdown()
end

-- }======

-- {====== Threads ======

TestThreadRunner = {}

function TestThreadRunner:test_shutdown_with_runs_in_flight_leaves_no_thread()
  local before = thread_count()
  local r = mf.runners.threads { workers = 3 }
  local t = task_on(r, {}, function(i)
    if i % 2 == 0 then while true do end end -- computes for ever
    mf.sleep(30)
  end)
  local list = t:map({ 1, 2, 3, 4, 5, 6 })
  eventually(function() return r:_debug("threads") == 3 end, "the workers started")
  eventually(function() return list[6]:state().type == "RUNNING" end, "the runs started")
  lu.assertEquals(thread_count(), before + 3)
  r:_shutdown()
  -- Joined: a joined thread may still be counted for a moment (the kernel
  -- wakes the joiner before it releases the thread).
  eventually(function() return thread_count() == before end,
    "the worker threads to be gone (" .. thread_count() .. " threads, " .. before .. " before)")
  list:wait()
  for i = 1, 6 do
    lu.assertEquals(list[i]:state().type, "CRASHED")
    lu.assertStrContains(list[i]:result(nil, false).message, "shut down")
  end
  -- A shut down runner loses what it is given at once.
  h.raises_kind("Crashed", t, 1)
end

-- }======

-- {====== Processes ======

TestProcessRunner = {}

function TestProcessRunner:test_workers_are_other_processes()
  local r = mf.runners.processes { workers = 2 }
  local t = task_on(r, {}, function()
    return read_file("/proc/self/stat"):match("^(%d+)")
  end)
  local pid = t()
  lu.assertNotEquals(pid, read_file("/proc/self/stat"):match("^(%d+)"))
  local pids = r:_debug("pids")
  lu.assertEquals(#pids, 2)
  lu.assertTrue(pids[1] == tonumber(pid) or pids[2] == tonumber(pid))
  r:_shutdown()
end

function TestProcessRunner:test_sigkill_mid_map_crashes_its_runs_and_the_rest_completes()
  local r = mf.runners.processes { workers = 2 }
  local started = scratch("killed-started")
  local t = task_on(r, { name = "victim" }, function(i, s)
    write_file(s .. i, "started")
    mf.sleep(1)
    return i
  end)
  local list = t:map({ 1, 2, 3, 4, 5, 6 }, started)
  eventually(function()
    for i = 1, 6 do if not read_file(started .. i) then return false end end
    return true
  end, "every run started")
  local pids = r:_debug("pids")
  os.execute("kill -9 " .. pids[1])
  list:wait()
  local crashed, completed = 0, 0
  for i = 1, 6 do
    local st = list[i]:state()
    if st.type == "CRASHED" then
      crashed = crashed + 1
      local err = list[i]:result(nil, false)
      lu.assertEquals(err.kind, "Crashed")
      lu.assertStrContains(err.message, "signal 9")
      lu.assertStrContains(err.message, tostring(pids[1]))
    else
      lu.assertEquals(st.type, "COMPLETED")
      lu.assertEquals(list[i]:result(), i)
      completed = completed + 1
    end
  end
  lu.assertEquals(crashed, 3) -- least loaded first: three runs each
  lu.assertEquals(completed, 3)
  -- The worker was replaced: the next map uses two live workers.
  lu.assertEquals(t:map({ 7, 8 }, scratch("after")):result(), { 7, 8, n = 2 })
  lu.assertFalse(alive(pids[1]))
  r:_shutdown()
end

function TestProcessRunner:test_a_crashed_task_runs_its_on_failure_hooks()
  local r = mf.runners.processes { workers = 1 }
  local seen = {}
  local t = task_on(r, { on_failure = { function(_, _, st) seen[#seen + 1] = st.type end } },
    function()
      os.execute("kill -9 " .. read_file("/proc/self/stat"):match("^(%d+)"))
      mf.sleep(30)
    end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(fut:state().type, "CRASHED")
  lu.assertEquals(fut:state().name, "Crashed")
  lu.assertEquals(seen, { "CRASHED" })
  r:_shutdown()
end

function TestProcessRunner:test_retries_apply_to_crashed_runs()
  local r = mf.runners.processes { workers = 1 }
  local t = task_on(r, { retries = 1 }, function()
    if mf.context().attempt == 1 then
      os.execute("kill -9 " .. read_file("/proc/self/stat"):match("^(%d+)"))
      mf.sleep(30)
    end
    return "retried"
  end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), "retried")
  local hist = fut:history()
  lu.assertEquals(hist[3].name, "AwaitingRetry")
  r:_shutdown()
end

function TestProcessRunner:test_corrupt_frame_to_a_worker_drops_and_replaces_it()
  local r = mf.runners.processes { workers = 1 }
  local t = task_on(r, {}, function(x) mf.sleep(x) return x end)
  local fut = t:submit(30)
  eventually(function() return fut:state().type == "RUNNING" and #r:_debug("pids") == 1 end,
    "the run started")
  local pid = r:_debug("pids")[1]
  -- A frame whose length says 2 bytes: shorter than any header.
  lu.assertTrue(r:_debug("inject", 1, "\2\0\0\0garbage"))
  fut:wait()
  lu.assertEquals(fut:state().type, "CRASHED")
  lu.assertStrContains(fut:result(nil, false).message, "exited with status 3")
  lu.assertEquals(t(0), 0) -- a new worker
  lu.assertNotEquals(r:_debug("pids")[1], pid)
  r:_shutdown()
end

function TestProcessRunner:test_corrupt_frame_from_a_worker_drops_and_replaces_it()
  local r = mf.runners.processes { workers = 1 }
  local bad = task_on(r, {}, function()
    core.worker_send_raw("\255\255\255\255 not a frame")
    mf.sleep(30)
  end)
  local fut = bad:submit()
  fut:wait()
  lu.assertEquals(fut:state().type, "CRASHED")
  lu.assertStrContains(fut:result(nil, false).message, "corrupt frame")
  lu.assertEquals(task_on(r, {}, function() return "fine" end)(), "fine")
  r:_shutdown()
end

function TestProcessRunner:test_shutdown_with_runs_in_flight_leaves_no_process()
  local r = mf.runners.processes { workers = 2 }
  local t = task_on(r, {}, function(i)
    if i == 1 then while true do end end
    mf.sleep(30)
  end)
  local list = t:map({ 1, 2, 3 })
  eventually(function() return #r:_debug("pids") == 2 end, "the workers started")
  eventually(function() return list[3]:state().type == "RUNNING" end, "the runs started")
  local pids = r:_debug("pids")
  r:_shutdown()
  for _, pid in ipairs(pids) do lu.assertFalse(alive(pid), "worker " .. pid .. " lives on") end
  list:wait()
  for i = 1, 3 do lu.assertEquals(list[i]:state().type, "CRASHED") end
end

-- A worker program that cannot start: the run crashes with why, and so
-- does the next (nothing hangs waiting for a worker).
function TestProcessRunner:test_a_worker_program_that_cannot_start_crashes_its_runs()
  local path, not_executable = scratch("no-program.lua"), scratch("not-executable")
  write_file(not_executable, "#!/bin/sh\n")
  write_file(path, [[
    package.cpath = (os.getenv("MF_MODULE_DIR") or "build") .. "/?.so;" .. package.cpath
    local mf = require "moonflow"
    local r = mf.runners.processes { workers = 2 }
    local t = mf.task({ runner = r, name = "far" }, function() return 1 end)
    for _ = 1, 2 do
      local fut = t:submit()
      fut:wait()
      print(fut:state().type, fut:result(nil, false).message)
    end
  ]])
  for _, host in ipairs({ "lua", "moonflow" }) do
    for program, why in pairs({ [scratch("missing") .. "/moonflow"] = "no such file or directory",
                                [not_executable] = "permission denied" }) do
      local out = h.capture(string.format("env MOONFLOW_PROGRAM=%s %s %s 2>&1",
        quote(program), command(host), quote(path)))
      local line = "CRASHED\trun far-%d crashed: cannot start a worker process ("
        .. program .. "): " .. why
      lu.assertEquals(out, line:format(1) .. "\n" .. line:format(2) .. "\n", host)
    end
  end
end

-- The program goes on while a worker has a run nobody waits for, and ends
-- when the workers are idle (they do not hold the loop).
function TestProcessRunner:test_workers_keep_the_program_alive_only_while_they_have_runs()
  local path = scratch("keepalive.lua")
  write_file(path, [[
    local mf = require "moonflow"
    local r = mf.runners.processes { workers = 2 }
    print(mf.task({ runner = r }, function(x) return x + 1 end)(1))
    mf.task({ runner = r, name = "late" }, function()
      mf.sleep(0.3)
      print("late done")
    end):submit()
  ]])
  local out = h.capture(string.format("MOONFLOW_STORE=off timeout -k 5 120 %s %s 2>&1; echo \"exit $?\"",
    command("moonflow"), quote(path)))
  lu.assertEquals(out, "2\nlate done\nexit 0\n")
end

-- The state closes with runs going: stock lua5.4 at os.exit(0, true),
-- the program at Ctrl-C.
function TestProcessRunner:test_closing_the_state_with_runs_in_flight_leaves_no_process()
  for _, host in ipairs({ "lua", "moonflow" }) do
    local path, pids_path = scratch("close.lua"), scratch("pids")
    write_file(path, string.format([[
      package.cpath = (os.getenv("MF_MODULE_DIR") or "build") .. "/?.so;" .. package.cpath
      local mf = require "moonflow"
      local r = mf.runners.processes { workers = 2 }
      local t = mf.task({ runner = r }, function() mf.sleep(60) end)
      local list = t:map({ 1, 2, 3, 4 })
      while #r:_debug("pids") < 2 or list[4]:state().type ~= "RUNNING" do mf.sleep(0.01) end
      local self = io.open("/proc/self/stat"):read("a"):match("^(%%d+)")
      local f = io.open(%q, "w")
      f:write(self, " ", table.concat(r:_debug("pids"), " "))
      f:close()
      if mf.context() then list:wait() end -- the program: until Ctrl-C
      os.exit(0, true) -- stock lua5.4: the state closes, the runs going
    ]], pids_path))
    os.execute(string.format("timeout -k 5 120 %s %s >/dev/null 2>&1 &",
      command(host), quote(path)))
    eventually(function() return read_file(pids_path) ~= nil end,
      host .. ": the script got its workers", 120)
    mf.sleep(0.1) -- the file is whole
    local pids = {}
    for pid in read_file(pids_path):gmatch("%d+") do pids[#pids + 1] = pid end
    lu.assertEquals(#pids, 3)
    if host == "moonflow" then os.execute("kill -INT " .. pids[1]) end
    eventually(function() return not alive(pids[1]) end, host .. " ended", 120)
    for i = 2, 3 do
      lu.assertFalse(alive(pids[i]), host .. ": worker " .. pids[i] .. " outlived its parent")
    end
  end
end

-- }======

local ok = pcall(h.run)
os.execute("rm -rf " .. quote(DIR))
if not ok then error("runners spec failed", 0) end
