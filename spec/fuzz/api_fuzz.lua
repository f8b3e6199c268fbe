-- spec/fuzz/api_fuzz.lua: a fuzzer of moonflow's Lua API.
--
--   lua5.4 spec/fuzz/api_fuzz.lua [options]      (MF_MODULE_DIR=build)
--   build/moonflow spec/fuzz/api_fuzz.lua [options]
--
-- It calls every public function and method with random and hostile
-- values, from the main chunk, inside runs of tasks and flows, inside done
-- callbacks, hooks, retry_condition and task_run_name functions,
-- metamethods, finalizers and coroutines created inside runs; it asserts
-- that every error moonflow raises is a typed error (check.lua) and that
-- the answers it knows are right (the oracles in actions.lua).  Crashes,
-- sanitizer reports and hangs are caught from outside, by run_fuzz.sh.
--
-- Options:
--   --seed N        the seed (default: the time); printed first
--   --seconds S     stop starting cases after S seconds (default 10)
--   --calls N       stop after N calls
--   --cases N       stop after N cases
--   --case K        run case K alone (replay: --seed N --case K)
--   --only G,G      only the actions of these groups (module, task, flow,
--                   future, list, state, limits, context, oracle, runners,
--                   promise, cache, io)
--   --without H,H   without these hazards (see HAZARDS below)
--   --keep-going    do not stop at the first case with a violation
--   --abandon MODE  end the process in the middle of the last case, runs
--                   still going: return, exit, error, exit-in-run
--   --verbose       print the calls by API at the end
--   --trace         print each action as it starts (to find what hangs)
--   --trace-calls   and each call into moonflow with its arguments
--   --list          print the groups, hazards and actions, and exit
-- Each case K uses its own generator, derived from (seed, K): a case
-- replays alone, up to the timing of the runs it starts.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
package.path = here .. "?.lua;" .. package.path
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end

local mf = require "moonflow"
local Rng = require "rng"
local check = require "check"
local V = require "values"
local A = require "actions"
local R = require "actions_runners"
local I = require "actions_io"

local GROUPS = { "module", "task", "flow", "future", "list", "state", "limits",
  "context", "oracle", "runners", "promise", "cache", "io" }

-- Hostile things that may be switched off (--without), to look past a
-- defect already found.
local HAZARDS = {
  many_values = "80+ arguments or return values",
  deep_tables = "plain tables nested 5..5000 levels",
  cyclic = "cyclic tables",
  big = "maps of 1000..5000 runs, tables of 20000 elements",
  hostile_mt = "tables whose metamethods raise, yield, lie",
  gc_meta = "finalizers that call moonflow",
  yields = "yields from callbacks, metamethods, bodies",
  reentry = "metamethods that call moonflow",
  forge = "tables with the metatable key of moonflow's objects",
  huge_timers = "timeouts, delays and sleeps of inf, 1e300, 2^63",
  many_tags = "30..40 tags on a task",
  hijack = "coroutine.resume/close of a run's coroutine",
  nonyield = "waits inside a table.sort comparator",
  gc_by_hand = "calling a Future's __gc by hand",
  handler_loop = "a timeout on an xpcall message handler that loops",
  compute_timeout = "timeouts of runs that compute without yielding",
  empty_wait = "mf.wait / as_completed of an empty list, with a timeout",
  list_mutation = "FutureLists changed by the user, also while waited on",
  with_per_call = "flow:with{} given ill-typed wait_for / return_state",
  hostile_errors = "errors (raised by runs, callbacks) with hostile metatables",
  big_slice = "mf.configure{slice = 100, 1e300, inf}",
  resurrect = "finalizers that resurrect tables holding futures",
  mf_as_value = "the module table itself as an argument (mf.result(mf) loops)",
}

