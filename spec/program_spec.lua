package.path = "spec/?.lua;" .. package.path
-- The `moonflow` program (api.md, "The moonflow program"; issue 3), run as a
-- subprocess: options and exit statuses, `arg`, failures and their
-- tracebacks, Ctrl-C, the REPL on a pipe and, through tmux, on a terminal.
-- The program is $MF_PROGRAM, else build/moonflow (relative to the working
-- directory, the source tree).
local h = require "helper"
local lu = h.lu

-- {====== Helpers ======

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local s = p:read("a")
  p:close()
  return s
end

local CWD = capture("pwd"):gsub("\n$", "")

local PROG = os.getenv("MF_PROGRAM") or "build/moonflow"
if PROG:sub(1, 1) ~= "/" then PROG = CWD .. "/" .. PROG end

-- One directory for every file this spec makes; removed at the end.
local DIR = capture("mktemp -d /tmp/mf-program-spec.XXXXXX"):gsub("\n$", "")
assert(DIR:match("^/tmp/mf%-program%-spec%."), "mktemp -d failed")

local counter = 0
local function tmp(name)
  counter = counter + 1
  return string.format("%s/%d-%s", DIR, counter, name or "tmp")
end

-- Writes a script file named `name` (so tracebacks show it); returns its path.
local function script(name, text)
  local path = DIR .. "/" .. name
  write_file(path, text)
  return path
end

-- Every shell command starts with this: helpers (sh, tmux, cat...) must not
-- get the sanitizer runtime a sanitizer build preloads into lua5.4.
local PRELUDE = "unset LD_PRELOAD; "

local function sh(cmd)
  local ok, how, code = os.execute(PRELUDE .. cmd)
  if how == "exit" then return code end
  return 128 + (code or 0)
end

-- Runs the program.  opts.args: list of arguments; opts.stdin: nil (from
-- /dev/null), or a list of strings, numbers and { until_file = path },
-- piped in order, a number being a pause in seconds, until_file a pause
-- until that file exists (WAIT at most); opts.merge: stderr goes with
-- stdout.  Returns { code, out, err }.
-- How long the helpers wait for a subprocess to show something (output, a
-- file, a screen) before giving up: a backstop, and the sanitizer build on
-- a loaded machine starts a program slowly.
local WAIT = 3 * h.PATIENCE

local function run(opts)
  local args = {}
  for i, a in ipairs(opts.args or {}) do args[i] = shell_quote(a) end
  local out, err = tmp("out"), tmp("err")
  local cmd = "timeout -k 2 " .. (opts.timeout or 30) .. " " .. shell_quote(PROG)
    .. " " .. table.concat(args, " ")
  local redirect = " >" .. shell_quote(out)
    .. (opts.merge and " 2>&1" or " 2>" .. shell_quote(err))
  if opts.stdin then
    local parts = {}
    for _, piece in ipairs(opts.stdin) do
      if type(piece) == "number" then
        parts[#parts + 1] = "sleep " .. piece
      elseif type(piece) == "table" then
        parts[#parts + 1] = string.format(
          "i=0; while [ ! -e %s ] && [ $i -lt %d ]; do sleep 0.02; i=$((i + 1)); done",
          shell_quote(piece.until_file), math.ceil(WAIT / 0.02))
      else
        local f = tmp("in")
        write_file(f, piece)
        parts[#parts + 1] = "cat " .. shell_quote(f)
      end
    end
    cmd = "(" .. table.concat(parts, "; ") .. ") | " .. cmd .. redirect
  else
    cmd = cmd .. redirect .. " </dev/null"
  end
  local code = sh(cmd)
  return { code = code, out = read_file(out) or "", err = read_file(err) or "" }
end

local function describe(r)
  return string.format("exit %s\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.out, r.err)
end

local function assert_exit(r, code)
  lu.assertEquals(r.code, code, describe(r))
end

local function assert_contains(s, sub, what)
  lu.assertStrContains(s, sub, false, (what or "") .. "\n--- expected to contain:\n"
    .. sub .. "\n--- in:\n" .. s)
end

local function assert_not_contains(s, sub, what)
  lu.assertNil(s:find(sub, 1, true), (what or "") .. "\n--- expected not to contain:\n"
    .. sub .. "\n--- in:\n" .. s)
end

-- }======

-- {====== Options and exit statuses ======

TestOptions = {}

function TestOptions:test_version_names_moonflow_lua_and_libuv()
  local r = run { args = { "--version" } }
  assert_exit(r, 0)
  lu.assertStrMatches(r.out, "moonflow %d+%.%d+%.%d+.*\n", nil, nil, describe(r))
  lu.assertStrContains(r.out, "Lua 5.4")
  lu.assertStrMatches(r.out, ".*libuv %d+%.%d+%.%d+.*", nil, nil, describe(r))
  lu.assertEquals(r.err, "")
end

function TestOptions:test_help_prints_usage_and_options()
  local r = run { args = { "--help" } }
  assert_exit(r, 0)
  lu.assertStrContains(r.out, "usage")
  for _, option in ipairs { "-e", "-i", "--version", "--help", "run" } do
    assert_contains(r.out, option, "help mentions " .. option)
  end
  lu.assertEquals(r.err, "")
end

function TestOptions:test_unknown_option_is_usage_error()
  local r = run { args = { "--bogus" } }
  assert_exit(r, 2)
  assert_contains(r.err, "--bogus")
  lu.assertEquals(r.out, "")
end

function TestOptions:test_e_without_code_is_usage_error()
  local r = run { args = { "-e" } }
  assert_exit(r, 2)
  assert_contains(r.err, "-e")
  lu.assertEquals(r.out, "")
end

function TestOptions:test_run_without_script_is_usage_error()
  local r = run { args = { "run" } }
  assert_exit(r, 2)
  lu.assertEquals(r.out, "")
  lu.assertNotEquals(r.err, "")
end

function TestOptions:test_e_runs_code()
  local r = run { args = { "-e", "print(1 + 1) print(type(require('moonflow')))" } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "2\ntable\n")
  lu.assertEquals(r.err, "")
end

function TestOptions:test_e_sets_arg_as_lua54()
  -- lua5.4 -e CODE: no script, so arg[0] is the program and `...` is empty.
  local r = run { args = { "-e", "print(arg[0], select('#', ...))" } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, PROG .. "\t0\n")
end

function TestOptions:test_e_code_that_raises_exits_1()
  local r = run { args = { "-e", "error('boom')" } }
  assert_exit(r, 1)
  assert_contains(r.err, "boom")
  assert_contains(r.err, "stack traceback")
end

function TestOptions:test_e_syntax_error_exits_1()
  local r = run { args = { "-e", "x = " } }
  assert_exit(r, 1)
  assert_contains(r.err, "<eof>")
end

function TestOptions:test_script_from_stdin_with_args()
  local r = run { args = { "-", "a", "b" },
                  stdin = { "print('from stdin', arg[0], select('#', ...), ...)\n" } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "from stdin\t-\t2\ta\tb\n")
  lu.assertEquals(r.err, "")
end

function TestOptions:test_missing_script_exits_1()
  local r = run { args = { DIR .. "/no-such-script.lua" } }
  assert_exit(r, 1)
  assert_contains(r.err, "no-such-script.lua")
  lu.assertEquals(r.out, "")
end

function TestOptions:test_script_syntax_error_exits_1()
  local path = script("syntax.lua", "local x = 1\nx = = 2\n")
  local r = run { args = { path } }
  assert_exit(r, 1)
  assert_contains(r.err, "syntax.lua:2:")
end

-- }======

-- {====== Scripts: arg, success, failures ======

TestScripts = {}

local ARGS_SCRIPT = [[
print(select('#', ...), ...)
print(arg[0], #arg, arg[1], arg[2], arg[3])
print(arg[-1])
]]

function TestScripts:test_file_gets_arg_and_varargs()
  local path = script("args.lua", ARGS_SCRIPT)
  local r = run { args = { path, "x", "a b", "" } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "3\tx\ta b\t\n" .. path .. "\t3\tx\ta b\t\n" .. PROG .. "\n")
  lu.assertEquals(r.err, "")
end

function TestScripts:test_run_subcommand_gets_arg_and_varargs()
  local path = script("args.lua", ARGS_SCRIPT)
  local r = run { args = { "run", path, "x", "y" } }
  assert_exit(r, 0)
  -- As lua5.4: what comes before the script gets negative indices.
  lu.assertEquals(r.out, "2\tx\ty\n" .. path .. "\t2\tx\ty\tnil\nrun\n")
  lu.assertEquals(r.err, "")
end

function TestScripts:test_no_args()
  local path = script("args.lua", ARGS_SCRIPT)
  local r = run { args = { path } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "0\n" .. path .. "\t0\tnil\tnil\tnil\n" .. PROG .. "\n")
end

function TestScripts:test_main_chunk_waits_and_program_waits_for_background_runs()
  local path = script("bg.lua", [[
local mf = require "moonflow"
local slow = mf.task({ name = "slow" }, function(x) mf.sleep(x) print("slow done", x) return x end)
print(slow:submit(0.05):result())
slow:submit(0.1)
print("main done")
]])
  local r = run { args = { path } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "slow done\t0.05\n0.05\nmain done\nslow done\t0.1\n")
  lu.assertEquals(r.err, "")
end

local FAILING_TASK = [[
local mf = require "moonflow"
local double = mf.task({ name = "double" }, function(x)
  if x == 3 then error("bad input " .. x) end
  return x * 2
end)
]]

function TestScripts:test_unhandled_failed_run_exits_1_with_traceback()
  local path = script("unhandled.lua", FAILING_TASK .. [[
for i = 1, 3 do double:submit(i) end
print("main done")
]])
  local r = run { args = { path } }
  assert_exit(r, 1)
  lu.assertEquals(r.out, "main done\n")
  assert_contains(r.err, "double-3", "names the failing run")
  assert_contains(r.err, "bad input 3", "the error")
  assert_contains(r.err, "stack traceback", "a traceback")
  assert_contains(r.err, path .. ":3:", "the line in the user's file")
  assert_not_contains(r.err, "double-1")
  assert_not_contains(r.err, "double-2")
end

function TestScripts:test_script_raising_from_failed_run_names_the_run()
  local path = script("fail.lua", FAILING_TASK .. [[
local futs = {}
for i = 1, 3 do futs[i] = double:submit(i) end
print(futs[1]:result(), futs[2]:result())
print(futs[3]:result())
print("not reached")
]])
  local r = run { args = { path } }
  assert_exit(r, 1)
  lu.assertEquals(r.out, "2\t4\n")
  assert_contains(r.err, "bad input 3", "the error")
  assert_contains(r.err, "stack traceback", "a traceback")
  assert_contains(r.err, path .. ":3:", "the line that raised")
  assert_contains(r.err, path .. ":9:", "the line of the script that waited")
  assert_contains(r.err, "double-3", "names the failing task run")
end

function TestScripts:test_script_raising_exits_1_with_traceback()
  local path = script("raise.lua", [[
local function inner() error("plain failure") end
print("before")
inner()
]])
  local r = run { args = { path } }
  assert_exit(r, 1)
  lu.assertEquals(r.out, "before\n")
  assert_contains(r.err, path .. ":1: plain failure")
  assert_contains(r.err, "stack traceback")
  assert_contains(r.err, path .. ":3:", "the calling line")
end

-- }======

-- {====== Ctrl-C on a script ======

-- Starts the program on a script in the background, waits until it printed
-- "started", then sends SIGINT (twice when `second`), then creates the file
-- `release` if given (a busy script spins until it exists).  Each SIGINT is
-- sent only once the one before was delivered (none is pending in
-- /proc/PID/status): two signals sent while a loaded machine has not run
-- the program yet would arrive as one.  The release file too waits for
-- that.  A guard kills the program after WAIT.  Returns the exit status, the
-- milliseconds from the first SIGINT to the exit, stdout, stderr.
local function interrupt(path, second, release)
  local out, err, res = tmp("out"), tmp("err"), tmp("res")
  local cmd = table.concat({
    "(exec " .. shell_quote(PROG) .. " " .. shell_quote(path) .. ") >" .. shell_quote(out)
      .. " 2>" .. shell_quote(err) .. " </dev/null &",
    "pid=$!",
    "i=0",
    "while ! grep -q started " .. shell_quote(out) .. " 2>/dev/null; do",
    "  i=$((i + 1)); [ $i -gt " .. math.ceil(WAIT / 0.05) .. " ] && break",
    "  sleep 0.05",
    "done",
    "sleep 0.3",
    "( sleep " .. WAIT .. " & s=$!; trap 'kill $s 2>/dev/null; exit 0' TERM; wait $s;"
      .. " kill -KILL $pid 2>/dev/null ) &",
    "guard=$!",
    "delivered() {",
    "  j=0",
    "  while [ $j -lt " .. math.ceil(WAIT / 0.01) .. " ]; do",
    "    pending=0",
    "    for m in $(awk '/^(SigPnd|ShdPnd):/ { print $2 }' /proc/$pid/status 2>/dev/null); do",
    "      [ $(( 0x$m & 2 )) -ne 0 ] && pending=1",
    "    done",
    "    [ $pending -eq 0 ] && return",
    "    sleep 0.01; j=$((j + 1))",
    "  done",
    "}",
    "t0=$(date +%s%N)",
    "kill -INT $pid",
    "delivered",
    second and "kill -INT $pid 2>/dev/null" or ":",
    release and (": >" .. shell_quote(release)) or ":",
    "wait $pid; rc=$?",
    "t1=$(date +%s%N)",
    "kill $guard 2>/dev/null",
    "echo \"$rc $(( (t1 - t0) / 1000000 ))\" >" .. shell_quote(res),
  }, "\n")
  sh(cmd)
  local rc, ms = (read_file(res) or ""):match("^(%d+) (%-?%d+)")
  return tonumber(rc), tonumber(ms), read_file(out) or "", read_file(err) or ""
end

local SLOW_SCRIPT = [[
local mf = require "moonflow"
local slow = mf.task({ name = "slow" }, function(x) mf.sleep(x) return x end)
local a, b = slow:submit(30), slow:submit(30)
print("started")
io.stdout:flush()
print(a:result(), b:result())
]]

-- A script stuck in a C call that cannot yield (a sort comparator that
-- computes until a file exists): the loop does not turn until it returns.
-- It says "started" from inside the comparator, so the Ctrl-C surely comes
-- while it is stuck there.
local BUSY_SCRIPT = [[
local n = 0
table.sort({ 1, 2 }, function(a, b)
  n = n + 1
  if n == 1 then
    print("started")
    io.stdout:flush()
    while not io.open(%q) do end
  end
  return a < b
end)
print("sorted")
]]

-- The exits below are "fast" when they do not wait for what the script
-- was doing (30 s sleeps, a comparator that never returns -- the guard
-- kills it after WAIT): PATIENCE is far less than that.
local FAST_MS = h.PATIENCE * 1000

TestInterrupt = {}

function TestInterrupt:test_sigint_cancels_runs_and_exits_130_fast()
  local rc, ms, out, err = interrupt(script("slow.lua", SLOW_SCRIPT))
  local all = string.format("exit %s after %s ms\n--- stdout:\n%s\n--- stderr:\n%s", rc, ms, out, err)
  lu.assertEquals(rc, 130, all)
  lu.assertTrue(ms < FAST_MS, "did not end fast: " .. all)
  lu.assertEquals(out, "started\n", all)
  assert_contains(err, "interrupted", all)
  assert_contains(err, "cancelled", all)
  assert_contains(err, "main", all)
end

function TestInterrupt:test_sigint_names_the_cancelled_flow()
  local path = script("flow_int.lua", [[
local mf = require "moonflow"
local slow = mf.task({ name = "slow" }, function(x) mf.sleep(x) return x end)
local etl = mf.flow({ name = "etl" }, function() return slow:submit(30):result() end)
local f = etl:submit()
print("started")
io.stdout:flush()
print(f:result())
]])
  local rc, ms, out, err = interrupt(path)
  local all = string.format("exit %s after %s ms\n--- stdout:\n%s\n--- stderr:\n%s", rc, ms, out, err)
  lu.assertEquals(rc, 130, all)
  lu.assertTrue(ms < FAST_MS, "did not end fast: " .. all)
  assert_contains(err, "interrupted", all)
  assert_contains(err, "etl-1", "prints what was cancelled: the flow run\n" .. all)
end

function TestInterrupt:test_second_sigint_exits_at_once()
  -- The first Ctrl-C cannot be acted on before the comparator returns (it
  -- never does: its file is never made); the second must end the program
  -- at once (the guard would kill it after WAIT).
  local never = tmp("never")
  local rc, ms, out, err = interrupt(script("busy_never.lua", BUSY_SCRIPT:format(never)), true)
  local all = string.format("exit %s after %s ms\n--- stdout:\n%s\n--- stderr:\n%s", rc, ms, out, err)
  lu.assertEquals(rc, 130, all)
  lu.assertTrue(ms < FAST_MS, "second Ctrl-C did not exit at once: " .. all)
  assert_not_contains(out, "sorted", all)
end

function TestInterrupt:test_sigint_during_blocking_call_is_not_lost()
  -- One Ctrl-C while the script cannot yield: acted on as soon as the loop
  -- turns again, never forgotten.
  local release = tmp("release")
  local rc, ms, out, err = interrupt(script("busy_released.lua", BUSY_SCRIPT:format(release)),
    false, release)
  local all = string.format("exit %s after %s ms\n--- stdout:\n%s\n--- stderr:\n%s", rc, ms, out, err)
  lu.assertEquals(rc, 130, all)
  assert_contains(err, "interrupted", all)
end

-- }======

-- {====== The REPL on a pipe ======

TestPipedRepl = {}

function TestPipedRepl:test_values_statements_multiline_and_syntax_errors()
  local r = run { merge = true, stdin = { table.concat({
    '1 + 1',
    '"a\\nb", nil, 3',
    '{1, 2, a = {b = "s", c = {true}}, ["k k"] = 1}',
    'x = 5',
    'x * 2',
    'for i = 1, 2 do',
    '  print(i)',
    'end',
    'local = 3',
    'print("after")',
    'function add(a,',
    '    b)',
    '  return a + b',
    'end',
    'add(x, 1)',
    'mf == require("moonflow")',
    '',
  }, "\n") } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, table.concat({
    '2',
    '"a\\nb"\tnil\t3',
    '{1, 2, a = {b = "s", c = {true}}, ["k k"] = 1}',
    '10',
    '1',
    '2',
    "stdin:1: <name> expected near '='",
    'after',
    '6',
    'true',
    '',
  }, "\n"))
end

function TestPipedRepl:test_futures_print_on_one_line()
  local r = run { merge = true, stdin = { table.concat({
    'slow = mf.task({name = "slow"}, function(x) mf.sleep(0.01) return x * 2 end)',
    'f = slow:submit(2)',
    'f:result()',
    'f',
    '{f}',
    'bad = mf.task({name = "bad"}, function() error("nope", 0) end)',
    'b = bad:submit()',
    'b:wait()',
    'print(b)',
    'b:state().name',
    '',
  }, "\n") } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, table.concat({
    '4',
    '<Future slow-1 Completed: 4>',
    '{<Future slow-1 Completed: 4>}',
    'true',
    '<Future bad-1 Failed: nope>',
    '"Failed"',
    '',
  }, "\n"))
end

function TestPipedRepl:test_runtime_error_is_reported_and_repl_goes_on()
  local r = run { merge = true, stdin = { 'error("oops")\nprint("still here")\n1 + 2\n' } }
  assert_exit(r, 0)
  lu.assertStrMatches(r.out, "stdin:1: oops\nstack traceback:\n.*\nstill here\n3\n", nil, nil, describe(r))
end

function TestPipedRepl:test_submit_returns_at_once_and_run_progresses_in_background()
  -- The run goes only once the REPL's last line of the first piece sets
  -- go; it then sleeps 0.3 s and leaves a file, for which the second piece
  -- waits: the run finished while the REPL waited for input, and no line
  -- before that could see it finished.
  local done_file = tmp("done")
  local r = run { merge = true, stdin = {
    table.concat({
      't0 = mf.now()',
      'go = false',
      'slow = mf.task({name = "slow"}, function(x)',
      '  while not go do mf.sleep(0.01) end',
      '  mf.sleep(x)',
      '  io.open(' .. string.format("%q", done_file) .. ', "w"):close()',
      '  return 4',
      'end)',
      'f = slow:submit(0.3)',
      'not f:done()',
      'print(f)',
      'go = true',
      '',
    }, "\n"),
    { until_file = done_file },
    'print(f)\nmf.now() - t0 >= 0.3\n',
  } }
  assert_exit(r, 0)
  local lines = {}
  for line in r.out:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  lu.assertEquals(#lines, 4, describe(r))
  lu.assertEquals(lines[1], "true", "submit did not return at once\n" .. describe(r))
  lu.assertStrMatches(lines[2], "<Future slow%-1 %a+>", nil, nil, describe(r))
  lu.assertNotEquals(lines[2], "<Future slow-1 Completed: 4>", describe(r))
  lu.assertEquals(lines[3], "<Future slow-1 Completed: 4>", describe(r))
  lu.assertEquals(lines[4], "true", describe(r))
end

function TestPipedRepl:test_i_runs_script_then_repl_sees_its_globals()
  local path = script("lib.lua", [[
greeting = "hi " .. tostring(arg[1])
local hidden = 5
function twice(x) return 2 * x end
print("script ran", ...)
]])
  local r = run { args = { "-i", path, "zz" }, merge = true,
                  stdin = { 'greeting\ntwice(21)\nhidden\ntype(mf)\n' } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, 'script ran\tzz\n"hi zz"\n42\nnil\n"table"\n')
end

function TestPipedRepl:test_empty_input_ends_quietly()
  local r = run { stdin = { "" } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "")
  lu.assertEquals(r.err, "")
end

-- }======

-- {====== The REPL on a terminal (tmux) ======

local HAVE_TMUX = sh("command -v tmux >/dev/null 2>&1") == 0

local Term = {}
Term.__index = Term

-- Starts the REPL in a fresh tmux server of its own, 100x20.
function Term.start(env)
  local unique = os.tmpname()
  os.remove(unique)
  local self = setmetatable({
    sock = "mftest-" .. unique:match("([^/]+)$"):gsub("[^%w]", ""),
  }, Term)
  local cmd = "cd " .. shell_quote(CWD) .. " && " .. (env or "") .. " "
    .. shell_quote(PROG) .. "; echo EXIT=$?; sleep 60"
  local code = sh("tmux -L " .. self.sock .. " -f /dev/null new-session -d -s mf -x 100 -y 20 "
    .. shell_quote(cmd))
  lu.assertEquals(code, 0, "tmux new-session failed")
  self.socket_path = capture(PRELUDE .. "tmux -L " .. self.sock
    .. " display-message -p -t mf '#{socket_path}' 2>/dev/null"):gsub("\n$", "")
  return self
end

function Term:kill()
  sh("tmux -L " .. self.sock .. " kill-server >/dev/null 2>&1")
  if self.socket_path ~= "" then os.remove(self.socket_path) end
end

function Term:screen()
  return capture(PRELUDE .. "tmux -L " .. self.sock .. " capture-pane -p -t mf")
end

-- The screen's lines, trailing blanks trimmed, trailing empty lines dropped.
function Term:lines()
  local lines = {}
  for line in (self:screen() .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = (line:gsub("%s+$", ""))
  end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  return lines
end

-- Polls the screen (every 50 ms, up to WAIT) until pred(lines) holds.
function Term:wait(pred, what)
  local lines
  for _ = 1, math.ceil(WAIT / 0.05) do
    lines = self:lines()
    if pred(lines) then return lines end
    sh("sleep 0.05")
  end
  lu.fail("timed out waiting for " .. what .. "; screen:\n" .. table.concat(lines, "\n"))
end

-- Waits until the last line of the screen is exactly `line`.
function Term:wait_last(line)
  return self:wait(function(l) return l[#l] == line end, "last line " .. string.format("%q", line))
end

-- Waits until some line after the last line equal to `after` is exactly `line`.
function Term:wait_after(after, line)
  return self:wait(function(l)
    local from
    for i = #l, 1, -1 do if l[i] == after then from = i break end end
    if not from then return false end
    for i = from + 1, #l do if l[i] == line then return true end end
    return false
  end, string.format("%q after %q", line, after))
end

function Term:type(text)
  sh("tmux -L " .. self.sock .. " send-keys -t mf -l " .. shell_quote(text))
end

function Term:keys(...)
  local keys = {}
  for i, k in ipairs { ... } do keys[i] = shell_quote(k) end
  sh("tmux -L " .. self.sock .. " send-keys -t mf " .. table.concat(keys, " "))
end

-- Types a line and Enter; waits until it shows as `> line` (or `>> line`).
function Term:enter(text, prompt)
  self:type(text)
  self:wait_last((prompt or "> ") .. text)
  self:keys("Enter")
end

local function index_of(lines, line, from)
  for i = from or 1, #lines do if lines[i] == line then return i end end
end

TestTerminalRepl = {}

function TestTerminalRepl:setUp()
  if not HAVE_TMUX then lu.skip("tmux is not installed") end
  self.history = tmp("history")
end

function TestTerminalRepl:tearDown()
  if self.term then self.term:kill() end
  self.term = nil
end

function TestTerminalRepl:test_typing_editing_multiline_history_and_ctrl_d()
  write_file(self.history, "12345 + 1\n")
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history))
  self.term = t
  local lines = t:wait_last(">")
  lu.assertStrMatches(lines[1], "moonflow .*", nil, nil, "a banner first")
  -- Backspace.
  t:type("10 + 3")
  t:wait_last("> 10 + 3")
  t:keys("BSpace")
  t:wait_last("> 10 +")
  t:type("5")
  t:wait_last("> 10 + 5")
  t:keys("Enter")
  t:wait_after("> 10 + 5", "15")
  -- Cursor movement: to the start of the line, insert there.
  t:type("+ 1")
  t:wait_last("> + 1")
  t:keys("C-a")
  t:type("41 ")
  t:wait_last("> 41 + 1")
  t:keys("Enter")
  t:wait_after("> 41 + 1", "42")
  -- History: this session's lines, then the file's.
  t:keys("Up")
  t:wait_last("> 41 + 1")
  t:keys("Up")
  t:wait_last("> 10 + 5")
  t:keys("Up")
  t:wait_last("> 12345 + 1")
  t:keys("Enter")
  t:wait_after("> 12345 + 1", "12346")
  -- An incomplete statement asks for more.
  t:enter("for i = 1, 2 do")
  t:wait_last(">>")
  t:enter("print(i * 10)", ">> ")
  t:wait_last(">>")
  t:enter("end", ">> ")
  lines = t:wait_after(">> end", ">")
  local at = index_of(lines, ">> end")
  lu.assertEquals({ lines[at + 1], lines[at + 2], lines[at + 3] }, { "10", "20", ">" })
  -- Ctrl-D leaves, with status 0, and writes the history.
  t:keys("C-d")
  t:wait(function(l) return index_of(l, "EXIT=0") ~= nil end, "EXIT=0")
  local saved = read_file(self.history) or ""
  for _, line in ipairs { "12345 + 1", "10 + 5", "41 + 1", "for i = 1, 2 do", "print(i * 10)", "end" } do
    assert_contains("\n" .. saved, "\n" .. line .. "\n", "history file")
  end
end

-- A file the test creates to let a run in the REPL finish (the run polls
-- for it with hold(path)): the run ends when the test says, not after some
-- sleep.  (Lines stay short: the terminal is 100 columns wide.)
local function release_file() return tmp("release") end
local HOLD = "function hold(p) while not io.open(p) do mf.sleep(0.02) end end"

function TestTerminalRepl:test_background_output_keeps_the_line_being_typed()
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history))
  self.term = t
  local release = release_file()
  t:wait_last(">")
  t:enter(HOLD)
  t:wait_last(">")
  t:enter('slow = mf.task({name = "slow"}, function(p) hold(p) print("BG-DONE") return 4 end)')
  t:wait_last(">")
  t:enter("f = slow:submit(" .. string.format("%q", release) .. ")")
  t:wait_after("> f = slow:submit(" .. string.format("%q", release) .. ")", ">")
  t:type("abc = 1")
  local lines = t:wait_last("> abc = 1")
  lu.assertNil(index_of(lines, "BG-DONE"), "the run ended before the text was typed; screen:\n"
    .. table.concat(lines, "\n"))
  write_file(release, "")
  lines = t:wait(function(l) return index_of(l, "BG-DONE") ~= nil end, "BG-DONE")
  -- The background line sits above the prompt; the typed text is intact.
  lu.assertEquals(lines[#lines], "> abc = 1", table.concat(lines, "\n"))
  lu.assertEquals(lines[#lines - 1], "BG-DONE", table.concat(lines, "\n"))
  -- And editing goes on where it was.
  t:type("2")
  t:wait_last("> abc = 12")
  t:keys("Enter")
  t:enter("abc")
  t:wait_after("> abc", "12")
  t:enter("f")
  t:wait_after("> f", "<Future slow-1 Completed: 4>")
  for _, line in ipairs(t:lines()) do
    if line:find("BG-DONE", 1, true) and line:sub(1, 2) ~= "> " then lu.assertEquals(line, "BG-DONE") end
  end
  t:keys("C-d")
  t:wait(function(l) return index_of(l, "EXIT=0") ~= nil end, "EXIT=0")
end

function TestTerminalRepl:test_ctrl_c_interrupts_a_wait_not_the_repl_nor_the_run()
  -- The run ends once the test creates the release file; the Ctrl-C comes
  -- after the REPL printed "waiting", right before it waits.
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history))
  self.term = t
  local release = release_file()
  t:wait_last(">")
  t:enter(HOLD)
  t:wait_last(">")
  t:enter('slow = mf.task({name = "slow"}, function(p) hold(p) return 4 end)')
  t:wait_last(">")
  local submit = "g = slow:submit(" .. string.format("%q", release) .. ")"
  t:enter(submit)
  t:wait_after("> " .. submit, ">")
  t:enter('print("waiting") g:result()')
  t:wait_after('> print("waiting") g:result()', "waiting")
  t:keys("C-c")
  local lines = t:wait(function(l)
    local at = index_of(l, "waiting")
    return at and l[at + 1] and l[at + 1]:find("interrupted", 1, true) and l[at + 2] == ">"
  end, "interrupted, then a prompt")
  local at = index_of(lines, "waiting")
  lu.assertStrMatches(lines[at + 1], "%^?C?interrupted")
  -- The REPL goes on, the run too.
  t:enter("40 + 2")
  t:wait_after("> 40 + 2", "42")
  t:enter("g")
  t:wait_after("> g", "<Future slow-1 Running>")
  write_file(release, "")
  t:enter("g:result()")
  t:wait(function(l)
    local i
    for k = #l, 1, -1 do if l[k] == "> g:result()" then i = k break end end
    return i and l[i + 1] == "4" and l[i + 2] == ">"
  end, "the run's result")
  t:keys("C-d")
  t:wait(function(l) return index_of(l, "EXIT=0") ~= nil end, "EXIT=0")
end

-- }======

local ok, err = pcall(h.run)
sh("rm -rf " .. shell_quote(DIR))
if not ok then error(err, 0) end
