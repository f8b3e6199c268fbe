-- spec/fuzz/make_corpus.lua: writes the seed corpus of the codec's fuzz
-- target (spec/fuzz/codec_corpus/), one encoded value of each kind.
--   MF_MODULE_DIR=build lua5.4 spec/fuzz/make_corpus.lua
--   (or: build/moonflow spec/fuzz/make_corpus.lua)
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
require "moonflow"
local core = require "moonflow.core"

-- the metatables codec_fuzz.c registers
local plain = {}
core.codec_register("fuzz.Plain", plain)
local box = {}
core.codec_register("fuzz.Box", box, function(v) return v[1] end,
  function(p) return setmetatable({ p }, box) end)

local dir = "spec/fuzz/codec_corpus/"
local seeds = {}
local function seed(name, value, opts) seeds[#seeds + 1] = { name, value, opts } end

seed("nil", nil)
seed("true", true)
seed("false", false)
for _, i in ipairs { 0, 127, 128, -1, -128, -129, 32767, -40000, 2 ^ 31 | 0,
                     math.mininteger, math.maxinteger } do
  seed("int_" .. tostring(i), i)
end
for name, f in pairs { half = 0.5, negzero = -0.0, nan = 0 / 0, inf = math.huge,
                       neginf = -math.huge, tiny = 5e-324, one = 1.0 } do
  seed("float_" .. name, f)
end
seed("string_empty", "")
seed("string_short", "ab")
seed("string_ref", "abc")
seed("string_zeros", "a\0b\0\255")
seed("string_long", string.rep("xyz", 700))
seed("array", { 1, 2, 3, "four", 5.5, true })
seed("record", { id = 7, name = "alice", score = 1.5, ok = false })
seed("mixed", { 1, 2, [10] = 10, x = { y = { z = "deep" } }, [1.5] = "f", [true] = 0 })
seed("repeated_keys", { { name = "a", age = 1 }, { name = "b", age = 2 }, { name = "c", age = 3 } })
local shared = { "shared" }
seed("shared", { shared, shared, { inner = shared } })
local cycle = { name = "cycle" }
cycle.self = cycle
cycle.list = { cycle, { back = cycle } }
seed("cycle", cycle)
local deep = {}
for _ = 1, 60 do deep = { deep } end
seed("deep", deep)
seed("error", core.error("UsageError", "args[1]: a coroutine cannot be copied"))
seed("plain_mt", setmetatable({ 1, x = 2 }, plain))
seed("box", setmetatable({ { payload = "p" } }, box))
local b = setmetatable({ "shared box" }, box)
seed("box_shared", { b, b, setmetatable({ b }, box) })
-- rejected without the functions flag, but seeds those tags
local up = { 1, 2 }
seed("functions", { function() return up end, string.format, string, _G },
  { functions = true })

os.execute("mkdir -p " .. dir)
for _, s in ipairs(seeds) do
  local f = assert(io.open(dir .. s[1], "wb"))
  f:write(core.encode(s[2], s[3]))
  f:close()
end
print(#seeds .. " seeds in " .. dir)
