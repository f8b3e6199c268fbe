/*
 * runners_msg.c -- the messages of task runners that copy: parts (a list
 * of byte strings, runners.h) holding encoded values, and the Tasks those
 * values meet.
 *
 * Values are encoded with the codec (codec.h), functions included.  A Task
 * is encoded by moonflow.runners' codec as its id in the message, its name
 * and plain options; its function and function options follow as more
 * parts, so that a task whose function refers to the task (recursion)
 * travels.  Both need a table for the message being made or read, the
 * session: created by the Lua side the first time a Task is met
 * (core.codec_session), cleared here before each message, so that a
 * message without Tasks costs no Lua call.
 */
#include <stdlib.h>
#include <string.h>

#include "runners.h"

static const char key_session, key_put_tasks, key_get_tasks;

/* {====== Parts ====== */

static void put_u32(char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (char)(v >> (8 * i));
}

static uint32_t get_u32(const char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v |= (uint32_t)(unsigned char)p[i] << (8 * i);
  return v;
}

int mflr_parts_begin(mfl_buffer *b) {
  b->len = 0;
  if (mfl_buffer_reserve(b, 4) != 0)
    return -1;
  put_u32(b->data, 0);
  b->len = 4;
  return 0;
}

int mflr_parts_add(mfl_buffer *b, const char *bytes, size_t len) {
  if (len > UINT32_MAX || mfl_buffer_reserve(b, 4 + len) != 0)
    return -1;
  put_u32(b->data + b->len, (uint32_t)len);
  if (len)
    memcpy(b->data + b->len + 4, bytes, len);
  b->len += 4 + len;
  put_u32(b->data, get_u32(b->data) + 1);
  return 0;
}

int mflr_parts_open(mflr_parts *it, const char *bytes, size_t len) {
  it->p = bytes;
  it->left = len;
  it->count = 0;
  if (len < 4)
    return -1;
  uint32_t n = get_u32(bytes);
  size_t at = 4;
  for (uint32_t i = 0; i < n; i++) {
    if (len - at < 4 || len - at - 4 < get_u32(bytes + at))
      return -1;
    at += 4 + get_u32(bytes + at);
  }
  if (at != len)
    return -1;
  it->p = bytes + 4;
  it->left = len - 4;
  it->count = (int)n;
  return 0;
}

int mflr_parts_next(mflr_parts *it, const char **part, size_t *len) {
  if (it->count <= 0)
    return 0;
  *len = get_u32(it->p);
  *part = it->p + 4;
  it->p += 4 + *len;
  it->left -= 4 + *len;
  it->count--;
  return 1;
}

int mflr_parts_push(lua_State *L, const char *bytes, size_t len) {
  mflr_parts it;
  if (mflr_parts_open(&it, bytes, len) != 0 || !lua_checkstack(L, it.count + 4))
    return -1;
  int n = 0;
  const char *part;
  size_t plen;
  while (mflr_parts_next(&it, &part, &plen)) {
    lua_pushlstring(L, part, plen);
    n++;
  }
  return n;
}

/* }====== */

/* {====== Values ====== */

void mflr_session_reset(lua_State *L) {
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_session);
}

int mflr_put_value(lua_State *L, int idx, mfl_buffer *parts, const char *root) {
  idx = lua_absindex(L, idx);
  size_t at = parts->len;
  if (mfl_buffer_reserve(parts, 4) != 0) {
    lua_pushliteral(L, "not enough memory");
    return MFL_CODEC_ERROR;
  }
  parts->len += 4; /* the length, once known */
  /* Plain data first: with functions allowed, the codec looks every table
   * up among the loaded modules (and counts them); most arguments and
   * results hold no function, and those that do come out the same. */
  int rc = lua_type(L, idx) == LUA_TFUNCTION
               ? MFL_CODEC_EVALUE
               : mfl_encode(L, idx, parts, 0, root);
  if (rc == MFL_CODEC_EVALUE) {
    if (lua_type(L, idx) != LUA_TFUNCTION)
      lua_pop(L, 1); /* its error */
    rc = mfl_encode(L, idx, parts, MFL_CODEC_FUNCTIONS, root);
  }
  if (rc != MFL_CODEC_OK) {
    parts->len = at;
    return rc;
  }
  size_t len = parts->len - at - 4;
  if (len > UINT32_MAX) {
    parts->len = at;
    lua_pushliteral(L, "a value too big to copy (4 GiB or more)");
    return MFL_CODEC_ERROR;
  }
  put_u32(parts->data + at, (uint32_t)len);
  put_u32(parts->data, get_u32(parts->data) + 1);
  return MFL_CODEC_OK;
}

