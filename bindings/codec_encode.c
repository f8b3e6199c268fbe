/*
 * codec_encode.c -- the encoder's half for data: numbers, strings, tables
 * (with their refs), registered metatables and codecs, and the path to a
 * value that cannot travel, for the UsageError.
 *
 * Tables are written as their array part (1..n up to the first nil) then
 * the rest as pairs; both counts come first, so the decoder can size the
 * table before filling it.  Each count is written as one byte and widened
 * in place (the bytes after it moved) in the rare table that needs more.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"

/* {====== Bytes ====== */

static void grow(mflc_enc *e, size_t n) {
  if (mfl_buffer_reserve(e->b, n) != 0) {
    e->code = MFL_CODEC_ERROR;
    lua_pushliteral(e->L, "moonflow codec: not enough memory to encode");
    lua_error(e->L);
  }
}

static inline void put1(mflc_enc *e, unsigned c) {
  mfl_buffer *b = e->b;
  if (b->len == b->cap)
    grow(e, 1);
  b->data[b->len++] = (char)c;
}

void mflc_put(mflc_enc *e, const void *p, size_t n) {
  mfl_buffer *b = e->b;
  if (b->cap - b->len < n)
    grow(e, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

/* tag, then n bytes of v, least significant first */
static inline void put_le(mflc_enc *e, unsigned tag, uint64_t v, int n) {
  mfl_buffer *b = e->b;
  if (b->cap - b->len < (size_t)n + 1)
    grow(e, (size_t)n + 1);
  unsigned char *p = (unsigned char *)b->data + b->len;
  p[0] = (unsigned char)tag;
  for (int i = 0; i < n; i++)
    p[1 + i] = (unsigned char)(v >> (8 * i));
  b->len += (size_t)n + 1;
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7)
    n++;
  return n;
}

static void write_varint(unsigned char *p, uint64_t v) {
  for (; v >= 0x80; v >>= 7)
    *p++ = (unsigned char)(v | 0x80);
  *p = (unsigned char)v;
}

void mflc_put_varint(mflc_enc *e, uint64_t v) {
  size_t n = varint_len(v);
  mfl_buffer *b = e->b;
  if (b->cap - b->len < n)
    grow(e, n);
  write_varint((unsigned char *)b->data + b->len, v);
  b->len += n;
}

/* Writes v over the one byte reserved at `at`, moving what follows when it
 * needs more; returns the bytes it took. */
static size_t patch_varint(mflc_enc *e, size_t at, uint64_t v) {
  size_t n = varint_len(v);
  mfl_buffer *b = e->b;
  if (n > 1) {
    if (b->cap - b->len < n - 1)
      grow(e, n - 1);
    memmove(b->data + at + n, b->data + at + 1, b->len - at - 1);
    b->len += n - 1;
  }
  write_varint((unsigned char *)b->data + at, v);
  return n;
}

/* }====== */

/* {====== Paths and refusals ====== */

static int is_identifier(const char *s, size_t len) {
  if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= '0' && c <= '9') ||
          ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
      return 0;
  }
  return 1;
}

/* Pushes ["..."] for a key that is not an identifier: printable bytes as
 * they are, others escaped, long keys cut. */
static void push_quoted(lua_State *L, const char *s, size_t len) {
  char out[200];
  size_t o = 0, shown = len > 40 ? 40 : len;
  out[o++] = '[';
  out[o++] = '"';
  for (size_t i = 0; i < shown; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\')
      o += (size_t)snprintf(out + o, sizeof out - o, "\\%c", c);
    else if (c >= 0x20 && c < 0x7f)
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, sizeof out - o, "\\%u", c);
  }
  if (shown < len)
    o += (size_t)snprintf(out + o, sizeof out - o, "...");
  out[o++] = '"';
  out[o++] = ']';
  lua_pushlstring(L, out, o);
}

static void push_key(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (is_identifier(s, len))
      lua_pushfstring(L, ".%s", s);
    else
      push_quoted(L, s, len);
    break;
  }
  case LUA_TNUMBER:
  case LUA_TBOOLEAN:
    lua_pushfstring(L, "[%s]", luaL_tolstring(L, idx, NULL));
    lua_remove(L, -2);
    break;
  default:
    lua_pushfstring(L, "[<%s>]", luaL_typename(L, idx));
  }
}

/* Pushes the pieces of the path, root first; returns how many. */
static int push_path(mflc_enc *e, const mflc_path *path) {
  lua_State *L = e->L;
  if (!path)
    return 0;
  int n = push_path(e, path->up);
  luaL_checkstack(L, 4, "moonflow codec: path");
  switch (path->step) {
  case MFLC_AT_ROOT:
    lua_pushstring(L, e->root);
    break;
  case MFLC_AT_INDEX:
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)path->n);
    break;
  case MFLC_AT_KEY:
    push_key(L, path->idx);
    break;
  case MFLC_AT_IN_KEY:
    lua_pushliteral(L, "<key>");
    break;
  case MFLC_AT_UPVALUE:
    if (path->name && path->name[0] && strcmp(path->name, "(no name)") != 0)
      lua_pushfstring(L, ".upvalue[%s]", path->name);
    else
      lua_pushfstring(L, ".upvalue[%d]", (int)path->n);
    break;
  case MFLC_AT_ENCODED:
    lua_pushliteral(L, "<encoded>");
    break;
  }
  return n + 1;
}

