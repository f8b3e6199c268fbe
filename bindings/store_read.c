/*
 * store_read.c -- reading a run store from Lua, for the CLI
 * (lua/moonflow/store_cli.lua): core.store_reader(path) opens a connection
 * (checking the file is a moonflow store first, migrating an older schema),
 * and reader:query(sql, ...) returns the rows as tables keyed by column.
 * Also mf_lua_store, the C host's way to turn the store on.
 */
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <string.h>

#include "binding.h"
#include "store.h"

typedef struct reader {
  sqlite3 *db;
} reader;

static reader *check_reader(lua_State *L) {
  reader *r = luaL_testudata(L, 1, "moonflow.StoreReader");
  if (!r || !r->db)
    mfl_raise(L, "UsageError", "expected an open store reader");
  return r;
}

/* core.store_reader(path) -> reader, or raises StoreError */
static int l_store_reader(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->db = NULL;
  luaL_setmetatable(L, "moonflow.StoreReader");
  char err[512];
  if (mfl_store_connect(path, 1, &r->db, err, sizeof err) != 0)
    return mfl_raise(L, "StoreError", "run store %s: %s", path, err);
  return 1;
}

static void push_column(lua_State *L, sqlite3_stmt *s, int i) {
  switch (sqlite3_column_type(s, i)) {
  case SQLITE_INTEGER:
    lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(s, i));
    break;
  case SQLITE_FLOAT:
    lua_pushnumber(L, sqlite3_column_double(s, i));
    break;
  case SQLITE_TEXT:
  case SQLITE_BLOB:
    lua_pushlstring(L, sqlite3_column_blob(s, i),
                    (size_t)sqlite3_column_bytes(s, i));
    break;
  default:
    lua_pushnil(L);
  }
}

/* reader:query(sql, ...) -> { {column = value, ...}, ... } */
static int reader_query(lua_State *L) {
  reader *r = check_reader(L);
  const char *sql = luaL_checkstring(L, 2);
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(r->db, sql, -1, &s, NULL) != SQLITE_OK)
    return mfl_raise(L, "StoreError", "query: %s", sqlite3_errmsg(r->db));
  int nparams = lua_gettop(L) - 2;
  for (int i = 1; i <= nparams; i++) {
    int idx = i + 2;
    if (lua_isinteger(L, idx))
      sqlite3_bind_int64(s, i, (sqlite3_int64)lua_tointeger(L, idx));
    else if (lua_type(L, idx) == LUA_TNUMBER)
      sqlite3_bind_double(s, i, lua_tonumber(L, idx));
    else if (lua_type(L, idx) == LUA_TSTRING)
      sqlite3_bind_text(s, i, lua_tostring(L, idx), -1, SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(s, i);
  }
  lua_newtable(L);
  int rows = 0, rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    int n = sqlite3_column_count(s);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
      push_column(L, s, i);
      lua_setfield(L, -2, sqlite3_column_name(s, i));
    }
    lua_rawseti(L, -2, ++rows);
  }
  if (rc != SQLITE_DONE) {
    lua_pushstring(L, sqlite3_errmsg(r->db));
    sqlite3_finalize(s);
    return mfl_raise(L, "StoreError", "query: %s", lua_tostring(L, -1));
  }
  sqlite3_finalize(s);
  return 1;
}

static int reader_close(lua_State *L) {
  reader *r = luaL_testudata(L, 1, "moonflow.StoreReader");
  if (r && r->db) {
    sqlite3_close(r->db);
    r->db = NULL;
  }
  return 0;
}

/* core.process_alive(pid) -> whether a process with that id exists here
 * (a run left going by a process that is gone did not end well) */
static int l_process_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  lua_pushboolean(L, pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM));
  return 1;
}

static const luaL_Reg reader_methods[] = {
    {"query", reader_query}, {"close", reader_close}, {NULL, NULL}};

void mfl_open_store_reader(lua_State *L) {
  if (luaL_newmetatable(L, "moonflow.StoreReader")) {
    lua_newtable(L);
    luaL_setfuncs(L, reader_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, reader_close);
    lua_setfield(L, -2, "__gc");
    mfl_protect_mt(L);
  }
  lua_pop(L, 1);
  mfl_pushcfunction(L, l_store_reader);
  lua_setfield(L, -2, "store_reader");
  lua_pushcfunction(L, l_process_alive);
  lua_setfield(L, -2, "process_alive");
}

/* {====== The C host's switch ====== */

MF_API int mf_lua_store(lua_State *L, const char *path) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!S || S->closed)
    return MF_ESTATE;
  if (mfl_store_configure(L, S, path) != 0)
    return MF_EINVAL; /* the message is on the stack */
  return 0;
}

/* }====== */
