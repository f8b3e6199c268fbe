-- bench/io.lua: I/O inside runs against its peers, in one run.
--   HTTP   10,000 GETs of a local HTTP server (bench/io_peers/http_server.c,
--          epoll in C: the clients, not the server, are measured), 100 in
--          flight: moonflow
--          (mf.http.get in mapped runs under mf.limit) against Python asyncio
--          (asyncio.open_connection and a hand-made GET, 100 keep-alive
--          connections) and against curl --parallel --parallel-max 100.
--   exec   1,000 mf.exec of /bin/true (one after another, and 16 at a time)
--          against a shell loop.
--   echo   100,000 round trips of a 16-byte message over 100 connections,
--          server and clients in one process: moonflow (mf.tcp.listen, each
--          connection a run; clients in runs) against Node's net module.
-- Every contender is a process of its own, measured by
-- bench/io_peers/measure.py: wall time, CPU (user + system, with the
-- children it waited for) and peak RSS.  Throughput ratios are moonflow's
-- over the peer's (> 1: moonflow is faster).
-- Run: build/moonflow bench/io.lua [scale]   (scale 0.1 for a quick run)
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local PROGRAM = os.getenv("MF_PROGRAM") or "build/moonflow"
local PEERS = "bench/io_peers/"

-- {====== The moonflow contenders (run as: moonflow bench/io.lua MODE ...) ======

local function client_http(port, n, c)
  mf.limit("get", c)
  local url = ("http://127.0.0.1:%d/"):format(port)
  local get = mf.task({ name = "get", tags = { "get" } }, function(u)
    local r = mf.http.get(u)
    assert(r.status == 200 and r.body == "hello world\n", r.status)
    return true
  end)
  local urls = {}
  for i = 1, n do urls[i] = url end
  local res = get:map(urls):result()
  print("ok " .. res.n)
end

local function client_exec(n, c)
  if c == 1 then
    for _ = 1, n do assert(mf.exec({ "/bin/true" }).code == 0) end
  else
    mf.limit("exec", c)
    local run = mf.task({ name = "true", tags = { "exec" } }, function()
      return mf.exec({ "/bin/true" }).code
    end)
    local xs = {}
    for i = 1, n do xs[i] = i end
    for _, code in ipairs(run:map(xs):result()) do assert(code == 0) end
  end
  print("ok " .. n)
end

local function client_echo(conns, msgs)
  local message = "ping 0123456789"
  local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    for line in conn:lines() do conn:write(line, "\n") end
  end)
  local client = mf.task({ name = "client" }, function()
    local c = mf.tcp.connect("127.0.0.1", server.port)
    for _ = 1, msgs do
      c:write(message, "\n")
      assert(c:read("l") == message)
    end
    c:close()
    return msgs
  end)
  local xs = {}
  for i = 1, conns do xs[i] = i end
  local total = 0
  for _, n in ipairs(client:map(xs):result()) do total = total + n end
  server:close()
  print("ok " .. total)
end

local mode = arg and arg[1]
if mode == "client-http" then
  return client_http(tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]))
elseif mode == "client-exec" then
  return client_exec(tonumber(arg[2]), tonumber(arg[3]))
elseif mode == "client-echo" then
  return client_echo(tonumber(arg[2]), tonumber(arg[3]))
end

-- }======

-- {====== Measuring ======

local scale = tonumber(mode) or 1

-- Runs argv under measure.py; returns { wall, cpu, rss } (rss in KB).
local function measure(argv, expect)
  local cmd = { "python3", PEERS .. "measure.py" }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = tostring(a) end
  local r = mf.exec(cmd, { check = true, timeout = 900 })
  local wall, cpu, rss, status = r.stdout:match("MEASURE wall=(%S+) cpu=(%S+) rss=(%d+) status=(%-?%d+)")
  assert(wall and tonumber(status) == 0, "failed: " .. table.concat(cmd, " ") .. "\n" .. r.stdout .. r.stderr)
  if expect then
    assert(r.stdout:find(expect, 1, true), "unexpected output of " .. argv[1] .. ": " .. r.stdout)
  end
  return { wall = tonumber(wall), cpu = tonumber(cpu), rss = tonumber(rss) }
end

local function have(program)
  return mf.exec({ "/bin/sh", "-c", "command -v " .. program }).code == 0
end

local function row(name, m, n, unit)
  print(("  %-26s %10.0f %s/s  %8.3f s  %8.1f us CPU/%s  %7.1f MB peak RSS"):format(
    name, n / m.wall, unit, m.wall, m.cpu / n * 1e6, unit, m.rss / 1024))
end

local function ratio(label, a, b)
  print(("  %-40s %6.2fx throughput  %6.2fx CPU per request  %6.2fx peak RSS"):format(
    label, b.wall / a.wall, b.cpu / a.cpu, b.rss / a.rss))
end

-- A server process for the duration of fn(port): a run that execs it and
-- is cancelled at the end (which kills its process group).
local function with_server(argv, fn)
  local ready, set_port = mf.promise("server port")
  local server = mf.task({ name = "server" }, function()
    mf.exec(argv, { on_line = function(line)
      local port = line:match("PORT (%d+)")
      if port then set_port(tonumber(port)) end
    end })
  end):submit()
  local port = ready:result(30)
  local ok, err = pcall(fn, port)
  server:cancel()
  if not ok then error(err, 0) end
end

-- }======

