-- NEW (api fuzzer, group runners): runner[k] with a key that is not a
-- string -- a table, nil, a Future -- raised luaL_checkstring's plain
-- "bad argument #2 to 'index' (string expected, got table)" from
-- runner_index (bindings/runners.c), an untyped error; a number key was
-- turned into a string in place.
-- Expected: like any other unknown field, nil.
--   MF_MODULE_DIR=build lua5.4 spec/fuzz/repro/runner_index_junk.lua
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
for _, runner in ipairs { mf.runners.coroutines(), mf.runners.threads { workers = 1 } } do
  for _, key in ipairs { {}, true, 1, 2.5, mf.task(print) } do
    local ok, v = pcall(function() return runner[key] end)
    assert(ok, "runner[" .. type(key) .. "] raised " .. tostring(v))
    assert(v == nil, "runner[" .. type(key) .. "] is " .. tostring(v))
  end
  assert(pcall(function() return runner[nil] end))
  assert(runner.kind == "coroutines" or runner.kind == "threads")
end
print("ok")
