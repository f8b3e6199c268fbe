-- Known item 2: a plain table nested 36+ levels (150 here) passed to submit (with a
-- Future at the bottom, so that it is resolved) overflows the Lua stack in
-- scan_table / resolve_table (no lua_checkstack per level): SIGSEGV, ASan
-- SEGV in lua_pushboolean from scan_table.
-- Expected: the run gets the table with the Future replaced, or a
-- UsageError for nesting beyond a documented depth.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function(x) return x end)
local deep = { t:submit(1) }
for _ = 2, 150 do deep = { deep } end
print(pcall(function() return t:submit(deep):result() end))
