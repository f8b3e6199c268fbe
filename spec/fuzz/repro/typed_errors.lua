-- Known items 19/20: ill-typed arguments give plain strings ("bad
-- argument", "attempt to index/call"), not UsageError tables.  Each line
-- below should print "false  UsageError: ...".
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() return 1 end)
local f, l = t:submit(), t:map({ 1 })
local function show(label, ok, err)
  print(label, ok, type(err) == "table" and err.kind or ("PLAIN: " .. tostring(err)))
end
show("fut:wait('x')", pcall(f.wait, f, "x"))
show("fut:result(true)", pcall(f.result, f, true))
show("fut:add_done_callback('x')", pcall(f.add_done_callback, f, "x"))
show("mf.sleep('x')", pcall(mf.sleep, "x"))
show("mf.sleep()", pcall(mf.sleep))
show("mf.result(5)", pcall(mf.result, 5))
show("mf.wait({f}, {})", pcall(mf.wait, { f }, {}))
show("t.run(5)", pcall(t.run, 5))
show("FutureList.wait(5)", pcall(l.wait, 5))
show("FutureList.result(nil)", pcall(l.result, nil))
show("State.is_final(5)", pcall(f:state().is_final, 5))
show("t:run() with return_state", pcall(function() return t:with({ return_state = true }):run() end))
show("mf.limit('x', 0) accepted", pcall(mf.limit, "x", 0))