int mflr_put_tasks(lua_State *L, mfl_buffer *parts) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_session) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  /* session -> put_tasks(session) -> part strings */
  int top = lua_gettop(L) - 1;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_put_tasks);
  lua_insert(L, -2);
  int rc = lua_pcall(L, 1, LUA_MULTRET, 0); /* the Tasks it meets join */
  mflr_session_reset(L);
  if (rc != LUA_OK)
    return -1;
  for (int i = top + 1; i <= lua_gettop(L); i++) {
    size_t len;
    const char *part = lua_tolstring(L, i, &len);
    if (part && mflr_parts_add(parts, part, len) != 0) {
      lua_settop(L, top);
      lua_pushliteral(L, "not enough memory");
      return -1;
    }
  }
  lua_settop(L, top);
  return 0;
}

int mflr_get_value(lua_State *L, mflr_parts *it) {
  const char *part;
  size_t len;
  if (!mflr_parts_next(it, &part, &len)) {
    mfl_push_error(L, "DecodeError", "a message with a part missing");
    return MFL_CODEC_EINPUT;
  }
  return mfl_decode(L, part, len, MFL_CODEC_FUNCTIONS | MFL_CODEC_REQUIRE);
}

int mflr_get_tasks(lua_State *L, mflr_parts *it) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_session) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  /* session -> get_tasks(session, parts...) */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_get_tasks);
  lua_insert(L, -2);
  if (!lua_checkstack(L, it->count + 4)) {
    lua_pop(L, 2);
    mflr_session_reset(L);
    lua_pushliteral(L, "not enough memory");
    return -1;
  }
  int n = 1;
  const char *part;
  size_t len;
  while (mflr_parts_next(it, &part, &len)) {
    lua_pushlstring(L, part, len);
    n++;
  }
  int rc = lua_pcall(L, n, 0, 0); /* the Tasks it meets join */
  mflr_session_reset(L);
  return rc == LUA_OK ? 0 : -1;
}

/* core.codec_session() -> the table of the message being encoded or
 * decoded, made when first asked for. */
static int l_codec_session(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_session) != LUA_TNIL)
    return 1;
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_session);
  return 1;
}

/* core.set_task_parts(put, get): put(session) -> parts with the functions
 * of the Tasks a message met; get(session, parts...) gives them to the
 * Tasks made while decoding. */
static int l_set_task_parts(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_put_tasks);
  lua_pushvalue(L, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_get_tasks);
  return 0;
}

/* core.pack(value, name) -> parts (a string): a value for another state. */
static int l_pack(lua_State *L) {
  luaL_checkany(L, 1);
  const char *name = luaL_optstring(L, 2, "value");
  lua_settop(L, 2);
  mfl_buffer *b = mfl_push_buffer(L); /* (freed before any raise) */
  mflr_session_reset(L);
  if (mflr_parts_begin(b) != 0) {
    mfl_buffer_free(b);
    return luaL_error(L, "not enough memory");
  }
  if (mflr_put_value(L, 1, b, name) != MFL_CODEC_OK ||
      mflr_put_tasks(L, b) != 0) {
    mfl_buffer_free(b);
    return lua_error(L);
  }
  lua_pushlstring(L, b->data, b->len);
  mfl_buffer_free(b);
  return 1;
}

/* core.unpack(parts) -> the value core.pack made. */
static int l_unpack(lua_State *L) {
  size_t len;
  const char *bytes = luaL_checklstring(L, 1, &len);
  mflr_parts it;
  if (mflr_parts_open(&it, bytes, len) != 0)
    return mfl_raise(L, "DecodeError", "not a message of parts");
  mflr_session_reset(L);
  if (mflr_get_value(L, &it) != MFL_CODEC_OK)
    return lua_error(L);
  if (mflr_get_tasks(L, &it) != 0)
    return lua_error(L);
  return 1;
}

static const luaL_Reg msg_functions[] = {{"codec_session", l_codec_session},
                                         {"set_task_parts", l_set_task_parts},
                                         {"pack", l_pack},
                                         {"unpack", l_unpack},
                                         {NULL, NULL}};

void mflr_open_msg(lua_State *L) { mfl_setfuncs(L, msg_functions); }

/* }====== */
