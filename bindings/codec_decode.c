/*
 * codec_decode.c -- the decoder's half for data.  It trusts nothing: every
 * read is checked against the bytes left, every count against what those
 * bytes could hold (so a few corrupt bytes cannot make it allocate much),
 * every ref against the values decoded so far, and nesting against
 * MFL_CODEC_MAX_DEPTH.  Strings are copied into the Lua state.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"

/* {====== Errors and reads ====== */

__attribute__((noreturn)) static void vfail(mflc_dec *d, int code,
                                            const char *fmt, va_list ap) {
  char message[320];
  vsnprintf(message, sizeof message, fmt, ap);
  mfl_push_error(d->L, "DecodeError", "%s", message);
  d->code = code;
  lua_error(d->L);
  __builtin_unreachable();
}

void mflc_bad(mflc_dec *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(d, MFL_CODEC_EINPUT, fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 3, 4), noreturn)) static void
fail(mflc_dec *d, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(d, code, fmt, ap);
  va_end(ap);
}

void mflc_enter_dec(mflc_dec *d) {
  if (++d->depth > MFL_CODEC_MAX_DEPTH)
    fail(d, MFL_CODEC_EDEPTH, "nesting deeper than %d at byte %zu",
         MFL_CODEC_MAX_DEPTH, mflc_offset(d));
  if (!lua_checkstack(d->L, 16))
    mflc_bad(d, "no room on the Lua stack at byte %zu", mflc_offset(d));
}

static size_t left(const mflc_dec *d) { return (size_t)(d->end - d->p); }

const unsigned char *mflc_get(mflc_dec *d, size_t n, const char *what) {
  if (left(d) < n)
    mflc_bad(d, "truncated at byte %zu: %s needs %zu bytes, %zu left",
             mflc_offset(d), what, n, left(d));
  const unsigned char *p = d->p;
  d->p += n;
  return p;
}

int mflc_get_byte(mflc_dec *d, const char *what) {
  return *mflc_get(d, 1, what);
}

uint64_t mflc_get_varint(mflc_dec *d, const char *what) {
  size_t at = mflc_offset(d);
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    if (d->p == d->end)
      mflc_bad(d, "truncated at byte %zu: %s (from byte %zu) is cut short",
               mflc_offset(d), what, at);
    unsigned c = *d->p++;
    if (shift == 63 && c > 1)
      mflc_bad(d, "bad varint at byte %zu: %s over 64 bits", at, what);
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80))
      return v;
  }
}

static uint64_t get_le(mflc_dec *d, int n, const char *what) {
  const unsigned char *p = mflc_get(d, (size_t)n, what);
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* }====== */

/* {====== Values ====== */

static void decode_string(mflc_dec *d) {
  size_t at = mflc_offset(d) - 1;
  uint64_t len = mflc_get_varint(d, "a string length");
  if (len > left(d))
    mflc_bad(d,
             "truncated at byte %zu: the string at byte %zu needs %llu "
             "bytes, %zu left",
             mflc_offset(d), at, (unsigned long long)len, left(d));
  const char *s = (const char *)mflc_get(d, (size_t)len, "a string");
  lua_pushlstring(d->L, s, (size_t)len);
  if (mflc_string_is_ref(len)) {
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->refs, ++d->nrefs);
  }
}

static void decode_ref(mflc_dec *d) {
  size_t at = mflc_offset(d) - 1;
  uint64_t r = mflc_get_varint(d, "a ref");
  if (r >= (uint64_t)d->nrefs)
    mflc_bad(d, "bad ref %llu at byte %zu: only %lld values so far",
             (unsigned long long)r, at, (long long)d->nrefs);
  if (lua_rawgeti(d->L, d->refs, (lua_Integer)r + 1) == LUA_TNIL)
    mflc_bad(d, "bad ref %llu at byte %zu: that value is still being decoded",
             (unsigned long long)r, at);
}

void mflc_decode_name(mflc_dec *d, const char *what) {
  size_t at = mflc_offset(d);
  int tag = mflc_get_byte(d, what);
  if (tag == MFLC_STRING)
    decode_string(d);
  else if (tag == MFLC_REF)
    decode_ref(d);
  if ((tag != MFLC_STRING && tag != MFLC_REF) ||
      lua_type(d->L, -1) != LUA_TSTRING)
    mflc_bad(d, "bad %s at byte %zu: not a string", what, at);
}

/* Pushes the entry registered under the name on top (which it replaces),
 * or raises. */
static void registered(mflc_dec *d, size_t at, const char *what) {
  lua_State *L = d->L;
  lua_pushvalue(L, -1);
  if (lua_rawget(L, d->codecs) != LUA_TTABLE)
    mflc_bad(d, "no %s registered as '%s' in this state (byte %zu)", what,
             lua_tostring(L, -2), at);
  lua_remove(L, -2);
}

