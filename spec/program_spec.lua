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
-- stdout; opts.env: "NAME=value ..." for the program.
-- Returns { code, out, err }.
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
  if opts.env then cmd = "env " .. opts.env .. " " .. cmd end
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

local MODULE_DIR = os.getenv("MF_MODULE_DIR") or "build"
if MODULE_DIR:sub(1, 1) ~= "/" then MODULE_DIR = CWD .. "/" .. MODULE_DIR end
local LUA_PRELOAD = os.getenv("MF_SUBPROCESS_PRELOAD") or os.getenv("LD_PRELOAD")

-- Runs a script file of DIR from DIR, so that reports show the names a
-- person types (etl.lua:12): under the program, or with runner "lua" under
-- stock lua5.4 with the module (the instrumented one with its sanitizer
-- runtime).  opts.env: "NAME=value ...".  Returns { code, out, err }.
local function run_here(path, opts)
  opts = opts or {}
  local out, err = tmp("out"), tmp("err")
  local cmd = "cd " .. shell_quote(DIR) .. " && env " .. (opts.env or "") .. " "
  if opts.runner == "lua" then
    cmd = cmd .. (LUA_PRELOAD and ("LD_PRELOAD=" .. shell_quote(LUA_PRELOAD) .. " ") or "")
      .. "LUA_CPATH=" .. shell_quote(MODULE_DIR .. "/?.so;;") .. " timeout -k 2 30 lua5.4 "
  else
    cmd = cmd .. "timeout -k 2 30 " .. shell_quote(PROG) .. " "
  end
  cmd = cmd .. shell_quote(path:match("[^/]+$")) .. " >" .. shell_quote(out)
    .. " 2>" .. shell_quote(err) .. " </dev/null"
  local code = sh(cmd)
  return { code = code, out = read_file(out) or "", err = read_file(err) or "" }
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
  for _, option in ipairs { "-e", "-i", "--version", "--help", "--quiet", "run" } do
    assert_contains(r.out, option, "help mentions " .. option)
  end
  lu.assertEquals(r.err, "")
end

function TestOptions:test_help_lists_the_environment_and_every_exit_status()
  -- What the program reads (MOONFLOW_LOG_LEVEL, MOONFLOW_HISTORY) and how
  -- it exits (0, 1, 2 and 130, each tried in these specs).
  local r = run { args = { "--help" } }
  assert_exit(r, 0)
  assert_contains(r.out, "MOONFLOW_LOG_LEVEL")
  assert_contains(r.out, "MOONFLOW_HISTORY")
  for _, status in ipairs { "0 ", "1 ", "2 ", "130 " } do
    lu.assertNotNil(r.out:find("\n  " .. status, 1, true), "exit status " .. status .. "\n" .. r.out)
  end
end

-- Both allocators of MOONFLOW_LUA_ALLOC run a script alike (a map, a
-- chain, warnings as stock lua5.4 gives them); another value is named on
-- stderr and the default is used.
function TestOptions:test_lua_alloc_heap_malloc_or_a_warning()
  local code = "warn('@on') warn('seen') "
    .. "local t = mf.task(function(x) return 2 * x end) "
    .. "local s = 0 for _, v in ipairs(t:map({1, 2, 3}):result()) do s = s + v end "
    .. "local f = t:submit(1) for _ = 1, 50 do f = t:submit(f) end "
    .. "print(s, f:result())"
  for _, env in ipairs { "", "MOONFLOW_LUA_ALLOC=heap", "MOONFLOW_LUA_ALLOC=malloc" } do
    local r = run { args = { "-e", code }, env = env ~= "" and env or nil }
    assert_exit(r, 0)
    lu.assertEquals(r.out, "12\t" .. string.format("%d", 2 ^ 51) .. "\n", env)
    lu.assertEquals(r.err, "Lua warning: seen\n", env)
  end
  local r = run { args = { "-e", "print(1)" }, env = "MOONFLOW_LUA_ALLOC=jemalloc" }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "1\n")
  assert_contains(r.err, "MOONFLOW_LUA_ALLOC: 'jemalloc' is neither heap nor malloc; using the default")
end

