-- Known item 20 (names cut at 255) and a NEW variant: a name with an
-- embedded "\0" is cut at the NUL (C strings): the run of task "\0nul\0"
-- is named "-1".
-- Expected: run names are "<name>-<n>" in full.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
for _, name in ipairs { string.rep("n", 300), "\0nul\0", "a\0b" } do
  local f = mf.task({ name = name }, function() end):submit()
  print(#name, #f.name, f.name == name .. "-1")
end
mf.run() -- (so that no run is left when the state closes: known item 5)
