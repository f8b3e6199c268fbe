-- Robustness (issue 8): one regression test per defect found by fuzzing the
-- API and by porting Prefect's tests -- no crash, no hang, no wrong answer.
-- Cases that could crash or hang the process run as subprocesses, bounded
-- by `timeout` (generously: the bound only catches a hang).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu

-- {====== Subprocesses ======

local capture = h.capture

local function read_file(path) return h.read_file(path) or "" end

local write_file = h.write_file

local quote = h.shell_quote

local CWD = capture("pwd"):gsub("\n$", "")
local function absolute(path) return path:sub(1, 1) == "/" and path or CWD .. "/" .. path end
local PROG = absolute(os.getenv("MF_PROGRAM") or "build/moonflow")
local MODULE_DIR = absolute(os.getenv("MF_MODULE_DIR") or "build")
-- Under the sanitizers, stock lua5.4 needs their runtime preloaded to load
-- the instrumented module; the instrumented program must not get it.
local PRELOAD = os.getenv("MF_SUBPROCESS_PRELOAD") or os.getenv("LD_PRELOAD")
local SANITIZED = PRELOAD ~= nil and PRELOAD:find("asan") ~= nil
local DIR = capture("unset LD_PRELOAD; mktemp -d /tmp/mf-robust.XXXXXX"):gsub("\n$", "")
local counter = 0

-- Runs code as a script under "moonflow" (the program) or "lua" (stock
-- lua5.4 with the module); returns { code, out, err }.  stdin is closed
-- when how.closed_stdio is set.
local function run(code, runner, how)
  how = how or {}
  counter = counter + 1
  local base = string.format("%s/%d-", DIR, counter)
  local path = base .. "script.lua"
  write_file(path, code)
  local cmd
  if runner == "lua" then
    cmd = "env MF_MODULE_DIR=" .. quote(MODULE_DIR) .. " "
      .. (PRELOAD and ("LD_PRELOAD=" .. quote(PRELOAD) .. " ") or "")
      .. "lua5.4 -e " .. quote("package.cpath = os.getenv('MF_MODULE_DIR') .. '/?.so;' .. package.cpath")
      .. " " .. quote(path)
  else
    cmd = "env -u LD_PRELOAD " .. quote(PROG) .. " " .. quote(path)
  end
  local redirect = how.closed_stdio and " <&- >&- 2>&-"
    or (" >" .. quote(base .. "out") .. " 2>" .. quote(base .. "err") .. " </dev/null")
  local shell = (how.prefix or "") .. "timeout -k 5 " .. (how.limit or 120) .. " " .. cmd .. redirect
  local ok, kind, status = os.execute("unset MOONFLOW_LOG_LEVEL; " .. shell)
  local exit = ok and 0 or (kind == "exit" and status or 128 + (status or 0))
  return { code = exit, out = read_file(base .. "out"), err = read_file(base .. "err") }
end

local function describe(r)
  return string.format("exit %s\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.out, r.err)
end

local function both(code, check, how)
  for _, runner in ipairs({ "moonflow", "lua" }) do check(run(code, runner, how), runner) end
end

-- An error table whose __tostring raises.
local function hostile_error()
  return setmetatable({ kind = "Hostile" }, { __tostring = function() error("tostring boom") end })
end

-- }======

TestCrashes = {}

function TestCrashes:test_01_many_return_values()
  local t = mf.task(function(n)
    local r = {}
    for i = 1, n do r[i] = i end
    return table.unpack(r)
  end)
  for _, n in ipairs({ 80, 100, 5000 }) do
    local values = table.pack(t(n))
    lu.assertEquals(values.n, n)
    lu.assertEquals(values[n], n)
  end
end

local function nest(depth, leaf)
  local t = leaf
  for _ = 1, depth do t = { t } end
  return t
end

local function unnest(t, depth)
  for _ = 1, depth do t = t[1] end
  return t
end

function TestCrashes:test_02_deep_argument_tables()
  local id = mf.task(function(t) return t end)
  local five = mf.task(function() return 5 end)
  local plain = nest(40, "leaf")
  lu.assertTrue(rawequal(id(plain), plain), "a table without futures passes as it is")
  local got = id(nest(150, five:submit()))
  lu.assertEquals(unnest(got, 150), 5)
  local err = h.raises_kind("UsageError", id.submit, id, nest(250, "x"))
  lu.assertStrContains(err.message, "deeper")
  -- Quoted, a table of any depth passes unsearched.
  local deep = nest(1000, "x")
  lu.assertTrue(rawequal(id(mf.quote(deep)), deep))
end

function TestCrashes:test_02_deep_flow_results()
  local f = mf.flow(function(d) return nest(d, "end") end)
  lu.assertEquals(unnest(f(60), 60), "end")
  lu.assertEquals(unnest(f(1000), 1000), "end")
  local five = mf.task(function() return 5 end)
  local g = mf.flow(function() return nest(60, five:submit()) end)
  lu.assertEquals(unnest(g(), 60), 5)
end

function TestCrashes:test_03_list_changed_while_waited_on()
  local gate = mf.task(function(x) mf.sleep(0.01) return x end)
  local l = { gate:submit(1), gate:submit(2), gate:submit(3) }
  l[1]:add_done_callback(function() l[2] = "x"; l[4] = "y" end)
  local done, not_done = mf.wait(l)
  lu.assertEquals(#done, 3, "the wait is on what the list held at the call")
  lu.assertEquals(#not_done, 0)
  local list = gate:map({ 10, 20, 30 })
  list[1]:add_done_callback(function() list[4] = "grown"; list[2] = nil end)
  local r = list:result()
  lu.assertEquals(r.n, 3)
  lu.assertEquals({ r[1], r[2], r[3] }, { 10, 20, 30 })
end

function TestCrashes:test_04_flow_per_call_options_are_checked()
  local f = mf.flow(function() return 1 end)
  local err = h.raises_kind("UsageError", f.with, f, { wait_for = "abc" })
  lu.assertStrContains(err.message, "wait_for")
  err = h.raises_kind("UsageError", f.with, f, { return_state = "yes" })
  lu.assertStrContains(err.message, "return_state")
  lu.assertEquals(f:with({ return_state = true }):submit().type, "COMPLETED")
end

function TestCrashes:test_05_state_closes_with_runs_going()
  local r = run([[
local mf = require "moonflow"
local sleepy = mf.task({ name = "sleepy" }, function() mf.sleep(10) end)
for _ = 1, 5 do sleepy:submit() end
mf.sleep(0.01)
print("ending")
]], "lua")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "ending\n")
  lu.assertStrContains(r.err, "5 run(s) still going")
end

function TestCrashes:test_06_exit_inside_a_task()
  both([[
local mf = require "moonflow"
mf.task(function() io.stdout:write("in task\n") io.stdout:flush() os.exit(7, true) end)()
]], function(r, runner)
    lu.assertEquals(r.code, 7, runner .. ": " .. describe(r))
    lu.assertEquals(r.out, "in task\n", runner)
  end)
end

function TestCrashes:test_06_out_of_memory_ends()
  if SANITIZED then return end -- the sanitizers reserve more than the limit
  local r = run([[
local mf = require "moonflow"
local hog = mf.task(function()
  local t = {}
  for i = 1, 1e9 do t[i] = { i } end
end)
local futs = {}
for i = 1, 4 do futs[i] = hog:submit() end
for i = 1, 4 do futs[i]:wait() end
]], "lua", { prefix = "ulimit -v 300000; " })
  lu.assertTrue(r.code ~= 124 and r.code ~= 137, "out of memory hung: " .. describe(r))
end

function TestCrashes:test_07_many_tags()
  local tags = {}
  for i = 1, 40 do tags[i] = "tag" .. i end
  local t = mf.task({ tags = tags }, function(x) return x end)
  local fut = t:submit("argument")
  lu.assertEquals(type(fut), "userdata")
  lu.assertEquals(fut:result(), "argument")
  mf.limit("tag33", 1)
  lu.assertEquals(t("again"), "again")
end

function TestCrashes:test_08_future_metatable_is_protected()
  local fut = mf.task(function() return 1 end):submit()
  lu.assertEquals(getmetatable(fut), "moonflow.Future")
  lu.assertFalse(pcall(setmetatable, fut, {}))
  lu.assertEquals(fut:result(), 1)
end

-- A Future or a Task is told by its box, not its metatable: another
-- userdata given its metatable (debug.setmetatable) is not taken for one,
-- as an argument, a method's self or a __gc called by hand.
function TestCrashes:test_08_a_userdata_dressed_as_a_future_is_not_one()
  local fut = mf.task(function() return 1 end):submit()
  local file = io.tmpfile()
  local file_mt = debug.getmetatable(file)
  debug.setmetatable(file, debug.getmetatable(fut))
  local echo = mf.task(function(x) return x end)
  lu.assertTrue(rawequal(echo(file), file)) -- passed as it is, not waited on
  h.raises_kind("UsageError", fut.result, file)
  h.raises_kind("UsageError", fut.wait, file)
  debug.getmetatable(fut).__gc(file) -- nothing to release
  lu.assertEquals(fut:result(), 1)
  debug.setmetatable(file, debug.getmetatable(echo))
  h.raises_kind("UsageError", echo.submit, file, 1)
  h.raises_kind("UsageError", echo.map, file, { 1 })
  lu.assertFalse(require("moonflow.core").is_task(file))
  lu.assertEquals(echo(2), 2)
  debug.setmetatable(file, file_mt)
  file:close()
end

function TestCrashes:test_09_closed_standard_streams()
  both([[
local mf = require "moonflow"
print(mf.task(function() return 1 end)())
]], function(r, runner)
    lu.assertEquals(r.code, 0, runner .. ": " .. describe(r))
  end, { closed_stdio = true })
end

TestHangs = {}

function TestHangs:test_10_looping_message_handler_is_stopped()
  both([[
local mf = require "moonflow"
local t = mf.task({ timeout = 0.2 }, function()
  xpcall(error, function() while true do end end, "x")
  while true do end
end)
local fut = t:submit()
fut:wait()
print(fut:state().name)
]], function(r, runner)
    lu.assertEquals(r.out, "TimedOut\n", runner .. ": " .. describe(r))
  end)
end

function TestHangs:test_11_interrupting_a_big_map_is_linear()
  -- 300,000 queued runs cancelled by Ctrl-C: quadratic unlinking took
  -- minutes; linear takes a moment even on a slow machine.
  local ready = DIR .. "/map-ready"
  counter = counter + 1
  local script = DIR .. "/" .. counter .. "-bigmap.lua"
  write_file(script, [[
local mf = require "moonflow"
local t = mf.task(function(x) mf.sleep(100) return x end)
local xs = {}
for i = 1, 300000 do xs[i] = i end
local list = t:map(xs)
io.open(]] .. string.format("%q", ready) .. [[, "w"):close()
list:wait()
]])
  local cmd = "unset LD_PRELOAD; " .. quote(PROG) .. " --quiet " .. quote(script)
    .. " >/dev/null 2>&1 & pid=$!; while [ ! -f " .. quote(ready)
    .. " ]; do kill -0 $pid 2>/dev/null || exit 99; sleep 0.05; done; kill -INT $pid; wait $pid"
  local ok, kind, status = os.execute("timeout -k 5 120 sh -c " .. quote(cmd))
  local code = ok and 0 or (kind == "exit" and status or 128 + status)
  lu.assertEquals(code, 130, "expected the Ctrl-C exit status")
end

function TestHangs:test_12_empty_waits_return_at_once()
  local t0 = mf.now()
  local done, not_done = mf.wait({}, 3)
  lu.assertEquals(#done + #not_done, 0)
  local empty = mf.task(function() end):map({})
  lu.assertTrue(empty:wait(3))
  lu.assertEquals(empty:result(3).n, 0)
  lu.assertTrue(mf.now() - t0 < 2.9, "an empty wait waited its timeout")
end

function TestHangs:test_12_huge_durations_are_clamped()
  local forever = mf.task(function() mf.sleep(math.huge) end)
  local fut = forever:submit()
  lu.assertFalse(fut:wait(0.05))
  lu.assertTrue(fut:cancel())
  mf.rate_limit("glacial", 1e-17)
  local slow = mf.task({ tags = { "glacial" } }, function() return 1 end)
  local a, b = slow:submit(), slow:submit()
  lu.assertEquals(a:result(), 1)
  lu.assertFalse(b:wait(0.05), "the second start is 1e17 s away")
  b:cancel()
  local waited = mf.task(function() return 2 end):submit()
  lu.assertEquals(waited:result(1e300), 2)
end

TestResults = {}

function TestResults:test_13_a_timed_out_wait_does_not_leak()
  -- (slow waits for a sleep far longer than any pause of a busy machine;
  -- it is cancelled at the end)
  local slow = mf.task(function() mf.sleep(3600) return "slow" end)
  local quick = mf.task(function() return "quick" end)
  local function check()
    local s, q = slow:submit(), quick:submit()
    q:wait()
    lu.assertFalse(s:wait(0.01))
    lu.assertEquals(q:result(), "quick")
    lu.assertEquals(q:result(0.5), "quick")
    local done = mf.wait({ s }, 0.01)
    lu.assertEquals(#done, 0)
    lu.assertEquals(mf.wait({ q }), mf.wait({ q }))
    lu.assertEquals(q:result(), "quick")
    for f in mf.as_completed({ q }, 1) do lu.assertEquals(f:result(), "quick") end
    s:cancel()
    return true
  end
  lu.assertTrue(check())
  lu.assertTrue(mf.task(check)())
end

function TestResults:test_14_flow_rules_hold_with_control_options()
  local log = {}
  local victim = mf.task(function() mf.sleep(10) end)
  local body_runs = 0
  local f = mf.flow({ retries = 2,
    on_cancellation = { function() log[#log + 1] = "cancellation" end },
    on_failure = { function() log[#log + 1] = "failure" end } }, function()
    body_runs = body_runs + 1
    local fut = victim:submit()
    fut:cancel()
    return fut
  end)
  local st = f:run()
  lu.assertEquals(st.type, "CANCELLED")
  lu.assertEquals(st.message, "1/1 states cancelled.")
  lu.assertEquals(body_runs, 1, "a cancelled flow is not retried")
  lu.assertEquals(log, { "cancellation" })
  local bad = mf.task(function() error("nope", 0) end)
  local g = mf.flow({ timeout = 5, log_prints = true }, function() return bad:submit() end)
  st = g:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.message, "1/1 states failed.")
end

function TestResults:test_15_error_whose_tostring_raises()
  local e = hostile_error()
  local n, ran = 0, false
  local t = mf.task({ retries = 2, on_failure = {
    function() error(hostile_error()) end,
    function() ran = true end } }, function() n = n + 1 error(e) end)
  local fut = t:submit()
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e), "result() raises the error object itself")
  lu.assertEquals(n, 3, "every attempt ran")
  lu.assertTrue(ran, "the other hooks still ran")
  local after = false
  local g = mf.task(function() return 1 end):submit()
  g:add_done_callback(function() error(hostile_error()) end)
  g:wait()
  after = true
  lu.assertTrue(after)
  lu.assertIsString(fut:state().message)
end

function TestResults:test_15_repl_goes_on_after_such_an_error()
  counter = counter + 1
  local input = DIR .. "/" .. counter .. "-repl.txt"
  write_file(input, 'error(setmetatable({}, {__tostring = function() error("boom") end}))\n'
    .. 'print("after")\n')
  local out = capture("unset LD_PRELOAD; timeout -k 5 60 " .. quote(PROG) .. " < " .. quote(input) .. " 2>&1")
  lu.assertStrContains(out, "after")
end

function TestResults:test_16_waiting_where_nothing_can_yield()
  local t = mf.task(function()
    local xs = { 3, 1, 2 }
    local ok, err = pcall(table.sort, xs, function(a, b) mf.sleep(0.05) return a < b end)
    local t0 = mf.now()
    mf.sleep(0.2)
    return ok, err, mf.now() - t0
  end)
  local ok, err, slept = t()
  lu.assertFalse(ok)
  lu.assertEquals(err.kind, "UsageError")
  lu.assertStrContains(err.message, "cannot yield")
  lu.assertTrue(slept >= 0.2 - 0.001, "a later sleep lasted " .. slept)
end

function TestResults:test_17_resuming_a_parked_run_is_refused()
  local co_of_run
  local t = mf.task(function()
    co_of_run = coroutine.running()
    mf.sleep(0.05)
    return "mine"
  end)
  local fut = t:submit()
  local other = mf.task(function() mf.sleep(0.01) end):submit()
  local refused
  other:add_done_callback(function()
    refused = { pcall(coroutine.resume, co_of_run, "hijack") }
  end)
  lu.assertEquals(fut:result(), "mine")
  lu.assertFalse(refused[1])
  lu.assertEquals(refused[2].kind, "UsageError")
  lu.assertStrContains(refused[2].message, "mf.promise")
end

function TestResults:test_18_memory_stays_flat_under_sustained_submission()
  local r = run([[
local mf = require "moonflow"
local t = mf.task(function(x) return x end)
local function rss()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end
local loop = mf.task(function()
  for _ = 1, 3000 do
    for i = 1, 1000 do t:submit(i) end
    mf.sleep(0)
  end
end)
loop()
print(string.format("%.0f", rss()))
]], "moonflow", { limit = 600 })
  lu.assertEquals(r.code, 0, describe(r))
  local mb = tonumber(r.out)
  lu.assertNotNil(mb, describe(r))
  if SANITIZED then return end -- the sanitizers keep freed memory aside
  lu.assertTrue(mb < 200, "3 million runs left the process at " .. mb .. " MB")
end

function TestResults:test_19_allow_failure_of_a_future_list()
  local flaky = mf.task(function(x) if x == 2 then error("two", 0) end return x end)
  local list = flaky:map({ 1, 2, 3 })
  local sum = mf.task(function(values) return #values end)
  lu.assertEquals(sum(mf.allow_failure(list)), 3)
  local after = mf.task(function() return "ran" end)
  lu.assertEquals(after:with({ wait_for = { mf.allow_failure(list) } })(), "ran")
  list[2]:state()
end

function TestResults:test_19_quoted_array_is_mapped_unsearched()
  local inner = mf.task(function() return 1 end):submit()
  inner:wait()
  local kind = mf.task(function(x) return type(x[1]) end)
  local r = kind:map(mf.quote({ { inner }, { inner } })):result()
  lu.assertEquals({ r[1], r[2] }, { "userdata", "userdata" })
end

function TestResults:test_19_returned_states_count_like_futures()
  local bad = mf.task(function() error("x", 0) end)
  local f = mf.flow(function() return bad:with({ return_state = true }):submit() end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.message, "1/1 states failed.")
end

function TestResults:test_19_options_are_copied_at_definition()
  local tags = { "copied" }
  local t = mf.task({ tags = tags }, function() return mf.context().tags end)
  tags[1] = "changed"
  tags[2] = "added"
  lu.assertEquals(t(), { "copied" })
  lu.assertEquals(t:with({})(), { "copied" })
end

function TestResults:test_20_smaller_checks()
  h.raises_kind("UsageError", mf.limit, "zero", 0)
  local fut = mf.task(function() return 1 end):submit()
  h.raises_kind("UsageError", fut.wait, fut, "x")
  h.raises_kind("UsageError", mf.sleep, "x")
  h.raises_kind("UsageError", mf.result, 5)
  local t = mf.task(function() end)
  h.raises_kind("UsageError", t.run, 5)
  h.raises_kind("UsageError", fut.add_done_callback, fut, 5)
  local long = string.rep("n", 1000)
  local named = mf.task({ task_run_name = long }, function() return mf.context().name end)
  local f = named:submit()
  lu.assertEquals(#f:result(), 1000)
  lu.assertEquals(#f.name, 1000)
end

function TestResults:test_20_out_of_memory_in_a_run_is_crashed()
  if SANITIZED then return end -- the sanitizers reserve more than the limit
  both([[
local mf = require "moonflow"
local t = mf.task(function() return #string.rep("x", 1 << 30) end)
local fut = t:submit()
fut:wait()
print(fut:state().type)
]], function(r, runner)
    lu.assertEquals(r.out, "CRASHED\n", runner .. ": " .. describe(r))
  end, { prefix = "ulimit -v 400000; " })
end

-- {====== Found by the API fuzzer (spec/fuzz) ======

TestFuzzerFinds = {}

local PATIENCE = h.PATIENCE

function TestFuzzerFinds:test_a_resurrected_future_is_a_usage_error()
  local saved
  do
    local fut = mf.task(function() return 1 end):submit()
    fut:wait()
    setmetatable({ fut }, { __gc = function(self) saved = self end })
  end
  collectgarbage()
  collectgarbage()
  lu.assertNotNil(saved, "the finalizer did not run")
  h.raises_kind("UsageError", mf.wait, { saved[1] })
  h.raises_kind("UsageError", saved[1].state, saved[1])
end

function TestFuzzerFinds:test_options_are_read_raw()
  local opts = setmetatable({ name = "raw" },
    { __pairs = function() return nil end, __index = function() error("no") end })
  local t = mf.task(opts, function() return 1 end)
  lu.assertEquals(t.name, "raw")
  local tags = setmetatable({ "x" }, { __index = function() error("no") end })
  lu.assertEquals(mf.task({ tags = tags }, function() return 2 end)(), 2)
end

function TestFuzzerFinds:test_a_long_slice_does_not_delay_a_timeout()
  mf.configure({ slice = 100 })
  local ok, err = pcall(function()
    local t = mf.task({ timeout = 0.05 }, function() while true do end end)
    local fut = t:submit()
    fut:wait()
    lu.assertEquals(fut:state().name, "TimedOut")
  end)
  mf.configure({ slice = 0.01 })
  if not ok then error(err, 0) end
end

function TestFuzzerFinds:test_log_of_a_value_whose_tostring_is_not_a_string()
  local odd = setmetatable({}, { __tostring = function() return {} end })
  lu.assertTrue(pcall(mf.log.error, "value:", odd))
end

function TestFuzzerFinds:test_run_of_a_return_state_task_gives_its_state()
  local t = mf.task(function() return 1 end)
  local st = t:with({ return_state = true }):run()
  lu.assertEquals(st.type, "COMPLETED")
end

function TestFuzzerFinds:test_gc_by_hand_of_a_live_future_leaves_its_run_alone()
  local open = false
  local fut = mf.task(function()
    while not open do mf.sleep(0.001) end
    return 42
  end):submit()
  debug.getmetatable(fut).__gc(fut) -- by hand, while the run is going
  open = true
  lu.assertTrue(fut:wait(PATIENCE))
  lu.assertEquals(fut:result(), 42)
end

-- For both(): the script printed out, exited 0, and no sanitizer spoke
-- (under the sanitizers a leak fails the exit).
local function exits_clean_with(out)
  return function(r, runner)
    lu.assertEquals(r.out, out, runner .. ": " .. describe(r))
    lu.assertNil(r.err:find("Sanitizer"), runner .. ": " .. describe(r))
    lu.assertEquals(r.code, 0, runner .. ": " .. describe(r))
  end
end

-- lua_close runs the pending finalizers, and one may still use moonflow;
-- what it makes then gets no finalizer of its own (Lua gives none while
-- the state closes).  Its runs, lists and connections work, and are
-- released with the state: under the sanitizers, a leak fails the exit.
function TestFuzzerFinds:test_a_finalizer_at_close_may_submit_map_and_do_io()
  both([[
local mf = require "moonflow"
local double = mf.task(function(x) return x * 2 end)
local echo = mf.task(function()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    conn:write(conn:read("l") .. "!\n")
  end)
  local conn = mf.tcp.connect("127.0.0.1", server.port)
  conn:write("hi\n")
  return conn:read("l") -- the connection and server close with the run
end)
keep = setmetatable({}, { __gc = function()
  local fut = double:submit(21)
  local list = double:map({ 1, 2, 3 })
  local first = list[1]
  print("at close", fut:result(), table.concat(list:result(), ","),
    first:result(), echo:submit():result())
  io.stdout:flush()
end })
print("main done")
]], exits_clean_with("main done\nat close\t42\t2,4,6\t2\thi!\n"))
end

-- lua_close finalizes every Future, those of runs still going too, and a
-- finalizer after them may still turn the loop (a wait).  A run whose
-- Future went came up there: its Future's checks raised out of the
-- scheduler, through the wait (the sleep below failed with "this Future
-- was collected", and left its waiter on a stack that was gone: the
-- fuzzer's crash, seed 1796200186 case 141).  Such a run ends Cancelled;
-- the runs of a map whose list went first failed ("a Future expected,
-- got nil"), then crashed the report of their failure (UpstreamFailed).
function TestFuzzerFinds:test_a_finalizer_at_close_may_wait_while_runs_are_due()
  both([[
local mf = require "moonflow"
keep = setmetatable({}, { __gc = function()
  print("at close", pcall(mf.sleep, 0.02))
  io.stdout:flush()
end })
local up = mf.task(function() mf.sleep(0.005) return 2 end):submit()
down = mf.task(function(x) return x end):submit(up)
list = mf.task(function(x) return x end):map({ up, 1 })
print("main done")
]], exits_clean_with("main done\nat close\ttrue\n"))
end

-- A runner made at close whose setup cannot be copied: the bytes encoded
-- before the error leaked (the userdata that owned them, made while the
-- state closes, got no finalizer; LeakSanitizer in a hunt, seed
-- 1796700085 case 149).  Under the sanitizers a leak fails the exit.
function TestFuzzerFinds:test_a_copy_that_fails_at_close_leaks_nothing()
  both([[
local mf = require "moonflow"
local co = coroutine.create(print)
keep = setmetatable({}, { __gc = function()
  local ok = pcall(mf.runners.threads, { workers = 1, setup = function() return co end })
  print("at close", ok)
  io.stdout:flush()
end })
print("main done")
]], exits_clean_with("main done\nat close\tfalse\n"))
end

function TestFuzzerFinds:test_a_future_key_that_gives_nan_or_nil_is_left_out()
  -- A Future used as a table key is replaced by its result; NaN and nil
  -- cannot be keys, so those pairs are left out of the copy (the run
  -- failed with Lua's untyped "table index is NaN").
  local nan = mf.task(function() return 0 / 0 end)
  local none = mf.task(function() return nil end)
  local one = mf.task(function() return 1 end)
  local count = mf.task(function(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n, t[1], t.x
  end)
  local fut = count:submit({ [nan:submit()] = "a", [none:submit()] = "b", [one:submit()] = "c", x = 5 })
  lu.assertEquals({ fut:result() }, { 2, "c", 5 })
end

function TestFuzzerFinds:test_a_nan_error_is_raised_as_it_is()
  -- An error value of NaN (a rejected promise, error(0/0) in a body) is
  -- raised again as it is, also by a run that passes it on; it was
  -- replaced by Lua's "table index is NaN" (the origin of a passed-on error
  -- is noted under the error as a key).
  local fut, _, reject = mf.promise("p")
  reject(0 / 0)
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertTrue(err ~= err, tostring(err))
  local nan = mf.task(function() error(0 / 0) end)
  local outer = mf.task(function() return nan:submit():result() end)
  ok, err = pcall(outer)
  lu.assertFalse(ok)
  lu.assertTrue(err ~= err, tostring(err))
end

function TestFuzzerFinds:test_metatables_cannot_be_read_or_replaced()
  local t = mf.task(function() return 1 end)
  local fut = t:submit()
  local list = t:map({ 1, 2 })
  fut:wait()
  local st = fut:state()
  lu.assertEquals(getmetatable(t), "moonflow.Task")
  lu.assertEquals(getmetatable(list), "moonflow.FutureList")
  lu.assertEquals(getmetatable(st), "moonflow.State")
  lu.assertEquals(getmetatable(mf.quote({})), "moonflow.quote")
  lu.assertFalse(pcall(setmetatable, list, {}))
  lu.assertFalse(pcall(setmetatable, st, {}))
  list:wait()
end

function TestFuzzerFinds:test_io_and_runner_metatables_cannot_be_read()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn) conn:close() end)
  local conn = mf.tcp.connect("127.0.0.1", server.port)
  local path = os.tmpname()
  h.write_file(path, "a\n")
  local _, _, _, lines = mf.fs.lines(path) -- the file: the loop's closing value
  lu.assertEquals(getmetatable(server), "moonflow.Server")
  lu.assertEquals(getmetatable(conn), "moonflow.Connection")
  lu.assertEquals(getmetatable(lines), "moonflow.lines")
  lu.assertEquals(getmetatable(mf.runners.coroutines()), "moonflow.Runner")
  lines:close()
  conn:close()
  server:close()
  os.remove(path)
end

function TestFuzzerFinds:test_flow_returning_a_changed_future_list()
  local t = mf.task(function() error("no", 0) end)
  local fl = mf.flow(function()
    local list = t:map({ 1, 2 })
    list[2] = "not a future" -- the user's to change
    return list
  end)
  local st = fl:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertStrContains(st.message, "1/1 states failed")
end

function TestFuzzerFinds:test_state_with_a_result_field_written_over()
  local fl = mf.flow(function()
    local st = mf.task(function() error("inner", 0) end):with({ return_state = true }):submit()
    rawset(st, "result", "shadowed")
    return st
  end)
  local st = fl:run()
  lu.assertEquals(st.type, "FAILED")
  local ok, err = pcall(fl)
  lu.assertFalse(ok)
  lu.assertEquals(err, "inner") -- the State's own error, as returned
end

function TestFuzzerFinds:test_flow_whose_child_waits_for_the_flow_is_a_deadlock()
  local t = mf.task(function(x) return x end)
  local holder = {}
  local fl = mf.flow(function()
    while not holder.up do mf.sleep(0.001) end
    t:submit(holder.up) -- holder.up waits for this flow to end
    return 1
  end)
  local f = fl:submit()
  holder.up = t:submit(f)
  lu.assertTrue(f:wait(PATIENCE), "the flow never ended")
  lu.assertEquals(f:state().type, "FAILED")
  h.raises_kind("Deadlock", f.result, f)
  lu.assertTrue(holder.up:wait(PATIENCE))
  lu.assertEquals(holder.up:state().name, "NotReady")
end

-- A run whose outcome its caller claimed (a direct call, return_state,
-- run()) is not reported as unhandled when the caller ends first.
function TestFuzzerFinds:test_claimed_runs_are_handled_when_their_caller_ends_first()
  local r = run([[
local mf = require "moonflow"
local up = mf.task(function() mf.sleep(0.2) error("late", 0) end):submit()
local echo = mf.task(function(x) return x end)
local callers = {
  mf.task({ timeout = 0.05 }, function() return echo(up) end):submit(),
  mf.task({ timeout = 0.05 }, function() return echo:run(up) end):submit(),
  mf.task({ timeout = 0.05 }, function()
    return echo:with({ return_state = true }):submit(up) end):submit(),
  mf.task({ timeout = 0.05 }, function()
    return echo:with({ return_state = true }):map({ up }) end):submit(),
}
for _, c in ipairs(callers) do c:wait() io.write(c:state().name, " ") end
up:wait() up:state()
mf.sleep(0.05)
print("end")
]], "moonflow")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "TimedOut TimedOut TimedOut TimedOut end\n")
  lu.assertNotStrContains(r.err, "nothing handled")
end

-- }======

h.run()
