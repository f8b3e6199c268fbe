-- The value codec (bindings/codec.h), through core.encode / core.decode:
-- exact round trips of every kind of value, shared references and cycles,
-- functions with their upvalues, refusals naming the path, and a decoder
-- that answers bad input with a DecodeError, never a crash.
-- Random values use the seed printed at the start (CODEC_SEED=n repeats it).
package.path = "spec/?.lua;" .. package.path
local h = require "helper"
local mf, lu = h.mf, h.lu
local core = require "moonflow.core"

local SEED = tonumber(os.getenv("CODEC_SEED")) or os.time()
print("codec_spec: CODEC_SEED=" .. SEED)

local encode, decode = core.encode, core.decode
local FN = { functions = true }

-- {====== Helpers ======

-- Compares two values deeply: numbers by subtype and bits (NaN equals NaN,
-- -0.0 is not 0.0), tables by contents and metatable, and the identity
-- structure: each table of a maps to one table of b, both ways.
local function same(a, b, fwd, back, where)
  fwd, back, where = fwd or {}, back or {}, where or "value"
  if type(a) ~= type(b) then
    return false, where .. ": " .. type(a) .. " vs " .. type(b)
  end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, where .. ": subtype" end
    if string.pack("<n", a) ~= string.pack("<n", b) then
      return false, where .. ": " .. tostring(a) .. " vs " .. tostring(b)
    end
    return true
  end
  if type(a) ~= "table" then
    return a == b, where .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  if fwd[a] ~= nil or back[b] ~= nil then
    return fwd[a] == b and back[b] == a, where .. ": identity not kept"
  end
  fwd[a], back[b] = b, a
  if getmetatable(a) ~= getmetatable(b) then return false, where .. ": metatable" end
  local n = 0
  for k, v in pairs(a) do
    n = n + 1
    local kb = k
    if type(k) == "table" then
      kb = fwd[k]
      if kb == nil then return false, where .. ": table key not met before" end
    end
    local ok, why = same(v, rawget(b, kb), fwd, back, where .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
  end
  for _ in pairs(b) do n = n - 1 end
  if n ~= 0 then return false, where .. ": key count differs" end
  return true
end

local function assert_same(a, b)
  local ok, why = same(a, b)
  lu.assertTrue(ok, why)
end

local function roundtrip(v, opts)
  local s = encode(v, opts)
  lu.assertIsString(s)
  return decode(s, opts), s
end

local function assert_roundtrip(v)
  assert_same(v, (roundtrip(v)))
end

-- The error of fn(...), which must be a table of that kind.
local function failure(kind, fn, ...)
  return h.raises_kind(kind, fn, ...)
end

local function refusal(value, opts, path, pattern)
  local err = failure("UsageError", encode, value, opts)
  lu.assertEquals(err.path, path)
  lu.assertStrContains(err.message, path .. ": ")
  if pattern then lu.assertStrContains(err.message, pattern) end
  return err
end

-- Random values: scalars of every kind, tables nested, some shared, some in
-- cycles.
local function random_string()
  local n = math.random(0, 12)
  if math.random() < 0.05 then n = math.random(1000, 3000) end
  local bytes = {}
  for i = 1, n do bytes[i] = string.char(math.random(0, 255)) end
  if math.random() < 0.5 then -- some repeat: string refs
    return ({ "id", "name", "value", "x" })[math.random(4)] .. (n % 3)
  end
  return table.concat(bytes)
end

local SPECIAL = { 0 / 0, math.huge, -math.huge, -0.0, 0.0, 1.0, 5e-324,
                  math.mininteger, math.maxinteger, 127, 128, -129, 1 << 31 }

local function random_key()
  local r = math.random(4)
  if r == 1 then return math.random(-5, 50) end
  if r == 2 then return random_string() end
  if r == 3 then return math.random() * 100 end
  return math.random() < 0.5
end

local function random_value(depth, pool)
  local r = math.random(depth > 4 and 7 or 10)
  if r == 1 then return math.random(-1000, 1000) end
  if r == 2 then return math.random(math.mininteger, math.maxinteger) end
  if r == 3 then return (math.random() - 0.5) * 10 ^ math.random(-300, 300) end
  if r == 4 then return random_string() end
  if r == 5 then return math.random() < 0.5 end
  if r == 6 then return SPECIAL[math.random(#SPECIAL)] end
  if r == 7 then return pool[math.random(#pool)] or "empty pool" end
  local t = {}
  pool[#pool + 1] = t
  for i = 1, math.random(0, 6) do t[i] = random_value(depth + 1, pool) end
  for _ = 1, math.random(0, 6) do
    local k = random_key()
    if k == k then t[k] = random_value(depth + 1, pool) end
  end
  if math.random() < 0.2 then t.back = pool[math.random(#pool)] end
  return t
end

-- }======

TestCodec = {}

-- {====== Values ======

function TestCodec:test_scalars_exactly()
  local values = { true, false, 0, 1, -1, 127, 128, -128, -129, 255, 256, 32767,
    32768, -32768, -32769, 1 << 31, -(1 << 31), -(1 << 31) - 1, 1 << 40,
    math.mininteger, math.maxinteger, 0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 5e-324,
    2.2250738585072014e-308, 1.7976931348623157e308, math.huge, -math.huge,
    0 / 0, 2 ^ 63, -2 ^ 63, "", "a", "ab", "abc", "\0", "a\0b", string.rep("z", 1025) }
  for _, v in ipairs(values) do assert_roundtrip(v) end
  lu.assertNil(decode(encode(nil)))
  -- a float that holds an integer stays a float, and the reverse
  lu.assertEquals(math.type(decode(encode(3.0))), "float")
  lu.assertEquals(math.type(decode(encode(3))), "integer")
  lu.assertEquals(math.type(decode(encode(math.mininteger))), "integer")
  lu.assertEquals(decode(encode(math.mininteger)), math.mininteger)
end

function TestCodec:test_float_bits_exactly()
  -- NaNs of both signs and payloads, and -0.0, keep every bit
  local bits = { "\0\0\0\0\0\0\248\127", "\0\0\0\0\0\0\248\255",
                 "\1\2\3\4\5\6\247\127", "\0\0\0\0\0\0\0\128" }
  for _, b in ipairs(bits) do
    local f = string.unpack("<d", b)
    lu.assertEquals(string.pack("<d", decode(encode(f))), b)
  end
  lu.assertEquals(1 / decode(encode(-0.0)), -math.huge)
end

function TestCodec:test_strings_with_any_bytes()
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  all = table.concat(all)
  lu.assertEquals(decode(encode(all)), all)
  local big = string.rep(all, 4096) -- 1 MB
  lu.assertEquals(decode(encode(big)), big)
  -- repeated strings are written once
  local rec = {}
  for i = 1, 100 do rec[i] = { name = "alice", city = "paris" } end
  local s = encode(rec)
  lu.assertTrue(#s <= 100 * 11 + 30, "repeated strings not shared: " .. #s .. " bytes")
  assert_same(rec, decode(s))
end

function TestCodec:test_tables()
  assert_roundtrip({})
  assert_roundtrip({ 1, 2, 3, "four", 5.5, true })
  assert_roundtrip({ x = 1, y = { z = { "deep" } }, [1.5] = "f", [true] = false,
                     [-3] = "negative", [0] = "zero", [math.maxinteger] = 1 })
  local holes = decode(encode({ 1, nil, 3, nil, 5 }))
  lu.assertEquals({ holes[1], holes[2], holes[3], holes[4], holes[5] }, { 1, nil, 3, nil, 5 })
  -- a sparse table costs its entries, not its border
  local sparse = {}
  for i = 0, 40 do sparse[1 << i] = i end
  local s = encode(sparse)
  lu.assertTrue(#s < 41 * 12, "sparse table of " .. #s .. " bytes")
  assert_same(sparse, decode(s))
  -- counts that need several bytes (the one-byte count is widened)
  local big = { name = "big" }
  for i = 1, 1000 do big[i] = i; big["k" .. i] = { i } end
  assert_roundtrip(big)
end

function TestCodec:test_shared_references_and_cycles()
  local shared = { "shared" }
  local v = { a = shared, b = shared, list = { shared, { shared } } }
  local d = decode(encode(v))
  assert_same(v, d)
  lu.assertIs(d.a, d.b)
  lu.assertIs(d.list[1], d.a)
  lu.assertIs(d.list[2][1], d.a)
  local cycle = { name = "c" }
  cycle.self = cycle
  cycle.kids = { { parent = cycle }, { parent = cycle } }
  local c = decode(encode(cycle))
  lu.assertIs(c.self, c)
  lu.assertIs(c.kids[1].parent, c)
  lu.assertIs(c.kids[2].parent, c)
  -- a table as a key, also met as a value
  local k = { "key" }
  local keyed = { [k] = "v", k }
  local kd = decode(encode(keyed))
  lu.assertEquals(kd[kd[1]], "v")
  -- identity holds within one message, not across two
  lu.assertNotIs(decode(encode(shared)), decode(encode(shared)))
end

function TestCodec:test_random_values()
  math.randomseed(SEED)
  for _ = 1, 300 do
    local v = random_value(0, {})
    local s = encode(v)
    local d = decode(s)
    local ok, why = same(v, d)
    lu.assertTrue(ok, "seed " .. SEED .. ": " .. tostring(why))
    -- and again from what was decoded
    ok, why = same(v, decode(encode(d)))
    lu.assertTrue(ok, "seed " .. SEED .. " (twice): " .. tostring(why))
  end
end

function TestCodec:test_depth_limit()
  local max = core.codec_max_depth
  lu.assertEquals(max, 200)
  local function nest(n)
    local t = {}
    for _ = 2, n do t = { t } end
    return t
  end
  local d = decode(encode(nest(max)))
  for _ = 2, max do d = d[1] end
  lu.assertEquals(d, {})
  local err = failure("UsageError", encode, nest(max + 1), { name = "args" })
  lu.assertStrContains(err.message, "nesting deeper than 200")
  lu.assertStrContains(err.path, "args[1][1][1]")
  -- the decoder counts the same way
  local function message(n)
    return "\x6d\x01" .. string.rep("\x0a\x01\x00", n) .. "\x00"
  end
  lu.assertNotNil(decode(message(max)))
  err = failure("DecodeError", decode, message(max + 1))
  lu.assertStrContains(err.message, "nesting deeper than 200")
  -- cycles are not depth
  local ring = {}
  ring.next = { next = { next = ring } }
  local r = decode(encode(ring))
  lu.assertIs(r.next.next.next.next.next.next, r)
end

-- }======

-- {====== Metatables ======

function TestCodec:test_moonflow_errors_travel()
  local e = core.error("UsageError", "bad thing")
  e.traceback = "stack traceback:\n\t[C]: in ?"
  local d = decode(encode(e))
  lu.assertIs(getmetatable(d), mf.Error)
  lu.assertEquals(d.kind, "UsageError")
  lu.assertEquals(d.message, "bad thing")
  lu.assertEquals(d.traceback, e.traceback)
  lu.assertEquals(tostring(d), tostring(e))
  -- an error raised by a run, inside a result
  local ok, raised = pcall(mf.sleep, -1)
  lu.assertFalse(ok)
  local r = decode(encode({ ok = false, err = raised }))
  lu.assertEquals(tostring(r.err), tostring(raised))
end

function TestCodec:test_registered_metatable_and_codec()
  local Point = { __name = "Point" }
  Point.__index = Point
  function Point:norm1() return math.abs(self.x) + math.abs(self.y) end
  refusal(setmetatable({ x = 1, y = 2 }, Point), { name = "p" }, "p",
          "a table with an unregistered metatable (Point) cannot be copied")
  core.codec_register("spec.Point", Point)
  local p = setmetatable({ x = 3, y = -4 }, Point)
  local d = decode(encode({ p, p }))
  lu.assertIs(getmetatable(d[1]), Point)
  lu.assertIs(d[1], d[2])
  lu.assertEquals(d[1]:norm1(), 7)
  -- with encode and decode functions: the value travels as what encode gives
  local Celsius = {}
  local calls = 0
  core.codec_register("spec.Celsius", Celsius, function(c)
    calls = calls + 1
    return { degrees = c[1] }
  end, function(e) return setmetatable({ e.degrees }, Celsius) end)
  local c = setmetatable({ 21.5 }, Celsius)
  local dc = decode(encode({ c, c, c }))
  lu.assertEquals(calls, 1)
  lu.assertIs(getmetatable(dc[1]), Celsius)
  lu.assertEquals(dc[1][1], 21.5)
  lu.assertIs(dc[1], dc[3])
  -- what encode returns stays alive while the message is made: a new table
  -- at the address of a collected one is not taken for it
  local Fresh = {}
  core.codec_register("spec.Fresh", Fresh, function(v)
    collectgarbage()
    return { v.n }
  end, function(e) return setmetatable({ n = e[1] }, Fresh) end)
  local fresh = {}
  for i = 1, 50 do fresh[i] = setmetatable({ n = i }, Fresh) end
  local df = decode(encode(fresh))
  for i = 1, 50 do lu.assertEquals(df[i].n, i) end
  core.codec_register("spec.Fresh", nil)
  -- a cycle through such a value cannot be rebuilt: refused
  local loop = setmetatable({}, Celsius)
  loop[1] = loop
  core.codec_register("spec.Loop", Celsius, function(v) return { v } end,
                      function(e) return e end)
  refusal(loop, nil, "value<encoded>[1]", "a cycle through a value with a registered codec")
  -- the decoding state needs the name: unregistered, it is a DecodeError
  local s = encode(p)
  core.codec_register("spec.Point", nil)
  local err = failure("DecodeError", decode, s)
  lu.assertStrContains(err.message, "no metatable registered as 'spec.Point'")
  refusal(p, nil, "value", "unregistered metatable (Point)")
  core.codec_register("spec.Loop", nil)
end

function TestCodec:test_userdata_codec()
  local FILE = getmetatable(io.stdout)
  refusal({ out = io.stdout }, { name = "args" }, "args.out",
          "a userdata without a registered codec (FILE*) cannot be copied")
  local names = { [io.stdout] = "stdout", [io.stderr] = "stderr" }
  core.codec_register("spec.FILE", FILE, function(f) return names[f] end,
                      function(name) return io[name] end)
  local d = decode(encode({ io.stderr, io.stdout, io.stderr }))
  lu.assertIs(d[1], io.stderr)
  lu.assertIs(d[2], io.stdout)
  core.codec_register("spec.FILE", nil)
  refusal(io.stdout, nil, "value", "userdata without a registered codec")
end

-- }======

-- {====== Functions ======

function TestCodec:test_functions_with_upvalues()
  local base, list = 10, { 1, 2, 3 }
  local function sum(extra)
    local s = base + extra
    for _, v in ipairs(list) do s = s + v end
    return s, #list
  end
  local f = roundtrip(sum, FN)
  lu.assertNotIs(f, sum)
  lu.assertEquals({ f(4) }, { 20, 3 })
  -- copied by value: the copy does not see later changes, nor makes them
  list[4] = 100
  lu.assertEquals({ f(0) }, { 16, 3 })
  -- varargs, several results, nested closures
  local function make(k) return function(...) return k * select("#", ...), ... end end
  local g = roundtrip(make(7), FN)
  lu.assertEquals({ g("a", "b") }, { 14, "a", "b" })
end

function TestCodec:test_recursive_and_shared_upvalues()
  local function fact(n) return n <= 1 and 1 or n * fact(n - 1) end
  local f = roundtrip(fact, FN)
  lu.assertEquals(f(10), 3628800)
  lu.assertNotIs(f, fact)
  -- two closures over one variable still share it after the trip
  local n = 0
  local function inc() n = n + 1; return n end
  local function get() return n end
  local d = roundtrip({ inc = inc, get = get }, FN)
  lu.assertEquals(d.inc(), 1)
  lu.assertEquals(d.inc(), 2)
  lu.assertEquals(d.get(), 2)
  lu.assertEquals(n, 0)
  -- an upvalue table shared with another value of the message stays shared
  local cfg = { limit = 5 }
  local function limit() return cfg.limit end
  local m = roundtrip({ fn = limit, cfg = cfg }, FN)
  m.cfg.limit = 9
  lu.assertEquals(m.fn(), 9)
  -- one function twice is one function
  local r = roundtrip({ limit, limit }, FN)
  lu.assertIs(r[1], r[2])
end

function TestCodec:test_globals_c_functions_and_modules()
  -- _ENV is the receiving state's global table
  local function env() return codec_spec_global, string.format("%03d", 7), print end
  local f = roundtrip(env, FN)
  codec_spec_global = "seen"
  local g, s, p = f()
  lu.assertEquals(g, "seen")
  lu.assertEquals(s, "007")
  lu.assertIs(p, print)
  codec_spec_global = nil
  -- standard C functions, loaded modules and the global table by name
  local d = roundtrip({ string.format, math.floor, print, io.write, table.concat,
                        mf.sleep, string, mf, _G }, FN)
  lu.assertIs(d[1], string.format)
  lu.assertIs(d[2], math.floor)
  lu.assertIs(d[3], print)
  lu.assertIs(d[4], io.write)
  lu.assertIs(d[5], table.concat)
  lu.assertIs(d[6], mf.sleep)
  lu.assertIs(d[7], string)
  lu.assertIs(d[8], mf)
  lu.assertIs(d[9], _G)
  -- a task body that uses mf keeps the receiving state's moonflow
  local function body(x) return mf.now() >= 0 and x * 2 end
  lu.assertEquals(roundtrip(body, FN)(21), 42)
  -- without the flag, tables are data: a module is copied, its functions refused
  local err = failure("UsageError", encode, { string })
  lu.assertStrMatches(err.path, "value%[1%]%.%a+")
  lu.assertStrContains(err.message, "a function cannot be copied here")
end

function TestCodec:test_debug_information()
  local function where() return debug.getinfo(1, "Sl") end
  local kept = roundtrip(where, FN)()
  lu.assertStrContains(kept.source, "codec_spec.lua")
  lu.assertTrue(kept.currentline > 0)
  local stripped = roundtrip(where, { functions = true, strip = true })()
  lu.assertEquals(stripped.currentline, -1)
  -- a traceback names the line the error came from
  local function boom() error("boom") end
  local ok, msg = pcall(roundtrip(boom, FN))
  lu.assertFalse(ok)
  lu.assertStrMatches(msg, ".*codec_spec%.lua:%d+: boom")
end

function TestCodec:test_functions_only_when_asked()
  local function f() return 1 end
  refusal({ 1, { key = f } }, { name = "args" }, "args[2].key",
          "a function cannot be copied here")
  refusal(print, nil, "value", "a function cannot be copied here")
  local s = encode({ f }, FN)
  local err = failure("DecodeError", decode, s)
  lu.assertStrContains(err.message, "functions are not accepted here")
  err = failure("DecodeError", decode, encode({ x = string }, FN))
  lu.assertStrContains(err.message, "module")
  err = failure("DecodeError", decode, encode(_G, FN))
  lu.assertStrContains(err.message, "global table")
end

-- }======

-- {====== Refusals ======

function TestCodec:test_refusals_name_the_path()
  local co = coroutine.create(print)
  refusal({ 1, { conn = co } }, { name = "args" }, "args[2].conn",
          "a coroutine cannot be copied")
  refusal({ { 1, 2, { key = co } } }, { name = "args" }, "args[1][3].key")
  refusal({ ["two words"] = co }, nil, 'value["two words"]')
  refusal({ [2.5] = { co } }, nil, "value[2.5][1]")
  refusal({ [true] = co }, nil, "value[true]")
  refusal({ [co] = 1 }, { name = "t" }, "t<key>", "a coroutine")
  local x = co
  local function fn() return x end
  refusal({ { fn = fn } }, { name = "result", functions = true },
          "result[1].fn.upvalue[x]", "a coroutine cannot be copied")
  -- a C function no loaded module holds (an iterator from string.gmatch)
  local it = string.gmatch("a", "a")
  refusal({ it = it }, { functions = true }, "value.it",
          "a C function that no loaded module holds cannot be copied")
  local err = refusal(setmetatable({}, {}), { name = "args" }, "args",
                      "a table with an unregistered metatable cannot be copied")
  lu.assertEquals(tostring(err), "UsageError: " .. err.message)
end

-- }======

-- {====== Bad input ======

local function samples()
  local shared = { "shared string" }
  return {
    encode({ 1, -2, 300, 1 << 40, 2.5, "abc", true, false, { x = shared, y = shared } }),
    encode({ name = "rec", list = { 1, 2, 3 }, nested = { a = { b = { c = "d" } } } }),
    encode(core.error("UsageError", "message")),
    encode({ [1.5] = 0 / 0, [-1] = -0.0, [math.mininteger] = math.maxinteger }),
    encode(random_value(0, {})),
  }
end

-- Decoding bad bytes must succeed or raise a DecodeError: nothing else.
local function decodes_or_refuses(s)
  local ok, err = pcall(decode, s)
  if not ok then
    lu.assertEquals(type(err), "table", "not an error table: " .. tostring(err))
    lu.assertEquals(err.kind, "DecodeError", tostring(err.message))
    lu.assertStrContains(err.message, "byte")
  end
  return ok
end

function TestCodec:test_every_truncation_is_an_error()
  math.randomseed(SEED)
  for _, s in ipairs(samples()) do
    for n = 0, #s - 1 do
      local err = failure("DecodeError", decode, s:sub(1, n))
      lu.assertStrContains(err.message, "byte")
    end
    lu.assertNotNil(decode(s))
  end
  local err = failure("DecodeError", decode, "")
  lu.assertStrContains(err.message, "truncated at byte 0")
end

function TestCodec:test_corrupted_bytes_never_crash()
  math.randomseed(SEED)
  for _, s in ipairs(samples()) do
    for i = 1, #s do
      for _, mask in ipairs { 0x01, 0x80, 0xff, 0x7f } do
        local c = string.char(s:byte(i) ~ mask)
        decodes_or_refuses(s:sub(1, i - 1) .. c .. s:sub(i + 1))
      end
    end
    for _ = 1, 200 do -- a few random bytes overwritten
      local b = { s:byte(1, -1) }
      for _ = 1, math.random(1, 4) do b[math.random(#b)] = math.random(0, 255) end
      decodes_or_refuses(string.char(table.unpack(b)))
    end
  end
end

function TestCodec:test_bad_input_messages()
  local cases = {
    { "\x00\x01\x00", "not a moonflow codec message" },
    { "\x6d\x02\x00", "codec version 2" },
    { "\x6d\x01\x00\x00", "1 bytes after the value, from byte 3" },
    { "\x6d\x01\x7f", "bad tag 0x7f at byte 2" },
    { "\x6d\x01\x09\x05", "bad ref 5 at byte 2" },
    { "\x6d\x01\x08\x05ab", "truncated at byte 4" },
    -- lengths and counts far beyond the input allocate nothing
    { "\x6d\x01\x08\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "truncated" },
    { "\x6d\x01\x0a\xff\xff\xff\xff\x0f\x00", "cannot fit" },
    { "\x6d\x01\x0a\x00\xff\xff\xff\xff\x0f", "cannot fit" },
    { "\x6d\x01\x08" .. string.rep("\xff", 10) .. "\x01", "over 64 bits" },
    { "\x6d\x01\x0a\x00\x01\x00\x01", "a nil key" },
    { "\x6d\x01\x0a\x00\x01\x07\x00\x00\x00\x00\x00\x00\xf8\x7f\x01", "a NaN key" },
    { "\x6d\x01\x0b\x08\x04nope\x00\x00", "no metatable registered as 'nope'" },
    { "\x6d\x01\x0c\x08\x04nope\x00", "no codec registered as 'nope'" },
    { "\x6d\x01\x0b\x81\x00\x00", "not a string" },
    { "\x6d\x01\x0b\x09\x00\x00\x00", "still being decoded" },
    { "\x6d\x01\x0c\x08\x0aspec.Later\x09\x00", "still being decoded" },
    { "\x6d\x01\x0e", "bad tag 0x0e" },
  }
  local Later = {}
  core.codec_register("spec.Later", Later, function(v) return v[1] end,
                      function(p) return setmetatable({ p }, Later) end)
  for i, c in ipairs(cases) do
    local ok, err = pcall(decode, c[1])
    lu.assertFalse(ok, "case " .. i .. " decoded")
    lu.assertEquals(err.kind, "DecodeError")
    lu.assertStrContains(err.message, c[2])
  end
  core.codec_register("spec.Later", nil)
  -- a table holding itself is fine: it exists before its contents
  local t = decode("\x6d\x01\x0a\x01\x00\x09\x00")
  lu.assertIs(t[1], t)
end

-- }======

-- {====== Another state ======

-- The receiving side in a fresh process: the moonflow program.
function TestCodec:test_decoded_in_another_process()
  local prog = os.getenv("MF_PROGRAM") or "build/moonflow"
  local dir = io.popen("mktemp -d /tmp/mf-codec-spec.XXXXXX"):read("l")
  local k = 3
  local function scaled(x) return string.format("%d items", x * k) end
  local e = core.error("Timeout", "3 (of 4) futures unfinished")
  local Unknown = {}
  core.codec_register("spec.Unknown", Unknown)
  local f = assert(io.open(dir .. "/msg", "wb"))
  f:write(encode({ err = e, fn = scaled, mf = mf }, FN))
  f:close()
  f = assert(io.open(dir .. "/unknown", "wb"))
  f:write(encode(setmetatable({}, Unknown)))
  f:close()
  f = assert(io.open(dir .. "/child.lua", "w"))
  f:write([[
    local mf = require "moonflow"
    local core = require "moonflow.core"
    local function read(path)
      local f = assert(io.open(path, "rb")); local s = f:read("a"); f:close(); return s
    end
    local v = core.decode(read(arg[1] .. "/msg"), { functions = true })
    print(tostring(v.err), getmetatable(v.err) == mf.Error, v.fn(5), v.mf == mf)
    local ok, err = pcall(core.decode, read(arg[1] .. "/unknown"))
    print(ok, err.kind, err.message)
  ]])
  f:close()
  local p = io.popen("unset LD_PRELOAD; " .. prog .. " " .. dir .. "/child.lua " .. dir .. " 2>&1")
  local out = p:read("a")
  p:close()
  os.execute("unset LD_PRELOAD; rm -rf " .. dir)
  core.codec_register("spec.Unknown", nil)
  lu.assertStrContains(out, "Timeout: 3 (of 4) futures unfinished\ttrue\t15 items\ttrue\n")
  lu.assertStrContains(out, "false\tDecodeError\tno metatable registered as 'spec.Unknown'")
end

-- }======

h.run()
