/*
 * embed.c -- the Lua half of the embedding API (declared in moonflow.h):
 * hosting the module on a host's engine, futures completed from C, and
 * running Lua code and flows from C.
 */
#include <string.h>

#include "binding.h"

int mf_lua_attach(lua_State *L, mf_engine *engine) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  int opened = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (opened)
    return MF_ESTATE; /* the module already has its engine */
  lua_pushlightuserdata(L, engine);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mfl_key_attached);
  return 0;
}

mf_engine *mf_lua_engine(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S && !S->closed ? S->engine : NULL;
}

static mfl_state *state_of(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S && !S->closed ? S : NULL;
}

/* {====== Futures completed from C ====== */

mf_run *mf_lua_future_new(lua_State *L, const char *name) {
  mfl_state *S = state_of(L);
  if (!S || !lua_checkstack(L, 4))
    return NULL;
  mfl_future *f = mfl_new_future(L, S, MFL_EXTERNAL, 0, NULL);
  mf_run *run = f->run;
  if (name)
    mf_run_set_custom_name(run, name);
  if (mf_run_submit(run, NULL) != 0)
    return NULL;
  return run;
}

/* Finishes an external run with the values (or error) on top of L. */
static int complete(lua_State *L, mf_run *run, int n, int failed) {
  mfl_state *S = state_of(L);
  mfl_run *lr = mf_run_body(run);
  if (!S || lr->kind != MFL_EXTERNAL || mf_run_is_final(run) ||
      lua_gettop(L) < n) {
    lua_pop(L, n < lua_gettop(L) ? n : lua_gettop(L));
    return MF_ESTATE;
  }
  mfl_push_future_of(L, run); /* pinned while it is live */
  lua_insert(L, -(n + 1));    /* below the values */
  int box = lua_gettop(L) - n;
  mfl_store_results(L, lr, box, L, n); /* an error is one value */
  lua_settop(L, box - 1);
  mf_run_finish(run, failed ? MF_FAILED : MF_COMPLETED,
                failed ? MF_NAME_FAILED : MF_NAME_COMPLETED);
  return 0;
}

int mf_lua_future_resolve(lua_State *L, mf_run *run, int nvalues) {
  return complete(L, run, nvalues, 0);
}

int mf_lua_future_reject(lua_State *L, mf_run *run) {
  return complete(L, run, 1, 1);
}

/* }====== */

/* {====== Running Lua code from C ====== */

/* Calls require("moonflow")[field](args...) protected, with the nargs
 * arguments on top; leaves its one result.  Returns 0, or MF_EINVAL with
 * the error message in place of the arguments. */
static int call_api(lua_State *L, const char *field, int nargs) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_insert(L, -1 - nargs);
    lua_pop(L, nargs);
    return MF_EINVAL;
  }
  lua_getfield(L, -1, field);
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs);
  return lua_pcall(L, nargs, 1, 0) == LUA_OK ? 0 : MF_EINVAL;
}

/* Replaces the function on top by the Future of a flow named name running
 * it (or by an error message). */
static int submit_as_flow(lua_State *L, const char *name) {
  int fn = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
  lua_pushvalue(L, fn);
  int rc = call_api(L, "flow", 2); /* fn flow */
  if (rc == 0) {
    lua_getfield(L, -1, "submit");
    lua_insert(L, -2); /* fn submit flow */
    rc = lua_pcall(L, 1, 1, 0) == LUA_OK ? 0 : MF_EINVAL;
  }
  lua_remove(L, fn);
  return rc;
}

int mf_lua_run_chunk(lua_State *L, const char *code, size_t len,
                     const char *name) {
  if (!state_of(L))
    return MF_ESTATE;
  if (luaL_loadbuffer(L, code, len, name) != LUA_OK)
    return MF_EINVAL;
  return submit_as_flow(L, name);
}

int mf_lua_run_file(lua_State *L, const char *path) {
  if (!state_of(L))
    return MF_ESTATE;
  if (luaL_loadfile(L, path) != LUA_OK)
    return MF_EINVAL;
  return submit_as_flow(L, path);
}

int mf_lua_call_flow(lua_State *L, const char *name, int nargs) {
  if (!state_of(L))
    return MF_ESTATE;
  lua_getglobal(L, name);
  if (!mfl_task_box(L, -1)) {
    lua_pop(L, 1 + nargs);
    lua_pushfstring(L, "no flow or task named '%s'", name);
    return MF_EINVAL;
  }
  lua_getfield(L, -1, "submit");
  lua_insert(L, -2);            /* args... submit flow */
  lua_rotate(L, -2 - nargs, 2); /* submit flow args... */
  if (lua_pcall(L, nargs + 1, 1, 0) != LUA_OK)
    return MF_EINVAL;
  return 0;
}

int mf_lua_result(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  mfl_future *f = mfl_to_future(L, idx);
  if (!f)
    return MF_EINVAL;
  if (!mf_run_is_final(f->run))
    return MF_ESTATE;
  int top = lua_gettop(L);
  if (mf_run_state_type(f->run) != MF_COMPLETED) {
    mfl_push_results(L, idx, 0, 0); /* the error value, not raised */
    return MF_EFAILED;
  }
  mfl_push_results(L, idx, 0, 0);
  return lua_gettop(L) - top;
}

/* }====== */

/* {====== Garbage collection in a host's spare time ====== */

int mf_lua_collect(lua_State *L, double seconds) {
  uint64_t end = uv_hrtime() + (uint64_t)(seconds > 0 ? seconds * 1e9 : 0);
  do {
    /* A basic step (the collector's own step size), so that the time is
     * checked often: the debt a stopped collector piled up is not paid at
     * once.  lua_gc works even while the collector is stopped. */
    if (lua_gc(L, LUA_GCSTEP, 0))
      return 1; /* a cycle finished */
  } while (uv_hrtime() < end);
  return 0;
}

/* }====== */
