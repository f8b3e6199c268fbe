-- Known item 7: a task with 32+ tags: set_tags (bindings/task.c) fills a
-- 32-slot array and leaves the value of the loop's last lua_rawgeti on the
-- stack when it stops at 32: submit then returns that (a tag string) or
-- another stale value instead of the Future -- the fuzzer saw submit return
-- a string, a boolean, nil, a table, even an error table.
-- Expected: all 40 tags are honoured (or a UsageError at definition), and
-- submit returns a Future.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local tags = {}
for i = 1, 40 do tags[i] = "tag" .. i end
local t = mf.task({ tags = tags }, function(x) return x end)
local f = t:submit(1)
print("submit returned", type(f), f)
print(pcall(function() return f:result() end))
mf.run() -- (so that no run is left when the state closes: known item 5)