-- {====== Options ======

local check_calls = false
local opts = { seconds = 10, keep_going = false, without = {}, only = nil }
do
  local args = arg or {}
  local i = 1
  local function value()
    i = i + 1
    if args[i] == nil then error("api_fuzz: " .. args[i - 1] .. " needs a value", 0) end
    return args[i]
  end
  local function set(list)
    local s = {}
    for name in list:gmatch("[^,]+") do s[name] = true end
    return s
  end
  while args[i] do
    local a = args[i]
    if a == "--seed" then opts.seed = math.tointeger(tonumber(value()))
    elseif a == "--seconds" then opts.seconds = tonumber(value())
    elseif a == "--calls" then opts.calls = tonumber(value())
    elseif a == "--cases" then opts.cases = tonumber(value())
    elseif a == "--case" then opts.case = math.tointeger(tonumber(value()))
    elseif a == "--only" then opts.only = set(value())
    elseif a == "--without" then opts.without = set(value())
    elseif a == "--keep-going" then opts.keep_going = true
    elseif a == "--abandon" then opts.abandon = value()
    elseif a == "--verbose" then opts.verbose = true
    elseif a == "--trace" then opts.trace = true
    elseif a == "--trace-calls" then opts.trace, check_calls = true, true
    elseif a == "--list" then opts.list = true
    else error("api_fuzz: unknown option " .. a, 0) end
    i = i + 1
  end
  for name in pairs(opts.without) do
    if not HAZARDS[name] then error("api_fuzz: unknown hazard " .. name, 0) end
  end
  for name in pairs(opts.only or {}) do
    local known = false
    for _, g in ipairs(GROUPS) do known = known or g == name end
    if not known then error("api_fuzz: unknown group " .. name, 0) end
  end
  opts.seed = opts.seed or os.time()
end

if opts.list then
  io.stdout:write("groups: ", table.concat(GROUPS, " "), "\nhazards:\n")
  local names = {}
  for name in pairs(HAZARDS) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do io.stdout:write(("  %-16s %s\n"):format(name, HAZARDS[name])) end
  io.stdout:write("actions:\n  ", table.concat(A.names(), "\n  "), "\n")
  return
end

-- }======

local function hazard(name) return not opts.without[name] end
local function group_on(name) return opts.only == nil or opts.only[name] == true end

-- The directory the io actions may touch (made here, removed at the end;
-- run_fuzz.sh gives FUZZ_TMPDIR, a directory it removes itself, so that
-- a process ended in the middle leaves nothing behind).
local tmpdir
do
  local base = os.getenv("FUZZ_TMPDIR") or os.getenv("TMPDIR") or "/tmp"
  local name = string.format("%s/mf-api-fuzz-%d-%d", base, opts.seed, math.random(1, 1e9))
  if not name:find("[^%w/._-]") and os.execute("mkdir -p '" .. name .. "'") then
    tmpdir = name
  end
end
local function remove_tmpdir()
  if tmpdir then os.execute("rm -rf '" .. tmpdir .. "'") end
end

V.init { mf = mf, act = A.act, hazard = hazard }
A.init { mf = mf, hazard = hazard, groups = group_on }
R.init({ mf = mf, hazard = hazard }, A.lib, A)
R.define()
I.init({ mf = mf, hazard = hazard, tmpdir = tmpdir }, A.lib, A)
I.define()
math.randomseed(opts.seed) -- moonflow's retry jitter
A.setup_methods()
A.trace = opts.trace
check.trace_calls = check_calls

local out = io.stdout
local function say(fmt, ...)
  out:write(string.format(fmt, ...), "\n")
  out:flush()
end

