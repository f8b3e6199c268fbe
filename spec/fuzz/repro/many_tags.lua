-- Known item 7: a task with 32+ tags: set_tags fills a 32-slot array and
-- leaves the strings it did not take on the Lua stack (the loop's
-- lua_rawgeti is not popped when n reaches 32): the stack is corrupted.
-- Expected: all 40 tags are honoured (or a UsageError), nothing corrupted.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local tags = {}
for i = 1, 40 do tags[i] = "tag" .. i end
mf.limit("tag40", 1)
local t = mf.task({ tags = tags }, function(x) return x end)
print(pcall(function() return t:submit(1):result(), t(2), t:map({ 3, 4 }):result()[2] end))
mf.run() -- (so that no run is left when the state closes: known item 5)
