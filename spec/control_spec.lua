package.path = "spec/?.lua;" .. package.path
-- Control over runs (api.md, "Tasks" options, "Flows", "Running work";
-- issue 4): retries (delays, jitter, condition), timeouts (yielding and
-- computing runs), fair time slices, cancellation, hooks, task_run_name,
-- logging and log_prints, and the checks of every option at definition.
-- Logging is tested through the moonflow program run as a subprocess
-- ($MF_PROGRAM, else build/moonflow), its stderr captured.
local h = require "helper"
local mf, lu = h.mf, h.lu

-- {====== Helpers ======

local function names(states)
  local out = {}
  for i, st in ipairs(states) do out[i] = st.name end
  return out
end

local function fmt_list(xs)
  local parts = {}
  for i, x in ipairs(xs) do parts[i] = string.format("%.4f", x) end
  return table.concat(parts, " ")
end

-- The delays a run waited before each retry: from each AwaitingRetry state
-- to the Retrying state after it, by their timestamps.
local function retry_gaps(fut)
  local history, gaps = fut:history(), {}
  for i = 1, #history - 1 do
    if history[i].name == "AwaitingRetry" then
      lu.assertEquals(history[i + 1].name, "Retrying")
      gaps[#gaps + 1] = history[i + 1].timestamp - history[i].timestamp
    end
  end
  return gaps
end

-- Raises err as it is (no position added).
local function raise(err) error(err, 0) end

-- A body that computes without ever yielding until `stop()` is true, or
-- for h.PATIENCE seconds; returns whether stop() became true.
local function never_yield(stop) return h.spin_until(stop or function() return false end) end

-- Timers may fire up to half a millisecond early (libuv counts whole
-- milliseconds); the sleep specs allow one millisecond, so do these.
local EARLY = 0.001

-- Sleeps until mf.now() is past t (to see that nothing happens by then).
local function sleep_past(t)
  mf.sleep(math.max(0, t - mf.now()) + 0.01)
end

-- }======

-- {====== Subprocesses (logging) ======

local capture = h.capture

local function read_file(path) return h.read_file(path) or "" end

local write_file = h.write_file

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local CWD = capture("pwd"):gsub("\n$", "")
local PROG = os.getenv("MF_PROGRAM") or "build/moonflow"
if PROG:sub(1, 1) ~= "/" then PROG = CWD .. "/" .. PROG end

-- Every shell command starts with this: helpers must not get the sanitizer
-- runtime a sanitizer build preloads into lua5.4.
local PRELUDE = "unset LD_PRELOAD; "

local DIR = capture(PRELUDE .. "mktemp -d /tmp/mf-control-spec.XXXXXX"):gsub("\n$", "")
assert(DIR:match("^/tmp/mf%-control%-spec%."), "mktemp -d failed")

local counter = 0

-- Runs `code` as a script (named control_script.lua) with the program;
-- level: MOONFLOW_LOG_LEVEL, or nil to leave it unset; limit: seconds
-- before it is killed (3 x PATIENCE: a backstop); more_env: more
-- "NAME=value " assignments for the program.  Returns
-- { code, out, err }.
local function run_script(code, level, limit, more_env)
  counter = counter + 1
  local base = string.format("%s/%d-", DIR, counter)
  local path = base .. "control_script.lua"
  write_file(path, code)
  local env = level and ("MOONFLOW_LOG_LEVEL=" .. level .. " ") or "unset MOONFLOW_LOG_LEVEL; "
  env = env .. (more_env or "")
  local cmd = PRELUDE .. env .. "timeout -k 2 " .. (limit or 3 * h.PATIENCE) .. " " .. shell_quote(PROG) .. " "
    .. shell_quote(path) .. " >" .. shell_quote(base .. "out") .. " 2>"
    .. shell_quote(base .. "err") .. " </dev/null"
  local ok, how, status = os.execute(cmd)
  local exit = how == "exit" and status or 128 + (status or 0)
  if ok then exit = 0 end
  return { code = exit, out = read_file(base .. "out"), err = read_file(base .. "err") }
end

local function describe(r)
  return string.format("exit %s\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.out, r.err)
end

local function assert_contains(s, sub, r)
  lu.assertNotNil(s:find(sub, 1, true), "expected to find:\n" .. sub .. "\n" .. describe(r))
end

local function assert_not_contains(s, sub, r)
  lu.assertNil(s:find(sub, 1, true), "expected not to find:\n" .. sub .. "\n" .. describe(r))
end

local function assert_matches(s, pattern, r)
  lu.assertNotNil(s:find(pattern), "expected to match:\n" .. pattern .. "\n" .. describe(r))
end

local function assert_no_match(s, pattern, r)
  lu.assertNil(s:find(pattern), "expected not to match:\n" .. pattern .. "\n" .. describe(r))
end

-- }======

-- {====== Retries ======

TestRetries = {}

function TestRetries:test_same_future_for_every_attempt_until_completed()
  h.shared_memory("a task records into the test's variables")
  local attempts, ids = {}, {}
  local t = mf.task({ name = "flaky", retries = 3 }, function()
    local ctx = mf.context()
    attempts[#attempts + 1] = ctx.attempt
    ids[#ids + 1] = ctx.id
    if #attempts < 3 then raise("flaky") end
    return "ok", 2
  end)
  local fut = t:submit()
  local a, b = fut:result()
  lu.assertEquals({ a, b }, { "ok", 2 })
  lu.assertEquals(attempts, { 1, 2, 3 })
  lu.assertEquals(ids, { fut.id, fut.id, fut.id })
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "AwaitingRetry",
    "Retrying", "AwaitingRetry", "Retrying", "Completed" })
  local st = fut:state()
  lu.assertEquals(st.type, "COMPLETED")
  lu.assertEquals(st.attempt, 3)
  lu.assertEquals(fut.name, "flaky-1")
end

function TestRetries:test_history_types()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 1 }, function()
    n = n + 1
    if n == 1 then raise("once") end
  end)
  local fut = t:submit()
  fut:result()
  local types = {}
  for i, st in ipairs(fut:history()) do types[i] = st.type end
  -- Retrying is a RUNNING state; AwaitingRetry a SCHEDULED one (as in Prefect).
  lu.assertEquals(types, { "PENDING", "RUNNING", "SCHEDULED", "RUNNING", "COMPLETED" })
end

function TestRetries:test_retries_exhausted_fails_with_last_error()
  h.shared_memory("a task records into the test's variables")
  local errs = {}
  local t = mf.task({ retries = 2 }, function()
    local e = { kind = "Mine", message = "attempt " .. mf.context().attempt }
    errs[#errs + 1] = e
    error(e)
  end)
  local fut = t:submit()
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertEquals(#errs, 3, "retries = 2 means 3 attempts")
  lu.assertTrue(rawequal(err, errs[3]), "result() raises the last attempt's error unchanged")
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "AwaitingRetry",
    "Retrying", "AwaitingRetry", "Retrying", "Failed" })
  lu.assertEquals(fut:state().type, "FAILED")
  lu.assertEquals(fut:state().attempt, 3)
  lu.assertIsString(fut:state().traceback)
end

function TestRetries:test_no_retries_by_default()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task(function() n = n + 1 raise("no") end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(n, 1)
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "Failed" })
  lu.assertEquals(fut:state().type, "FAILED")
end

function TestRetries:test_retries_zero_is_one_attempt()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 0 }, function() n = n + 1 raise("no") end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(n, 1)
  lu.assertEquals(fut:state().name, "Failed")
end

function TestRetries:test_attempt_is_one_without_retries()
  local t = mf.task({ retries = 2 }, function() return mf.context().attempt end)
  lu.assertEquals(t(), 1)
end

