-- I/O inside runs: mf.http (api.md, "I/O inside runs"), through libcurl
-- on the engine's loop, against python3 -m http.server and a small python3
-- server for slow, never-answering and redirecting endpoints
-- (spec/peers/http_peer.py).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local peers = require "peers.peers"
local mf, lu = h.mf, h.lu

local static, peer, base, static_dir

local function io_error(code, fn, ...)
  local err = h.raises_kind("IOError", fn, ...)
  lu.assertEquals(err.code, code, tostring(err))
  return err
end

-- Runs fn until it returns true, for up to 30 s (the bound only catches
-- a hang).
local function eventually(fn)
  for _ = 1, 3000 do
    if fn() then return true end
    mf.sleep(0.01)
  end
  return false
end

local function url(path) return base .. path end

TestHttp = {}

function TestHttp.setupClass()
  static_dir = peers.tmpdir()
  local f = assert(io.open(static_dir .. "/hello.txt", "w"))
  f:write("hello from python\n")
  f:close()
  static = peers.start("static", static_dir)
  peer = peers.start("http")
  base = "http://127.0.0.1:" .. peer.port
end

function TestHttp.teardownClass()
  static:stop()
  peer:stop()
  peers.cleanup()
end

function TestHttp:test_get_from_an_independent_server()
  local r = mf.http.get("http://127.0.0.1:" .. static.port .. "/hello.txt")
  lu.assertEquals(r.status, 200)
  lu.assertEquals(r.body, "hello from python\n")
  lu.assertEquals(r.headers["content-type"], "text/plain")
  lu.assertEquals(r.headers["content-length"], "18")
  local missing = mf.http.get("http://127.0.0.1:" .. static.port .. "/missing")
  lu.assertEquals(missing.status, 404) -- any status is a response
end

function TestHttp:test_request_with_method_headers_and_body()
  local r = mf.http.request {
    method = "put", url = url("/echo/x"), headers = { ["X-Test"] = "yes" }, body = "payload",
  }
  lu.assertEquals(r.status, 200)
  lu.assertEquals(r.body, "PUT /echo/x\nyes\npayload")
  r = mf.http.post(url("/echo/p"), ("b"):rep(100000), { headers = { ["X-Test"] = 1 } })
  lu.assertEquals(r.body, "POST /echo/p\n1\n" .. ("b"):rep(100000))
  r = mf.http.request { method = "HEAD", url = url("/status/204") }
  lu.assertEquals(r.status, 204)
  lu.assertEquals(r.body, "")
  lu.assertEquals(mf.http.get(url("/status/503")).status, 503)
end

function TestHttp:test_response_headers_are_lower_case_and_repeats_joined()
  local r = mf.http.get(url("/headers"))
  lu.assertEquals(r.headers["x-mixed-case"], "Value")
  lu.assertEquals(r.headers["set-cookie"], "a=1, b=2")
  lu.assertNil(r.headers["X-Mixed-Case"])
end

function TestHttp:test_redirects_are_responses_unless_followed()
  local r = mf.http.get(url("/redirect/3"))
  lu.assertEquals(r.status, 302)
  lu.assertEquals(r.headers.location, "/redirect/2")
  r = mf.http.get(url("/redirect/3"), { follow = true })
  lu.assertEquals(r.status, 200)
  lu.assertEquals(r.body, "landed")
  lu.assertEquals(r.url, url("/redirect/0"))
  lu.assertNil(r.headers.location) -- the headers are the last response's
  local err = io_error("ELOOP", mf.http.get, url("/loop"), { follow = true })
  lu.assertStrContains(err.message, "127.0.0.1:" .. peer.port)
end

