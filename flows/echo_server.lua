-- echo_server: a line server in ten lines.  Each connection is handled by
-- a run of its own, so a slow client never holds up the others; the
-- clients below are runs too, talking to it at the same time.
local mf = require "moonflow"

local server = mf.tcp.listen("127.0.0.1", 0, function(conn)
  for line in conn:lines() do
    if line == "bye" then break end
    conn:write(line:upper(), "\n")
  end
  conn:write("bye\n")
end) -- the connection is closed when its run ends

local client = mf.task({ name = "client" }, function(words)
  local conn = mf.tcp.connect("127.0.0.1", server.port)
  local replies = {}
  for _, word in ipairs(words) do
    conn:write(word, "\n")
    replies[#replies + 1] = conn:read("l")
  end
  conn:write("bye\n")
  replies[#replies + 1] = conn:read("l")
  return table.concat(replies, " ")
end)

local talks = client:map(mf.quote({
  { "hello", "world" },
  { "one", "two", "three" },
  { "moonflow" },
}))
for i, reply in ipairs(talks:result()) do
  print(("client %d heard: %s"):format(i, reply))
end
server:close()
