-- I/O inside runs: no file descriptor outlives its run (api.md, "I/O inside
-- runs").  10,000 runs open a connection, a file or a process and end
-- every way -- completed, failed, timed out, cancelled -- none of them
-- closing what it opened; the count of open descriptors (/proc/self/fd) is
-- the same before and after.  (Under the sanitizers the same runs show no
-- leak.)
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local peers = require "peers.peers"
local mf, lu = h.mf, h.lu

local RUNS = 10000
local ENV = peers.child_env()

TestHygiene = {}

function TestHygiene:test_ten_thousand_runs_ending_every_way_leave_no_descriptor()
  local dir = peers.tmpdir()
  local file = dir .. "/lines"
  mf.fs.write(file, ("a line\n"):rep(1000))
  -- The server: each connection is a run of its own (it echoes a line, or
  -- waits for the client's end).
  local handling = 0
  local function handler(conn)
    handling = handling + 1
    local line = conn:read("l")
    if line == "echo" then conn:write("echo\n") end
    conn:read("a")
    handling = handling - 1
  end
  local server = mf.tcp.listen("127.0.0.1", 0, handler)

  -- What a run opens, and where it parks on it.
  local open = {
    conn = function(park)
      local c = mf.tcp.connect("127.0.0.1", server.port)
      c:write(park and "silent\n" or "echo\n")
      if park then return c:read("l") end -- nobody answers
      assert(c:read("l") == "echo")
    end,
    file = function(park)
      for line in mf.fs.lines(file) do
        assert(line == "a line")
        if park then mf.sleep(600) end
        return -- the file stays open: the run's end closes it
      end
    end,
    process = function(park)
      local r = mf.exec(park and { "sleep", "600" } or { "true" }, { env = ENV })
      assert(r.code == 0)
    end,
  }
  -- Processes are one run in six: a fork is dear (more so under the
  -- sanitizers), connections and files are cheap.
  local kinds = { "conn", "file", "conn", "file", "conn", "process" }

  -- Each way to end: the body, and the state the run must end in.
  local body = mf.task({ name = "body" }, function(kind, way, opened)
    if way == "timeout" or way == "cancel" then
      if opened then opened() end
      open[kind](true)
    else
      open[kind](false)
      if way == "fail" then error("failed on purpose", 0) end
    end
  end)
  local timed = body:with({ name = "timed", timeout = 0.05 })
  mf.limit("hygiene", 64)
  local ways = { "complete", "fail", "timeout", "cancel" }
  local function way_of(i) return ways[(i // #kinds) % 4 + 1] end -- every kind every way
  local case = mf.task({ name = "case", tags = { "hygiene" } }, function(i)
    local kind = kinds[i % #kinds + 1]
    local way = way_of(i)
    local fut
    if way == "timeout" then
      fut = timed:submit(kind, way)
    elseif way == "cancel" then
      local started, go = mf.promise()
      fut = body:submit(kind, way, go)
      started:wait()
      fut:cancel()
    else
      fut = body:submit(kind, way)
    end
    fut:wait()
    return way .. " " .. fut:state().name
  end)

  -- Warm up: libuv's own descriptors (the signal pipe of child processes)
  -- are made at first use.
  mf.task(function()
    for kind in pairs(open) do open[kind](false) end
  end)()
  while handling > 0 do mf.sleep(0.01) end
  server:close()
  collectgarbage()
  local before = peers.fd_count(mf)
  server = mf.tcp.listen("127.0.0.1", 0, handler)

  local xs = {}
  for i = 1, RUNS do xs[i] = i end
  local outcomes = case:map(xs):result()
  local counts, expected = {}, {}
  local final = { complete = "Completed", fail = "Failed", timeout = "TimedOut",
                  cancel = "Cancelled" }
  for i, o in ipairs(outcomes) do
    counts[o] = (counts[o] or 0) + 1
    local want = way_of(i) .. " " .. final[way_of(i)]
    expected[want] = (expected[want] or 0) + 1
  end
  lu.assertEquals(counts, expected)
  -- The server's runs end once their clients' connections closed.
  for _ = 1, 6000 do
    if handling == 0 then break end
    mf.sleep(0.01)
  end
  lu.assertEquals(handling, 0)
  server:close()
  mf.sleep(0.01)
  collectgarbage()
  lu.assertEquals(peers.fd_count(mf), before)
  peers.cleanup()
end

h.run()
