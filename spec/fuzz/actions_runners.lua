-- spec/fuzz/actions_runners.lua: actions of the groups runners, promise and
-- cache -- task runners that copy (mf.runners.threads/processes, 1..2
-- workers, hostile setup functions, tasks pinned to them with arguments,
-- results and errors that cannot be copied, runners dropped and collected
-- with runs in flight, os.exit in a worker, the flow option task_runner,
-- mf.configure{task_runner}), mf.promise (settled from anywhere, twice,
-- with hostile values, cancelled) and the caching options (cache_key
-- functions that raise, yield or return junk, hostile expirations).
--
-- What runs in a worker is copied there: REMOTE below has no upvalue but
-- _ENV, and is told what to do by its first argument.  Errors it raises
-- come back as copies, marked (fuzz_remote) so that check.lua knows them
-- for the fuzzer's own.
local check = require "check"
local V = require "values"

local R = {}
local mf, hazard, L, act, make_body

-- env: { mf, hazard }; lib: actions.lua's A.lib; a: actions.lua's A
function R.init(env, lib, a)
  mf, hazard, L = env.mf, env.hazard, lib
  act, make_body = a.act, a.make_body
end

local call = check.call
local unpack = table.unpack

-- {====== What runs in a worker ======

-- (no upvalues: every name it uses is a global or a local of its own)
local function REMOTE(how, ...)
  local mf = require "moonflow"
  -- (the default runner is read when an attempt starts: a run submitted
  -- while it was a worker pool may start here, where os.exit ends the
  -- fuzzer and a configure changes every later run)
  local in_worker = require("moonflow.core").is_worker()
  if not in_worker and (how == "exit" or how == "configure") then return how end
  if how == "echo" then return ...
  elseif how == "raise" then error({ fuzz_remote = "raise", (...) }, 0)
  elseif how == "raise_string" then error("fuzz-remote: raised", 0)
  elseif how == "raise_junk" then
    local junk = ({ coroutine.create(print), io.stdout, print, function() return how end,
      setmetatable({}, { __tostring = function() error("fuzz-remote: tostring", 0) end }) })
      [math.random(1, 5)]
    -- here, in the main state, it reaches result() as it is (api.md,
    -- Errors): the fuzzer's own (seed 1796154941 case 57)
    if not in_worker then require("check").own(junk) end
    error(junk, 0)
  elseif how == "sleep" then mf.sleep(0.001); return ...
  elseif how == "exit" then os.exit(...)
  elseif how == "coroutine" then return coroutine.create(print)
  elseif how == "userdata" then return io.stdout
  elseif how == "future" then
    return mf.task(function(x) return x end):submit(1)
  elseif how == "cyclic" then
    local a = { 1 }
    a.self, a[2] = a, { a }
    return a, a
  elseif how == "deep" then
    local t = {}
    for _ = 1, (math.tointeger(...) or 300) % 6000 do t = { t } end
    return t
  elseif how == "closure" then
    local up = { ... }
    return function() return up end
  elseif how == "nested" then
    local t = mf.task(function(x) mf.sleep(0.001); return x end)
    return t:submit((...)):result()
  elseif how == "orphan" then -- a child run left going: waited for before the run ends
    mf.task(function() mf.sleep(0.003) end):submit()
    return "orphan"
  elseif how == "map" then
    return mf.task(function(x) return x end):map({ 1, 2, 3 }):result()
  elseif how == "busy" then
    local stop = os.clock() + 0.003
    while os.clock() < stop do end
    return "busy"
  elseif how == "loop" then while true do end -- (only with a timeout)
  elseif how == "context" then
    local c = mf.context()
    return c and c.name
  elseif how == "promise" then
    local f, resolve = mf.promise("fuzz-remote")
    resolve(...)
    return f:result()
  elseif how == "io" then return mf.fs.stat("/")
  elseif how == "yield" then return coroutine.yield(...)
  elseif how == "configure" then
    return mf.configure { task_runner = mf.runners.threads { workers = 1 } }
  elseif how == "runner" then return mf.runners.threads { workers = 1 }
  elseif how == "global" then return FUZZ_SETUP_GLOBAL
  elseif how == "big" then return string.rep("x", 1 << 20)
  elseif how == "many" then
    local t = {}
    for i = 1, 250 do t[i] = i end
    return table.unpack(t)
  end
  return how
end

local HOWS = { "echo", "echo", "echo", "raise", "raise_string", "raise_junk", "sleep",
  "exit", "coroutine", "userdata", "future", "cyclic", "deep", "closure", "nested",
  "orphan", "map", "busy", "loop", "context", "promise", "io", "yield", "configure",
  "runner", "global", "big", "many" }

-- Setup functions: each copied to the workers once.
local SETUPS = {
  function() end,
  function() FUZZ_SETUP_GLOBAL = { 1, 2, 3 } end,
  function() error("fuzz-remote: setup raised", 0) end,
  function() error({ fuzz_remote = "setup" }, 0) end,
  function() error(coroutine.create(print), 0) end,
  function() os.exit(3) end,
  function() os.exit(true, true) end,
  function() coroutine.yield("setup") end,
  function() require("moonflow").sleep(0.001) end,
  function() require("moonflow").task(function() end):submit() end,
  function() return coroutine.create(print), io.stdout end,
  function()
    local stop = os.clock() + 0.005
    while os.clock() < stop do end
  end,
  function() require("fuzz-no-such-module") end,
}

-- }======

