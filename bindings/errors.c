/*
 * errors.c -- moonflow's typed errors: tables { kind = ..., message = ... }
 * whose metatable gives them a __tostring of "kind: message".
 */
#include <stdarg.h>

#include "binding.h"

/* "kind: message", from whatever the fields hold (never raising). */
static int error_tostring(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE) {
    lua_pushliteral(L, "Error");
    return 1;
  }
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  const char *kind =
      lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "Error";
  const char *message =
      lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
          ? lua_tostring(L, -1)
          : "";
  lua_pushfstring(L, "%s: %s", kind, message);
  return 1;
}

static int push_errorv(lua_State *L, const char *kind, const char *fmt,
                       va_list ap) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_error_mt);
  lua_setmetatable(L, -2);
  return 1;
}

int mfl_push_error(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return 1;
}

int mfl_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

/* core.error(kind, message) -> error table (for the Lua parts) */
static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *message = luaL_optstring(L, 2, "");
  return mfl_push_error(L, kind, "%s", message);
}

void mfl_open_errors(lua_State *L) {
  /* core -> core */
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonflow.Error");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  mfl_register_mt(L, &mfl_key_error_mt);
  lua_setfield(L, -2, "Error");
  lua_pushcfunction(L, l_error);
  lua_setfield(L, -2, "error");
}
