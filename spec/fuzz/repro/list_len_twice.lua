-- NEW (same family as list_len_overflow.lua): FutureList.result(t) sizes
-- its runs array from luaL_len(t) in list_result, then reads luaL_len(t)
-- again in list_result_k and walks that many entries: a __len that answers
-- 2 and then 100 makes first_failure read past the array (ASan:
-- heap-buffer-overflow in first_failure, bindings/future.c; UBSan:
-- misaligned 0xbebebebebebebebe in mf_run_is_final).  Found with no list
-- changed by a callback and no wait (all runs final already).
-- Expected: the length is read once (raw); a self that is not a
-- FutureList is a UsageError.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() return 1 end)
local list = t:map({ 1 })
list:wait()
local calls = 0
local fake = setmetatable({ t:submit(), t:submit() }, { __len = function()
  calls = calls + 1
  return calls == 1 and 2 or 100
end })
mf.wait({ fake[1], fake[2] })
print(pcall(list.result, fake))