-- {====== Runners ======

local function new_runner(rng, case, where)
  local kind = rng:weighted { { 70, "threads" }, { 30, "processes" } }
  local opts = {}
  local form = rng:weighted { { 70, "ok" }, { 15, "junk workers" }, { 5, "unknown" },
    { 5, "not a table" }, { 15, "junk setup" } }
  opts.workers = rng:int(1, 2)
  if rng:chance(0.5) then opts.setup = rng:pick(SETUPS) end
  local valid = true
  if form == "junk workers" then
    opts.workers = rng:pick { 0, -1, 1.5, 0 / 0, "2", {}, 1025, math.huge, math.maxinteger, true }
    valid = false
  elseif form == "unknown" then
    opts[rng:pick { "worker", "Workers", 1, "url" }] = 1
    valid = false
  elseif form == "not a table" then
    opts = rng:pick { "threads", 2, true, print }
    valid = false
  elseif form == "junk setup" then
    -- not a function, or a function whose upvalues cannot be copied
    local co = coroutine.create(print)
    opts.setup = rng:pick { "x", 1, {}, true, V.fn(rng, case, "setup"),
      function() return co end, function() return io.stdout end }
    valid = nil
  end
  -- (bounded: every runner starts threads or processes)
  if valid ~= false and (case.runners_made or 0) >= 3 then return nil end
  local ok, r = call("mf.runners." .. kind, mf.runners[kind], opts)
  if ok then
    if valid == false then
      check.violation("mf.runners." .. kind, "accepted invalid options")
    end
    local runner = r[1]
    case.runners_made = (case.runners_made or 0) + 1
    local ok2, k = call("Runner.kind", function() return runner.kind, runner.workers end)
    if ok2 and (k[1] ~= kind or k[2] ~= opts.workers) then
      check.violation("mf.runners." .. kind, "kind %s, workers %s", check.repr(k[1]),
        check.repr(k[2]))
    end
    return runner
  elseif valid == true and r.class == "UsageError" and where == "main" then
    check.violation("mf.runners." .. kind, "refused valid options: %s", check.repr(r[1]))
  end
  return nil
end

local function pick_runner(rng, case, where)
  case.runners = case.runners or {}
  if #case.runners > 0 and rng:chance(0.8) then
    return case.runners[rng:int(1, #case.runners)]
  end
  local runner = new_runner(rng, case, where)
  if runner and #case.runners < 3 then case.runners[#case.runners + 1] = runner end
  return runner
end

-- The arguments of REMOTE: what to do, then plain or hostile values.
local function remote_args(rng, case)
  local how = rng:pick(HOWS)
  local args = { n = 0 }
  local kind = rng:weighted { { 40, "plain" }, { 40, "any" }, { 20, "hostile" } }
  if how == "exit" then
    args = { n = 2, rng:pick { 0, 1, true, false, "x" }, rng:pick { true, false } }
  elseif how == "deep" then
    args = { n = 1, rng:pick { 10, 199, 200, 201, 5000 } }
  elseif kind == "plain" then
    args.n = rng:int(0, 4)
    for i = 1, args.n do args[i] = V.scalar(rng, case) end
  elseif kind == "any" then
    args = V.args(rng, case)
  else
    local co = coroutine.create(print)
    local cyc = {}
    cyc[1], cyc.self = cyc, { cyc }
    local deep = {}
    for _ = 1, rng:pick { 199, 200, 201, 1000 } do deep = { deep } end
    local up = { co }
    args = { n = 1, rng:pick { co, io.stdout, cyc, deep, function() return up end,
      V.future(rng, case) or 1, V.list(rng, case) or 2, mf, mf.task,
      setmetatable({}, { __gc = function() end }), { f = print, g = string.format } } }
  end
  local plain = kind == "plain" and how == "echo"
  return how, args, plain
end

-- A task pinned to a runner (the option runner), or run on a flow's
-- task_runner, or on the default runner: submitted, sometimes waited for
-- with its result checked.
local function pinned(rng, case, where, runner, via)
  local how, args, plain = remote_args(rng, case)
  local opts = { runner = runner, retries = rng:pick { 0, 0, 1 }, retry_delay = 0 }
  if how == "loop" or rng:chance(0.3) then
    opts.timeout = rng:pick { 0.005, 0.05, 0.2 }
  end
  if rng:chance(0.1) then opts.cache_key = function() return "fuzz-remote-key" end end
  if via ~= "runner" then opts.runner = nil end
  local fn = REMOTE
  if rng:chance(0.1) then
    -- a function that cannot travel: upvalues of a coroutine, a Future
    local co, f = coroutine.create(print), V.future(rng, case)
    fn = rng:pick { function() return co end, function() return f end, V.fn(rng, case) }
  end
  local ok, r = call("mf.task", mf.task, opts, fn)
  if not ok then return end
  local t = r[1]
  local fut
  if via == "flow" then
    local ok2, fl = call("mf.flow", mf.flow, { task_runner = runner }, function(...)
      return t(...)
    end)
    if not ok2 then return end
    local ok3, s = call("Flow:submit", fl[1].submit, fl[1], how, unpack(args, 1, args.n))
    if not ok3 then return end
    fut = s[1]
  else
    local ok3, s = call("Task:submit", t.submit, t, how, unpack(args, 1, args.n))
    if not ok3 then return L.add_error(case, s) end
    fut = s[1]
  end
  L.add_future(case, fut, where)
  if rng:chance(0.4) then return fut end
  local ok4, res = call("Future:result", fut.result, fut)
  if not ok4 then return L.add_error(case, res) end
  if plain and fn == REMOTE and not opts.cache_key then
    if res.n ~= args.n then
      return check.violation("runner echo", "%d arguments, %d results", args.n, res.n)
    end
    for i = 1, args.n do
      if not L.same(res[i], args[i]) then
        return check.violation("runner echo", "result %d is %s, argument was %s", i,
          check.repr(res[i]), check.repr(args[i]))
      end
    end
  end
  return fut
end

function R.define()
  local d = L.def

  d("runners", "mf.runners.*", 2, function(rng, case, where)
    pick_runner(rng, case, where)
  end)

  d("runners", "runner task", 8, function(rng, case, where)
    local runner = pick_runner(rng, case, where)
    if runner then pinned(rng, case, where, runner, "runner") end
  end)

  d("runners", "flow task_runner", 3, function(rng, case, where)
    local runner = pick_runner(rng, case, where)
    if runner then pinned(rng, case, where, runner, "flow") end
  end)

  -- The default runner changed, some runs started, changed back.
  d("runners", "configure task_runner", 1, function(rng, case, where)
    local runner = rng:chance(0.85) and pick_runner(rng, case, where)
      or rng:pick { "threads", {}, 1, mf.runners.threads }
    if not runner then return end
    local ok = call("mf.configure", mf.configure, { task_runner = runner })
    case.configured = true
    local ok2, err = true, nil
    if ok then
      -- runs of other actions that start now run in a worker too: their
      -- values are copies (check.lua, copy_window; seed 1796159170 case 139)
      check.copy_window(true)
      ok2, err = pcall(function()
        for _ = 1, rng:int(1, 2) do pinned(rng, case, where, runner, "default") end
      end)
    end
    local back = call("mf.configure", mf.configure, { task_runner = mf.runners.coroutines() })
    if ok and back then check.copy_window(false) end -- (else: closed by finish)
    if not ok2 then error(err, 0) end -- (a Cancelled or TimedOut passed on)
  end)

  -- A runner only its task holds, dropped and collected while its runs go.
  d("runners", "dropped runner", 2, function(rng, case, where)
    if (case.runners_made or 0) >= 3 then return end
    local runner = new_runner(rng, case, where)
    if not runner then return end
    local ok, r = call("mf.task", mf.task, { runner = runner, timeout = 5 }, REMOTE)
    runner = nil -- luacheck: ignore
    if not ok then return end
    local t = r[1]
    for _ = 1, rng:int(1, 3) do
      local ok2, s = call("Task:submit", t.submit, t, rng:pick { "sleep", "echo", "busy" }, 1)
      if ok2 then L.add_future(case, s[1], where) end
    end
    t, r = nil, nil -- luacheck: ignore
    collectgarbage("collect")
    if rng:chance(0.5) then collectgarbage("collect") end
  end)

  d("runners", "Runner misc", 2, function(rng, case, where)
    local runner = rng:chance(0.7) and case.runners and case.runners[1]
      or mf.runners.coroutines()
    local which = rng:pick { "index", "tostring", "junk key", "redis", "coroutines" }
    if which == "index" then
      call("Runner.kind", function() return runner.kind, runner.workers end)
    elseif which == "tostring" then call("tostring(Runner)", tostring, runner)
    elseif which == "junk key" then
      local k = V.any(rng, case, 2)
      call("Runner[junk]", function() return runner[k] end)
    elseif which == "redis" then
      local ok = call("mf.runners.redis", mf.runners.redis, { url = "redis://127.0.0.1" })
      if ok then check.violation("mf.runners.redis", "did not raise") end
    else
      call("mf.runners.coroutines", mf.runners.coroutines, V.any(rng, case, 2))
    end
  end)

  -- }======

  -- {====== Promises ======

  d("promise", "mf.promise", 6, function(rng, case, where)
    local name = rng:weighted { { 50, nil }, { 30, V.string(rng) }, { 20, V.any(rng, case, 2) } }
    local ok, r = call("mf.promise", mf.promise, name)
    if not ok then return end
    local fut, resolve, reject = r[1], r[2], r[3]
    if not check.is_future(fut) or type(resolve) ~= "function" or type(reject) ~= "function" then
      return check.violation("mf.promise", "returned %s, %s, %s", check.repr(fut),
        check.repr(resolve), check.repr(reject))
    end
    -- (not as a child of the flow it was made in: a promise is a root run,
    -- which its maker does not wait for)
    L.add_future(case, fut, "promise")
    case.promises = case.promises or {}
    if #case.promises < 30 then
      case.promises[#case.promises + 1] = { fut = fut, resolve = resolve, reject = reject }
    end
    -- Every promise is settled soon, whatever else happens (a run of its
    -- own, which nothing cancels): a wait in the main chunk may have a
    -- timeout of 1e9 s.
    -- (made inside a flow, the backup is the flow's child, which the
    -- flow's end may cancel, started or not: its done callback settles
    -- the promise whatever way it ends; seed 1796154948 case 65 hung)
    -- (the backup may settle first: its run cancelled at once, inside a
    -- flow that is stopping, calls its done callback as it is added; or a
    -- busy machine lets its 0.02 s pass during the case's next calls)
    local backup_settled = false
    local function settle_backup()
      if pcall(resolve, "fuzz-promise-backup") then backup_settled = true end
    end
    local ok1, backup = call("mf.task", mf.task, { runner = mf.runners.coroutines() }, function()
      mf.sleep(0.02)
      settle_backup()
    end)
    local ok2, made = false, nil
    if ok1 then ok2, made = call("Task:submit", backup[1].submit, backup[1]) end
    if not ok2 or not pcall(made[1].add_done_callback, made[1], settle_backup) then
      resolve("fuzz-promise-backup")
      backup_settled = true
    end
    local how = rng:pick { "now", "now", "later", "callback", "run", "cancel", "later" }
    local args = V.args(rng, case)
    local settle_with_reject = rng:chance(0.3)
    local function settle(label)
      if settle_with_reject then
        return call("reject" .. label, reject, check.own(V.any(rng, case, 2)))
      end
      return call("resolve" .. label, resolve, unpack(args, 1, args.n))
    end
    if how == "now" then
      local ok2, s = settle("")
      -- (false when settled or cancelled first: by the backup, or by an
      -- action a finalizer ran meanwhile; seed 1796201631 case 2)
      -- (or cancelled with the run or flow it was made in: CI, seed
      -- 20261203 case 35, a busy machine)
      local st_ok, st = pcall(fut.state, fut)
      local cancelled = case.cancelled[fut] or (st_ok and type(st) == "table"
        and st.type == "CANCELLED")
      if ok2 and s[1] ~= true
          and not (s[1] == false and (backup_settled or cancelled)) then
        check.violation("mf.promise", "the first settle returned %s", check.repr(s[1]))
      end
      local ok3, s2 = call("resolve (again)", resolve, 1)
      if ok3 and s2[1] ~= false then
        check.violation("mf.promise", "a second settle returned %s", check.repr(s2[1]))
      end
      if not settle_with_reject and rng:chance(0.7) then
        local special = false
        for i = 1, args.n do special = special or V.special(args[i]) end
        local ok4, res = call("Future:result", fut.result, fut, 0)
        if ok4 and not special then
          if res.n ~= args.n then
            return check.violation("mf.promise", "resolved with %d values, result has %d",
              args.n, res.n)
          end
          for i = 1, args.n do
            if not L.same(res[i], args[i]) then
              return check.violation("mf.promise", "result %d is %s, resolved with %s", i,
                check.repr(res[i]), check.repr(args[i]))
            end
          end
        end
      end
    elseif how == "callback" then
      local other = V.future(rng, case)
      if other then
        call("Future:add_done_callback", other.add_done_callback, other, function()
          settle(" (callback)")
          settle(" (callback, again)")
        end)
      else
        settle("")
      end
    elseif how == "run" then
      local ok2, t = call("mf.task", mf.task, function()
        mf.sleep(0.001)
        return settle(" (run)")
      end)
      if ok2 then
        local ok3, s = call("Task:submit", t[1].submit, t[1])
        if ok3 then L.add_future(case, s[1], where) end
      end
    elseif how == "cancel" then
      call("Future:cancel", fut.cancel, fut)
      local ok2, s = settle(" (after cancel)")
      if ok2 and s[1] ~= false then
        check.violation("mf.promise", "settled after a cancel: %s", check.repr(s[1]))
      end
    end
    -- "later": another action settles it, or the backup run
    if rng:chance(0.3) then
      call("Future:wait", fut.wait, fut, V.timeout(rng, where))
    end
  end)

  -- A promise of the case settled later, from wherever this action runs.
  d("promise", "settle a promise", 4, function(rng, case, where)
    local list = case.promises
    if not list or #list == 0 then return end
    local p = list[rng:int(1, #list)]
    local which = rng:pick { "resolve", "reject", "junk self" }
    if which == "resolve" then
      local args = V.args(rng, case)
      call("resolve (later)", p.resolve, unpack(args, 1, args.n))
    elseif which == "reject" then
      call("reject (later)", p.reject, check.own(V.any(rng, case, 2)), V.any(rng, case, 2))
    else
      -- resolve/reject given a future of another promise, the module
      call("resolve (odd values)", p.resolve, p.fut, mf, p.resolve)
    end
  end)

  -- }======

  -- {====== Caching ======

  local function cache_key_fn(rng, case)
    local r = rng:fork()
    local behaviour = r:pick { "string", "junk", "raise", "yield", "act", "nil", "wait",
      "fn", "big" }
    return function(...)
      if behaviour == "string" then return "fuzz-key-" .. r:int(1, 3)
      elseif behaviour == "junk" then
        return r:pick { 1, true, {}, print, 0 / 0, io.stdout, coroutine.create(print) }
      elseif behaviour == "raise" then V.raise(r, case)
      elseif behaviour == "yield" then
        -- (a plain callback: Lua's "attempt to yield ..." is the fuzzer's own)
        local ok, v = pcall(V.yield, "cache_key")
        if not ok then error(check.own(v), 0) end
        return v
      elseif behaviour == "act" then act(r, case, "cache_key"); return "fuzz-key-act"
      elseif behaviour == "wait" then
        mf.sleep(0) -- a wait in a plain callback: UsageError
        return "fuzz-key-wait"
      elseif behaviour == "fn" then return ...
      elseif behaviour == "big" then return string.rep("k\0", 50000)
      end
      return nil
    end
  end

  d("cache", "cached task", 6, function(rng, case, where)
    local opts = {}
    local valid = true
    if rng:chance(0.8) then opts.cache_key = cache_key_fn(rng, case)
    elseif rng:chance(0.5) then opts.cache = true end
    if rng:chance(0.4) then
      local e = rng:pick { 1e-9, 0.001, 1, 3600, 1e300, math.huge, 2 ^ 63, 0, -1, 0 / 0, "1",
        {}, -math.huge }
      opts.cache_expiration = e
      if type(e) ~= "number" or not (e > 0) then valid = false end
    end
    if rng:chance(0.3) then opts.refresh_cache = rng:pick { true, false, 1 } end
    if rng:chance(0.3) then opts.persist_result = rng:pick { true, false, "yes" } end
    if rng:chance(0.1) then opts.cache = rng:pick { true, false, 0 } end
    for _, k in ipairs { "refresh_cache", "persist_result", "cache" } do
      if opts[k] ~= nil and type(opts[k]) ~= "boolean" then valid = false end
    end
    if rng:chance(0.05) then opts.cache_key, valid = rng:pick { "k", 1, {} }, false end
    if rng:chance(0.2) then opts.retries, opts.retry_delay = 1, 0 end
    if rng:chance(0.15) and hazard("yields") then
      opts.runner = pick_runner(rng, case, where)
    end
    local body = rng:chance(0.7) and function(...) return ... end
      or make_body(rng, case, "run")
    local ok, r = call("mf.task", mf.task, opts, opts.runner and REMOTE or body)
    if ok and not valid then
      return check.violation("mf.task", "accepted invalid cache options")
    elseif not ok then
      if valid and r.class == "UsageError" then
        check.violation("mf.task", "refused valid cache options: %s", check.repr(r[1]))
      end
      return
    end
    local t = r[1]
    if #case.tasks < 60 then case.tasks[#case.tasks + 1] = t end
    for _ = 1, rng:int(1, 4) do
      local args = rng:chance(0.6) and { n = 1, rng:pick { 1, 2, "a" } } or V.args(rng, case)
      if opts.runner then
        table.insert(args, 1, "echo")
        args.n = args.n + 1
      end
      local ok2, s = call("Task:submit", t.submit, t, unpack(args, 1, args.n))
      if ok2 then
        L.add_future(case, s[1], where)
        if rng:chance(0.6) then
          local ok3, res = call("Future:result", s[1].result, s[1])
          if not ok3 then L.add_error(case, res) end
          local ok4, st = call("Future:state", s[1].state, s[1])
          if ok4 then L.add_state(case, st[1]) end
        end
      end
    end
  end)
end

-- }======

return R