void mflc_refuse(mflc_enc *e, const mflc_path *path, int code, const char *fmt,
                 ...) {
  lua_State *L = e->L;
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  lua_concat(L, push_path(e, path));
  mfl_push_error(L, "UsageError", "%s: %s", lua_tostring(L, -1), what);
  lua_insert(L, -2);
  lua_setfield(L, -2, "path");
  e->code = code;
  lua_error(L);
  __builtin_unreachable();
}

void mflc_enter(mflc_enc *e, const mflc_path *path) {
  if (++e->depth > MFL_CODEC_MAX_DEPTH)
    mflc_refuse(e, path, MFL_CODEC_EDEPTH, "nesting deeper than %d",
                MFL_CODEC_MAX_DEPTH);
  luaL_checkstack(e->L, 16, "moonflow codec: nesting");
}

/* }====== */

/* {====== Values ====== */

/* The slot of p: its own, or the empty one where it would go. */
static mflc_slot *seen_slot(const mflc_enc *e, const void *p) {
  size_t mask = ((size_t)1 << e->seen_bits) - 1;
  uintptr_t a = (uintptr_t)p >> 4;
  size_t i = (size_t)(a ^ (a >> e->seen_bits)) & mask;
  while (e->seen[i].key && e->seen[i].key != p)
    i = (i + 1) & mask;
  return &e->seen[i];
}

static void seen_grow(mflc_enc *e) {
  int bits = e->seen_bits + 1;
  mflc_slot *old = e->seen;
  size_t old_n = (size_t)1 << e->seen_bits;
  mflc_slot *slots = calloc((size_t)1 << bits, sizeof *slots);
  if (!slots)
    grow(e, SIZE_MAX); /* raises the memory error */
  e->seen = slots;
  e->seen_bits = bits;
  for (size_t i = 0; i < old_n; i++)
    if (old[i].key)
      *seen_slot(e, old[i].key) = old[i];
  if (old != e->seen_small)
    free(old);
}

int mflc_ref(mflc_enc *e, int idx, const mflc_path *path) {
  const void *p = lua_topointer(e->L, idx);
  if (e->seen_count + 1 > ((size_t)1 << e->seen_bits) / 2)
    seen_grow(e);
  mflc_slot *s = seen_slot(e, p);
  if (s->key) {
    if (s->ref < 0)
      mflc_refuse(e, path, MFL_CODEC_EVALUE,
                  "a cycle through a value with a registered codec cannot be "
                  "copied");
    put1(e, MFLC_REF);
    mflc_put_varint(e, (uint64_t)s->ref);
    return 1;
  }
  s->key = p;
  s->ref = e->nrefs++;
  e->seen_count++;
  return 0;
}

static void put_integer(mflc_enc *e, lua_Integer v) {
  if (v >= 0 && v <= 127)
    put1(e, MFLC_FIXINT + (unsigned)v);
  else if (v >= INT8_MIN && v <= INT8_MAX)
    put_le(e, MFLC_INT8, (uint64_t)v, 1);
  else if (v >= INT16_MIN && v <= INT16_MAX)
    put_le(e, MFLC_INT16, (uint64_t)v, 2);
  else if (v >= INT32_MIN && v <= INT32_MAX)
    put_le(e, MFLC_INT32, (uint64_t)v, 4);
  else
    put_le(e, MFLC_INT64, (uint64_t)v, 8);
}

static void put_float(mflc_enc *e, lua_Number v) {
  double d = (double)v;
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  put_le(e, MFLC_FLOAT, bits, 8);
}

void mflc_encode_string(mflc_enc *e, int idx) {
  size_t len;
  const char *s = lua_tolstring(e->L, idx, &len);
  if (mflc_string_is_ref(len) && mflc_ref(e, idx, NULL))
    return;
  put1(e, MFLC_STRING);
  mflc_put_varint(e, len);
  mflc_put(e, s, len);
}

/* The array part, then the other pairs, each preceded by its count. */
static void encode_body(mflc_enc *e, int idx, const mflc_path *path) {
  lua_State *L = e->L;
  mflc_enter(e, path);
  size_t at = e->b->len;
  put1(e, 0); /* narr, patched */
  put1(e, 0); /* nhash, patched */
  lua_Integer n = 0;
  mflc_path item = {path, MFLC_AT_INDEX, 0, 0, NULL};
  while (lua_rawgeti(L, idx, n + 1) != LUA_TNIL) {
    item.n = ++n;
    mflc_encode_value(e, lua_gettop(L), &item);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  at += patch_varint(e, at, (uint64_t)n);
  uint64_t pairs = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k >= 1 && k <= n) {
        lua_pop(L, 1);
        continue;
      }
    }
    int v = lua_gettop(L);
    mflc_path in_key = {path, MFLC_AT_IN_KEY, 0, 0, NULL};
    mflc_encode_value(e, v - 1, &in_key);
    mflc_path at_key = {path, MFLC_AT_KEY, v - 1, 0, NULL};
    mflc_encode_value(e, v, &at_key);
    lua_pop(L, 1);
    pairs++;
  }
  patch_varint(e, at, pairs);
  e->depth--;
}

