-- submit_wait_result: submit an async task, do other work while it runs,
-- then wait for it and take its result.
local mf = require "moonflow"

-- A task is a coroutine: mf.sleep parks it without blocking the loop.
local fetch_user = mf.task({ name = "fetch_user" }, function(id)
  mf.sleep(0.05)                       -- pretend to call an API
  return { id = id, name = "user" .. id }, "from-cache=false"
end)

-- submit never blocks: it returns a Future at once.
local fut = fetch_user:submit(42)
print("submitted " .. fut.name .. ", done yet? " .. tostring(fut:done()))

-- The main chunk is a run too, so it can wait here while the task sleeps.
print("wait returned " .. tostring(fut:wait()))
print("state: " .. fut:state().type)

-- result() gives every value the task returned.
local user, note = fut:result()
print(string.format("result: id=%d name=%s (%s)", user.id, user.name, note))

-- A wait with a timeout returns false instead of waiting forever.
local slow = fetch_user:submit(7)
print("finished within 0.01 s? " .. tostring(slow:wait(0.01)))
print("finished within 1 s? " .. tostring(slow:wait(1)))
print("slow result: " .. slow:result().name)

-- Calling a task directly is submit(...):result() in one step.
print("direct call: " .. fetch_user(1).name)