-- The embedded modules load from their bytecode, made at build time with
-- their debug information (cmake/embed_lua.c), or from their text when
-- MOONFLOW_EMBEDDED_SOURCE is set (as when this Lua makes other bytecode):
-- the same functions, names and lines either way.
function TestOptions:test_embedded_modules_from_bytecode_or_text_alike()
  local code = "local function lines(f) local i = debug.getinfo(f, 'SL') local n = 0 "
    .. "for _ in pairs(i.activelines) do n = n + 1 end return i.source .. ':' .. i.linedefined "
    .. "  .. '-' .. i.lastlinedefined .. ' ' .. n end "
    .. "print(lines(mf.flow), lines(mf.task), lines(require('moonflow.report').failure or print)) "
    .. "print(select(2, pcall(mf.task, 42)))"
  local outs = {}
  for _, env in ipairs { "MOONFLOW_STORE=off", "MOONFLOW_STORE=off MOONFLOW_EMBEDDED_SOURCE=1" } do
    local r = run { args = { "-e", code }, env = env }
    assert_exit(r, 0)
    assert_contains(r.out, "=[moonflow] moonflow.init:")
    outs[#outs + 1] = r.out
  end
  lu.assertEquals(outs[1], outs[2])
end

function TestOptions:test_e_has_mf_as_a_global()
  local r = run { args = { "-e", "print(mf == require('moonflow'), mf.task(function(x) return 2 * x end)(21))" } }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "true\t42\n")
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

