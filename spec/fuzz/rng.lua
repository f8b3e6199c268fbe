-- spec/fuzz/rng.lua: a small deterministic generator (splitmix64) for the
-- fuzzer.  Its own, not math.random: moonflow draws retry jitter from
-- math.random, which would shift the fuzzer's sequence with the timing of
-- retries.  Each case, and each function the fuzzer makes, gets its own
-- generator derived from the seed, so a case replays alone.
local Rng = {}
Rng.__index = Rng

local GOLDEN = 0x9E3779B97F4A7C15

local function mix(z)
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

-- A generator from any number of integers (seed, case, ...).
function Rng.new(...)
  local s = 0x243F6A8885A308D3
  for i = 1, select("#", ...) do
    s = mix(s ~ math.tointeger((select(i, ...)) // 1)) + GOLDEN
  end
  return setmetatable({ s = s }, Rng)
end

function Rng:next()
  self.s = self.s + GOLDEN
  return mix(self.s)
end

-- A float in [0, 1).
function Rng:float()
  return (self:next() >> 11) * 0x1p-53
end

-- An integer in [a, b].
function Rng:int(a, b)
  return a + math.floor(self:float() * (b - a + 1))
end

function Rng:chance(p) return self:float() < p end

function Rng:pick(list) return list[self:int(1, #list)] end

-- Picks from { {weight, value}, ... }.
function Rng:weighted(choices)
  local total = 0
  for _, c in ipairs(choices) do total = total + c[1] end
  local x = self:float() * total
  for _, c in ipairs(choices) do
    x = x - c[1]
    if x < 0 then return c[2] end
  end
  return choices[#choices][2]
end

-- A child generator: the same parent always gives the same children.
function Rng:fork(...)
  return Rng.new(self:next(), ...)
end

return Rng
