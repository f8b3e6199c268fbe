/*
 * io_promise.c -- mf.promise(name?): a Future that no task runs, settled by
 * resolve(...) or reject(err) from anywhere on the loop's thread (a luv
 * callback, a done callback, another run).  The one bridge from callback
 * libraries into runs: a run waits on the Future as on any other.
 *
 * A promise is an external run at the top of the tree (MF_RUN_ROOT): the
 * run that made it does not wait for it to settle, and cancelling that run
 * leaves it alone.  A rejected promise is a failed run: downstream runs
 * end NotReady unless allow_failure.
 */
#include "io.h"

/* resolve(...) / reject(err) -> true, or false when already settled */
static int settle(lua_State *L, int failed) {
  mfl_future *f = lua_touserdata(L, lua_upvalueindex(1));
  mf_run *run = f->run;
  /* no run: the Future's __gc ran (by hand, or at the state's close from a
   * finalizer that still holds resolve), which it does only once settled */
  if (!run || mf_run_is_final(run) || !mf_lua_engine(L)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int rc;
  if (failed) {
    lua_settop(L, 1);
    if (lua_isnil(L, 1)) {
      char name[256];
      mf_run_name(run, name, sizeof name);
      lua_pushfstring(L, "promise %s was rejected", name);
      lua_replace(L, 1);
    }
    rc = mf_lua_future_reject(L, run);
  } else {
    rc = mf_lua_future_resolve(L, run, lua_gettop(L));
  }
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int l_resolve(lua_State *L) { return settle(L, 0); }
static int l_reject(lua_State *L) { return settle(L, 1); }

/* core.io.promise(name?) -> future, resolve, reject */
static int l_promise(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TSTRING)
    return mfl_raise(L, "UsageError",
                     "mf.promise: name must be a string, got %s",
                     luaL_typename(L, 1));
  const char *name = lua_tostring(L, 1);
  mfl_future *f = mfl_new_future(L, S, MFL_EXTERNAL, 0, NULL);
  mf_run *run = f->run;
  mf_run_set_flags(run, MF_RUN_ROOT);
  if (mf_run_submit(run, NULL) != 0)
    return luaL_error(L, "moonflow: cannot submit the promise");
  if (name)
    mf_run_set_custom_name(run, name);
  else /* ids are given at submit */
    mf_run_set_name(run, "promise", mf_run_id(run));
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, l_resolve, 1);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_reject, 1);
  return 3;
}

void mfl_open_io_promise(lua_State *L) {
  mfl_pushcfunction(L, l_promise);
  lua_setfield(L, -2, "promise");
}
