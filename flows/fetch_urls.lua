-- fetch_urls: fetch URLs concurrently, at most three at a time (a limit),
-- and print each status code as its response comes.
-- moonflow flows/fetch_urls.lua [URL...]; without URLs it starts a small
-- local HTTP server (a moonflow server: each connection a run) and
-- fetches from it.
local mf = require "moonflow"

local urls, server = {}, nil
for i = 1, arg and #arg or 0 do urls[i] = arg[i] end
if #urls == 0 then
  -- GET /status/NNN answers with that status.
  server = mf.tcp.listen("127.0.0.1", 0, function(conn)
    local path = conn:read("l"):match("^GET (%S+)")
    repeat local header = conn:read("l") until header == "" or header == "\r" or not header
    local status = tonumber(path:match("/status/(%d+)")) or 404
    conn:write(("HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
      :format(status))
  end)
  for _, status in ipairs { 200, 200, 404, 200, 500, 301, 200, 503 } do
    urls[#urls + 1] = ("http://127.0.0.1:%d/status/%d"):format(server.port, status)
  end
end

mf.limit("http", 3)
local fetch = mf.task({ name = "fetch", tags = { "http" } }, function(url)
  return url, mf.http.get(url, { timeout = 30 }).status
end)

local ok, failed = 0, 0
for fut in mf.as_completed(fetch:map(urls)) do
  local url, status = fut:result()
  print(status, (url:gsub("^http://127%.0%.0%.1:%d+", "")))
  if status < 400 then ok = ok + 1 else failed = failed + 1 end
end
print(("%d fetched: %d ok, %d failed"):format(#urls, ok, failed))
if server then server:close() end
