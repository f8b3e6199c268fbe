-- spec/fuzz/actions_io.lua: actions of the group io -- I/O inside runs,
-- from the main chunk, runs, callbacks and coroutines, kept harmless:
--   * mf.fs.* only inside a temporary directory the fuzzer made (paths
--     with NUL bytes, too long, missing parents, files of up to 2 MB);
--   * mf.exec only of true, false, echo and cat (hostile arguments,
--     stdin, env, cwd, timeouts, check, on_line callbacks);
--   * mf.tcp/mf.unix/mf.http only against a listener the action opened
--     itself on loopback or in the directory; mf.dns.resolve only of
--     loopback names.  Nothing reaches the network outside the machine.
local check = require "check"
local V = require "values"

local I = {}
local mf, hazard, L, act, dir

-- env: { mf, hazard, tmpdir }; lib: actions.lua's A.lib; a: its A
function I.init(env, lib, a)
  mf, hazard, L, act, dir = env.mf, env.hazard, lib, a.act, env.tmpdir
end

local call = check.call
local unpack = table.unpack

-- {====== Paths inside the directory ======

local NAMES = { "a", "b", "c.txt", "d/e", "d/e/f", "sub", "sub/x", ".hidden",
  "sp ace", "\xff\xfe", "a\0b", "sub/../a", "./c.txt", "", "d/", string.rep("n", 300),
  string.rep("p/", 60) .. "q" }

-- A path inside dir (never out of it: no ".." above it; a NUL byte cuts it
-- short, still inside), or a value that is no path at all -- never a
-- number, a relative path the C side would take from the working
-- directory.
local function path(rng)
  if rng:chance(0.9) then return dir .. "/" .. rng:pick(NAMES) end
  return rng:pick { {}, true, false, print, dir .. "\0/etc", dir }
end

local function data(rng, case)
  return rng:weighted {
    { 40, "line 1\nline 2\n" }, { 10, "" }, { 10, "no newline" },
    { 10, string.rep("x\n", rng:int(1, 5000)) },
    { 5, string.rep("\0", 1000) },
    { 3, string.rep("y", rng:pick { 65535, 65536, 65537, 1 << 20, 2 << 20 }) },
    { 10, V.any(rng, case, 2) },
  }
end

-- }======

