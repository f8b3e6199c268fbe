-- I/O inside runs: mf.dns.resolve, mf.tcp / mf.unix connect and listen,
-- Connections (api.md, "I/O inside runs"), against a python3 echo server,
-- a listener that never accepts, and moonflow's own servers.
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local peers = require "peers.peers"
local mf, lu = h.mf, h.lu

local echo -- python3 echo server (TestNet's suite)

local function io_error(code, fn, ...)
  local err = h.raises_kind("IOError", fn, ...)
  lu.assertEquals(err.code, code, tostring(err))
  return err
end

TestDns = {}

function TestDns:test_resolve_gives_address_strings()
  local addrs = mf.dns.resolve("localhost")
  lu.assertTrue(#addrs >= 1)
  local found = false
  for _, a in ipairs(addrs) do found = found or a == "127.0.0.1" or a == "::1" end
  lu.assertTrue(found, table.concat(addrs, ","))
  lu.assertEquals(mf.dns.resolve("127.0.0.1"), { "127.0.0.1" })
  lu.assertEquals(mf.dns.resolve("::1"), { "::1" })
end

function TestDns:test_a_name_that_does_not_exist_is_an_io_error()
  local err = h.raises_kind("IOError", mf.dns.resolve, "no-such-host.invalid")
  lu.assertStrContains(err.code, "EAI_")
  lu.assertStrContains(err.message, "no-such-host.invalid")
  h.raises_kind("UsageError", mf.dns.resolve, 42)
end

function TestDns:test_many_resolutions_concurrently()
  local resolve = mf.task(function(host) return mf.dns.resolve(host)[1] end)
  local got = resolve:map({ "127.0.0.1", "127.0.0.2", "::1", "127.0.0.3" }):result()
  lu.assertEquals(got, { "127.0.0.1", "127.0.0.2", "::1", "127.0.0.3", n = 4 })
end

TestConnect = {}

function TestConnect.setupClass()
  echo = peers.start("echo")
end

function TestConnect.teardownClass()
  echo:stop()
end

function TestConnect:test_lines_and_every_read_format_against_an_echo_server()
  local c = mf.tcp.connect("127.0.0.1", echo.port)
  lu.assertIs(c:write("one\n", "two\r\n", 3, "\n"), c)
  lu.assertEquals(c:read("l"), "one")
  lu.assertEquals(c:read("L"), "two\r\n")
  lu.assertEquals(c:read(), "3") -- "l" by default
  c:write("abcdef")
  lu.assertEquals(c:read(2), "ab")
  lu.assertEquals(c:read(0), "")
  c:write("\n")
  lu.assertEquals(c:read("*l"), "cdef") -- Lua 5.3's spelling
  c:close()
  c:close() -- idempotent
end

function TestConnect:test_read_all_until_the_peer_closes_then_nil()
  local c = mf.tcp.connect("127.0.0.1", echo.port)
  c:write("partial line\nand the rest")
  c:shutdown() -- the echo server sees the end and closes its side
  lu.assertEquals(c:read("l"), "partial line")
  lu.assertEquals(c:read("a"), "and the rest")
  lu.assertEquals(c:read("a"), "")
  lu.assertNil(c:read("l"))
  lu.assertNil(c:read(10))
  lu.assertNil(c:read(0))
  c:close()
end

function TestConnect:test_lines_iterator_ends_at_the_end_of_the_stream()
  local c = mf.tcp.connect("127.0.0.1", echo.port)
  c:write("a\nb\n\nc")
  c:shutdown()
  local got = {}
  for line in c:lines() do got[#got + 1] = line end
  lu.assertEquals(got, { "a", "b", "", "c" })
  c:close()
end

function TestConnect:test_a_big_write_and_read_back_while_it_is_written()
  local payload = ("0123456789abcdef"):rep(1 << 19) -- 8 MB: more than the kernel takes at once
  local c = mf.tcp.connect("127.0.0.1", echo.port)
  local reader = mf.task(function()
    return c:read(#payload)
  end)
  local got = reader:submit()
  c:write(payload)
  lu.assertEquals(got:result(), payload)
  c:close()
end

function TestConnect:test_localhost_reaches_a_server_bound_to_127_0_0_1()
  local c = mf.tcp.connect("localhost", echo.port) -- ::1 may come first: refused, then the next
  c:write("hi\n")
  lu.assertEquals(c:read("l"), "hi")
  c:close()
end

function TestConnect:test_refused_unreachable_and_timed_out()
  local probe = mf.tcp.listen("127.0.0.1", 0, function() end)
  local closed_port = probe.port
  probe:close()
  local err = io_error("ECONNREFUSED", mf.tcp.connect, "127.0.0.1", closed_port)
  lu.assertStrContains(err.message, "127.0.0.1:" .. closed_port)
  -- A multicast address: the kernel refuses TCP to it at once (no packet).
  err = io_error("ENETUNREACH", mf.tcp.connect, "224.0.0.1", 80)
  lu.assertStrContains(err.message, "224.0.0.1:80")
  -- A listener whose accept queue is full drops the handshake.
  local full = peers.start("full")
  err = io_error("ETIMEDOUT", mf.tcp.connect, "127.0.0.1", full.port, { timeout = 0.3 })
  lu.assertStrContains(err.message, "127.0.0.1:" .. full.port)
  full:stop()
  io_error("ENOENT", mf.unix.connect, "/tmp/mf-no-such-socket")
end

function TestConnect:test_wrong_arguments_are_usage_errors()
  h.raises_kind("UsageError", mf.tcp.connect, nil, 80)
  h.raises_kind("UsageError", mf.tcp.connect, "127.0.0.1", 70000)
  h.raises_kind("UsageError", mf.tcp.connect, "127.0.0.1", "http")
  h.raises_kind("UsageError", mf.tcp.connect, "127.0.0.1", echo.port, { timeout = "soon" })
  local c = mf.tcp.connect("127.0.0.1", echo.port)
  h.raises_kind("UsageError", c.read, c, "x")
  h.raises_kind("UsageError", c.read, c, -1)
  h.raises_kind("UsageError", c.write, c, {})
  c:close()
  h.raises_kind("UsageError", c.read, c, "l") -- closed
  h.raises_kind("UsageError", c.write, c, "x")
end

function TestConnect:test_two_reads_on_one_connection_at_once_is_a_usage_error()
  local c = mf.tcp.connect("127.0.0.1", echo.port)
  local first = mf.task(function() return c:read("l") end):submit()
  mf.sleep(0) -- first parks on the read
  local second = mf.task(function() return pcall(c.read, c, "l") end):submit()
  local ok, err = second:result()
  lu.assertFalse(ok)
  lu.assertEquals(err.kind, "UsageError")
  c:write("line\n")
  lu.assertEquals(first:result(), "line")
  c:close()
end

function TestConnect:test_connections_in_many_runs_at_once()
  local talk = mf.task(function(i)
    local c = mf.tcp.connect("127.0.0.1", echo.port)
    local got = {}
    for j = 1, 20 do
      c:write(("%d.%d\n"):format(i, j))
      got[j] = c:read("l")
    end
    c:close()
    return table.concat(got, " ")
  end)
  local xs = {}
  for i = 1, 50 do xs[i] = i end
  local out = talk:map(xs):result()
  for i = 1, 50 do
    lu.assertEquals(select(2, out[i]:gsub("%d+%.%d+", "")), 20)
    lu.assertStrContains(out[i], i .. ".20")
  end
end

function TestConnect:test_a_top_level_wait_woken_by_a_timer_returns_with_idle_io_open()
  -- Regression: a top-level wait whose timer fired at the start of a loop
  -- pass (after a run computed past it) polled on, forever, while an idle
  -- connection kept the loop alive.  In a subprocess, bounded by timeout.
  local dir = peers.tmpdir()
  local f = assert(io.open(dir .. "/script.lua", "w"))
  f:write(([[
    package.cpath = %q .. "/?.so;" .. package.cpath
    local mf = require "moonflow"
    local idle = mf.tcp.connect("127.0.0.1", %d) -- never written to
    local reader = mf.task(function() return idle:read("l") end):submit()
    local busy = mf.task(function()
      local t = mf.now()
      while mf.now() - t < 0.005 do end
    end)
    for _ = 1, 20 do
      busy:submit()
      mf.sleep(0)
      mf.sleep(0.001)
    end
    reader:cancel()
    print("returned")
  ]]):format(os.getenv("MF_MODULE_DIR") or "build", echo.port))
  f:close()
  -- The sanitizers' runtime, which an instrumented module needs.
  local preload = os.getenv("MF_SUBPROCESS_PRELOAD") or os.getenv("LD_PRELOAD")
  local p = io.popen((preload and ("LD_PRELOAD=" .. preload .. " ") or "")
    .. "timeout 60 lua5.4 " .. dir .. "/script.lua 2>/dev/null")
  local out = p:read("a")
  p:close()
  peers.cleanup()
  lu.assertEquals(out, "returned\n")
end

TestServer = {}

function TestServer:test_each_connection_is_a_run_named_after_the_server()
  local names = {}
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    names[#names + 1] = mf.context().name
    for line in conn:lines() do conn:write(line:upper(), "\n") end
  end)
  lu.assertTrue(server.port > 0)
  lu.assertEquals(server.name, "127.0.0.1:" .. server.port)
  local client = mf.task(function(word)
    local c = mf.tcp.connect("127.0.0.1", server.port)
    c:write(word, "\n")
    local reply = c:read("l")
    c:close()
    return reply
  end)
  lu.assertEquals(client:map({ "a", "b", "c" }):result(), { "A", "B", "C", n = 3 })
  server:close()
  table.sort(names)
  local prefix = "127.0.0.1:" .. server.port .. "-"
  lu.assertEquals(names, { prefix .. "1", prefix .. "2", prefix .. "3" })
end

function TestServer:test_a_slow_client_never_holds_up_the_others()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    conn:write("hello ", conn:read("l"), "\n")
  end)
  local silent = mf.tcp.connect("127.0.0.1", server.port) -- says nothing
  local c = mf.tcp.connect("127.0.0.1", server.port)
  c:write("you\n")
  lu.assertEquals(c:read("l"), "hello you")
  silent:write("late\n")
  lu.assertEquals(silent:read("l"), "hello late")
  silent:close()
  c:close()
  server:close()
end

function TestServer:test_close_stops_accepting_and_handlers_go_on()
  local release, go = mf.promise()
  local accepted, accept = mf.promise()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    accept()
    release:result()
    conn:write("still served\n")
  end)
  local port = server.port
  local c = mf.tcp.connect("127.0.0.1", port)
  accepted:result() -- the handler's run has started
  server:close()
  lu.assertStrContains(tostring(server), "closed")
  io_error("ECONNREFUSED", mf.tcp.connect, "127.0.0.1", port)
  go()
  lu.assertEquals(c:read("l"), "still served")
  c:close()
end

function TestServer:test_a_task_as_handler_keeps_its_own_name_and_options()
  local served = mf.task({ name = "served" }, function(conn)
    conn:write(mf.context().name, "\n")
  end)
  local server = mf.tcp.listen("127.0.0.1", 0, served)
  local c = mf.tcp.connect("127.0.0.1", server.port)
  lu.assertStrContains(c:read("l"), "served-")
  c:close()
  server:close()
end

function TestServer:test_handlers_run_here_whatever_the_default_runner()
  -- A connection cannot be copied to a worker: with threads as the default
  -- runner, a server's handler (a function, or a Task without a runner of
  -- its own) still runs in this process.
  local served = mf.task({ name = "served" }, function(conn)
    conn:write("task ", conn:read("l"), "\n")
  end)
  mf.configure { task_runner = mf.runners.threads { workers = 1 } }
  local ok, err = pcall(function()
    local by_function = mf.tcp.listen("127.0.0.1", 0, function(conn)
      conn:write("function ", conn:read("l"), "\n")
    end)
    local by_task = mf.tcp.listen("127.0.0.1", 0, served)
    for _, case in ipairs({ { by_function, "function" }, { by_task, "task" } }) do
      local c = mf.tcp.connect("127.0.0.1", case[1].port)
      c:write("hi\n")
      lu.assertEquals(c:read("l"), case[2] .. " hi")
      c:close()
      case[1]:close()
    end
  end)
  mf.configure { task_runner = mf.runners.coroutines() }
  if not ok then error(err, 0) end
end

function TestServer:test_a_server_opened_in_a_run_closes_when_the_run_ends()
  local opener = mf.task(function()
    local s = mf.tcp.listen("127.0.0.1", 0, function(conn) conn:write("x\n") end)
    local c = mf.tcp.connect("127.0.0.1", s.port)
    local got = c:read("l")
    return s.port, got
  end)
  local port, got = opener:submit():result()
  lu.assertEquals(got, "x")
  io_error("ECONNREFUSED", mf.tcp.connect, "127.0.0.1", port)
end

function TestServer:test_a_connection_is_closed_when_its_run_ends()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn) conn:read("a") end)
  local conn = mf.task(function()
    return mf.tcp.connect("127.0.0.1", server.port) -- handed out, never closed
  end):submit():result()
  lu.assertStrContains(tostring(conn), "closed")
  h.raises_kind("UsageError", conn.write, conn, "x")
  server:close()
