-- I/O inside runs: mf.exec (api.md, "I/O inside runs").  Real programs
-- (/bin/sh, cat, sleep, false), no shell unless argv asks for one, output
-- collected or line by line, timeouts and cancellation killing the
-- program and its children.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local peers = require "peers.peers"
local mf, lu = h.mf, h.lu

-- Programs run with the process's environment minus a sanitizer's
-- preload (see peers.child_env); the env test checks inheritance itself.
local ENV = peers.child_env()
local function exec(argv, opts)
  opts = opts or {}
  if opts.env == nil then opts.env = ENV end
  return mf.exec(argv, opts)
end

local function io_error(code, fn, ...)
  local err = h.raises_kind("IOError", fn, ...)
  lu.assertEquals(err.code, code, tostring(err))
  return err
end

-- Whether process pid still exists (a zombie counts as gone).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z"
end

-- Waits (bounded, generously) until pid is gone; returns whether it went.
local function gone(pid)
  for _ = 1, 3000 do
    if not alive(pid) then return true end
    mf.sleep(0.01)
  end
  return false
end

TestExec = {}

function TestExec:tearDown()
  peers.cleanup()
end

function TestExec:test_collects_stdout_stderr_and_the_exit_code()
  local r = exec({ "/bin/sh", "-c", "echo out; echo err >&2; exit 3" })
  lu.assertEquals(r, { code = 3, signal = 0, stdout = "out\n", stderr = "err\n" })
  r = exec({ "true" })
  lu.assertEquals(r, { code = 0, signal = 0, stdout = "", stderr = "" })
  lu.assertEquals(exec({ "false" }).code, 1)
end

function TestExec:test_no_shell_unless_asked_and_a_bare_name_is_found_on_path()
  local r = exec({ "echo", "$HOME", "a b", "*" })
  lu.assertEquals(r.stdout, "$HOME a b *\n") -- not expanded: no shell
  lu.assertEquals(exec({ "printf", "%s|", 1, 2.5 }).stdout, "1|2.5|")
end

function TestExec:test_a_program_killed_by_a_signal()
  local r = exec({ "/bin/sh", "-c", "kill -TERM $$" })
  lu.assertEquals(r.signal, 15)
  lu.assertEquals(r.code, 128 + 15)
  r = exec({ "/bin/sh", "-c", "kill -KILL $$" })
  lu.assertEquals(r.signal, 9)
end

function TestExec:test_check_raises_on_failure_with_the_result()
  local err = io_error("EXIT", exec, { "/bin/sh", "-c", "echo partial; exit 7" }, { check = true })
  lu.assertStrContains(err.message, "exited with code 7")
  lu.assertStrContains(err.message, "/bin/sh -c")
  lu.assertEquals(err.result.code, 7)
  lu.assertEquals(err.result.stdout, "partial\n")
  err = io_error("EXIT", exec, { "/bin/sh", "-c", "kill -KILL $$" }, { check = true })
  lu.assertStrContains(err.message, "killed by signal 9")
  lu.assertEquals(exec({ "true" }, { check = true }).code, 0)
end

function TestExec:test_stdin_env_and_cwd()
  lu.assertEquals(exec({ "cat" }, { stdin = "fed\nthrough stdin" }).stdout, "fed\nthrough stdin")
  lu.assertEquals(exec({ "cat" }, { stdin = "" }).stdout, "")
  lu.assertEquals(exec({ "cat" }).stdout, "") -- no stdin: /dev/null
  local r = mf.exec({ "/bin/sh", "-c", "echo \"$ONLY|$HOME\"" },
    { env = { ONLY = "this", PATH = os.getenv("PATH") } })
  lu.assertEquals(r.stdout, "this|\n") -- the environment is replaced
  r = mf.exec({ "/bin/sh", "-c", "echo \"$HOME\"" }) -- inherited
  lu.assertEquals(r.stdout, os.getenv("HOME") .. "\n")
  local dir = peers.tmpdir()
  lu.assertEquals(exec({ "pwd" }, { cwd = dir }).stdout, dir .. "\n")