print(("bench/io.lua (scale %g); ratios are the peer's figure over moonflow's:"):format(scale))
print("  throughput > 1: moonflow is faster; CPU and RSS > 1: moonflow uses less")

-- {====== HTTP ======

local N_HTTP, C_HTTP = math.floor(10000 * scale), 100
local server_bin = os.tmpname()
if mf.exec({ "cc", "-O2", "-o", server_bin, PEERS .. "http_server.c" }).code == 0 then
  with_server({ server_bin }, function(port)
    print(("\nHTTP: %d GETs of a local HTTP server, %d in flight"):format(N_HTTP, C_HTTP))
    local m = measure({ PROGRAM, "bench/io.lua", "client-http", port, N_HTTP, C_HTTP }, "ok " .. N_HTTP)
    row("moonflow (mf.http.get)", m, N_HTTP, "req")
    local py = measure({ "python3", PEERS .. "asyncio_get.py", port, N_HTTP, C_HTTP }, "ok " .. N_HTTP)
    row("python asyncio", py, N_HTTP, "req")
    local curl
    if have("curl") then
      local config = os.tmpname()
      local f = assert(io.open(config, "w"))
      for _ = 1, N_HTTP do
        f:write(('url = "http://127.0.0.1:%d/"\noutput = "/dev/null"\n'):format(port))
      end
      f:close()
      curl = measure({ "curl", "-s", "--fail", "--parallel", "--parallel-max", C_HTTP, "-K", config })
      os.remove(config)
      row("curl --parallel", curl, N_HTTP, "req")
    end
    ratio("moonflow vs python asyncio", m, py)
    if curl then ratio("moonflow vs curl --parallel", m, curl) end
  end)
else
  print("\nHTTP: skipped (no C compiler for the server)")
end
os.remove(server_bin)

-- }======

-- {====== exec ======

local N_EXEC = math.floor(1000 * scale)
print(("\nexec: %d runs of /bin/true"):format(N_EXEC))
local seq = measure({ PROGRAM, "bench/io.lua", "client-exec", N_EXEC, 1 }, "ok")
row("moonflow, one after another", seq, N_EXEC, "exec")
local par = measure({ PROGRAM, "bench/io.lua", "client-exec", N_EXEC, 16 }, "ok")
row("moonflow, 16 at a time", par, N_EXEC, "exec")
local shell = measure({ "/bin/sh", "-c",
  ("i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); done"):format(N_EXEC) })
row("shell loop (/bin/sh)", shell, N_EXEC, "exec")
ratio("moonflow one after another vs shell loop", seq, shell)
ratio("moonflow 16 at a time vs shell loop", par, shell)

-- }======

-- {====== TCP echo ======

local CONNS, MSGS = 100, math.floor(1000 * scale)
print(("\necho: %d round trips over %d connections (server and clients in one process)")
  :format(CONNS * MSGS, CONNS))
local echo = measure({ PROGRAM, "bench/io.lua", "client-echo", CONNS, MSGS }, "ok " .. CONNS * MSGS)
row("moonflow (mf.tcp)", echo, CONNS * MSGS, "trip")
if have("node") then
  local node = measure({ "node", PEERS .. "echo.js", CONNS, MSGS }, "ok " .. CONNS * MSGS)
  row("node (net)", node, CONNS * MSGS, "trip")
  ratio("moonflow vs node", echo, node)
end

-- }======