end

function TestServer:test_timeout_or_cancel_while_parked_on_a_read_closes_the_connection()
  local ended, saw_end = mf.promise()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    local got = conn:read("a") -- until the client's side closes
    saw_end(got)
  end)
  local stuck = mf.task({ timeout = 0.3 }, function()
    local c = mf.tcp.connect("127.0.0.1", server.port)
    c:write("bye")
    return c:read("l") -- nobody answers
  end)
  lu.assertEquals(stuck:run().name, "TimedOut")
  lu.assertEquals(ended:result(), "bye") -- the server saw the connection close

  local ended2, saw_end2 = mf.promise()
  local server2 = mf.tcp.listen("127.0.0.1", 0, function(conn) saw_end2(conn:read("a")) end)
  local started, go = mf.promise()
  local reader = mf.task(function()
    local c = mf.tcp.connect("127.0.0.1", server2.port)
    go()
    return c:read("l")
  end)
  local fut = reader:submit()
  started:result()
  mf.sleep(0)
  fut:cancel()
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertEquals(ended2:result(), "")
  server:close()
  server2:close()
end

function TestServer:test_an_unreachable_connection_is_closed_by_the_collector()
  local ended, saw_end = mf.promise()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn) saw_end(conn:read("a")) end)
  local leaky = mf.task(function()
    local c = mf.tcp.connect("127.0.0.1", server.port)
    c:write("dropped")
    c = nil
    for _ = 1, 3 do collectgarbage() end
    return ended:result() -- the run goes on; its connection was closed
  end)
  lu.assertEquals(leaky:submit():result(), "dropped")
  server:close()
