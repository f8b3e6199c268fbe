-- Item 20 family: mf.result(x) does no check and calls x:result(...): with
-- the module itself, mf.result(mf) tail-calls itself for ever (a hang at
-- 100% CPU, no error).
-- Expected: UsageError "mf.result expects a Future".
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
print(pcall(mf.result, mf))
