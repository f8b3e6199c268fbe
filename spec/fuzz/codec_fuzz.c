/*
 * codec_fuzz.c -- libFuzzer target of the value codec's decoder, on raw
 * input and without MFL_CODEC_FUNCTIONS (loading bytecode is unsafe by
 * design, so only data is fuzzed).  Every input must decode or fail with a
 * DecodeError, never crash or read out of bounds (ASan, UBSan); what
 * decodes must encode again and decode again.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined from the codec's
 * sources, errors.c and Lua (spec/fuzz/CMakeLists.txt); run by ctest for a
 * bounded time, or by hand:  build/spec/fuzz/codec_fuzz -runs=10000000
 * /tmp/corpus spec/fuzz/codec_corpus
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "binding.h"
#include "codec.h"

/* errors.c takes these two from module.c, which needs the engine: the
 * same definitions here. */
const char mfl_key_error_mt;

void mfl_register_mt(lua_State *L, const char *key) {
  lua_pushlightuserdata(L, (void *)key);
  lua_rawseti(L, -2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

static lua_State *L;

/* Metatables registered as in spec/fuzz/make_corpus.lua: one copied as a
 * table, one through codec functions. */
static const char setup[] =
    "local core = ...\n"
    "core.codec_register('fuzz.Plain', {})\n"
    "local box = {}\n"
    "core.codec_register('fuzz.Box', box, function(v) return v[1] end,\n"
    "  function(p) return setmetatable({p}, box) end)\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);
  mfl_open_errors(L);
  mfl_open_codec(L);
  if (luaL_loadstring(L, setup) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_insert(L, -2);
  lua_call(L, 1, 0);
  return 0;
}

static void expect_decode_error(int code) {
  if (code != MFL_CODEC_EINPUT && code != MFL_CODEC_EDEPTH) {
    fprintf(stderr, "decode failed with %d: %s\n", code,
            luaL_tolstring(L, -1, NULL));
    abort();
  }
  lua_getfield(L, -1, "kind");
  if (!lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), "DecodeError")) {
    fprintf(stderr, "not a DecodeError\n");
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int top = lua_gettop(L);
  int code = mfl_decode(L, (const char *)data, size, 0);
  if (code != MFL_CODEC_OK) {
    expect_decode_error(code);
    lua_settop(L, top);
    return 0;
  }
  mfl_buffer b = {0};
  code = mfl_encode(L, -1, &b, 0, "fuzz");
  /* the walk of a re-encode may meet shared values in another order:
   * deeper, or a custom value before the table holding it */
  if (code == MFL_CODEC_OK) {
    code = mfl_decode(L, b.data, b.len, 0);
    if (code != MFL_CODEC_OK) {
      fprintf(stderr, "a re-encoded value does not decode: %s\n",
              luaL_tolstring(L, -1, NULL));
      abort();
    }
  } else if (code != MFL_CODEC_EDEPTH && code != MFL_CODEC_EVALUE) {
    fprintf(stderr, "a decoded value does not encode: %s\n",
            luaL_tolstring(L, -1, NULL));
    abort();
  }
  mfl_buffer_free(&b);
  lua_settop(L, top);
  return 0;
}