end

function TestExec:test_big_output_is_collected_whole()
  local r = exec({ "head", "-c", "10000000", "/dev/zero" })
  lu.assertEquals(#r.stdout, 10000000)
  lu.assertEquals(r.stdout, ("\0"):rep(10000000))
end

function TestExec:test_on_line_gets_each_line_as_it_arrives_in_the_run()
  local got = {}
  local r = exec({ "/bin/sh", "-c", "echo one; echo two >&2; printf 'three\\nlast'" }, {
    on_line = function(line, stream) got[#got + 1] = stream .. ":" .. line end,
  })
  lu.assertEquals(r.code, 0)
  lu.assertNil(r.stdout)
  lu.assertNil(r.stderr)
  table.sort(got) -- the two pipes' lines interleave as they come
  lu.assertEquals(got, { "stderr:two", "stdout:last", "stdout:one", "stdout:three" })
end

function TestExec:test_on_line_may_wait_and_lines_stay_in_order()
  local got = {}
  local r = exec({ "seq", "1", "20000" }, {
    on_line = function(line)
      if #got % 5000 == 0 then mf.sleep(0.001) end
      got[#got + 1] = tonumber(line)
    end,
  })
  lu.assertEquals(r.code, 0)
  lu.assertEquals(#got, 20000)
  for i = 1, 20000 do
    if got[i] ~= i then lu.fail(("line %d is %s"):format(i, tostring(got[i]))) end
  end
end

-- A line longer than on_line's piece (512 KiB) comes in pieces, in order:
-- whole, it filled the buffer with nothing for the run to take, reading
-- stopped, and the program blocked writing while the run waited (a hang,
-- found by the fuzzer: cat of a 2 MB file without a newline).  The
-- timeout only turns such a hang into a failure.
function TestExec:test_on_line_gets_a_very_long_line_in_pieces()
  local pieces, total = {}, 0
  local r = exec({ "/bin/sh", "-c", "head -c 1500000 /dev/zero; echo; echo end" }, {
    timeout = h.LONG,
    on_line = function(line, stream)
      lu.assertEquals(stream, "stdout")
      pieces[#pieces + 1] = #line
      total = total + #line
      if line == "end" then return end
      lu.assertNil(line:find("[^%z]"), "a piece of the long line holds only its bytes")
    end,
  })
  lu.assertEquals(r.code, 0)
  lu.assertEquals(pieces, { 524288, 524288, 451424, 3 })
  lu.assertEquals(total, 1500000 + 3)
end

function TestExec:test_an_error_in_on_line_stops_the_program()
  local pid
  local ok, err = pcall(exec, { "/bin/sh", "-c", "echo $$; exec sleep 30" }, {
    on_line = function(line)
      pid = tonumber(line)
      error("no thanks", 0)
    end,
  })
  lu.assertFalse(ok)
  lu.assertEquals(err, "no thanks")
  lu.assertTrue(gone(pid), "the program was killed")
end

function TestExec:test_timeout_kills_the_program_and_its_children()
  local pids = {}
  local err = io_error("ETIMEDOUT", exec, { "/bin/sh", "-c", "sleep 30 & echo $!; echo $$; wait" }, {
    timeout = 0.5,
    on_line = function(line) pids[#pids + 1] = tonumber(line) end,
  })
  lu.assertStrContains(err.message, "timed out after 0.5 s")
  lu.assertEquals(#pids, 2)
  lu.assertTrue(gone(pids[1]), "the child sleep was killed")
  lu.assertTrue(gone(pids[2]), "the shell was killed")
  -- Collected output: the same.
  io_error("ETIMEDOUT", exec, { "sleep", "30" }, { timeout = 0.1 })
end

function TestExec:test_cancelling_or_timing_out_the_run_kills_the_program()
  local started, go = mf.promise()
  local job = mf.task({ name = "job" }, function()
    exec({ "/bin/sh", "-c", "sleep 30 & echo $!; wait" }, { on_line = function(l) go(tonumber(l)) end })
  end)
  local fut = job:submit()
  local child = started:result()
  lu.assertTrue(alive(child))
  fut:cancel()
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertTrue(gone(child), "cancelling the run killed the program's group")

  local started2, go2 = mf.promise()
  local slow = mf.task({ name = "slow", timeout = 0.3 }, function()
    exec({ "/bin/sh", "-c", "echo $$; exec sleep 30" }, { on_line = function(l) go2(tonumber(l)) end })
  end)
  local state = slow:run()
  lu.assertEquals(state.name, "TimedOut")
  lu.assertTrue(gone(started2:result()), "the run's timeout killed the program")
end

function TestExec:test_runs_execute_programs_concurrently()
  -- Each program waits until all 20 have started: only concurrent runs end.
  local dir = peers.tmpdir()
  local script = ("touch %s/$1; while [ $(ls %s | wc -l) -lt 20 ]; do sleep 0.01; done; echo $1")
    :format(dir, dir)
  local run = mf.task(function(i)
    return exec({ "/bin/sh", "-c", script, "sh", tostring(i) }, { timeout = 120, check = true }).stdout
  end)
  local xs = {}
  for i = 1, 20 do xs[i] = i end
  local out = run:map(xs):result()
  for i = 1, 20 do lu.assertEquals(out[i], i .. "\n") end
end

function TestExec:test_a_program_that_cannot_start()
  local err = io_error("ENOENT", exec, { "no-such-program-mf" })
  lu.assertStrContains(err.message, "no-such-program-mf")
  io_error("ENOENT", exec, { "/no/such/path" })
  local dir = peers.tmpdir()
  local script = dir .. "/script.sh"
  mf.fs.write(script, "#!/bin/sh\necho hi\n")
  assert(os.execute("chmod 644 " .. script))
  err = io_error("EACCES", exec, { script }) -- no execute permission
  lu.assertStrContains(err.message, script)
  io_error("ENOENT", exec, { "pwd" }, { cwd = dir .. "/missing" })
end

function TestExec:test_programs_get_default_signals_and_are_all_reaped()
  -- moonflow ignores SIGPIPE; its programs must not: yes dies quietly.
  local r = exec({ "/bin/sh", "-c", "yes | head -1" })
  lu.assertEquals(r.stdout, "y\n")
  lu.assertEquals(r.stderr, "")
  local run = mf.task(function() return exec({ "true" }).code end)
  local xs = {}
  for i = 1, 30 do xs[i] = i end
  run:map(xs):result()
  -- No child of this process is left a zombie.
  local f = io.open("/proc/self/stat")
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  local zombies = 0
  for _, child in ipairs(mf.fs.list("/proc")) do
    local stat = child:match("^%d+$") and io.open("/proc/" .. child .. "/stat")
    if stat then
      local state, ppid = stat:read("a"):match("^%d+ %b() (%a) (%d+)")
      stat:close()
      if ppid == pid and state == "Z" then zombies = zombies + 1 end
    end
  end
  lu.assertEquals(zombies, 0)
end

function TestExec:test_wrong_arguments_are_usage_errors()
  h.raises_kind("UsageError", mf.exec, "ls -l")
  h.raises_kind("UsageError", mf.exec, {})
  h.raises_kind("UsageError", mf.exec, { "echo", {} })
  h.raises_kind("UsageError", mf.exec, { "echo" }, { timeout = -1 })
  h.raises_kind("UsageError", mf.exec, { "echo" }, { env = "PATH=/bin" })
  h.raises_kind("UsageError", mf.exec, { "echo" }, { stdin = 42 })
  h.raises_kind("UsageError", mf.exec, { "echo" }, { on_line = "print" })
  h.raises_kind("UsageError", mf.exec, { "echo" }, { check = "yes" })
end

h.run()