end

function TestServer:test_a_connection_whose_only_reference_is_a_parked_read_stays()
  local release, go = mf.promise()
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    release:result()
    conn:write("worth the wait\n")
  end)
  local reader = mf.task(function()
    return mf.tcp.connect("127.0.0.1", server.port):read("l")
  end)
  local fut = reader:submit()
  mf.sleep(0.05)
  for _ = 1, 3 do collectgarbage() end
  go()
  lu.assertEquals(fut:result(), "worth the wait")
  server:close()
end

function TestServer:test_unix_sockets()
  local dir = peers.tmpdir()
  local path = dir .. "/s.sock"
  local server = mf.unix.listen(path, function(conn)
    conn:write("unix:", conn:read("l"), "\n")
  end)
  lu.assertEquals(server.path, path)
  lu.assertEquals(mf.fs.stat(path).type, "other")
  local c = mf.unix.connect(path)
  c:write("hi\n")
  lu.assertEquals(c:read("l"), "unix:hi")
  c:close()
  io_error("EADDRINUSE", mf.unix.listen, path, function() end)
  server:close()
  lu.assertNil(mf.fs.stat(path)) -- its file goes with it
  io_error("ENOENT", mf.unix.connect, path)
  peers.cleanup()
end

function TestServer:test_listen_failures_and_wrong_arguments()
  local a = mf.tcp.listen("127.0.0.1", 0, function() end)
  io_error("EADDRINUSE", mf.tcp.listen, "127.0.0.1", a.port, function() end)
  a:close()
  h.raises_kind("UsageError", mf.tcp.listen, "127.0.0.1", 0, "handler")
  h.raises_kind("UsageError", mf.tcp.listen, "example.org", 0, function() end)
  h.raises_kind("UsageError", mf.unix.listen, 42, function() end)
end

h.run()