function TestRetries:test_retry_never_starts_before_its_delay()
  h.shared_memory("a task records into the test's variables")
  local starts = {}
  local t = mf.task({ retries = 2, retry_delay = 0.05 }, function()
    starts[#starts + 1] = mf.now()
    if #starts < 3 then raise("again") end
  end)
  t:submit():result()
  lu.assertEquals(#starts, 3)
  for i = 2, 3 do
    local gap = starts[i] - starts[i - 1]
    lu.assertTrue(gap >= 0.05 - EARLY, string.format("retry %d started after %.4f s", i - 1, gap))
    lu.assertTrue(gap < h.PATIENCE, string.format("retry %d never started: %.4f s", i - 1, gap))
  end
end

function TestRetries:test_delay_list_used_in_turn_last_value_repeats()
  h.shared_memory("a task keeps a Future in the test's variables")
  -- Each delay is at least its value; that the first retry waited 0.01 s
  -- and not 0.04 s is told by a marker sleeping 0.025 s, started by the
  -- first attempt just before it fails: the retry comes before it wakes.
  local starts = {}
  local ev = h.recorder()
  local marker = mf.task(function() mf.sleep(0.025) ev("marker woke") end)
  local marker_fut
  local t = mf.task({ retries = 4, retry_delay = { 0.01, 0.04 } }, function()
    starts[#starts + 1] = mf.now()
    ev("attempt " .. #starts)
    if #starts == 1 then marker_fut = marker:submit() end
    raise("always")
  end)
  local fut = t:submit()
  fut:wait()
  fut:state()
  marker_fut:wait()
  lu.assertEquals(#starts, 5)
  ev:assert_order("attempt 1", "attempt 2", "marker woke")
  local expected = { 0.01, 0.04, 0.04, 0.04 }
  local gaps = {}
  for i = 2, 5 do gaps[i - 1] = starts[i] - starts[i - 1] end
  for i, want in ipairs(expected) do
    lu.assertTrue(gaps[i] >= want - EARLY and gaps[i] < h.PATIENCE,
      string.format("gaps %s, expected at least %s", fmt_list(gaps), fmt_list(expected)))
  end
  -- The same delays in the history.
  local hist = retry_gaps(fut)
  lu.assertEquals(#hist, 4)
  for i, want in ipairs(expected) do
    lu.assertTrue(hist[i] >= want - EARLY and hist[i] < h.PATIENCE,
      string.format("history gaps %s, expected at least %s", fmt_list(hist), fmt_list(expected)))
  end
end

function TestRetries:test_other_runs_go_on_during_a_retry_delay()
  h.shared_memory("a task counts its attempts in the test's variables")
  -- Counted: the ticker ticked between the first attempt and the second.
  local ticks = 0
  local flaky_n = 0
  local seen = {}
  local flaky = mf.task({ retries = 1, retry_delay = 0.1 }, function()
    flaky_n = flaky_n + 1
    seen[flaky_n] = ticks
    if flaky_n == 1 then raise("once") end
    return ticks
  end)
  local ticker = mf.task(function()
    for _ = 1, 5 do mf.sleep(0.005) ticks = ticks + 1 end
  end)
  local a = flaky:submit()
  local b = ticker:submit()
  a:result()
  lu.assertTrue(seen[2] > seen[1], "the ticker did not run during the retry delay")
  b:result()
end

-- Retry delays on a loaded machine: a measured delay is the delay plus
-- however late the loop woke the run (tens, at times a hundred and more
-- milliseconds).  So their lower bounds are timed (a timer never fires
-- early) and their upper bounds are orders: timers fire in the order of
-- their deadlines, so a run whose retry waits at most d retries before a
-- run that failed after it and waits d.  `failing(name, opts, log)` is a
-- task that always fails, noting "name:attempt" in log.
local function failing(opts, log)
  return mf.task(opts, function(name)
    log[#log + 1] = name .. ":" .. mf.context().attempt
    raise("always")
  end)
end

-- The retries (attempts > 1) in log, in order: their names.
local function retries_in(log)
  local out = {}
  for _, entry in ipairs(log) do
    local name, attempt = entry:match("^(.-):(%d+)$")
    if tonumber(attempt) > 1 then out[#out + 1] = name end
  end
  return out
end

local function index_of(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
end

function TestRetries:test_jitter_delays_vary_and_stay_in_bounds()
  h.shared_memory("a task records into the test's variables")
  -- delay 0.2, jitter 0.5: every delay is drawn from [0.1, 0.3].  36 runs
  -- fail in one go, after a run whose retry waits 0.1 s ("lo"), before one
  -- that waits 0.3 s ("hi"), with one that waits 0.2 s ("mid") in the
  -- middle.  In bounds: every jittered retry comes after lo's and before
  -- hi's, and waited at least 0.1 s.  Drawn: some come before mid's and
  -- some after (all on one side: 2 in 10^5 by chance), not in the order
  -- they failed, and their mean wait is not below 0.16 s.
  local log = {}
  local jittered = failing({ retries = 1, retry_delay = 0.2, retry_jitter = 0.5 }, log)
  local function fixed(delay) return failing({ retries = 1, retry_delay = delay }, log) end
  local futs = { fixed(0.1):submit("lo") }
  local names = {}
  for i = 1, 36 do
    names[i] = "j" .. i
    futs[#futs + 1] = jittered:submit(names[i])
    if i == 18 then futs[#futs + 1] = fixed(0.2):submit("mid") end
  end
  futs[#futs + 1] = fixed(0.3):submit("hi")
  mf.wait(futs)
  local gaps = {}
  for _, fut in ipairs(futs) do
    lu.assertEquals(fut:state().name, "Failed")
    for _, g in ipairs(retry_gaps(fut)) do gaps[#gaps + 1] = g end
  end
  local order = retries_in(log)
  local what = "retries in the order " .. table.concat(order, " ")
  lu.assertEquals(#order, 39, what)
  lu.assertEquals(order[1], "lo", "a delay below delay*(1-jitter): " .. what)
  lu.assertEquals(order[39], "hi", "a delay above delay*(1+jitter): " .. what)
  local mid = index_of(order, "mid")
  lu.assertTrue(mid > 2, "no delay in the lower part of the range: " .. what)
  lu.assertTrue(mid < 38, "no delay in the upper part of the range: " .. what)
  local jittered_order = {}
  for _, name in ipairs(order) do
    if name:match("^j") then jittered_order[#jittered_order + 1] = name end
  end
  lu.assertNotEquals(jittered_order, names, "delays do not vary: " .. what)
  local sum = 0
  for _, g in ipairs(gaps) do
    lu.assertTrue(g >= 0.1 - EARLY, "a delay below delay*(1-jitter): " .. fmt_list(gaps))
    sum = sum + g
  end
  lu.assertTrue(sum / #gaps > 0.16, "mean far below the delay: " .. fmt_list(gaps))
end

function TestRetries:test_jitter_zero_keeps_the_delay()
  h.shared_memory("a task records into the test's variables")
  -- Equal delays: runs failing in one go retry in the order they failed
  -- (jitter would shuffle them), each at least the delay after its failure,
  -- and their first retries all come before that of a run with twice the
  -- delay that failed after them.
  local log = {}
  local t = failing({ retries = 2, retry_delay = 0.1, retry_jitter = 0 }, log)
  local futs = {}
  for i = 1, 6 do futs[i] = t:submit(tostring(i)) end
  local double = failing({ retries = 1, retry_delay = 0.2 }, log):submit("double")
  mf.wait(futs)
  double:wait()
  double:state()
  local function attempts(n)
    local out = {}
    for _, entry in ipairs(log) do
      local name, attempt = entry:match("^(%d+):(%d+)$")
      if name and tonumber(attempt) == n then out[#out + 1] = name end
    end
    return out
  end
  lu.assertEquals(attempts(2), { "1", "2", "3", "4", "5", "6" })
  lu.assertEquals(attempts(3), { "1", "2", "3", "4", "5", "6" })
  lu.assertTrue(index_of(log, "6:2") < index_of(log, "double:2"), table.concat(log, " "))
  for _, fut in ipairs(futs) do
    fut:state()
    for _, g in ipairs(retry_gaps(fut)) do
      lu.assertTrue(g >= 0.1 - EARLY, "delay " .. g)
    end
  end
end

function TestRetries:test_retry_condition_falsy_ends_without_more_retries()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 5, retry_condition = function() return nil end },
    function() n = n + 1 raise("fatal") end)
  local fut = t:submit()
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertEquals(err, "fatal")
  lu.assertEquals(n, 1)
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "Failed" })
end

function TestRetries:test_retry_condition_false_also_ends()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 5, retry_condition = function() return false end },
    function() n = n + 1 raise("fatal") end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(fut:state().name, "Failed")
  lu.assertEquals(n, 1)
end

function TestRetries:test_retry_condition_gets_error_and_state()
  h.shared_memory("a task counts its attempts in the test's variables")
  local calls = {}
  local e1 = { kind = "Transient", message = "try again" }
  local e2 = { kind = "Fatal", message = "give up" }
  local n = 0
  local t = mf.task({
    retries = 5,
    retry_condition = function(err, state)
      calls[#calls + 1] = { err = err, type = state.type, name = state.name }
      return err.kind == "Transient"
    end,
  }, function()
    n = n + 1
    error(n < 3 and e1 or e2)
  end)
  local fut = t:submit()
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  lu.assertTrue(rawequal(err, e2))
  lu.assertEquals(n, 3, "retried while Transient, stopped at Fatal")
  lu.assertEquals(#calls, 3)
  lu.assertTrue(rawequal(calls[1].err, e1), "retry_condition gets the error unchanged")
  lu.assertTrue(rawequal(calls[3].err, e2))
  lu.assertEquals(calls[1].type, "FAILED")
  lu.assertEquals(calls[1].name, "Failed")
end

function TestRetries:test_retry_condition_truthy_retries()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 2, retry_condition = function() return "yes" end },
    function() n = n + 1 if n < 3 then raise("x") end return n end)
  lu.assertEquals(t(), 3)
end

function TestRetries:test_timed_out_attempt_is_retried()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 1, timeout = 0.3 }, function()
    n = n + 1
    if n == 1 then mf.sleep(h.LONG) end
    return "second"
  end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), "second")
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "AwaitingRetry",
    "Retrying", "Completed" })
end

function TestRetries:test_each_attempt_has_its_own_timeout()
  h.shared_memory("a task counts its attempts in the test's variables")
  -- Three attempts of 0.05 s, 0.5 s apart: more than the 1 s timeout in
  -- all, but each attempt is well within it.
  local n = 0
  local t = mf.task({ retries = 2, timeout = 1, retry_delay = 0.5 }, function()
    n = n + 1
    mf.sleep(0.05)
    if n < 3 then raise("again") end
    return n
  end)
  lu.assertEquals(t(), 3)
end

function TestRetries:test_retries_with_task_with()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task(function() n = n + 1 if n < 2 then raise("x") end return n end)
  local fut = t:with({ retries = 1 }):submit()
  lu.assertEquals(fut:result(), 2)
end

function TestRetries:test_flow_retries_rerun_the_function()
  local calls = 0
  local f = mf.flow({ name = "retried_flow", retries = 2 }, function()
    calls = calls + 1
    if calls < 3 then raise("flow flaky") end
    return "done", calls
  end)
  local fut = f:submit()
  local ok, a, b = pcall(fut.result, fut)
  lu.assertTrue(ok, "the flow failed: " .. tostring(a) .. " " .. tostring(fut:state().message))
  lu.assertEquals({ a, b }, { "done", 3 })
  lu.assertEquals(calls, 3)
  lu.assertEquals(names(fut:history()), { "Pending", "Running", "AwaitingRetry",
    "Retrying", "AwaitingRetry", "Retrying", "Completed" })
end

function TestRetries:test_flow_retries_called_directly()
  local calls = 0
  local leaf = mf.task(function(x) return x end)
  local f = mf.flow({ retries = 1 }, function()
    calls = calls + 1
    local v = leaf(calls)
    if calls == 1 then raise("first attempt fails") end
    return v
  end)
  local ok, v = pcall(f)
  lu.assertTrue(ok, "f() raised: " .. tostring(v))
  lu.assertEquals(v, 2)
end

function TestRetries:test_flow_retries_exhausted_fails()
  local calls = 0
  local f = mf.flow({ retries = 1, retry_delay = 0.01 }, function()
    calls = calls + 1
    raise("always")
  end)
  local st = f:run()
  lu.assertEquals(calls, 2)
  lu.assertEquals(st.type, "FAILED")
  local ok, err = pcall(f)
  lu.assertFalse(ok)
  lu.assertEquals(err, "always")
end

-- }======

-- {====== Timeouts ======

TestTimeouts = {}

local function assert_timed_out(fut)
  lu.assertTrue(fut:done())
  local st = fut:state()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.name, "TimedOut")
  h.raises_kind("TimedOut", fut.result, fut)
end

-- The runs below sleep h.LONG or compute forever: stopped by their
-- timeout, they end long before that; the waits give up after PATIENCE.
function TestTimeouts:test_yielding_run_is_stopped_at_its_next_yield()
  local after = false
  local t = mf.task({ timeout = 0.05 }, function()
    mf.sleep(h.LONG)
    after = true
  end)
  local t0 = mf.now()
  local fut = t:submit()
  lu.assertTrue(fut:wait(h.PATIENCE), "the timeout did not stop the sleep")
  local elapsed = mf.now() - t0
  assert_timed_out(fut)
  lu.assertTrue(elapsed >= 0.05 - EARLY, "stopped after " .. elapsed)
  lu.assertFalse(after)
end

function TestTimeouts:test_run_parked_on_a_future_is_stopped()
  h.shared_memory("a task keeps a Future in the test's variables")
  local slow = mf.task(function() mf.sleep(h.LONG) return 1 end)
  local slow_fut
  local t = mf.task({ timeout = 0.05 }, function()
    slow_fut = slow:submit()
    return slow_fut:result()
  end)
  local fut = t:submit()
  lu.assertTrue(fut:wait(h.PATIENCE), "the timeout did not stop the wait")
  assert_timed_out(fut)
  lu.assertEquals(slow_fut:state().type, "CANCELLED")
end

function TestTimeouts:test_run_that_never_yields_is_stopped()
  local t = mf.task({ timeout = 0.05 }, function() while true do end end)
  local t0 = mf.now()
  local fut = t:submit()
  lu.assertTrue(fut:wait(h.PATIENCE), "the timeout did not stop the loop")
  assert_timed_out(fut)
  lu.assertTrue(mf.now() - t0 >= 0.05 - EARLY, "stopped after " .. (mf.now() - t0))
end

function TestTimeouts:test_result_error_kind_and_message()
  local t = mf.task({ name = "slowpoke", timeout = 0.02 }, function() mf.sleep(0.2) end)
  local fut = t:submit()
  local err = h.raises_kind("TimedOut", fut.result, fut)
  lu.assertStrContains(tostring(err), "TimedOut")
  lu.assertEquals(fut:state().run_name, "slowpoke-1")
end

function TestTimeouts:test_run_within_its_timeout_completes()
  local t = mf.task({ timeout = h.PATIENCE }, function() mf.sleep(0.01) return "in time" end)
  lu.assertEquals(t(), "in time")
end

-- The input takes longer than the timeout (0.3 s); the body itself takes
-- no time at all (it does not even yield: a loaded loop could resume it
-- late), so that only a timeout counted from the submit could stop it.
function TestTimeouts:test_timeout_counts_from_start_not_from_inputs()
  local up = mf.task(function() mf.sleep(0.4) return 7 end)
  local down = mf.task({ timeout = 0.3 }, function(x) return x * 2 end)
  local fut = down:submit(up:submit())
  lu.assertEquals(fut:result(), 14)
  lu.assertEquals(fut:state().type, "COMPLETED")
end

function TestTimeouts:test_timeout_counts_from_start_not_from_wait_for()
  local up = mf.task(function() mf.sleep(0.4) end)
  local down = mf.task({ timeout = 0.3 }, function() return "ran" end)
  local fut = down:with({ wait_for = { up:submit() } }):submit()
  lu.assertEquals(fut:result(), "ran")
end

function TestTimeouts:test_what_it_started_is_cancelled()
  h.shared_memory("a task keeps a Future in the test's variables")
  local child_finished = false
  local child_fut
  local child = mf.task(function() mf.sleep(0.15) child_finished = true end)
  local t = mf.task({ timeout = 0.05 }, function()
    child_fut = child:submit()
    mf.sleep(0.2)
  end)
  local fut = t:submit()
  fut:wait()
  assert_timed_out(fut)
  lu.assertTrue(child_fut:done(), "the child is still going after the parent timed out")
  lu.assertEquals(child_fut:state().type, "CANCELLED")
  mf.sleep(0.15)
  lu.assertFalse(child_finished)
end

function TestTimeouts:test_on_failure_sees_timed_out_state()
  local seen
  local t = mf.task({ timeout = 0.02, on_failure = { function(_, _, st) seen = st end } },
    function() mf.sleep(0.2) end)
  local fut = t:submit()
  fut:wait()
  assert_timed_out(fut)
  lu.assertNotNil(seen, "on_failure did not run")
  lu.assertEquals(seen.type, "FAILED")
  lu.assertEquals(seen.name, "TimedOut")
end

function TestTimeouts:test_caught_timeout_still_ends_timed_out()
  -- api.md: the run is stopped and ends FAILED/TimedOut, even if its
  -- function catches the error and returns.
  local t = mf.task({ timeout = 0.05 }, function()
    pcall(mf.sleep, 0.5)
    return "survived"
  end)
  local fut = t:submit()
  fut:wait()
  assert_timed_out(fut)
end

function TestTimeouts:test_runs_that_catch_their_timeout_are_still_stopped()
  -- Runs that catch the TimedOut error and go on computing: run as a
  -- subprocess, so a run that is never stopped cannot hang this spec.
  -- Each case runs alone, then beside another computing run (so that the
  -- deadline often passes while the run is parked at the end of a slice).
  local r = run_script([[
io.stdout:setvbuf("line")
local mf = require "moonflow"
local cases = {
  { "caught once, then computing", function()
    pcall(function() while true do end end)
    while true do end
  end },
  { "caught at every sleep", function()
    while true do pcall(mf.sleep, 0.5) end
  end },
  { "caught in a loop forever", function()
    while true do pcall(function() while true do end end) end
  end },
}
local other = mf.task(function()
  local t0 = mf.now()
  while mf.now() - t0 < 0.15 do end
end)
for _, beside in ipairs({ false, true }) do
  for _, case in ipairs(cases) do
    local busy = beside and other:submit()
    local fut = mf.task({ timeout = 0.05 }, case[2]):submit()
    fut:wait()
    print(case[1] .. (beside and " (beside another)" or "") .. ": " .. fut:state().name)
    if busy then busy:wait() end
  end
end
]], "OFF", 6 * h.PATIENCE)
  lu.assertEquals(r.out, [[
caught once, then computing: TimedOut
caught at every sleep: TimedOut
caught in a loop forever: TimedOut
caught once, then computing (beside another): TimedOut
caught at every sleep (beside another): TimedOut
caught in a loop forever (beside another): TimedOut
]], describe(r))
end

function TestTimeouts:test_timeout_in_a_coroutine_of_the_user()
  local t = mf.task({ timeout = 0.05 }, function()
    local co = coroutine.wrap(function() while true do end end)
    co()
  end)
  local fut = t:submit()
  fut:wait()
  assert_timed_out(fut)
end

function TestTimeouts:test_timeout_stops_a_run_that_keeps_removing_the_hook()
  -- Once it has set the hook, the watchdog signals a step again only every
  -- 8 slices: that is what puts the hook back on a run that removed it
  -- (debug.sethook()), which would else compute past its timeout forever.
  local t = mf.task({ timeout = 0.05 }, function()
    while true do
      debug.sethook()
      for _ = 1, 1000 do end
    end
  end)
  local fut = t:submit()
  lu.assertTrue(fut:wait(h.PATIENCE), "the timeout did not stop the run")
  assert_timed_out(fut)
end

function TestTimeouts:test_timeout_inside_table_sort_comparator()
  local t = mf.task({ timeout = 0.05 }, function()
    local xs = {}
    for i = 1, 100 do xs[i] = 101 - i end
    table.sort(xs, function() while true do end end)
  end)
  local fut = t:submit()
  lu.assertTrue(fut:wait(h.PATIENCE), "the timeout did not stop the comparator")
  assert_timed_out(fut)
end

function TestTimeouts:test_timeout_inside_gsub_callback()
  local t = mf.task({ timeout = 0.05 }, function()
    return (string.gsub("aaa", "a", function() while true do end end))
  end)
  local fut = t:submit()
  fut:wait()
  assert_timed_out(fut)
end

function TestTimeouts:test_flow_timeout_stops_it_and_cancels_its_runs()
  local child_fut
  local child = mf.task(function() mf.sleep(h.LONG) return 1 end)
  local f = mf.flow({ name = "slow_flow", timeout = 0.05 }, function()
    child_fut = child:submit()
    mf.sleep(h.LONG)
    return "late"
  end)
  local t0 = mf.now()
  local st = f:run()
  lu.assertTrue(mf.now() - t0 < h.LONG, "the flow ran " .. (mf.now() - t0))
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.name, "TimedOut")
  lu.assertEquals(child_fut:state().type, "CANCELLED")
  h.raises_kind("TimedOut", f)
end

function TestTimeouts:test_flow_that_never_yields_is_stopped()
  local f = mf.flow({ timeout = 0.05 }, function() while true do end end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(st.name, "TimedOut")
end

-- The watchdog that stops computing runs sleeps while no run steps.  A run
-- that began to compute just as it was going to sleep (after its last look,
-- before it said it was idle) did not wake it, and was never stopped: the
-- process spun forever (the API fuzzer's rare hangs).  The test widens that
-- window (MOONFLOW_TEST_WATCHDOG_PAUSE: the watchdog pauses 300 ms there),
-- and begins each computing run in it, right after a sleep of 10 ms.
function TestTimeouts:test_run_that_computes_as_the_watchdog_goes_idle_is_stopped()
  local r = run_script([[
local mf = require "moonflow"
local spin = mf.task({ timeout = 0.05 }, function() while true do end end)
for i = 1, 4 do
  mf.sleep(0.01) -- no step for 10 ms: the watchdog finds none, and pauses
  local f = spin:submit() -- computes from inside the pause
  local ok, err = pcall(f.result, f)
  print(i, ok, type(err) == "table" and err.kind or tostring(err))
end
]], nil, nil, "MOONFLOW_TEST_WATCHDOG_PAUSE=300 ")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "1\tfalse\tTimedOut\n2\tfalse\tTimedOut\n"
    .. "3\tfalse\tTimedOut\n4\tfalse\tTimedOut\n", describe(r))
end

function TestTimeouts:test_flow_within_timeout_completes()
  local leaf = mf.task(function(x) mf.sleep(0.01) return x end)
  local f = mf.flow({ timeout = h.PATIENCE }, function() return leaf(3) + leaf(4) end)
  lu.assertEquals(f(), 7)
end

-- }======

-- {====== Fair scheduling ======

TestFairness = {}

-- Preemption is asserted with counters, never with how long a tick took:
-- a run that never yields is interrupted when a run beside it makes
-- progress while it has not finished -- on one thread, that progress can
-- only happen while the spinner is parked.

-- A sleeper ticking every 0.02 s beside a spinner that computes, never
-- yielding, until it has seen `ticks` ticks (or gives up after PATIENCE).
-- Returns what the spinner saw: ticks during its loop and the distinct
-- tick values it saw (each change is one interruption at least).
local function ticker_beside_spinner(ticks)
  local count, spinning = 0, true
  local ticker = mf.task(function()
    while spinning do
      mf.sleep(0.02)
      count = count + 1
    end
  end)
  local spinner = mf.task(function()
    local first, changes, last = count, 0, count
    local saw_all = never_yield(function()
      if count ~= last then changes, last = changes + 1, count end
      return count - first >= ticks
    end)
    spinning = false
    return saw_all, count - first, changes
  end)
  local a = ticker:submit()
  local b = spinner:submit()
  local saw_all, seen, changes = b:result()
  a:result()
  return saw_all, seen, changes
end

-- The stretches a spinner computes between two interruptions, in seconds:
-- beside it a run yields in a loop (mf.sleep(0)), so every time the
-- spinner is parked the yielder steps once.  The spinner stops after
-- `interruptions` of them (or gives up after PATIENCE).
local function slices(interruptions)
  local steps, spinning = 0, true
  local yielder = mf.task(function()
    while spinning do
      steps = steps + 1
      mf.sleep(0)
    end
  end)
  local spinner = mf.task(function()
    local stretches, last_steps = {}, steps
    local since = mf.now()
    local last_seen = since
    never_yield(function()
      local now = mf.now()
      if steps ~= last_steps then
        -- parked between last_seen and now: the stretch ended at last_seen
        stretches[#stretches + 1] = last_seen - since
        last_steps, since = steps, now
      end
      last_seen = now
      return #stretches >= interruptions
    end)
    spinning = false
    return stretches
  end)
  local a = yielder:submit()
  local stretches = spinner:submit():result()
  a:result()
  return stretches
end

local function min_of(xs)
  local m = math.huge
  for _, x in ipairs(xs) do m = math.min(m, x) end
  return m
end

function TestFairness:test_spinning_run_does_not_freeze_a_sleeper()
  h.shared_memory("runs see each other's progress through the test's variables")
  -- The sleeper ticked 5 times while the spinner computed: the spinner was
  -- parked and timers fired in between.
  local saw_all, seen, changes = ticker_beside_spinner(5)
  lu.assertTrue(saw_all, string.format(
    "the sleeper ticked %d of 5 times while the spinner spun %g s", seen, h.PATIENCE))
  lu.assertTrue(changes >= 1, "the spinner was never interrupted")
end

function TestFairness:test_two_spinners_share_the_loop()
  h.shared_memory("runs see each other's progress through the test's variables")
  -- Two runs computing without yielding: each sees the other make progress
  -- while it has not finished itself -- neither waits for the other to
  -- finish.  Each stops once it saw the other progress twice, or once the
  -- other is done (after it saw progress itself).
  local progress, finished, saw = { a = 0, b = 0 }, {}, { a = 0, b = 0 }
  local function spinner(me, other)
    return mf.task(function()
      local last = progress[other]
      never_yield(function()
        progress[me] = progress[me] + 1
        if progress[other] ~= last then saw[me], last = saw[me] + 1, progress[other] end
        return saw[me] >= 2 or finished[other]
      end)
      finished[me] = true
    end)
  end
  local a, b = spinner("a", "b"):submit(), spinner("b", "a"):submit()
  a:result()
  b:result()
  lu.assertTrue(saw.a >= 1, "a never saw b progress: b waited for a to finish")
  lu.assertTrue(saw.b >= 1, "b never saw a progress: a waited for b to finish")
end

-- A long slice shows in the stretches: the hook parks a run no sooner than
-- 0.75 slice after it began.  With 0.3 s slices every stretch is at least
-- 0.2 s; with the default 0.01 s, not all of 5 are (it takes a machine
-- stalled for 0.2 s five times in a row to make them so).
local LONG_SLICE, SHORT_ENOUGH = 0.3, 0.2

function TestFairness:test_configure_slice_changes_the_slice()
  h.shared_memory("runs see each other's progress through the test's variables")
  local ok, err = pcall(function()
    mf.configure({ slice = LONG_SLICE })
    local stretches = slices(1)
    lu.assertEquals(#stretches, 1, "the spinner was never interrupted")
    lu.assertTrue(stretches[1] >= SHORT_ENOUGH, string.format(
      "a %g s slice made no difference: %s", LONG_SLICE, fmt_list(stretches)))
  end)
  mf.configure({ slice = 0.01 }) -- the default again
  if not ok then error(err, 0) end
  local stretches = slices(5)
  lu.assertEquals(#stretches, 5, "the spinner was not interrupted 5 times")
  lu.assertTrue(min_of(stretches) < SHORT_ENOUGH, "not back to 10 ms: " .. fmt_list(stretches))
end

function TestFairness:test_configure_bad_values_are_usage_errors()
  h.shared_memory("runs see each other's progress through the test's variables")
  for _, bad in ipairs({ 0, -0.01, "fast", true, {}, 0 / 0 }) do
    local ok, err = pcall(mf.configure, { slice = bad })
    if ok then mf.configure({ slice = 0.01 }) end
    lu.assertFalse(ok, "slice = " .. tostring(bad) .. " was accepted")
    lu.assertEquals(type(err) == "table" and err.kind, "UsageError", tostring(err))
    lu.assertStrContains(err.message, "slice")
  end
  local err = h.raises_kind("UsageError", mf.configure, { slise = 0.01 })
  lu.assertStrContains(err.message, "slise")
  -- The slice is unchanged by the refused calls.
  local stretches = slices(5)
  lu.assertEquals(#stretches, 5, "the spinner was not interrupted 5 times")
  lu.assertTrue(min_of(stretches) < SHORT_ENOUGH, "the slice changed: " .. fmt_list(stretches))
end

function TestFairness:test_configure_without_a_table_is_usage_error()
  h.raises_kind("UsageError", mf.configure, 0.01)
  h.raises_kind("UsageError", mf.configure, "slice=0.01")
  h.raises_kind("UsageError", mf.configure)
end

function TestFairness:test_sort_comparator_cannot_be_parked_but_timeout_stops_it()
  -- A sort whose comparator computes forever: the run is not parked
  -- there, but its timeout stops it.
  local t = mf.task({ timeout = 0.08 }, function()
    local xs = { 3, 1, 2, 5, 4 }
    table.sort(xs, function(a, b) while true do end return a < b end)
    return xs
  end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(fut:state().name, "TimedOut")
end

function TestFairness:test_run_blocked_in_a_c_call_is_not_signalled_at_each_look()
  -- A run blocked in a C call (here os.execute) computes, as far as the
  -- watchdog can tell.  Its first signal sets the hook; more would do
  -- nothing but wake the process, so they come every 8 slices at most
  -- (they came every quarter slice: about 100 in 0.3 s).  The count is
  -- bounded by the call's own length, whatever the machine's pace.
  h.shared_memory("the runs see each other's progress through the test's variables")
  local core = require "moonflow.core"
  local slice = 0.01
  mf.configure({ slice = slice })
  local ticks, ticking = 0, true
  local ticker = mf.task(function()
    while ticking do
      mf.sleep(0.005)
      ticks = ticks + 1
    end
  end):submit()
  local blocked = mf.task(function()
    local before, t0 = core.preempt_signals(), mf.now()
    os.execute("sleep 0.3")
    local signals, elapsed = core.preempt_signals() - before, mf.now() - t0
    -- The hook set meanwhile still parks the run once it computes again:
    -- the ticker ticks while this loop never yields.
    local seen = ticks
    h.spin_until(function() return ticks > seen end)
    ticking = false
    return signals, elapsed, ticks > seen
  end):submit()
  local signals, elapsed, parked = blocked:result()
  ticker:result()
  lu.assertTrue(parked, "the run was not parked after its blocking call")
  lu.assertTrue(signals >= 1, "no signal while the run was blocked")
  lu.assertTrue(signals <= 2 + elapsed / (8 * slice), string.format(
    "%d signals in %.3f s blocked", signals, elapsed))
end

function TestFairness:test_tiny_slice_and_blocked_runs_do_not_hang()
  -- A slice of a nanosecond (allowed): every look finds the step past its
  -- slice.  A run blocked in a C call is hooked at once; the watchdog then
  -- waited for its next signal "until now", which never released its lock,
  -- and the loop thread, beginning its next step, waited for that lock
  -- forever (the API fuzzer's hang, seed 20261202 case 37).
  local ok, err = pcall(function()
    mf.configure({ slice = 1e-9 })
    local t = mf.task(function(id)
      local sum = 0
      for _ = 1, 10 do
        os.execute("sleep 0.01")
        for j = 1, 20000 do sum = sum + j end
      end
      return id, sum
    end)
    local a, b = t:submit(1), t:submit(2)
    local id_a, sum_a = a:result()
    local id_b, sum_b = b:result()
    lu.assertEquals({ id_a, id_b }, { 1, 2 })
    lu.assertEquals(sum_a, 10 * 20000 * 20001 // 2)
    lu.assertEquals(sum_b, sum_a)
  end)
  mf.configure({ slice = 0.01 }) -- the default again
  if not ok then error(err, 0) end
end

function TestFairness:test_finite_sort_comparator_completes()
  local t = mf.task(function()
    local xs = {}
    for i = 1, 2000 do xs[i] = (i * 7919) % 2003 end
    table.sort(xs, function(a, b)
      local s = 0
      for k = 1, 20 do s = s + k end
      return a < b
    end)
    for i = 2, #xs do assert(xs[i - 1] <= xs[i]) end
    return #xs
  end)
  lu.assertEquals(t(), 2000)
end

-- }======

-- {====== Cancellation ======

TestCancellation = {}

local function assert_cancelled(fut)
  lu.assertTrue(fut:done())
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertEquals(fut:state().name, "Cancelled")
  h.raises_kind("Cancelled", fut.result, fut)
end

function TestCancellation:test_pending_run()
  local ran = false
  local t = mf.task({ retries = 1, on_running = { function() ran = true end } },
    function() ran = true end)
  local fut = t:submit()
  lu.assertTrue(fut:cancel())
  fut:wait()
  assert_cancelled(fut)
  mf.sleep(0.01)
  lu.assertFalse(ran)
end

function TestCancellation:test_run_waiting_on_inputs()
  local ran = false
  local gate = h.gate() -- the input finishes only once the test opens it
  local up = mf.task(function() gate:wait() return 1 end):submit()
  local t = mf.task({ timeout = 1, on_running = { function() ran = true end } },
    function() ran = true end)
  local fut = t:submit(up)
  mf.sleep(0.01)
  lu.assertTrue(fut:cancel())
  fut:wait()
  assert_cancelled(fut)
  gate:open()
  lu.assertEquals(up:result(), 1)
  mf.sleep(0.01)
  lu.assertFalse(ran)
end

-- The runs below sleep SLEEP seconds, or compute without yielding until
-- PATIENCE: a cancel that waited for their end would be seen (SLEEP is
-- long enough for any machine to cancel a run first); afterwards the test
-- sleeps past SLEEP to see that nothing went on.
local SLEEP = 1

function TestCancellation:test_sleeping_run_runs_its_hooks_and_cancels_children()
  h.shared_memory("a task keeps a Future in the test's variables")
  local log = {}
  local child_fut
  local asleep_at
  local child = mf.task(function() mf.sleep(SLEEP) log[#log + 1] = "child went on" end)
  local t = mf.task({
    on_cancellation = {
      function(task, run, state)
        log[#log + 1] = "hook1 " .. state.type
        mf.sleep(0.02) -- hooks may wait
        log[#log + 1] = "hook1 done"
      end,
      function() log[#log + 1] = "hook2" end,
    },
  }, function()
    child_fut = child:submit()
    asleep_at = mf.now()
    mf.sleep(SLEEP)
    log[#log + 1] = "body went on"
  end)
  local fut = t:submit()
  h.eventually(function() return asleep_at end, "the run to sleep")
  lu.assertTrue(fut:cancel())
  fut:wait()
  lu.assertTrue(mf.now() - asleep_at < SLEEP, "cancel waited for the sleep")
  -- The hooks have finished by the time wait returns.
  lu.assertEquals(log, { "hook1 CANCELLED", "hook1 done", "hook2" })
  assert_cancelled(fut)
  lu.assertTrue(child_fut:done())
  lu.assertEquals(child_fut:state().type, "CANCELLED")
  sleep_past(asleep_at + SLEEP)
  lu.assertEquals(#log, 3, table.concat(log, ", "))
end

function TestCancellation:test_result_returns_after_cancellation_hooks()
  h.shared_memory("a task records into the test's variables")
  local done, started = false, false
  local t = mf.task({ on_cancellation = { function() mf.sleep(0.03) done = true end } },
    function() started = true mf.sleep(h.LONG) end)
  local fut = t:submit()
  h.eventually(function() return started end, "the run to start")
  fut:cancel()
  h.raises_kind("Cancelled", fut.result, fut)
  lu.assertTrue(done, "result() returned before the on_cancellation hook finished")
end

function TestCancellation:test_computing_run_is_stopped_and_runs_its_hooks()
  h.shared_memory("a task records into the test's variables")
  local flags = {}
  local t = mf.task({ on_cancellation = { function() flags.hook = true end } }, function()
    flags.started = true
    never_yield()
    flags.finished = true
  end)
  local fut = t:submit()
  h.eventually(function() return flags.started end, "the run to start")
  local t0 = mf.now()
  lu.assertTrue(fut:cancel())
  fut:wait()
  local elapsed = mf.now() - t0
  assert_cancelled(fut)
  lu.assertTrue(flags.hook, "on_cancellation did not run")
  lu.assertNil(flags.finished, "the body computed to its end after the cancel")
  lu.assertTrue(elapsed < h.PATIENCE, "cancel of a computing run took " .. elapsed .. " s")
end

function TestCancellation:test_computing_run_without_hooks_is_stopped()
  h.shared_memory("a task records into the test's variables")
  local started, finished = false, false
  local t = mf.task(function() started = true never_yield() finished = true end)
  local fut = t:submit()
  h.eventually(function() return started end, "the run to start")
  fut:cancel()
  fut:wait()
  assert_cancelled(fut)
  mf.sleep(0.01)
  lu.assertFalse(finished, "the body computed to its end after the cancel")
end

function TestCancellation:test_run_cancelling_itself()
  h.shared_memory("a task keeps a Future in the test's variables")
  local flags = {}
  local child_fut
  local fut
  local child = mf.task(function() mf.sleep(0.15) flags.child = true end)
  local t = mf.task({ on_cancellation = { function(_, run, st)
    flags.hook = st.type
    flags.hook_run = run.id
  end } }, function()
    child_fut = child:submit()
    mf.sleep(0.01)
    fut:cancel()
    mf.sleep(0)
    flags.after = true
  end)
  fut = t:submit()
  fut:wait()
  assert_cancelled(fut)
  lu.assertNil(flags.after, "the run went on past a yield after cancelling itself")
  lu.assertEquals(flags.hook, "CANCELLED")
  lu.assertEquals(flags.hook_run, fut.id)
  lu.assertEquals(child_fut:state().type, "CANCELLED")
  mf.sleep(0.15)
  lu.assertNil(flags.child)
end

function TestCancellation:test_run_awaiting_a_retry()
  local n = 0
  local t = mf.task({ retries = 3, retry_delay = SLEEP }, function() n = n + 1 raise("x") end)
  local fut = t:submit()
  h.eventually(function() return fut:state().name == "AwaitingRetry" end,
    "the run to await its retry")
  local n_then, t0 = n, mf.now()
  lu.assertTrue(fut:cancel())
  fut:wait()
  lu.assertTrue(mf.now() - t0 < SLEEP, "cancel waited for the retry delay")
  assert_cancelled(fut)
  sleep_past(t0 + SLEEP)
  lu.assertEquals(n, n_then, "an attempt started after the cancel")
end

function TestCancellation:test_cancelled_run_is_not_retried()
  h.shared_memory("a task counts its attempts in the test's variables")
  local n = 0
  local t = mf.task({ retries = 3 }, function() n = n + 1 mf.sleep(h.LONG) end)
  local fut = t:submit()
  h.eventually(function() return n == 1 end, "the first attempt to start")
  fut:cancel()
  fut:wait()
  assert_cancelled(fut)
  mf.sleep(0.02)
  lu.assertEquals(n, 1)
end

function TestCancellation:test_cancelling_a_flow_cancels_its_tree_and_runs_hooks()
  h.shared_memory("a task records into the test's variables")
  local log = {}
  local futs = {}
  local leaves = 0
  local leaf = mf.task({ on_cancellation = { function() log[#log + 1] = "leaf hook" end } },
    function() leaves = leaves + 1 mf.sleep(h.LONG) end)
  local sub = mf.flow({ on_cancellation = { function() log[#log + 1] = "sub hook" end } },
    function() futs.deep = leaf:submit() mf.sleep(h.LONG) end)
  local f = mf.flow({ on_cancellation = { function(_, _, st)
    log[#log + 1] = "flow hook " .. st.type
  end } }, function()
    futs.leaf = leaf:submit()
    futs.sub = sub:submit()
    mf.sleep(h.LONG)
  end)
  local ff = f:submit()
  h.eventually(function() return leaves == 2 end, "the tree to be built")
  lu.assertTrue(ff:cancel())
  lu.assertTrue(ff:wait(h.PATIENCE), "cancel waited for the sleeps")
  assert_cancelled(ff)
  for _, key in ipairs({ "leaf", "sub", "deep" }) do
    lu.assertTrue(futs[key]:done(), key .. " not final")
    lu.assertEquals(futs[key]:state().type, "CANCELLED", key)
  end
  table.sort(log)
  lu.assertEquals(log, { "flow hook CANCELLED", "leaf hook", "leaf hook", "sub hook" })
end

-- }======

-- {====== Hooks ======

TestHooks = {}

function TestHooks:test_on_running_every_attempt_on_failure_once()
  local running, failure, completion = {}, {}, 0
  local t
  t = mf.task({
    retries = 2,
    on_running = { function(task, run, state)
      running[#running + 1] = { same = rawequal(task, t), id = run.id, name = state.name,
        attempt = mf.context().attempt }
    end },
    on_failure = { function(task, run, state)
      failure[#failure + 1] = { same = rawequal(task, t), id = run.id, type = state.type,
        name = state.name, attempt = mf.context().attempt }
    end },
    on_completion = { function() completion = completion + 1 end },
  }, function() raise("always") end)
  local fut = t:submit()
  fut:wait()
  lu.assertEquals(fut:state().name, "Failed")
  lu.assertEquals(#running, 3)
  for i, r in ipairs(running) do
    lu.assertTrue(r.same, "hook's first argument is the task")
    lu.assertEquals(r.id, fut.id)
    lu.assertEquals(r.attempt, i)
  end
  lu.assertEquals(running[1].name, "Running")
  lu.assertEquals(running[2].name, "Retrying")
  lu.assertEquals(running[3].name, "Retrying")
  lu.assertEquals(#failure, 1, "on_failure runs once, after the last attempt")
  lu.assertTrue(failure[1].same)
  lu.assertEquals(failure[1].id, fut.id)
  lu.assertEquals(failure[1].type, "FAILED")
  lu.assertEquals(failure[1].name, "Failed")
  lu.assertEquals(failure[1].attempt, 3)
  lu.assertEquals(completion, 0)
end

function TestHooks:test_on_completion_once_after_retries()
  h.shared_memory("a task counts its attempts in the test's variables")
  local completion, failure = {}, 0
  local n = 0
  local t = mf.task({
    retries = 2,
    on_completion = { function(_, run, state)
      completion[#completion + 1] = { id = run.id, type = state.type, name = state.name }
    end },
    on_failure = { function() failure = failure + 1 end },
  }, function() n = n + 1 if n < 2 then raise("x") end return "v" end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), "v")
  lu.assertEquals(#completion, 1)
  lu.assertEquals(completion[1].id, fut.id)
  lu.assertEquals(completion[1].type, "COMPLETED")
  lu.assertEquals(failure, 0, "on_failure ran for an attempt that was retried")
end

function TestHooks:test_hooks_run_in_order_inside_the_run()
  local log = {}
  local t = mf.task({
    name = "ordered",
    on_completion = {
      function() log[#log + 1] = "a:" .. mf.context().name end,
      function() log[#log + 1] = "b:" .. mf.context().name end,
    },
  }, function() return 1 end)
  t()
  lu.assertEquals(log, { "a:ordered-1", "b:ordered-1" })
end

function TestHooks:test_hooks_may_wait_and_finish_before_result()
  h.shared_memory("a task records into the test's variables")
  local log = {}
  local helper = mf.task(function(x) mf.sleep(0.01) return x end)
  local t = mf.task({
    on_running = { function() mf.sleep(0.01) log[#log + 1] = "running" end },
    on_completion = { function()
      mf.sleep(0.02)
      log[#log + 1] = "completion " .. helper:submit(5):result()
    end },
  }, function() log[#log + 1] = "body" return 1 end)
  lu.assertEquals(t:submit():result(), 1)
  lu.assertEquals(log, { "running", "body", "completion 5" })
end

function TestHooks:test_failure_hook_finishes_before_wait()
  local done = false
  local t = mf.task({ on_failure = { function() mf.sleep(0.03) done = true end } },
    function() raise("x") end)
  local fut = t:submit()
  fut:wait()
  lu.assertTrue(done, "wait() returned before on_failure finished")
  lu.assertEquals(fut:state().name, "Failed")
end

function TestHooks:test_raising_completion_hook_leaves_state_and_others_run()
  local ran = {}
  local t = mf.task({ on_completion = {
    function() error("hook boom") end,
    function() ran[#ran + 1] = "second" end,
  } }, function() return "value" end)
  local fut = t:submit()
  lu.assertEquals(fut:result(), "value")
  lu.assertEquals(fut:state().name, "Completed")
  lu.assertEquals(ran, { "second" })
end

function TestHooks:test_raising_failure_hook_leaves_state_and_error()
  local e = { kind = "Mine", message = "body" }
  local ran = false
  local t = mf.task({ on_failure = {
    function() error({ kind = "Hook", message = "hook" }) end,
    function() ran = true end,
  } }, function() error(e) end)
  local fut = t:submit()
  local ok, err = pcall(fut.result, fut)
  lu.assertFalse(ok)
  h.assert_same(err, e, "the hook's error replaced the run's")
  lu.assertEquals(fut:state().name, "Failed")
  lu.assertTrue(ran)
end

function TestHooks:test_raising_running_hook_does_not_stop_the_run()
  local ran = false
  local t = mf.task({ on_running = {
    function() error("hook boom") end,
    function() ran = true end,
  } }, function() return 42 end)
  lu.assertEquals(t(), 42)
  lu.assertTrue(ran)
end

function TestHooks:test_raising_hook_is_logged()
  local r = run_script([[
local mf = require "moonflow"
local t = mf.task({ name = "hooked", on_completion = {
  function() error("hook went wrong", 0) end,
  function() print("second hook ran") end,
} }, function() return 1 end)
print(t())
]])
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "second hook ran\n1\n")
  assert_contains(r.err, "hook went wrong", r)
  assert_matches(r.err, "ERROR%s+hooked%-1 |", r)
end

function TestHooks:test_flow_hooks()
  local log = {}
  local function hook(what)
    return { function(flow, run, state)
      log[#log + 1] = what .. " " .. state.type .. " " .. tostring(run.id ~= nil)
    end }
  end
  local ok_flow = mf.flow({ on_running = hook("running"), on_completion = hook("completion"),
    on_failure = hook("failure"), on_crashed = hook("crashed") }, function() return 1 end)
  lu.assertEquals(ok_flow(), 1)
  lu.assertEquals(log, { "running RUNNING true", "completion COMPLETED true" })
  log = {}
  local bad_flow = mf.flow({ on_completion = hook("completion"), on_failure = hook("failure") },
    function() raise("flow fails") end)
  local st = bad_flow:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(log, { "failure FAILED true" })
end

function TestHooks:test_flow_on_failure_for_unhandled_failure_inside()
  local seen
  local bad = mf.task(function() raise("inner") end)
  local f = mf.flow({ on_failure = { function(_, _, st) seen = st.type end } },
    function() bad:submit() end)
  local st = f:run()
  lu.assertEquals(st.type, "FAILED")
  lu.assertEquals(seen, "FAILED")
end

function TestHooks:test_hook_receives_the_flow()
  local got
  local f
  f = mf.flow({ on_completion = { function(flow) got = flow end } }, function() end)
  f()
  lu.assertTrue(rawequal(got, f))
end

-- }======

-- {====== Run names ======

TestRunNames = {}

function TestRunNames:test_template_from_parameter_names()
  h.shared_memory("a task records into the test's variables")
  local seen
  local fetch = mf.task({ task_run_name = "fetch-{url}" }, function(url)
    seen = mf.context().name
    return url
  end)
  local fut = fetch:submit("example.org")
  fut:wait()
  lu.assertEquals(fut.name, "fetch-example.org")
  lu.assertEquals(seen, "fetch-example.org")
  lu.assertEquals(fut:state().run_name, "fetch-example.org")
end

function TestRunNames:test_template_with_several_parameters()
  local t = mf.task({ task_run_name = "{b}-{a}-{b}" }, function(a, b) return a + b end)
  local fut = t:submit(1, 2)
  lu.assertEquals(fut:result(), 3)
  lu.assertEquals(fut.name, "2-1-2")
end

function TestRunNames:test_template_filled_from_resolved_future()
  local up = mf.task(function() mf.sleep(0.01) return "abc" end)
  local t = mf.task({ task_run_name = "get-{key}" }, function(key) return key end)
  local fut = t:submit(up:submit())
  lu.assertEquals(fut:result(), "abc")
  lu.assertEquals(fut.name, "get-abc")
end

function TestRunNames:test_template_in_map()
  local t = mf.task({ task_run_name = "sq-{x}" }, function(x) return x * x end)
  local list = t:map({ 2, 3 })
  lu.assertEquals(list:result(), { 4, 9, n = 2 })
  lu.assertEquals({ list[1].name, list[2].name }, { "sq-2", "sq-3" })
end

function TestRunNames:test_function_of_the_arguments()
  local got
  local t = mf.task({ task_run_name = function(a, b)
    got = { a, b }
    return "sum-" .. a .. "+" .. b
  end }, function(a, b) return a + b end)
  local fut = t:submit(2, 5)
  lu.assertEquals(fut:result(), 7)
  lu.assertEquals(fut.name, "sum-2+5")
  lu.assertEquals(got, { 2, 5 })
end

function TestRunNames:test_evaluated_once_per_run_not_per_attempt()
  h.shared_memory("a task counts its attempts in the test's variables")
  local calls = 0
  local names_seen = {}
  local n = 0
  local t = mf.task({ retries = 2, task_run_name = function(x)
    calls = calls + 1
    return "named-" .. x .. "-" .. calls
  end }, function()
    n = n + 1
    names_seen[#names_seen + 1] = mf.context().name
    if n < 3 then raise("again") end
  end)
  local fut = t:submit("r")
  fut:result()
  lu.assertEquals(calls, 1, "the name function ran once per attempt")
  lu.assertEquals(names_seen, { "named-r-1", "named-r-1", "named-r-1" })
  lu.assertEquals(fut.name, "named-r-1")
end

function TestRunNames:test_waiting_in_the_name_function_is_usage_error()
  local body_ran = false
  local t = mf.task({ task_run_name = function() mf.sleep(0.01) return "x" end },
    function() body_ran = true end)
  local fut = t:submit()
  local err = h.raises_kind("UsageError", fut.result, fut)
  lu.assertStrContains(err.message, "task_run_name")
  lu.assertFalse(body_ran)
end

function TestRunNames:test_waiting_on_a_future_in_the_name_function_is_usage_error()
  local up = mf.task(function() mf.sleep(0.01) return 1 end):submit()
  local t = mf.task({ task_run_name = function() return "n" .. up:result() end },
    function() return 1 end)
  local fut = t:submit()
  h.raises_kind("UsageError", fut.result, fut)
  up:result()
end

-- }======

-- {====== Logging ======

TestLogging = {}

local LOG_SCRIPT = [[
local mf = require "moonflow"
local leaf = mf.task({ name = "leaf" }, function(x)
  mf.log.debug("dbg-line", x)
  mf.log.info("info-line", x, nil, true)
  mf.log.warning("warning-line", x)
  mf.log.error("error-line", x)
  return x
end)
local f = mf.flow({ name = "myflow" }, function() return leaf(1) end)
print("result", f())
]]

function TestLogging:test_lines_are_prefixed_with_the_run_name()
  local r = run_script(LOG_SCRIPT, "DEBUG")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "result\t1\n")
  assert_matches(r.err, "DEBUG%s+leaf%-1 | dbg%-line 1\n", r)
  assert_matches(r.err, "INFO%s+leaf%-1 | info%-line 1 nil true\n", r)
  assert_matches(r.err, "WARNING%s+leaf%-1 | warning%-line 1\n", r)
  assert_matches(r.err, "ERROR%s+leaf%-1 | error%-line 1\n", r)
end

function TestLogging:test_default_level_is_warning_without_lifecycle_lines()
  local r = run_script(LOG_SCRIPT, nil)
  lu.assertEquals(r.code, 0, describe(r))
  assert_not_contains(r.err, "dbg-line", r)
  assert_not_contains(r.err, "info-line", r)
  assert_matches(r.err, "WARNING%s+leaf%-1 | warning%-line 1\n", r)
  assert_matches(r.err, "ERROR%s+leaf%-1 | error%-line 1\n", r)
  assert_not_contains(r.err, "myflow-1 | ", r)
  -- Only the four lines the run wrote and those above WARNING.
  local lines = 0
  for _ in r.err:gmatch("[^\n]+") do lines = lines + 1 end
  lu.assertEquals(lines, 2, describe(r))
end

function TestLogging:test_level_info()
  local r = run_script(LOG_SCRIPT, "INFO")
  lu.assertEquals(r.code, 0, describe(r))
  assert_not_contains(r.err, "dbg-line", r)
  assert_contains(r.err, "info-line", r)
  -- Flow lifecycle lines at INFO; task ones (DEBUG) hidden.
  assert_matches(r.err, "INFO%s+myflow%-1 | ", r)
  assert_no_match(r.err, "DEBUG", r)
end

function TestLogging:test_level_debug_shows_task_lifecycle()
  local r = run_script(LOG_SCRIPT, "DEBUG")
  lu.assertEquals(r.code, 0, describe(r))
  assert_matches(r.err, "INFO%s+myflow%-1 | ", r)
  -- A lifecycle line of the task run at DEBUG, beside the user's own.
  local found = false
  for line in r.err:gmatch("[^\n]+") do
    if line:find("DEBUG%s+leaf%-1 | ") and not line:find("dbg-line", 1, true) then
      found = true
    end
  end
  lu.assertTrue(found, "no task lifecycle line at DEBUG\n" .. describe(r))
end

function TestLogging:test_level_error_and_off()
  local r = run_script(LOG_SCRIPT, "ERROR")
  lu.assertEquals(r.code, 0, describe(r))
  assert_not_contains(r.err, "warning-line", r)
  assert_matches(r.err, "ERROR%s+leaf%-1 | error%-line 1\n", r)
  r = run_script(LOG_SCRIPT, "OFF")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.err, "")
  lu.assertEquals(r.out, "result\t1\n")
end

function TestLogging:test_failures_logged_at_error_with_traceback()
  local r = run_script([[
local mf = require "moonflow"
local bad = mf.task({ name = "bad" }, function() error("it broke", 0) end)
local fut = bad:submit()
fut:wait()
print(fut:state().name)
]], "ERROR")
  lu.assertEquals(r.out, "Failed\n", describe(r))
  assert_matches(r.err, "ERROR%s+bad%-1 | [^\n]*it broke", r)
  assert_contains(r.err, "stack traceback", r)
end

local FAILING_SCRIPT = [[
local mf = require "moonflow"
local bad = mf.task({ name = "bad" }, function() error("it broke", 0) end)
local fut = bad:submit()
fut:wait()
print(fut:state().name)
]]

function TestLogging:test_no_lifecycle_lines_unless_the_level_is_set()
  local r = run_script(FAILING_SCRIPT, nil)
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "Failed\n")
  lu.assertEquals(r.err, "", describe(r))
  -- Set to WARNING (the default's value), failures are logged.
  r = run_script(FAILING_SCRIPT, "WARNING")
  lu.assertEquals(r.out, "Failed\n", describe(r))
  assert_matches(r.err, "ERROR%s+bad%-1 | [^\n]*it broke", r)
  assert_contains(r.err, "stack traceback", r)
end

function TestLogging:test_log_prints_routes_print_to_the_log()
  local r = run_script([[
local mf = require "moonflow"
local talk = mf.task({ name = "talk", log_prints = true }, function(x)
  print("said", x)
  return x
end)
local quiet = mf.task({ name = "quiet" }, function() print("to stdout") end)
talk(1)
quiet()
print("outside")
]], "INFO")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "to stdout\noutside\n")
  assert_matches(r.err, "INFO%s+talk%-1 | said 1\n", r)
end

function TestLogging:test_log_prints_in_a_flow()
  local r = run_script([[
local mf = require "moonflow"
local f = mf.flow({ name = "chatty", log_prints = true }, function() print("hello from flow") end)
f()
print("outside")
]], "INFO")
  lu.assertEquals(r.code, 0, describe(r))
  lu.assertEquals(r.out, "outside\n")
  assert_matches(r.err, "INFO%s+chatty%-1 | hello from flow\n", r)
end

-- }======

-- {====== Bad input ======

TestBadInput = {}

local function fn() end

-- Each: option, bad values.
local COMMON_BAD = {
  { "name", { 3, true } },
  { "retries", { -1, 1.5, "3", true, {} } },
  { "retry_delay", { -1, "1", { 0.1, -0.5 }, { "a" }, true, 0 / 0 } },
  { "timeout", { 0, -1, "10", true, 0 / 0 } },
  { "log_prints", { "yes", 1 } },
  { "on_running", { "f", 42, { 42 }, { fn, "f" }, fn } },
  { "on_completion", { "f", { 42 }, fn } },
  { "on_failure", { "f", { {} }, fn } },
  { "on_cancellation", { "f", { true }, fn } },
}

local TASK_BAD = {
  { "tags", { "x", { 1 } } },
  { "retry_jitter", { -0.1, 1.5, "0.5", 0 / 0 } },
  { "retry_condition", { "yes", {}, true } },
  { "task_run_name", { 42, {}, true } },
}

local function check_bad(define, option, value)
  local ok, err = pcall(define, { [option] = value }, fn)
  lu.assertFalse(ok, string.format("%s = %s was accepted", option, tostring(value)))
  lu.assertEquals(type(err), "table", tostring(err))
  lu.assertEquals(err.kind, "UsageError", tostring(err))
  lu.assertStrContains(err.message, option)
end

function TestBadInput:test_task_options_checked_at_definition()
  for _, case in ipairs(COMMON_BAD) do
    for _, value in ipairs(case[2]) do check_bad(mf.task, case[1], value) end
  end
  for _, case in ipairs(TASK_BAD) do
    for _, value in ipairs(case[2]) do check_bad(mf.task, case[1], value) end
  end
end

function TestBadInput:test_flow_options_checked_at_definition()
  for _, case in ipairs(COMMON_BAD) do
    for _, value in ipairs(case[2]) do check_bad(mf.flow, case[1], value) end
  end
  for _, value in ipairs({ "f", { 1 }, fn }) do check_bad(mf.flow, "on_crashed", value) end
end

function TestBadInput:test_unknown_options()
  local err = h.raises_kind("UsageError", mf.task, { retires = 3 }, fn)
  lu.assertStrContains(err.message, "retires")
  err = h.raises_kind("UsageError", mf.flow, { timeuot = 3 }, fn)
  lu.assertStrContains(err.message, "timeuot")
  -- on_crashed is a flow hook only.
  err = h.raises_kind("UsageError", mf.task, { on_crashed = { fn } }, fn)
  lu.assertStrContains(err.message, "on_crashed")
end

function TestBadInput:test_good_values_are_accepted()
  mf.task({ retries = 0, retry_delay = 0, retry_jitter = 0, timeout = 0.001 }, fn)
  mf.task({ retries = 3, retry_delay = { 0, 1.5, 2 }, retry_jitter = 1,
    retry_condition = fn, timeout = 10, log_prints = false, task_run_name = "x-{y}",
    on_running = {}, on_completion = { fn, fn }, on_failure = { fn },
    on_cancellation = { fn } }, fn)
  mf.task({ task_run_name = fn }, fn)
  mf.flow({ retries = 2, retry_delay = 1, timeout = 5, log_prints = true,
    on_running = { fn }, on_completion = { fn }, on_failure = { fn },
    on_cancellation = { fn }, on_crashed = { fn } }, fn)
end

function TestBadInput:test_with_checks_options()
  local t = mf.task(fn)
  local err = h.raises_kind("UsageError", t.with, t, { retries = -2 })
  lu.assertStrContains(err.message, "retries")
  err = h.raises_kind("UsageError", t.with, t, { retry_jitter = 2 })
  lu.assertStrContains(err.message, "retry_jitter")
  local f = mf.flow(fn)
  err = h.raises_kind("UsageError", f.with, f, { timeout = 0 })
  lu.assertStrContains(err.message, "timeout")
end

function TestBadInput:test_nothing_runs_when_refused()
  local ran = false
  pcall(mf.task, { timeout = -1 }, function() ran = true end)
  mf.sleep(0.01)
  lu.assertFalse(ran)
end

-- }======

local ok, err = pcall(h.run)
os.execute(PRELUDE .. "rm -rf " .. shell_quote(DIR))
if not ok then error(err, 0) end
