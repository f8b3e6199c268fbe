/*
 * codec.c -- the value codec's entry points (codec.h): the byte buffer,
 * mfl_encode and mfl_decode run protected, the registry of metatables, and
 * core.encode / core.decode / core.codec_register for the Lua parts and
 * the tests (internal: not in api.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"

static const char key_codecs, key_buffer_mt;

/* {====== Buffer ====== */

int mfl_buffer_reserve(mfl_buffer *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  if (extra > SIZE_MAX - b->len)
    return -1;
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *data = realloc(b->data, cap);
  if (!data)
    return -1;
  b->data = data;
  b->cap = cap;
  return 0;
}

void mfl_buffer_free(mfl_buffer *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* }====== */

/* {====== The registry of metatables ====== */

void mflc_push_codecs(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_codecs) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_codecs);
}

/* Removes the entry under key (a name or a metatable) and its other key. */
static void unregister(lua_State *L, int codecs, int key) {
  lua_pushvalue(L, key);
  if (lua_rawget(L, codecs) == LUA_TTABLE) {
    for (int i = 1; i <= 2; i++) {
      lua_rawgeti(L, -1, i);
      lua_pushnil(L);
      lua_rawset(L, codecs);
    }
  }
  lua_pop(L, 1);
}

void mfl_codec_register(lua_State *L, const char *name, int mt, int encode,
                        int decode) {
  mt = mt ? lua_absindex(L, mt) : 0;
  encode = encode ? lua_absindex(L, encode) : 0;
  decode = decode ? lua_absindex(L, decode) : 0;
  if (mt)
    luaL_checktype(L, mt, LUA_TTABLE);
  if ((encode != 0) != (decode != 0))
    luaL_error(L,
               "moonflow codec: '%s' needs both encode and decode, or "
               "neither",
               name);
  if (encode) {
    luaL_checktype(L, encode, LUA_TFUNCTION);
    luaL_checktype(L, decode, LUA_TFUNCTION);
  }
  mflc_push_codecs(L);
  int codecs = lua_gettop(L);
  lua_pushstring(L, name);
  int key = lua_gettop(L);
  unregister(L, codecs, key);
  if (mt) {
    unregister(L, codecs, mt);
    lua_createtable(L, 4, 0);
    lua_pushvalue(L, key);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, mt);
    lua_rawseti(L, -2, 2);
    if (encode) {
      lua_pushvalue(L, encode);
      lua_rawseti(L, -2, 3);
      lua_pushvalue(L, decode);
      lua_rawseti(L, -2, 4);
    }
    lua_pushvalue(L, key);
    lua_pushvalue(L, -2);
    lua_rawset(L, codecs);
    lua_pushvalue(L, mt);
    lua_pushvalue(L, -2);
    lua_rawset(L, codecs);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

/* }====== */

/* {====== Encoding and decoding, protected ====== */

/* value ctx -> */
static int encode_protected(lua_State *L) {
  mflc_enc *e = lua_touserdata(L, 2);
  e->L = L;
  lua_pushnil(L);
  e->anchors = lua_gettop(L);
  lua_pushnil(L);
  e->upvalues = lua_gettop(L);
  lua_pushnil(L);
  e->names = lua_gettop(L);
  mflc_push_codecs(L);
  e->codecs = lua_gettop(L);
  mflc_put(e, (const unsigned char[]){MFLC_MAGIC, MFLC_VERSION}, 2);
  mflc_path root = {NULL, MFLC_AT_ROOT, 0, 0, NULL};
  mflc_encode_value(e, 1, &root);
  return 0;
}

int mfl_encode(lua_State *L, int idx, mfl_buffer *out, unsigned flags,
               const char *root_name) {
  mflc_enc e;
  memset(&e, 0, sizeof e);
  e.seen = e.seen_small;
  e.seen_bits = MFLC_SEEN_SMALL_BITS;
  e.b = out;
  e.flags = flags;
  e.root = root_name ? root_name : "value";
  size_t len = out->len;
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, encode_protected);
  lua_pushvalue(L, idx);
  lua_pushlightuserdata(L, &e);
  int status = lua_pcall(L, 2, 0, 0);
  if (e.seen != e.seen_small)
    free(e.seen);
  if (status == LUA_OK)
    return MFL_CODEC_OK;
  out->len = len;
  return e.code ? e.code : MFL_CODEC_ERROR;
}