-- {====== A case ======

-- The slots of a map made in a run go past their first table into chunks
-- (group.c) only past 65,536 runs: cases make them small, so that every
-- map in a run reaches them (chosen by k, not by the case's generator).
local function set_slot_geometry(k)
  require("moonflow.core").slot_geometry(({ 1, 5, 64, 65536 })[k % 4 + 1],
    ({ 0, 2, 3, 12 })[k // 4 % 4 + 1])
end

local function new_case(k)
  set_slot_geometry(k)
  local rng = Rng.new(opts.seed, k)
  local case = {
    k = k, rng = rng, futures = {}, known = {}, by_id = {}, lists = {},
    tasks = {}, task_opts = setmetatable({}, { __mode = "k" }), states = {},
    errors = {}, coroutines = {}, wrappers = {}, callbacks = {},
    cancelled = {}, flow_children = {}, watched = {}, resurrected = {}, tags = {},
    budget = rng:int(20, 150), runs_left = 20000,
  }
  for i = 1, 4 do case.tags[i] = string.format("c%d-t%d", k, i) end
  -- The tasks the oracles use, made with plain options.
  case.echo = mf.task(function(...) return ... end)
  case.echo_controlled = mf.task({ retries = 1, retry_delay = 0,
    on_completion = { function() end } }, function(...) return ... end)
  case.sleeper = mf.task(function(d)
    mf.sleep(type(d) == "number" and d >= 0 and d < 1 and d or 0.001)
    return d
  end)
  case.tasks[1], case.tasks[2] = case.echo, case.sleeper
  for _ = 1, rng:int(1, 3) do A.define(rng, case, "task") end
  for _ = 1, rng:int(0, 2) do A.define(rng, case, "flow") end
  return case
end

-- Every run of the case ends: waited for, then cancelled; each one's state
-- read (so that none is left unhandled); then what must hold afterwards.
local function settle(futs)
  if #futs == 0 then futs = { futs.echo:submit() } end -- (mf.wait({}, t) sleeps t)
  local ok, err = pcall(mf.wait, futs, 5)
  if not ok and not check.is_typed(err) then
    check.violation("cleanup", "mf.wait raised %s", check.repr(err))
  end
  -- A Future whose __gc was called by hand stands for no run any more (a
  -- UsageError from every method): it is left out of what is waited for.
  local alive = {}
  for _, f in ipairs(futs) do
    local ok2, done = pcall(f.done, f)
    if ok2 then alive[#alive + 1] = f end
    if ok2 and not done then
      if opts.trace then
        local ok4, st = pcall(f.state, f)
        say("  cleanup: cancelling %s (%s)", tostring(f.name), ok4 and tostring(st.name) or "?")
      end
      pcall(f.cancel, f)
    end
  end
  futs = alive
  local t0 = os.time()
  -- (60 s: well inside run_fuzz.sh's hang limit, so that a run a cancel
  -- does not end is named here rather than reported as a bare HANG)
  local ok3, done, not_done = pcall(mf.wait, futs, 60)
  if not ok3 then
    check.violation("cleanup", "mf.wait raised %s", check.repr(done))
  elseif #not_done > 0 then
    local f = not_done[1]
    local ok4, st = pcall(f.state, f)
    check.violation("cleanup", "%d of %d runs not final after cancel() and mf.wait(runs, 60)"
      .. " returned after %d s; first: %s %s", #not_done, #futs, os.time() - t0,
      tostring(f.name), ok4 and tostring(st.name) or "?")
  end
  for _, f in ipairs(futs) do pcall(f.state, f) end
end

local function finish(case)
  -- No more actions from finalizers: a run they started now would never be
  -- read, and the program would rightly report its failure as unhandled.
  case.budget = 0
  -- Actions under way inside runs when the budget ran out may start more
  -- runs while the cleanup waits: those are waited for and read too.
  -- The Futures of the lists (a map's list makes them as they are read;
  -- add_list took only a few) are settled too.
  for _, l in ipairs(case.lists) do
    for i = 1, check.list_len(l) do
      local f = check.list_get(l, i)
      if check.is_future(f) then case.futures[#case.futures + 1] = f end
    end
  end
  local from = 1
  repeat
    local futs = { echo = case.echo }
    for i = from, #case.futures do futs[#futs + 1] = case.futures[i] end
    from = #case.futures + 1
    settle(futs)
  until from > #case.futures
  -- Done callbacks run from the loop: give them their turn.
  for _ = 1, 3 do pcall(mf.sleep, 0) end
  for _, rec in ipairs(case.callbacks) do
    local okd, isdone = pcall(rec.future.done, rec.future)
    if rec.calls > 1 then
      check.violation("add_done_callback", "callback called %d times", rec.calls)
    elseif okd and isdone and rec.calls == 0 then
      check.violation("add_done_callback", "callback never called for a final run")
    elseif okd and not isdone and rec.calls > 0 then
      check.violation("add_done_callback", "callback called before the run was final")
    elseif rec.wrong_arg then
      check.violation("add_done_callback", "callback called without its future")
    end
  end
  if case.configured then
    if pcall(mf.configure, { slice = 0.01, task_runner = mf.runners.coroutines() }) then
      check.copying = 0 -- (every run of the case is final)
    end
  end
end

local function run_case(k, abandon)
  check.reset_case(k)
  say("case %d calls %d", k, check.stats.calls)
  local case = new_case(k)
  local rng = case.rng
  for _ = 1, rng:int(3, 30) do A.act(rng, case, "main") end
  if abandon then return case end
  finish(case)
  return nil
end

-- }======

-- {====== Ending the process in the middle ======

local function abandon(case, mode)
  say("ABANDON case %d mode %s with %d runs", case.k, mode, #case.futures)
  if mode == "return" then
    return
  elseif mode == "exit" then
    os.exit(0, true)
  elseif mode == "error" then
    error("api_fuzz: abandoning with an error (expected)", 0)
  elseif mode == "exit-in-run" then
    -- in this process, whatever default runner the case left configured
    -- (os.exit is refused in a worker; seed 20261202 case 138)
    local t = mf.task({ runner = mf.runners.coroutines() }, function() os.exit(0, true) end)
    t:submit():wait()
    say("ABANDON exit-in-run: still here after the run called os.exit")
  else
    error("api_fuzz: unknown --abandon mode " .. tostring(mode), 0)
  end
end

-- }======

local started = os.time()

local function counts(t)
  local names = {}
  for name in pairs(t) do names[#names + 1] = name end
  table.sort(names, function(a, b) return t[a] > t[b] end)
  local parts = {}
  for _, name in ipairs(names) do parts[#parts + 1] = name .. "=" .. t[name] end
  return table.concat(parts, " ")
end

local function summary(cases, failed_cases)
  local s = check.stats
  say("SUMMARY seed=%d cases=%d calls=%d raised=%d seconds=%d failed_cases=%d",
    opts.seed, cases, s.calls, s.failed, os.time() - started, #failed_cases)
  say("errors: %s", counts(s.by_kind))
  say("actions by where: %s", counts(s.by_where))
  if opts.verbose then say("calls by api: %s", counts(s.by_api)) end
end

say("moonflow api fuzz: seed=%d (replay: --seed %d --cases K --keep-going; one case: --case K)",
  opts.seed, opts.seed)
local cases, first, last = 0, opts.case or 1, opts.case or math.maxinteger
local failed_cases = {}
for k = first, last do
  local over = os.time() - started >= opts.seconds
    or (opts.calls and check.stats.calls >= opts.calls)
    or (opts.cases and cases >= opts.cases)
  local abandon_now = opts.abandon and (over or k == last)
  if over and not abandon_now then break end
  local case = run_case(k, abandon_now)
  cases = cases + 1
  if #check.violations > 0 then
    failed_cases[#failed_cases + 1] = k
    say("FUZZ-FAIL seed=%d case=%d: %d violation(s); replay: --seed %d --case %d",
      opts.seed, k, #check.violations, opts.seed, k)
    check.violations = {}
    if not opts.keep_going then break end
  end
  if case then
    summary(cases, failed_cases)
    remove_tmpdir()
    abandon(case, opts.abandon)
    return
  end
  if over then break end
end
summary(cases, failed_cases)
remove_tmpdir()
if #failed_cases > 0 then
  error(string.format("api_fuzz: violations in case(s) %s (seed %d)",
    table.concat(failed_cases, ","), opts.seed), 0)
end
