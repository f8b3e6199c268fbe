-- Known item 3: a FutureList changed while it is waited on -- a done
-- callback that sets l[2] = "x" or appends futures -- crashes (ASan:
-- use of a freed or out-of-bounds runs array in wait_all_k /
-- list_result_k, which read the list again after the wait).
-- Expected: the list is read once, when the wait starts; or a UsageError.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function(d) mf.sleep(d) return d end)
local l = t:map({ 0.001, 0.002, 0.003 })
l[1]:add_done_callback(function() l[2] = "x" end)
print(pcall(mf.wait, l))
local l2 = t:map({ 0.001, 0.002 })
l2[1]:add_done_callback(function() for i = 3, 60 do l2[i] = t:submit(0) end end)
print(pcall(l2.result, l2))
