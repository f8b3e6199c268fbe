-- tcp_server.lua -- the flow examples/tcp_server.c submits for each
-- "sum N1 N2 ..." request: one task run per number, each doubling its
-- number, and the flow sums the doubles ("sum 1 2 3" answers "ok 12").
--
-- The server loads this file once, on its own engine (mf_lua_attach), and
-- calls the global flow sum_flow by name with mf_lua_call_flow, one
-- argument: the array of numbers, already parsed and checked to be integers
-- by the C side.  What the flow returns, or the error it raises, is the
-- answer line; the --plain mode of the server computes the same in C, so
-- both modes must agree on every answer, errors included.
local mf = require "moonflow"

-- |N| above this is refused, so that 1000 doubled numbers (the server's
-- per-line maximum) still sum without overflowing a 64-bit integer.  The
-- C side (--plain) uses the same bound and the same message.
local LIMIT = 1000000000000000 -- 10^15

local double = mf.task({ name = "double" }, function(x)
  if x > LIMIT or x < -LIMIT then
    -- level 0: the message is the answer, without a "file:line:" prefix
    error("out of range: " .. x, 0)
  end
  return 2 * x
end)

sum_flow = mf.flow({ name = "sum" }, function(numbers)
  -- Fail-fast: the first task to fail (the first out-of-range number, as
  -- runs start in order) makes result() raise, and the flow fails with
  -- that error unchanged; its other runs are cancelled.
  local doubled = double:map(numbers):result()
  local total = 0
  for i = 1, doubled.n do
    total = total + doubled[i]
  end
  return total
end)
