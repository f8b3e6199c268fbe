/*
 * codec_fn.c -- what travels only with MFL_CODEC_FUNCTIONS: Lua functions,
 * C functions by name, loaded modules by name, the global table.
 *
 * A Lua function travels as its bytecode (lua_dump) and its upvalues
 * copied by value, as Lanes does; an upvalue that two closures of the
 * message share (lua_upvalueid) is shared again on arrival
 * (lua_upvaluejoin).  The global table (what _ENV usually is) becomes the
 * receiving state's.  A C function has no bytecode: it travels as the name
 * under which a loaded module holds it ("string", "format"), and so does a
 * module's table (a task that uses `mf` uses the worker's moonflow).  The
 * names come from a table built from package.loaded, cached per state and
 * rebuilt when a module was loaded since, or a C function is not found.
 */
#include <string.h>

#include "binding.h"
#include "codec_impl.h"

static const char key_names;

/* {====== Names of loaded modules and their C functions ====== */

static lua_Integer count_loaded(lua_State *L, int loaded) {
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    lua_pop(L, 1);
    n++;
  }
  return n;
}

/* names[mod] = modname; names[cfunction] = { modname, field } */
static void add_module(lua_State *L, int names, int modname, int mod) {
  if (lua_type(L, mod) != LUA_TTABLE)
    return;
  lua_pushvalue(L, mod);
  if (lua_rawget(L, names) != LUA_TNIL) { /* the same table twice */
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, mod);
  lua_pushvalue(L, modname);
  lua_rawset(L, names);
  lua_pushnil(L);
  while (lua_next(L, mod)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
      lua_pushvalue(L, -1);
      if (lua_rawget(L, names) == LUA_TNIL) {
        lua_createtable(L, 2, 0);
        lua_pushvalue(L, modname);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -4); /* the field */
        lua_rawseti(L, -2, 2);
        lua_pushvalue(L, -3); /* the function */
        lua_insert(L, -2);
        lua_rawset(L, names);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

/* Pushes a new names table, cached in the registry. */
static void build_names(lua_State *L, int loaded) {
  /* the standard library first, so its names win */
  static const char *const std[] = {"_G",    "string",  "table", "math",
                                    "io",    "os",      "utf8",  "coroutine",
                                    "debug", "package", NULL};
  luaL_checkstack(L, 10, "moonflow codec: names");
  lua_newtable(L);
  int names = lua_gettop(L);
  for (const char *const *s = std; *s; s++) {
    lua_pushstring(L, *s);
    lua_getfield(L, loaded, *s);
    add_module(L, names, names + 1, names + 2);
    lua_pop(L, 2);
  }
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING)
      add_module(L, names, names + 1, names + 2);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, count_loaded(L, loaded));
  lua_rawseti(L, names, 0);
  lua_pushvalue(L, names);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_names);
}

/* Fills e->names (its slot), rebuilding the table when modules were loaded
 * since it was built, or when rebuild. */
static void need_names(mflc_enc *e, int rebuild) {
  lua_State *L = e->L;
  if (!rebuild && !lua_isnil(L, e->names))
    return;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_gettop(L);
  if (!rebuild && lua_rawgetp(L, LUA_REGISTRYINDEX, &key_names) == LUA_TTABLE &&
      lua_rawgeti(L, -1, 0) == LUA_TNUMBER &&
      lua_tointeger(L, -1) == count_loaded(L, loaded)) {
    lua_pop(L, 1);
  } else {
    lua_settop(L, loaded);
    build_names(L, loaded);
    e->names_fresh = 1;
  }
  lua_replace(L, e->names);
  lua_pop(L, 1); /* loaded */
}

int mflc_encode_by_name(mflc_enc *e, int idx) {
  lua_State *L = e->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int globals = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  if (globals) {
    mflc_put(e, (const unsigned char[]){MFLC_GLOBALS}, 1);
    return 1;
  }
  need_names(e, 0);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->names) == LUA_TSTRING) {
    mflc_put(e, (const unsigned char[]){MFLC_MODULE}, 1);
    mflc_encode_string(e, lua_gettop(L));
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  return 0;
}

/* }====== */

/* {====== Encoding ====== */

static void encode_cfunction(mflc_enc *e, int idx, const mflc_path *path) {
  lua_State *L = e->L;
  need_names(e, 0);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->names) != LUA_TTABLE && !e->names_fresh) {
    lua_pop(L, 1);
    need_names(e, 1);
    lua_pushvalue(L, idx);
    lua_rawget(L, e->names);
  }
  if (lua_type(L, -1) != LUA_TTABLE)
    mflc_refuse(e, path, MFL_CODEC_EVALUE,
                "a C function that no loaded module holds cannot be copied");
  mflc_put(e, (const unsigned char[]){MFLC_CFUNCTION}, 1);
  lua_rawgeti(L, -1, 1);
  mflc_encode_string(e, lua_gettop(L));
  lua_rawgeti(L, -2, 2);
  mflc_encode_string(e, lua_gettop(L));
  lua_pop(L, 3);
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  mfl_buffer *b = ud;
  (void)L;
  if (mfl_buffer_reserve(b, n) != 0)
    return 1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* 0x0d u32-length bytecode u8-nups nups*(value | 0x0e function-ref u8-n) */
