-- as_completed: handle results in the order the runs finish, not the order
-- they were submitted.
local mf = require "moonflow"

local download = mf.task({ name = "download" }, function(file, seconds)
  mf.sleep(seconds)                    -- distinct sleeps: a fixed finish order
  return file .. " (" .. math.floor(seconds * 1000) .. " ms)"
end)

local futures = {
  download:submit("a.csv", 0.45),
  download:submit("b.csv", 0.15),
  download:submit("c.csv", 0.3),
}

-- The iterator yields each future once, as soon as it is final.
for fut in mf.as_completed(futures) do
  print("finished " .. fut.name .. ": " .. fut:result())
end

-- A FutureList from map works too, and so does a timeout: futures not done
-- in time raise a Timeout error from the iterator.
local list = download:map({ "x", "y", "z" }, { 60, 0.005, 60 })
local ok, err = pcall(function()
  for fut in mf.as_completed(list, 0.5) do
    print("in time: " .. fut:result())
  end
end)
print("timed out: " .. tostring(not ok) .. ", " .. tostring(err))
for _, fut in ipairs(list) do fut:cancel() end   -- we no longer need them