/* 0x0a or 0x0b (with_mt): [name] narr nhash items pairs */
static void decode_table(mflc_dec *d, int with_mt) {
  lua_State *L = d->L;
  size_t at = mflc_offset(d) - 1;
  lua_Integer ref = ++d->nrefs;
  int mt = 0;
  if (with_mt) {
    mflc_decode_name(d, "metatable name");
    registered(d, at, "metatable");
    lua_rawgeti(L, -1, 2);
    lua_remove(L, -2);
    mt = lua_gettop(L);
  }
  mflc_enter_dec(d);
  uint64_t narr = mflc_get_varint(d, "an array length");
  uint64_t nhash = mflc_get_varint(d, "a count of pairs");
  /* each value takes a byte at least, each pair two */
  if (narr > left(d) || nhash > (left(d) - narr) / 2 || narr > INT_MAX ||
      nhash > INT_MAX)
    mflc_bad(d,
             "bad table at byte %zu: %llu values and %llu pairs cannot fit "
             "in the %zu bytes left",
             at, (unsigned long long)narr, (unsigned long long)nhash, left(d));
  lua_createtable(L, (int)narr, (int)nhash);
  int t = lua_gettop(L);
  lua_pushvalue(L, t);
  lua_rawseti(L, d->refs, ref);
  for (uint64_t i = 1; i <= narr; i++) {
    mflc_decode_value(d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (uint64_t i = 0; i < nhash; i++) {
    size_t key_at = mflc_offset(d);
    mflc_decode_value(d);
    if (lua_isnil(L, -1))
      mflc_bad(d, "bad table at byte %zu: a nil key at byte %zu", at, key_at);
    if (lua_type(L, -1) == LUA_TNUMBER && isnan(lua_tonumber(L, -1)))
      mflc_bad(d, "bad table at byte %zu: a NaN key at byte %zu", at, key_at);
    mflc_decode_value(d);
    lua_rawset(L, t);
  }
  d->depth--;
  if (mt) {
    lua_pushvalue(L, mt);
    lua_setmetatable(L, t);
    lua_remove(L, mt);
  }
}

/* 0x0c: name value, given to the decode function registered under name */
static void decode_custom(mflc_dec *d) {
  lua_State *L = d->L;
  size_t at = mflc_offset(d) - 1;
  lua_Integer ref = ++d->nrefs;
  mflc_decode_name(d, "codec name");
  registered(d, at, "codec");
  if (lua_rawgeti(L, -1, 4) != LUA_TFUNCTION)
    mflc_bad(d, "the codec at byte %zu has no decode function in this state",
             at);
  lua_remove(L, -2);
  mflc_enter_dec(d);
  mflc_decode_value(d);
  d->depth--;
  lua_call(L, 1, 1);
  if (lua_isnil(L, -1))
    mflc_bad(d, "the decode function of the codec at byte %zu returned nil",
             at);
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, ref);
}

void mflc_decode_value(mflc_dec *d) {
  lua_State *L = d->L;
  size_t at = mflc_offset(d);
  int tag = mflc_get_byte(d, "a value");
  if (tag >= MFLC_FIXINT) {
    lua_pushinteger(L, tag - MFLC_FIXINT);
    return;
  }
  switch (tag) {
  case MFLC_NIL:
    lua_pushnil(L);
    return;
  case MFLC_FALSE:
  case MFLC_TRUE:
    lua_pushboolean(L, tag == MFLC_TRUE);
    return;
  case MFLC_INT8:
    lua_pushinteger(L, (int8_t)get_le(d, 1, "an integer"));
    return;
  case MFLC_INT16:
    lua_pushinteger(L, (int16_t)get_le(d, 2, "an integer"));
    return;
  case MFLC_INT32:
    lua_pushinteger(L, (int32_t)get_le(d, 4, "an integer"));
    return;
  case MFLC_INT64: {
    uint64_t u = get_le(d, 8, "an integer");
    int64_t v;
    memcpy(&v, &u, sizeof v);
    lua_pushinteger(L, (lua_Integer)v);
    return;
  }
  case MFLC_FLOAT: {
    uint64_t u = get_le(d, 8, "a float");
    double v;
    memcpy(&v, &u, sizeof v);
    lua_pushnumber(L, (lua_Number)v);
    return;
  }
  case MFLC_STRING:
    decode_string(d);
    return;
  case MFLC_REF:
    decode_ref(d);
    return;
  case MFLC_TABLE:
  case MFLC_TABLE_MT:
    decode_table(d, tag == MFLC_TABLE_MT);
    return;
  case MFLC_CUSTOM:
    decode_custom(d);
    return;
  case MFLC_LFUNCTION:
  case MFLC_CFUNCTION:
  case MFLC_GLOBALS:
  case MFLC_MODULE:
    if (!(d->flags & MFL_CODEC_FUNCTIONS))
      mflc_bad(d,
               "a %s at byte %zu, and functions are not accepted here (only "
               "data)",
               tag == MFLC_MODULE    ? "module"
               : tag == MFLC_GLOBALS ? "global table"
                                     : "function",
               at);
    if (tag == MFLC_LFUNCTION)
      mflc_decode_lfunction(d);
    else if (tag == MFLC_CFUNCTION)
      mflc_decode_cfunction(d);
    else if (tag == MFLC_MODULE)
      mflc_decode_module(d);
    else
      lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    return;
  default:
    mflc_bad(d, "bad tag 0x%02x at byte %zu", (unsigned)tag, at);
  }
}

/* }====== */
