-- spec/peers/peers.lua: real peers for the I/O specs, started and stopped
-- by the specs themselves, on loopback only.
--
--   local peers = require "peers.peers"
--   local http = peers.start("http")   -- spec/peers/http_peer.py
--   ... http.port ...
--   http:stop()
local M = {}

-- Sanitizer runs preload their runtime into stock lua5.4: the programs
-- the specs start must not get it (they would report their own leaks).
local ENV = "env -u LD_PRELOAD "

-- Starts cmd, which prints its port on its first line ("PORT n", or
-- python's "Serving HTTP on ... port n"); returns { port, pid, stop }.
local function start_command(cmd)
  local pipe = assert(io.popen("echo PID $$; exec " .. ENV .. cmd, "r"))
  local pid = tonumber(pipe:read("l"):match("PID (%d+)"))
  local line = pipe:read("l")
  local port = line and tonumber(line:match("[Pp][Oo][Rr][Tt] (%d+)"))
  local peer = { port = port, pid = pid }
  function peer.stop()
    if peer.stopped then return end
    peer.stopped = true
    os.execute("kill " .. pid .. " 2>/dev/null")
    pipe:close()
  end
  -- A peer a failed test never stopped is killed when collected: closing
  -- its pipe would otherwise wait for it forever (marked after the pipe,
  -- this finalizer runs before the pipe's).
  setmetatable(peer, { __gc = function()
    if not peer.stopped then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  end })
  if not port then
    peer.stop()
    error("peer did not start: " .. cmd .. " said " .. tostring(line))
  end
  return peer
end

-- "http": http_peer.py; "https": the same with TLS (needs cert and key);
-- "static": python3 -m http.server serving dir; "echo", "full": tcp_peer.py.
function M.start(kind, a, b)
  if kind == "http" then
    return start_command("python3 -u spec/peers/http_peer.py")
  elseif kind == "https" then
    return start_command("python3 -u spec/peers/http_peer.py --tls " .. a .. " " .. b)
  elseif kind == "static" then
    return start_command("python3 -u -m http.server 0 --bind 127.0.0.1 --directory "
      .. a .. " 2>/dev/null")
  else
    return start_command("python3 -u spec/peers/tcp_peer.py " .. kind)
  end
end

-- A fresh temporary directory (removed by M.cleanup).
local dirs = {}
function M.tmpdir()
  local p = io.popen(ENV .. "mktemp -d /tmp/mf-io.XXXXXX")
  local dir = p:read("l")
  p:close()
  dirs[#dirs + 1] = dir
  return dir
end

function M.cleanup()
  for _, dir in ipairs(dirs) do os.execute("rm -rf '" .. dir .. "'") end
  dirs = {}
end

-- The environment for programs mf.exec starts in specs: the process's
-- own, without the sanitizer's preload; nil when there is none (then
-- mf.exec's default, the inherited environment, is the same).
function M.child_env()
  if not os.getenv("LD_PRELOAD") then return nil end
  local f = io.open("/proc/self/environ", "rb")
  local env = {}
  for entry in f:read("a"):gmatch("[^%z]+") do
    local k, v = entry:match("^([^=]+)=(.*)$")
    if k and k ~= "LD_PRELOAD" then env[k] = v end
  end
  f:close()
  return env
end

-- Open file descriptors of this process (with mf.fs.list: the listing's
-- own descriptor is counted every time alike).
function M.fd_count(mf)
  return #mf.fs.list("/proc/self/fd")
end

return M