void mflc_encode_function(mflc_enc *e, int idx, const mflc_path *path) {
  lua_State *L = e->L;
  if (!(e->flags & MFL_CODEC_FUNCTIONS))
    mflc_refuse(e, path, MFL_CODEC_EVALUE,
                "a function cannot be copied here (only data travels)");
  if (lua_iscfunction(L, idx)) {
    encode_cfunction(e, idx, path);
    return;
  }
  if (mflc_ref(e, idx, path))
    return;
  lua_Integer self = e->nrefs - 1;
  mflc_put(e, (const unsigned char[]){MFLC_LFUNCTION, 0, 0, 0, 0}, 5);
  size_t at = e->b->len;
  lua_pushvalue(L, idx);
  int status =
      lua_dump(L, dump_writer, e->b, (e->flags & MFL_CODEC_STRIP) != 0);
  lua_pop(L, 1);
  if (status != 0) {
    e->code = MFL_CODEC_ERROR;
    luaL_error(L, "moonflow codec: not enough memory to encode a function");
  }
  size_t n = e->b->len - at;
  if (n > UINT32_MAX)
    mflc_refuse(e, path, MFL_CODEC_EVALUE,
                "a function of over 4 GB of bytecode cannot be copied");
  for (int i = 0; i < 4; i++)
    e->b->data[at - 4 + i] = (char)(n >> (8 * i));
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  mflc_put(e, &ar.nups, 1);
  if (ar.nups == 0)
    return;
  if (lua_isnil(L, e->upvalues)) {
    lua_newtable(L);
    lua_replace(L, e->upvalues);
  }
  mflc_enter(e, path);
  for (int i = 1; i <= ar.nups; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    void *id = lua_upvalueid(L, idx, i);
    if (lua_rawgetp(L, e->upvalues, id) == LUA_TNUMBER) { /* shared */
      lua_Integer at_fn = lua_tointeger(L, -1);
      mflc_put(e, (const unsigned char[]){MFLC_UPJOIN}, 1);
      mflc_put_varint(e, (uint64_t)(at_fn >> 8));
      mflc_put(e, (const unsigned char[]){(unsigned char)(at_fn & 0xff)}, 1);
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    /* before its value, so that closures inside that value can share it */
    lua_pushinteger(L, self * 256 + i);
    lua_rawsetp(L, e->upvalues, id);
    mflc_path step = {path, MFLC_AT_UPVALUE, 0, i, name};
    mflc_encode_value(e, lua_gettop(L), &step);
    lua_pop(L, 1);
  }
  e->depth--;
}

/* }====== */

/* {====== Decoding ====== */

typedef struct chunk {
  const char *p;
  size_t n;
} chunk;

static const char *chunk_reader(lua_State *L, void *ud, size_t *size) {
  chunk *c = ud;
  (void)L;
  *size = c->n;
  c->n = 0;
  return c->p;
}

void mflc_decode_lfunction(mflc_dec *d) {
  lua_State *L = d->L;
  size_t at = mflc_offset(d) - 1;
  lua_Integer ref = ++d->nrefs;
  const unsigned char *p = mflc_get(d, 4, "a bytecode length");
  size_t n = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 |
             (size_t)p[3] << 24;
  chunk c = {(const char *)mflc_get(d, n, "bytecode"), n};
  if (lua_load(L, chunk_reader, &c, "=(codec)", "b") != LUA_OK)
    mflc_bad(d, "bad bytecode in the function at byte %zu: %s", at,
             lua_tostring(L, -1));
  int f = lua_gettop(L);
  lua_pushvalue(L, f);
  lua_rawseti(L, d->refs, ref);
  int nups = mflc_get_byte(d, "an upvalue count");
  lua_Debug ar;
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  if (ar.nups != nups)
    mflc_bad(d, "the function at byte %zu has %d upvalues, not %d", at, ar.nups,
             nups);
  mflc_enter_dec(d);
  for (int i = 1; i <= nups; i++) {
    if (d->p < d->end && *d->p == MFLC_UPJOIN) {
      size_t join_at = mflc_offset(d);
      d->p++;
      uint64_t r = mflc_get_varint(d, "a function ref");
      int other = mflc_get_byte(d, "an upvalue number");
      if (r >= (uint64_t)d->nrefs ||
          lua_rawgeti(L, d->refs, (lua_Integer)r + 1) != LUA_TFUNCTION ||
          lua_iscfunction(L, -1) || other < 1 ||
          lua_getupvalue(L, -1, other) == NULL)
        mflc_bad(d, "bad upvalue join at byte %zu", join_at);
      lua_pop(L, 1);
      lua_upvaluejoin(L, f, i, -1, other);
      lua_pop(L, 1);
      continue;
    }
    mflc_decode_value(d);
    lua_setupvalue(L, f, i);
  }
  d->depth--;
}

static void push_loaded(mflc_dec *d, size_t at, const char *what) {
  lua_State *L = d->L;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  if (lua_rawget(L, -2) != LUA_TTABLE && (d->flags & MFL_CODEC_REQUIRE)) {
    lua_pop(L, 1); /* require(name): its errors are the decode's */
    lua_getglobal(L, "require");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 1);
  }
  if (lua_type(L, -1) != LUA_TTABLE)
    mflc_bad(d,
             "the %s at byte %zu needs module '%s', not loaded in this state "
             "(require it first: a runner's setup)",
             what, at, lua_tostring(L, -3));
  lua_remove(L, -2);
}

void mflc_decode_cfunction(mflc_dec *d) {
  lua_State *L = d->L;
  size_t at = mflc_offset(d) - 1;
  mflc_decode_name(d, "module name");
  push_loaded(d, at, "C function");
  mflc_decode_name(d, "function name");
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) != LUA_TFUNCTION || !lua_iscfunction(L, -1))
    mflc_bad(d, "the C function at byte %zu is not %s.%s in this state", at,
             lua_tostring(L, -4), lua_tostring(L, -2));
  lua_replace(L, -4);
  lua_pop(L, 2);
}

void mflc_decode_module(mflc_dec *d) {
  size_t at = mflc_offset(d) - 1;
  mflc_decode_name(d, "module name");
  push_loaded(d, at, "module");
  lua_remove(d->L, -2);
}

/* }====== */