-- {====== Failure reports ======

-- What the person sees when a run fails (api.md, "The moonflow program",
-- failure reports): the run where the error was first raised, its error as
-- text, the user's frames only, then how the error travelled.

TestReports = {}

local ETL_SCRIPT = [[
local mf = require "moonflow"
local function parse(s) error("cannot parse " .. string.format("%q", s)) end
local function process(s)
  local v = parse(s)
  return v
end
local explode = mf.task({ name = "explode", retries = 2 }, function(s)
  local v = process(s)
  return v
end)
local etl = mf.flow({ name = "etl" }, function()
  local v = explode("x")
  return v
end)
etl()
]]

local ETL_REPORT = [[
moonflow: task run explode-1 failed after 3 attempts: etl.lua:2: cannot parse "x"
stack traceback:
	[C]: in function 'error'
	etl.lua:2: in upvalue 'parse'
	etl.lua:4: in upvalue 'process'
	etl.lua:8: in function <etl.lua:7>
raised again by flow run etl-1:
	etl.lua:12: in function <etl.lua:11>
raised again by the main chunk:
	etl.lua:15: in main chunk
]]

function TestReports:test_task_failing_in_a_flow_is_reported_where_it_was_raised()
  -- Names the task run (not only the flow), shows its own helper chain,
  -- how many attempts it made, and no frame of moonflow's.
  local r = run_here(script("etl.lua", ETL_SCRIPT))
  assert_exit(r, 1)
  lu.assertEquals(r.out, "")
  lu.assertEquals(r.err, ETL_REPORT)
end

function TestReports:test_table_error_is_shown_readably()
  local r = run_here(script("table.lua", [[
local mf = require "moonflow"
local explode = mf.task({ name = "explode" }, function(s)
  error({ kind = "BadInput", input = s })
end)
local etl = mf.flow({ name = "etl" }, function()
  local v = explode("x")
  return v
end)
etl()
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.err, [[
moonflow: task run explode-1 failed: {input = "x", kind = "BadInput"}
stack traceback:
	[C]: in function 'error'
	table.lua:3: in function <table.lua:2>
raised again by flow run etl-1:
	table.lua:6: in function <table.lua:5>
raised again by the main chunk:
	table.lua:9: in main chunk
]])
end

function TestReports:test_flow_failed_by_an_unhandled_run_says_so_and_names_it()
  local r = run_here(script("unhandled.lua", [[
local mf = require "moonflow"
local side = mf.task({ name = "side" }, function(n) error("side " .. n .. " failed") end)
local main = mf.flow({ name = "main" }, function()
  local first = side:submit(1)
  first:wait()
  side:submit(2)
  return "done"
end)
print(main())
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.out, "")
  lu.assertEquals(r.err, [[
moonflow: task run side-1 failed: unhandled.lua:2: side 1 failed
stack traceback:
	[C]: in function 'error'
	unhandled.lua:2: in function <unhandled.lua:2>
flow run main-1 failed: nothing handled the failure of task run side-1 (the first of 2 unhandled failed runs inside it)
raised again by the main chunk:
	unhandled.lua:9: in main chunk
]])
end

function TestReports:test_flow_that_returned_a_failed_run_names_it()
  local r = run_here(script("returned.lua", [[
local mf = require "moonflow"
local bad = mf.task({ name = "bad" }, function() error("bad!") end)
local etl = mf.flow({ name = "etl" }, function() return bad:submit() end)
etl()
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.err, [[
moonflow: task run bad-1 failed: returned.lua:2: bad!
stack traceback:
	[C]: in function 'error'
	returned.lua:2: in function <returned.lua:2>
flow run etl-1 failed: it returned task run bad-1 (1/1 states failed.)
raised again by the main chunk:
	returned.lua:4: in main chunk
]])
end

function TestReports:test_unhandled_failure_outside_flows_is_reported_at_the_end()
  local r = run_here(script("root.lua", [[
local mf = require "moonflow"
local bad = mf.task({ name = "bad" }, function(x) error({ code = x }) end)
bad:submit(7)
print("main done")
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.out, "main done\n")
  lu.assertEquals(r.err, [[
moonflow: task run bad-1 failed and nothing handled it: {code = 7}
stack traceback:
	[C]: in function 'error'
	root.lua:2: in function <root.lua:2>
]])
end

function TestReports:test_upstream_failure_is_traced_to_the_run_that_failed()
  -- The downstream runs never started; the report starts where the error
  -- was raised, and UpstreamFailed's message quotes it.
  local r = run_here(script("upstream.lua", [[
local mf = require "moonflow"
local load = mf.task({ name = "load" }, function() error("no such file") end)
local clean = mf.task({ name = "clean" }, function(x) return x end)
local save = mf.task({ name = "save" }, function(x) return x end)
local fut = save:submit(clean:submit(load:submit()))
collectgarbage()
local ok, err = pcall(fut.result, fut)
print(err.message)
print(fut:result())
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.out, "run save-1 did not start: upstream run clean-1 ended NotReady, "
    .. "after run load-1 ended Failed: upstream.lua:2: no such file\n")
  lu.assertEquals(r.err, [[
moonflow: task run load-1 failed: upstream.lua:2: no such file
stack traceback:
	[C]: in function 'error'
	upstream.lua:2: in function <upstream.lua:2>
task run save-1 did not start: its upstream run clean-1 ended NotReady, after run load-1 ended Failed
raised again by the main chunk as UpstreamFailed:
	upstream.lua:9: in main chunk
]])
end

function TestReports:test_flow_failed_by_a_run_that_never_started()
  -- The unhandled run inside the flow is a downstream run that never
  -- started: the report goes back to the run that failed, through it.
  local r = run_here(script("notready.lua", [[
local mf = require "moonflow"
local load = mf.task({ name = "load" }, function() error("no such file") end)
local save = mf.task({ name = "save" }, function(x) return x end)
local etl = mf.flow({ name = "etl" }, function()
  local l = load:submit()
  l:wait()
  l:state()
  save:submit(l)
end)
etl()
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.err, [[
moonflow: task run load-1 failed: notready.lua:2: no such file
stack traceback:
	[C]: in function 'error'
	notready.lua:2: in function <notready.lua:2>
task run save-1 did not start: its upstream run load-1 ended Failed
flow run etl-1 failed: nothing handled the failure of task run save-1
raised again by the main chunk:
	notready.lua:10: in main chunk
]])
end

function TestReports:test_deep_recursion_shows_the_ends_of_the_way()
  local r = run_here(script("deep.lua", [[
local mf = require "moonflow"
local rec
rec = mf.task({ name = "rec" }, function(n)
  if n == 0 then error("bottom") end
  local v = rec(n - 1)
  return v
end)
rec(20)
]]))
  assert_exit(r, 1)
  local again = "raised again by task run rec-%d:\n\tdeep.lua:5: in function <deep.lua:3>\n"
  lu.assertEquals(r.err, "moonflow: task run rec-21 failed: deep.lua:4: bottom\n"
    .. "stack traceback:\n\t[C]: in function 'error'\n\tdeep.lua:4: in function <deep.lua:3>\n"
    .. again:format(20) .. again:format(19) .. again:format(18)
    .. "(... raised again by 15 more runs)\n"
    .. again:format(2) .. again:format(1)
    .. "raised again by the main chunk:\n\tdeep.lua:8: in main chunk\n")
end

function TestReports:test_timed_out_run()
  local r = run_here(script("slow.lua", [[
local mf = require "moonflow"
local slow = mf.task({ name = "slow", timeout = 0.05 }, function() mf.sleep(30) end)
slow()
]]))
  assert_exit(r, 1)
  lu.assertEquals(r.err, [[
moonflow: task run slow-1 failed: TimedOut: run slow-1 exceeded its timeout
stack traceback:
	slow.lua:2: in function <slow.lua:2>
raised again by the main chunk:
	slow.lua:3: in main chunk
]])
end

function TestReports:test_limit_deadlock_names_the_limit()
  local r = run_here(script("limit.lua", [[
local mf = require "moonflow"
mf.limit("db", 1)
local inner = mf.task({ name = "inner", tags = { "db" } }, function() return 1 end)
local outer = mf.task({ name = "outer", tags = { "db" } }, function() return inner() end)
outer()
]]))
  assert_exit(r, 1)
  assert_contains(r.err, "moonflow: task run outer-1 failed: Deadlock: outer-1 waits for "
    .. "inner-1, which needs a slot of limit 'db' (capacity 1)")
  assert_contains(r.err, "\tlimit.lua:4: in function <limit.lua:4>\n")
end

-- Under stock lua5.4 the module cannot change what lua5.4 prints, but it
-- reports where an error that ends the script came from, and unhandled
-- failures when the Lua state closes.
function TestReports:test_lua54_reports_where_an_error_ending_the_script_came_from()
  local r = run_here(script("etl.lua", ETL_SCRIPT), { runner = "lua" })
  assert_exit(r, 1)
  local moonflow_part = ETL_REPORT:gsub("raised again by the main chunk:\n.*$", "")
  lu.assertEquals(r.err:sub(1, #moonflow_part), moonflow_part, describe(r))
  -- Then lua5.4's own message, for the top level's frames.
  assert_contains(r.err, moonflow_part .. "lua5.4: etl.lua:2: cannot parse \"x\"\nstack traceback:\n")
  assert_contains(r.err, "etl.lua:15: in main chunk")
end

function TestReports:test_lua54_says_nothing_of_an_error_the_script_catches()
  local r = run_here(script("caught.lua", [[
local mf = require "moonflow"
local bad = mf.task({ name = "bad" }, function() error("bad!") end)
local ok, err = pcall(function() return bad() end)
print(ok, err)
]]), { runner = "lua" })
  assert_exit(r, 0)
  lu.assertEquals(r.out, "false\tcaught.lua:2: bad!\n")
  lu.assertEquals(r.err, "")
end

function TestReports:test_lua54_reports_unhandled_failures_at_exit()
  local r = run_here(script("root.lua", [[
local mf = require "moonflow"
local bad = mf.task({ name = "bad" }, function(x) error({ code = x }) end)
bad:submit(7)
mf.run()
print("main done")
]]), { runner = "lua" })
  assert_exit(r, 0)
  lu.assertEquals(r.out, "main done\n")
  lu.assertEquals(r.err, [[
moonflow: task run bad-1 failed and nothing handled it: {code = 7}
stack traceback:
	[C]: in function 'error'
	root.lua:2: in function <root.lua:2>
]])
end

-- }======

-- {====== Hints where a Prefect or Lua habit misfires ======

TestHints = {}

local function first_line(r)
  return (r.err:match("^[^\n]*"))
end

function TestHints:test_misspelt_or_prefect_options_get_did_you_mean()
  local cases = {
    { "retry_delay_seconds = 5", "unknown task option 'retry_delay_seconds': did you mean 'retry_delay'? (Prefect's retry_delay_seconds)" },
    { "timeout_seconds = 5", "unknown task option 'timeout_seconds': did you mean 'timeout'? (Prefect's timeout_seconds)" },
    { "retires = 2", "unknown task option 'retires': did you mean 'retries'?" },
    { "tag = {'a'}", "unknown task option 'tag': did you mean 'tags'?" },
    { "bogus = 1", "unknown task option 'bogus'\n" },
  }
  for _, case in ipairs(cases) do
    local r = run { args = { "-e", "mf.task({ " .. case[1] .. " }, print)" } }
    assert_exit(r, 1)
    assert_contains(r.err, "moonflow: UsageError: " .. case[2], case[1])
  end
end

function TestHints:test_method_called_with_a_dot_gets_the_colon_hint()
  local r = run { args = { "-e", "local f = mf.task(function() end):submit() f.wait()" } }
  assert_exit(r, 1)
  lu.assertEquals(first_line(r), "moonflow: UsageError: expected a Future as self "
    .. "(use fut:wait(...), not fut.wait(...)), got no value")
end

function TestHints:test_result_false_points_to_result_nil_false()
  local r = run { args = { "-e", "local f = mf.task(function() end):submit() f:result(false)" } }
  assert_exit(r, 1)
  lu.assertEquals(first_line(r), "moonflow: UsageError: fut:result(false): the first argument "
    .. "is the timeout in seconds; to get the error value instead of having it raised, use "
    .. "fut:result(nil, false)")
end

function TestHints:test_keyword_arguments_to_map_are_explained()
  local r = run { args = { "-e", "local add = mf.task(function(x, y) return x + y end) "
    .. "add:map({1, 2}, {y = mf.unmapped(10)})" } }
  assert_exit(r, 1)
  assert_contains(first_line(r), "map: argument #2 is a table of named values {y = ...}: "
    .. "arguments are positional in Lua (no keyword arguments)")
  assert_contains(first_line(r), "mf.unmapped(10)")
end

local TALK = "local t = mf.task({ name = 'talk', log_prints = true }, function(x) print('said', x) end) "
  .. "t(1) print('outside')"

function TestHints:test_log_prints_output_is_shown_at_default_settings()
  local r = run { args = { "-e", TALK }, env = "-u MOONFLOW_LOG_LEVEL" }
  assert_exit(r, 0)
  lu.assertEquals(r.out, "outside\n")
  lu.assertStrMatches(r.err, "%d%d:%d%d:%d%d%.%d%d%d INFO    talk%-1 | said 1\n", nil, nil, describe(r))
  -- A level above INFO, set on purpose, hides it.
  r = run { args = { "-e", TALK }, env = "MOONFLOW_LOG_LEVEL=WARNING" }
  assert_exit(r, 0)
  lu.assertEquals(r.err, "")
end

function TestHints:test_unknown_log_level_is_a_warning()
  local r = run { args = { "-e", "mf.log.warning('w') mf.log.info('i')" }, env = "MOONFLOW_LOG_LEVEL=verbose" }
  assert_exit(r, 0)
  local first, rest = r.err:match("^([^\n]*)\n(.*)$")
  lu.assertEquals(first, "moonflow: MOONFLOW_LOG_LEVEL=verbose is not a level (DEBUG, "
    .. "INFO, WARNING, ERROR or OFF): using WARNING", describe(r))
  lu.assertStrMatches(rest, "[%d:.]+ WARNING main | w\n", nil, nil, describe(r))
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

-- A flow whose three runs are all going when it prints "started".
local LONG_FLOW = [[
local mf = require "moonflow"
local running = 0
local step = mf.task({ name = "step" }, function(x) running = running + 1 mf.sleep(30) return x end)
local long = mf.flow({ name = "long" }, function() return step:map({ 1, 2, 3 }):result() end)
local f = long:submit()
while running < 3 do mf.sleep(0.01) end
print("started")
io.stdout:flush()
print(f:result())
]]

function TestInterrupt:test_sigint_names_every_run_it_cancelled()
  local rc, ms, out, err = interrupt(script("long.lua", LONG_FLOW))
  local all = string.format("exit %s after %s ms\n--- stdout:\n%s\n--- stderr:\n%s", rc, ms, out, err)
  lu.assertEquals(rc, 130, all)
  assert_contains(err, "moonflow: interrupted; cancelled 5 runs: main, long-1, step-1, step-2, step-3\n", all)
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

-- Starts the REPL (or the program with args, a list) in a fresh tmux
-- server of its own, 100 columns by height (20) lines.
function Term.start(env, args, height)
  local unique = os.tmpname()
  os.remove(unique)
  local self = setmetatable({
    sock = "mftest-" .. unique:match("([^/]+)$"):gsub("[^%w]", ""),
  }, Term)
  local quoted = {}
  for i, a in ipairs(args or {}) do quoted[i] = shell_quote(a) end
  local cmd = "cd " .. shell_quote(CWD) .. " && " .. (env or "") .. " "
    .. shell_quote(PROG) .. " " .. table.concat(quoted, " ") .. "; echo EXIT=$?; sleep 60"
  local code = sh("tmux -L " .. self.sock .. " -f /dev/null new-session -d -s mf -x 100 -y "
    .. (height or 20) .. " " .. shell_quote(cmd))
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

-- The lines after the last line equal to `typed` (a line as typed at the
-- prompt) up to the next prompt, that prompt included.
local function output_of(lines, typed)
  local at
  for i = #lines, 1, -1 do if lines[i] == typed then at = i break end end
  if not at then return nil end
  local out = {}
  for i = at + 1, #lines do
    out[#out + 1] = lines[i]
    if lines[i]:sub(1, 1) == ">" then break end
  end
  return out
end

-- Types a line, Enter, and waits until its output ends with a prompt;
-- returns that output (the prompt last).
function Term:output(text)
  self:enter(text)
  local lines = self:wait(function(l)
    local out = output_of(l, "> " .. text)
    return out and #out > 0 and out[#out]:sub(1, 1) == ">"
  end, "the output of " .. text)
  return output_of(lines, "> " .. text)
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

function TestTerminalRepl:test_errors_at_the_prompt_show_their_message()
  -- moonflow's errors, a Timeout, a table error: the message, then the
  -- frames of what was typed.
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history), nil, 40)
  self.term = t
  t:wait_last(">")
  lu.assertEquals(t:output("mf.sleep(-1)"), {
    "UsageError: mf.sleep: seconds must be >= 0, got -1.0",
    "stack traceback:",
    "        stdin:1: in main chunk",
    ">",
  })
  t:output('slow = mf.task({name = "slow"}, function() mf.sleep(30) end)')
  lu.assertEquals(t:output("slow:submit():result(0.01)"), {
    "Timeout: run slow-1 did not finish within 0.01 s",
    "stack traceback:",
    "        stdin:1: in main chunk",
    ">",
  })
  local out = t:output("mf.map(mf.task(function(x) end), 1)")
  lu.assertStrContains(out[1], "MappingMissingIterable: map: no argument to map over")
  lu.assertEquals({ out[#out - 2], out[#out - 1], out[#out] },
    { "stack traceback:", "        stdin:1: in main chunk", ">" })
  lu.assertEquals(t:output('error({kind = "X"})'), {
    '{kind = "X"}',
    "stack traceback:",
    "        [C]: in function 'error'",
    "        stdin:1: in main chunk",
    ">",
  })
  lu.assertEquals(t:output('error(setmetatable({}, {__tostring = function() return "custom" end}))'), {
    "custom",
    "stack traceback:",
    "        [C]: in function 'error'",
    "        stdin:1: in main chunk",
    ">",
  })
end

function TestTerminalRepl:test_error_from_a_task_names_the_task_run()
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history), nil, 30)
  self.term = t
  t:wait_last(">")
  t:output('bad = mf.task({name = "bad"}, function() error("nope") end)')
  lu.assertEquals(t:output("bad()"), {
    "task run bad-1 failed: stdin:1: nope",
    "stack traceback:",
    "        [C]: in function 'error'",
    "        stdin:1: in function <stdin:1>",
    "raised again by the prompt:",
    "        stdin:1: in main chunk",
    ">",
  })
end

function TestTerminalRepl:test_background_failure_is_reported_when_it_happens()
  -- The run fails once the test creates a file, while a line is being
  -- typed: its report shows above the prompt without anything entered,
  -- and the typed text stays.
  local go = tmp("go")
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history), nil, 30)
  self.term = t
  t:wait_last(">")
  t:output("go = " .. string.format("%q", go))
  t:output('bg = mf.task({name="bg"}, function() repeat mf.sleep(0.02) until io.open(go) error("boom") end)')
  t:output("f = bg:submit()")
  t:type("abc")
  t:wait_last("> abc")
  write_file(go, "")
  local lines = t:wait(function(l) return index_of(l, "        stdin:1: in function <stdin:1>") end,
    "the background report")
  local at = index_of(lines, "[background] task run bg-1 failed and nothing handled it: stdin:1: boom")
  lu.assertNotNil(at, table.concat(lines, "\n"))
  lu.assertEquals({ lines[at + 1], lines[at + 2], lines[at + 3], lines[at + 4] }, {
    "stack traceback:",
    "        [C]: in function 'error'",
    "        stdin:1: in function <stdin:1>",
    "> abc",
  }, table.concat(lines, "\n"))
  lu.assertEquals(#lines, at + 4, table.concat(lines, "\n"))
  -- Reported once: Enter does not report it again.
  t:keys("BSpace", "BSpace", "BSpace")
  t:wait_last(">")
  lu.assertEquals(t:output("1 + 1"), { "2", ">" })
end

function TestTerminalRepl:test_prompt_is_clean_after_a_syntax_error()
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history), nil, 30)
  self.term = t
  t:wait_last(">")
  lu.assertEquals(t:output("x = = 1"), { "stdin:1: unexpected symbol near '='", ">" })
  lu.assertEquals(t:output("end"), { "stdin:1: <eof> expected near 'end'", ">" })
  lu.assertEquals(t:output("40 + 2"), { "42", ">" })
  for _, line in ipairs(t:lines()) do
    lu.assertNil(line:find("> .*>"), "a prompt drawn after typed text: " .. line)
  end
end

function TestTerminalRepl:test_ctrl_d_with_runs_going_says_what_it_waits_for()
  local t = Term.start("MOONFLOW_HISTORY=" .. shell_quote(self.history))
  self.term = t
  t:wait_last(">")
  t:output('slow = mf.task({name = "slow"}, function(x) mf.sleep(x) end)')
  t:output("a, b = slow:submit(30), slow:submit(30)")
  t:keys("C-d")
  t:wait_last("waiting for 2 runs still going: slow-1, slow-2 (Ctrl-C cancels them)")
  t:keys("C-c")
  local lines = t:wait(function(l) return index_of(l, "EXIT=130") ~= nil end, "EXIT=130")
  lu.assertNotNil(index_of(lines, "moonflow: interrupted; cancelled 2 runs: slow-1, slow-2"),
    table.concat(lines, "\n"))
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

-- A script on a terminal: the progress line, and Ctrl-C's summary of it.
TestTerminalScript = {}

function TestTerminalScript:setUp()
  if not HAVE_TMUX then lu.skip("tmux is not installed") end
end

function TestTerminalScript:tearDown()
  if self.term then self.term:kill() end
  self.term = nil
end

function TestTerminalScript:test_ctrl_c_counts_cancelled_runs_as_cancelled()
  local t = Term.start("", { script("long.lua", LONG_FLOW) })
  self.term = t
  -- The flow's progress line shows its three runs going.
  t:wait(function(l)
    return (l[#l] or ""):find("^long%-1: 0 completed, 3 running, 0 failed, 0 waiting;") ~= nil
  end, "the progress line")
  t:keys("C-c")
  local lines = t:wait(function(l) return index_of(l, "EXIT=130") ~= nil end, "EXIT=130")
  local screen = table.concat(lines, "\n")
  assert_contains(screen, "moonflow: interrupted; cancelled 5 runs: main, long-1, step-1, step-2, step-3\n")
  assert_contains(screen, "moonflow: flow long-1 Cancelled: 0 completed, 0 running, 0 failed, "
    .. "3 cancelled, 0 waiting;")
end

-- }======

local ok, err = pcall(h.run)
sh("rm -rf " .. shell_quote(DIR))
if not ok then error(err, 0) end
