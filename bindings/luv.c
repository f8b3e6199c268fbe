/*
 * luv.c -- sharing luv's loop.  When luv was loaded first, moonflow runs on
 * its loop, found through luv's public C API (luv_loop), looked up in the
 * luv module the interpreter loaded; and a wait outside any run is refused
 * while luv's uv.run() runs that loop (it would nest uv_run).
 */
#include <dlfcn.h>

#include "binding.h"

typedef uv_loop_t *(*luv_loop_fn)(lua_State *L);

/* luv_loop from the luv module Lua loaded (package.loadlib keeps each C
 * library's handle in the registry's _CLIBS table), or linked in. */
static luv_loop_fn find_luv_loop_fn(lua_State *L) {
  luv_loop_fn fn = NULL;
  if (lua_getfield(L, LUA_REGISTRYINDEX, "_CLIBS") == LUA_TTABLE) {
    lua_pushnil(L);
    while (!fn && lua_next(L, -2)) {
      if (lua_type(L, -1) == LUA_TLIGHTUSERDATA)
        *(void **)&fn = dlsym(lua_touserdata(L, -1), "luv_loop");
      lua_pop(L, 1);
    }
    if (fn)
      lua_pop(L, 1); /* the key lua_next left */
  }
  lua_pop(L, 1);
  if (!fn)
    *(void **)&fn = dlsym(RTLD_DEFAULT, "luv_loop");
  return fn;
}

/* Pushes package.loaded.luv when luv is loaded, else returns 0. */
static int push_luv(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int type = lua_getfield(L, -1, "luv");
  lua_remove(L, -2);
  if (type == LUA_TTABLE)
    return 1;
  lua_pop(L, 1);
  return 0;
}

uv_loop_t *mfl_luv_loop(lua_State *L) {
  if (!push_luv(L))
    return NULL;
  lua_pop(L, 1);
  luv_loop_fn fn = find_luv_loop_fn(L);
  return fn ? fn(L) : NULL;
}

/* Whether the function on top of L is on the call stack of T. */
static int on_stack(lua_State *L, lua_State *T) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(T, level, &ar); level++) {
    lua_getinfo(T, "f", &ar);
    lua_xmove(T, L, 1);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (same)
      return 1;
  }
  return 0;
}

int mfl_luv_running(lua_State *L, mfl_state *S) {
  if (!S->on_luv || !push_luv(L))
    return 0;
  lua_getfield(L, -1, "run");
  lua_remove(L, -2);
  int running = on_stack(L, L) || (L != S->L && on_stack(L, S->L));
  lua_pop(L, 1);
  return running;
}