local function def_all()
  local d = L.def

  d("io", "mf.fs", 10, function(rng, case, where)
    if not dir then return end
    local which = rng:pick { "read", "write", "append", "lines", "list", "stat", "mkdir",
      "remove", "rename", "write", "stat" }
    local p = path(rng)
    if which == "read" then
      call("mf.fs.read", mf.fs.read, p)
    elseif which == "write" or which == "append" then
      local v = data(rng, case)
      local ok = call("mf.fs." .. which, mf.fs[which], p, v)
      if ok and which == "write" and type(v) == "string" and type(p) == "string"
          and not p:find("\0", 1, true) then
        local ok2, r = call("mf.fs.read", mf.fs.read, p)
        if ok2 and r[1] ~= v then
          check.violation("mf.fs.write", "read back %d bytes, wrote %d",
            type(r[1]) == "string" and #r[1] or -1, #v)
        end
      end
    elseif which == "lines" then
      local ok, r = call("mf.fs.lines", mf.fs.lines, p)
      if ok and type(r[1]) == "function" then
        local n, stop = 0, rng:int(0, 20)
        local ok2 = call("mf.fs.lines iterator", function()
          for _ in r[1], r[2], r[3], r[4] do
            n = n + 1
            if n >= stop then break end
          end
        end)
        if ok2 and rng:chance(0.3) then call("lines iterator (after)", r[1]) end
      end
    elseif which == "list" then
      local ok, r = call("mf.fs.list", mf.fs.list, rng:chance(0.5) and dir or p)
      if ok and type(r[1]) ~= "table" then
        check.violation("mf.fs.list", "returned %s", check.repr(r[1]))
      end
    elseif which == "stat" then
      local ok, r = call("mf.fs.stat", mf.fs.stat, p)
      if ok and r[1] ~= nil and (type(r[1]) ~= "table" or type(r[1].type) ~= "string") then
        check.violation("mf.fs.stat", "returned %s", check.repr(r[1]))
      end
    elseif which == "mkdir" then
      call("mf.fs.mkdir", mf.fs.mkdir, p,
        rng:pick { nil, { parents = true }, { parents = 1 }, "x", { nope = true } })
    elseif which == "remove" then
      call("mf.fs.remove", mf.fs.remove, p,
        rng:pick { nil, { recursive = true }, { recursive = "yes" }, 5 })
    else
      call("mf.fs.rename", mf.fs.rename, p, path(rng))
    end
  end)

  -- A file written and read in a run that is cancelled or timed out.
  d("io", "fs in a stopped run", 2, function(rng, case, where)
    if not dir then return end
    local p = dir .. "/stopped-" .. rng:int(1, 3)
    local big = string.rep("z", 1 << 20)
    local ok, r = call("mf.task", mf.task, { timeout = rng:pick { 1e-4, 0.001, 0.01 } },
      function()
        for _ = 1, 20 do
          mf.fs.write(p, big)
          mf.fs.read(p)
          for _ in mf.fs.lines(p) do break end
        end
      end)
    if not ok then return end
    local ok2, s = call("Task:submit", r[1].submit, r[1])
    if not ok2 then return end
    L.add_future(case, s[1], where)
    if rng:chance(0.5) then call("Future:cancel", s[1].cancel, s[1]) end
    call("Future:wait", s[1].wait, s[1], 30)
  end)

  d("io", "mf.exec", 8, function(rng, case, where)
    local prog = rng:pick { "true", "false", "echo", "cat", "cat" }
    local argv = { prog }
    for i = 2, rng:int(1, 4) do
      argv[i] = rng:weighted {
        { 40, V.string(rng) }, { 10, "-n" }, { 10, dir and dir .. "/c.txt" or "x" },
        { 5, string.rep("a", rng:pick { 1000, 140000 }) }, { 5, "a\0b" },
        { 10, V.any(rng, case, 2) },
      }
    end
    if prog == "cat" and #argv > 1 then
      -- cat reads files: only ours (or names that do not exist here)
      for i = 2, #argv do
        if type(argv[i]) == "string" and argv[i]:sub(1, 1) ~= "-" then
          argv[i] = (dir or "/nonexistent-fuzz") .. "/" .. rng:pick(NAMES)
        end
      end
    end
    local form = rng:weighted { { 80, "list" }, { 5, "string" }, { 5, "empty" },
      { 5, "junk" }, { 5, "missing" } }
    if form == "string" then argv = prog
    elseif form == "empty" then argv = {}
    elseif form == "junk" then argv = V.any(rng, case, 2)
    elseif form == "missing" then argv = { "/nonexistent-fuzz-program", "x" }
    end
    local opts
    if rng:chance(0.7) then
      opts = {}
      if rng:chance(0.4) then
        opts.stdin = rng:weighted { { 50, "a\nb\n" }, { 10, string.rep("s", 1 << 20) },
          { 10, "\0\0" }, { 10, V.any(rng, case, 2) } }
      end
      if rng:chance(0.3) then
        opts.timeout = rng:pick { 1e-9, 0.001, 0.05, 5, 0, -1, 0 / 0, math.huge, "1", {} }
      end
      if rng:chance(0.3) then opts.check = rng:pick { true, false, 1 } end
      if rng:chance(0.2) then
        opts.env = rng:pick { {}, { A = "b" }, { A = 1 }, { [1] = "x" }, { ["A\0B"] = "c" },
          { A = "b\0c" }, "A=b", { A = {} } }
      end
      if rng:chance(0.2) then
        opts.cwd = rng:pick { dir or "/", (dir or "") .. "/nonexistent", 5, {}, "/" }
      end
      if rng:chance(0.3) then
        local r = rng:fork()
        local cb = V.fn(rng, case, "on_line")
        opts.on_line = rng:pick { cb, function(line, stream)
          if type(line) ~= "string" or (stream ~= "stdout" and stream ~= "stderr") then
            check.violation("mf.exec", "on_line(%s, %s)", check.repr(line), check.repr(stream))
          end
          if r:chance(0.1) then act(r, case, "on_line") end
        end, "x", {} }
      end
      if rng:chance(0.05) then opts[rng:pick { "nope", 1, "stdout" }] = 1 end
      if rng:chance(0.05) then opts = rng:pick { "x", 1, true } end
    end
    local ok, r = call("mf.exec", mf.exec, argv, opts)
    if ok then
      local res = r[1]
      if type(res) ~= "table" or math.type(res.code) ~= "integer"
          or math.type(res.signal) ~= "integer" then
        return check.violation("mf.exec", "returned %s", check.repr(res))
      end
      if form == "list" and type(opts) == "table" and opts.env == nil and opts.cwd == nil
          and type(opts.timeout) ~= "number" then
        local want = prog == "false" and 1 or prog == "true" and 0 or nil
        if want and res.code ~= want then
          check.violation("mf.exec", "%s exited %d", prog, res.code)
        end
      end
    end
  end)

  -- A program stopped while it runs: its run cancelled or timed out.
  d("io", "exec in a stopped run", 2, function(rng, case, where)
    local stdin = string.rep("line\n", rng:pick { 10, 100000 })
    local ok, r = call("mf.task", mf.task, { timeout = rng:pick { 1e-4, 0.001, 0.02 } },
      function()
        for _ = 1, 5 do
          mf.exec({ "cat" }, { stdin = stdin, on_line = function() end })
          mf.exec({ "cat" }, { stdin = stdin, timeout = 10 })
        end
      end)
    if not ok then return end
    local ok2, s = call("Task:submit", r[1].submit, r[1])
    if not ok2 then return end
    L.add_future(case, s[1], where)
    if rng:chance(0.5) then
      call("mf.sleep", mf.sleep, 0.001)
      call("Future:cancel", s[1].cancel, s[1])
    end
    call("Future:wait", s[1].wait, s[1], 30)
  end)

  -- The handler of the fuzzer's own listeners: answers, or not, or hostile.
  local function handler(rng, case)
    local r = rng:fork()
    -- (no actions inside: the case's cleanup does not wait for a handler's
    -- run, and what an action started there after it would go unread)
    local how = r:pick { "echo", "http", "close", "junk", "raise", "nap", "slow", "plain" }
    -- (its errors caught: nothing else reads the handler's runs, and one
    -- failing unhandled would fail the program)
    local function serve(conn)
      if how == "echo" then
        for line in conn:lines() do conn:write(line, "\n") end
      elseif how == "http" then
        conn:read("l")
        conn:write(r:pick {
          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
          "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
          "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nshort",
          "garbage\r\n\r\n", "HTTP/1.1 200 OK\r\nX: " .. string.rep("h", 100000) .. "\r\n\r\n",
        })
        conn:close()
      elseif how == "close" then conn:close(); conn:close()
      elseif how == "junk" then conn:write(string.rep("\0", r:int(0, 100000)))
      elseif how == "raise" then V.raise(r, case)
      elseif how == "nap" then mf.sleep(0.001); conn:write("late\n")
      elseif how == "slow" then mf.sleep(0.01); conn:shutdown(); conn:read("a")
      end
      return conn
    end
    -- Bounded without a timeout (a TimedOut handler would be a failure
    -- nothing handles): a run of its own closes the connection soon, which
    -- ends a read parked on it, the handler's (ECANCELED) and the
    -- client's (the end); on the coroutines runner, whatever the default.
    local here = mf.runners.coroutines()
    local closer = mf.task({ runner = here }, function(conn)
      mf.sleep(0.05)
      pcall(conn.close, conn)
    end)
    local function fn(conn)
      pcall(closer.submit, closer, conn)
      local ok, err = pcall(serve, conn)
      if not ok then check.classify("handler", err, check.yields) end
    end
    -- (junk, but never one of the case's Tasks: its runs there would be
    -- nobody's to read, a failure reported at exit)
    if r:chance(0.05) then return r:pick { "x", 1, {}, true, print } end
    if how ~= "plain" then
      local ok, t = call("mf.task", mf.task, { runner = here }, fn)
      if ok then return t[1] end
    end
    -- (a plain function runs on the default runner: one that never reads)
    how = r:pick { "close", "junk" }
    return fn
  end

  local HOSTS = { "127.0.0.1", "127.0.0.1", "::1", "localhost", "127.0.0.2", "", "0.0.0.0" }

  local function use_conn(rng, case, conn)
    for _ = 1, rng:int(1, 5) do
      local which = rng:pick { "write", "read", "lines", "shutdown", "close", "index" }
      if which == "write" then
        local args = rng:chance(0.7) and { n = 2, "hello\n", "GET / HTTP/1.0\r\n\r\n" }
          or V.args(rng, case, 4)
        call("Connection:write", function() return conn:write(unpack(args, 1, args.n)) end)
      elseif which == "read" then
        local fmt = rng:pick { nil, "l", "L", "a", 1, 0, 100000, -1, "n", 0 / 0, {}, 2 ^ 62 }
        call("Connection:read", function() return conn:read(fmt) end)
      elseif which == "lines" then
        call("Connection:lines", function()
          local n = 0
          for _ in conn:lines() do
            n = n + 1
            if n > 3 then break end
          end
        end)
      elseif which == "shutdown" then call("Connection:shutdown", function() return conn:shutdown() end)
      elseif which == "close" then call("Connection:close", function() return conn:close() end)
      else
        local k = V.any(rng, case, 2)
        call("Connection[junk]", function() return conn[k] end)
      end
    end
  end

  -- Listens on loopback (or a path in dir), connects, talks, closes.
  d("io", "tcp/unix", 6, function(rng, case, where)
    local unix = dir and rng:chance(0.3)
    local server
    local where_to = unix and (dir .. "/" .. rng:pick { "s.sock", "sub/s.sock",
      string.rep("u", 120), "s\0k" }) or rng:pick(HOSTS)
    local port = rng:weighted { { 80, 0 }, { 5, -1 }, { 5, 65536 }, { 5, 1.5 },
      { 5, rng:pick { "0", 0 / 0, {}, math.huge } } }
    local ok, r
    if unix then
      if type(where_to) == "string" then pcall(os.remove, where_to) end
      ok, r = call("mf.unix.listen", mf.unix.listen, where_to, handler(rng, case))
    else
      ok, r = call("mf.tcp.listen", mf.tcp.listen, where_to, port, handler(rng, case))
    end
    if ok then
      server = r[1]
      call("Server fields", function() return server.port, server.path, server.name end)
    end
    local timeout = rng:pick { nil, 1, 0.001, 1e-9, -1, 0 / 0, "x" }
    local target_port = server and not unix and server.port
      or rng:pick { 1, 0, -1, 65536, 70000, "x", 2 ^ 53 }
    local cok, c
    if unix then
      local p = server and server.path or (dir and dir .. "/none.sock")
      cok, c = call("mf.unix.connect", mf.unix.connect, rng:chance(0.9) and p or V.any(rng, case, 2))
    else
      local host = server and rng:chance(0.8) and "127.0.0.1" or rng:pick(HOSTS)
      if host == "::1" and server then host = "127.0.0.1" end
      cok, c = call("mf.tcp.connect", mf.tcp.connect, host, target_port,
        rng:pick { nil, { timeout = timeout }, { nope = 1 }, "x" })
    end
    if cok and c[1] then use_conn(rng, case, c[1]) end
    -- (closed in the end: a handler reading to the end would wait for it)
    if cok and c[1] then call("Connection:close", function() return c[1]:close() end) end
    if server and not unix and rng:chance(0.3) then
      call("mf.http.request", mf.http.request, {
        method = rng:pick { "GET", "POST", "HEAD", "", "G\0T", 5 },
        url = "http://127.0.0.1:" .. server.port .. rng:pick { "/", "/x?y", "", "/\0" },
        headers = rng:pick { nil, { A = "b" }, { ["A\r\nB"] = "c" }, { A = 1 }, "x" },
        body = rng:pick { nil, "body", string.rep("b", 100000), {} },
        timeout = rng:pick { 1, 0.05, 1e-9, nil, -1 },
        follow = rng:pick { nil, true, false, "yes" },
      })
    end
    -- Left open only inside a run (closed when it ends): one opened
    -- outside any run lives on, and mf.run() would serve it forever.
    local in_run = where == "run" or where == "flow" or where == "handler"
    if server and (rng:chance(0.9) or not in_run) then
      call("Server:close", function() return server:close() end)
      if rng:chance(0.3) then call("Server:close (again)", function() return server:close() end) end
    end
  end)

  d("io", "mf.dns.resolve", 2, function(rng, case, where)
    call("mf.dns.resolve", mf.dns.resolve,
      rng:pick { "localhost", "127.0.0.1", "::1", "", "local\0host", 5, {}, nil })
  end)

  -- An I/O call whose run is stopped while parked on a connect or a read.
  d("io", "io in a stopped run", 2, function(rng, case, where)
    local ok, r = call("mf.task", mf.task, { timeout = rng:pick { 0.001, 0.01 } }, function()
      local server = mf.tcp.listen("127.0.0.1", 0, function(conn) mf.sleep(0.05); conn:close() end)
      local conn = mf.tcp.connect("127.0.0.1", server.port)
      conn:write("x")
      return conn:read("a")
    end)
    if not ok then return end
    local ok2, s = call("Task:submit", r[1].submit, r[1])
    if not ok2 then return end
    L.add_future(case, s[1], where)
    if rng:chance(0.5) then call("Future:cancel", s[1].cancel, s[1]) end
    call("Future:wait", s[1].wait, s[1], 30)
  end)
end

I.define = def_all

return I