/* A table or userdata whose metatable is registered; the entry on top. */
static void encode_registered(mflc_enc *e, int idx, const mflc_path *path) {
  lua_State *L = e->L;
  int entry = lua_gettop(L);
  if (mflc_ref(e, idx, path)) {
    lua_pop(L, 1);
    return;
  }
  lua_Integer ref = e->nrefs - 1;
  if (lua_rawgeti(L, entry, 3) == LUA_TNIL) { /* no encode: copy it */
    lua_pop(L, 1);
    if (lua_type(L, idx) != LUA_TTABLE) {
      lua_rawgeti(L, entry, 1);
      mflc_refuse(e, path, MFL_CODEC_EVALUE,
                  "a userdata whose codec (%s) has no encode function cannot "
                  "be copied",
                  lua_tostring(L, -1));
    }
    put1(e, MFLC_TABLE_MT);
    lua_rawgeti(L, entry, 1);
    mflc_encode_string(e, lua_gettop(L));
    lua_pop(L, 1);
    encode_body(e, idx, path);
    lua_pop(L, 1);
    return;
  }
  put1(e, MFLC_CUSTOM);
  lua_rawgeti(L, entry, 1);
  mflc_encode_string(e, lua_gettop(L));
  lua_pop(L, 1);
  /* while its encoding is under way, a ref to it is a cycle */
  const void *self = lua_topointer(L, idx);
  seen_slot(e, self)->ref = -1 - ref;
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1); /* encode(value) */
  /* kept alive, so that its address is not reused by another value */
  if (lua_isnil(L, e->anchors)) {
    lua_newtable(L);
    lua_replace(L, e->anchors);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, e->anchors, ++e->nanchors);
  mflc_path encoded = {path, MFLC_AT_ENCODED, 0, 0, NULL};
  mflc_enter(e, &encoded);
  mflc_encode_value(e, lua_gettop(L), &encoded);
  e->depth--;
  seen_slot(e, self)->ref = ref;
  lua_pop(L, 2); /* encoded value, entry */
}

/* Pushes the registry entry of the metatable of the value at idx (which
 * has one), or raises naming what it is. */
static void push_entry(mflc_enc *e, const mflc_path *path, const char *what) {
  lua_State *L = e->L;
  lua_pushvalue(L, -1); /* the metatable */
  if (lua_rawget(L, e->codecs) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  const char *name = "";
  if (lua_getfield(L, -2, "__name") == LUA_TSTRING)
    name = lua_tostring(L, -1);
  mflc_refuse(e, path, MFL_CODEC_EVALUE, "%s%s%s%s cannot be copied", what,
              *name ? " (" : "", name, *name ? ")" : "");
}

static void encode_table(mflc_enc *e, int idx, const mflc_path *path) {
  lua_State *L = e->L;
  if ((e->flags & MFL_CODEC_FUNCTIONS) && mflc_encode_by_name(e, idx))
    return;
  if (lua_getmetatable(L, idx)) {
    push_entry(e, path, "a table with an unregistered metatable");
    encode_registered(e, idx, path);
    return;
  }
  if (mflc_ref(e, idx, path))
    return;
  put1(e, MFLC_TABLE);
  encode_body(e, idx, path);
}

static void encode_userdata(mflc_enc *e, int idx, const mflc_path *path) {
  if (!lua_getmetatable(e->L, idx))
    mflc_refuse(e, path, MFL_CODEC_EVALUE,
                "a userdata without a registered codec cannot be copied");
  push_entry(e, path, "a userdata without a registered codec");
  encode_registered(e, idx, path);
}

void mflc_encode_value(mflc_enc *e, int idx, const mflc_path *path) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    put1(e, MFLC_NIL);
    break;
  case LUA_TBOOLEAN:
    put1(e, lua_toboolean(L, idx) ? MFLC_TRUE : MFLC_FALSE);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      put_integer(e, lua_tointeger(L, idx));
    else
      put_float(e, lua_tonumber(L, idx));
    break;
  case LUA_TSTRING:
    mflc_encode_string(e, idx);
    break;
  case LUA_TTABLE:
    encode_table(e, idx, path);
    break;
  case LUA_TFUNCTION:
    mflc_encode_function(e, idx, path);
    break;
  case LUA_TUSERDATA:
    encode_userdata(e, idx, path);
    break;
  case LUA_TLIGHTUSERDATA:
    mflc_refuse(e, path, MFL_CODEC_EVALUE, "a light userdata cannot be copied");
    break;
  default: /* LUA_TTHREAD */
    mflc_refuse(e, path, MFL_CODEC_EVALUE, "a coroutine cannot be copied");
  }
}

/* }====== */