/* ctx -> value */
static int decode_protected(lua_State *L) {
  mflc_dec *d = lua_touserdata(L, 1);
  d->L = L;
  lua_createtable(L, 16, 0);
  d->refs = lua_gettop(L);
  mflc_push_codecs(L);
  d->codecs = lua_gettop(L);
  const unsigned char *h = mflc_get(d, 2, "the header");
  if (h[0] != MFLC_MAGIC)
    mflc_bad(d, "not a moonflow codec message (byte 0 is 0x%02x)", h[0]);
  if (h[1] != MFLC_VERSION)
    mflc_bad(d, "codec version %u at byte 1; this decoder reads version %u",
             h[1], MFLC_VERSION);
  mflc_decode_value(d);
  if (d->p != d->end)
    mflc_bad(d, "%zu bytes after the value, from byte %zu",
             (size_t)(d->end - d->p), mflc_offset(d));
  return 1;
}

int mfl_decode(lua_State *L, const char *bytes, size_t len, unsigned flags) {
  mflc_dec d;
  memset(&d, 0, sizeof d);
  d.start = d.p = (const unsigned char *)bytes;
  d.end = d.start + len;
  d.flags = flags;
  lua_pushcfunction(L, decode_protected);
  lua_pushlightuserdata(L, &d);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK)
    return MFL_CODEC_OK;
  return d.code ? d.code : MFL_CODEC_ERROR;
}

/* }====== */

/* {====== core.encode, core.decode, core.codec_register ====== */

static int buffer_gc(lua_State *L) {
  mfl_buffer_free(lua_touserdata(L, 1));
  return 0;
}

mfl_buffer *mfl_push_buffer(lua_State *L) {
  mfl_buffer *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_buffer_mt);
  lua_setmetatable(L, -2);
  return b;
}

static unsigned opt_flags(lua_State *L, int idx) {
  unsigned flags = 0;
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getfield(L, idx, "functions") != LUA_TNIL && lua_toboolean(L, -1))
    flags |= MFL_CODEC_FUNCTIONS;
  if (lua_getfield(L, idx, "strip") != LUA_TNIL && lua_toboolean(L, -1))
    flags |= MFL_CODEC_STRIP;
  if (lua_getfield(L, idx, "require") != LUA_TNIL && lua_toboolean(L, -1))
    flags |= MFL_CODEC_REQUIRE;
  lua_pop(L, 3);
  return flags;
}

/* core.encode(value, {functions = bool, strip = bool, name = "args"}) */
static int l_encode(lua_State *L) {
  unsigned flags = opt_flags(L, 2);
  const char *name = "value";
  luaL_checkany(L, 1);
  if (lua_istable(L, 2) && lua_getfield(L, 2, "name") != LUA_TNIL)
    name = luaL_checkstring(L, -1); /* kept on the stack */
  mfl_buffer *b = mfl_push_buffer(L);
  if (mfl_encode(L, 1, b, flags, name) != MFL_CODEC_OK) {
    mfl_buffer_free(b);
    return lua_error(L);
  }
  lua_pushlstring(L, b->data, b->len);
  mfl_buffer_free(b);
  return 1;
}

/* core.decode(bytes, {functions = bool, require = bool}) */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned flags = opt_flags(L, 2) & (MFL_CODEC_FUNCTIONS | MFL_CODEC_REQUIRE);
  if (mfl_decode(L, s, len, flags) != MFL_CODEC_OK)
    return lua_error(L);
  return 1;
}

/* core.codec_register(name, mt | nil, encode?, decode?) */
static int l_codec_register(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  mfl_codec_register(L, name, lua_isnoneornil(L, 2) ? 0 : 2,
                     lua_isnoneornil(L, 3) ? 0 : 3,
                     lua_isnoneornil(L, 4) ? 0 : 4);
  return 0;
}

void mfl_open_codec(lua_State *L) {
  /* core -> core */
  lua_createtable(L, 0, 3); /* the buffers' (mfl_push_buffer) */
  lua_pushcfunction(L, buffer_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "moonflow.Buffer");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "moonflow.Buffer"); /* (protected, as mfl_protect_mt) */
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_buffer_mt);
  /* moonflow's errors travel with their metatable (mfl_open_errors first) */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_error_mt) == LUA_TTABLE)
    mfl_codec_register(L, "moonflow.Error", -1, 0, 0);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_encode);
  lua_setfield(L, -2, "encode");
  lua_pushcfunction(L, l_decode);
  lua_setfield(L, -2, "decode");
  lua_pushcfunction(L, l_codec_register);
  lua_setfield(L, -2, "codec_register");
  lua_pushinteger(L, MFL_CODEC_MAX_DEPTH);
  lua_setfield(L, -2, "codec_max_depth");
}

/* }====== */