function TestHttp:test_a_big_body()
  local r = mf.http.get(url("/big/5000000"))
  lu.assertEquals(#r.body, 5000000)
end

function TestHttp:test_transport_failures_are_io_errors_naming_host_and_port()
  local probe = mf.tcp.listen("127.0.0.1", 0, function() end)
  local port = probe.port
  probe:close()
  local err = io_error("ECONNREFUSED", mf.http.get, "http://127.0.0.1:" .. port .. "/x")
  lu.assertStrContains(err.message, "127.0.0.1:" .. port)
  lu.assertEquals(err.url, "http://127.0.0.1:" .. port .. "/x")
  err = io_error("ENETUNREACH", mf.http.get, "http://224.0.0.1/")
  lu.assertStrContains(err.message, "224.0.0.1:80")
  err = io_error("ETIMEDOUT", mf.http.get, url("/hang"), { timeout = 0.3 })
  lu.assertStrContains(err.message, "127.0.0.1:" .. peer.port)
  -- A listener that never completes the handshake: the connect times out.
  local full = peers.start("full")
  io_error("ETIMEDOUT", mf.http.get, "http://127.0.0.1:" .. full.port .. "/", { timeout = 0.3 })
  full:stop()
  -- The server promised 100 bytes and closed after 10.
  h.raises_kind("IOError", mf.http.get, url("/close"))
  err = h.raises_kind("IOError", mf.http.get, "http://no-such-host.invalid/")
  lu.assertStrContains(err.code, "EAI_")
end

function TestHttp:test_https_goes_through_curl_tls()
  lu.skipIf(not os.execute("command -v openssl >/dev/null"), "no openssl to make a certificate")
  local dir = peers.tmpdir()
  assert(os.execute(("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
    .. "-subj /CN=127.0.0.1 -keyout %s/key.pem -out %s/cert.pem 2>/dev/null"):format(dir, dir)))
  local tls = peers.start("https", dir .. "/cert.pem", dir .. "/key.pem")
  -- A self-signed certificate no CA vouches for: the handshake fails.
  local err = io_error("EPROTO", mf.http.get, "https://127.0.0.1:" .. tls.port .. "/status/200")
  lu.assertStrContains(err.message, "127.0.0.1:" .. tls.port)
  lu.assertStrContains(err.message:lower(), "certificate")
  tls:stop()
end

function TestHttp:test_concurrent_requests_under_a_limit()
  mf.limit("http-spec", 8)
  local get = mf.task({ tags = { "http-spec" } }, function(i)
    local r = mf.http.get(url(("/slow/%d"):format(i % 5)))
    return r.status
  end)
  local xs = {}
  for i = 1, 60 do xs[i] = i end
  local got = get:map(xs):result()
  for i = 1, 60 do lu.assertEquals(got[i], 200) end
end

function TestHttp:test_a_timed_out_or_cancelled_run_aborts_its_transfer()
  local function closed_hangs()
    local stats = mf.http.get(url("/stats")).body
    return tonumber(stats:match("hang_closed=(%d+)"))
  end
  local before = closed_hangs()
  local stuck = mf.task({ timeout = 0.3 }, function() return mf.http.get(url("/hang")) end)
  lu.assertEquals(stuck:run().name, "TimedOut")
  -- The transfer left the multi handle: its connection closed.
  lu.assertTrue(eventually(function() return closed_hangs() > before end))
  before = closed_hangs()
  local fut = mf.task(function() return mf.http.get(url("/hang")) end):submit()
  mf.sleep(0.1)
  fut:cancel()
  lu.assertEquals(fut:state().type, "CANCELLED")
  lu.assertTrue(eventually(function() return closed_hangs() > before end))
end

function TestHttp:test_wrong_arguments_are_usage_errors()
  h.raises_kind("UsageError", mf.http.request, "http://x/")
  h.raises_kind("UsageError", mf.http.request, {})
  h.raises_kind("UsageError", mf.http.get, "not a url")
  h.raises_kind("UsageError", mf.http.get, "ftp://127.0.0.1/")
  h.raises_kind("UsageError", mf.http.get, "file:///etc/passwd")
  h.raises_kind("UsageError", mf.http.get, url("/"), { timeout = -1 })
  h.raises_kind("UsageError", mf.http.get, url("/"), { headers = { 1, 2 } })
  h.raises_kind("UsageError", mf.http.post, url("/"), {})
  h.raises_kind("UsageError", mf.http.request, { url = url("/"), method = 42 })
end

-- libcurl is loaded by the first request, not at start (curl_api.c): a
-- fresh process of the interpreter running this spec shows it in its
-- memory map only after a request.  A library that cannot be loaded
-- ($MOONFLOW_LIBCURL) makes each request an IOError ELIBACC that says so.
local function fresh_process(script, env)
  local interpreter = arg[-1]
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write("if os.getenv('MF_MODULE_DIR') then package.cpath = os.getenv('MF_MODULE_DIR')"
    .. " .. '/?.so;' .. package.cpath end\n", script)
  f:close()
  local out = h.capture((env or "") .. " MOONFLOW_STORE=off " .. h.shell_quote(interpreter)
    .. " " .. path .. " 2>&1")
  os.remove(path)
  return out
end

local MAPPED = [[
local mf = require "moonflow"
local function mapped()
  for line in io.lines("/proc/self/maps") do
    if line:find("libcurl", 1, true) then return "mapped" end
  end
  return "not mapped"
end
print("before: " .. mapped())
local ok, err = pcall(mf.http.get, ...)
print("request: " .. (ok and "answered" or tostring(err.code)))
print("after: " .. mapped())
]]

function TestHttp:test_libcurl_is_loaded_by_the_first_request()
  local out = fresh_process((MAPPED:gsub("%.%.%.", string.format("%q", url("/echo/x")), 1)))
  lu.assertStrContains(out, "before: not mapped\nrequest: answered\nafter: mapped\n")
end

function TestHttp:test_a_libcurl_that_cannot_be_loaded_is_an_io_error()
  local out = fresh_process((MAPPED:gsub("%.%.%.", string.format("%q", url("/echo/x")), 1)),
    "MOONFLOW_LIBCURL=/nonexistent/libcurl.so.4")
  lu.assertStrContains(out, "before: not mapped\nrequest: ELIBACC\nafter: not mapped\n")
  local err = fresh_process([[
local mf = require "moonflow"
local ok, err = pcall(mf.http.get, "http://127.0.0.1:1/")
print(err.kind, err.message)
ok, err = pcall(mf.http.get, "http://127.0.0.1:1/")
print(err.kind, err.message)
]], "MOONFLOW_LIBCURL=/nonexistent/libcurl.so.4")
  lu.assertStrContains(err, "IOError\tmf.http.get http://127.0.0.1:1/: cannot load libcurl: "
    .. "/nonexistent/libcurl.so.4: cannot open shared object file")
  local _, lines = err:gsub("cannot load libcurl", "")
  lu.assertEquals(lines, 2, err) -- every request, not only the first
end

h.run()
