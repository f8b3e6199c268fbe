/*
 * state.c -- State tables: a snapshot of where a run is, with the methods
 * is_completed, is_failed, is_final and result.
 */
#include <string.h>

#include "binding.h"

/* The State's private link to its Future: a light-userdata key. */
static const char future_key = 0;

static void check_state(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE)
    mfl_raise(L, "UsageError",
              "expected a State as self (use st:is_final(), not "
              "st.is_final()), got %s",
              luaL_typename(L, 1));
}

static int is_final_state(lua_State *L) {
  lua_getfield(L, 1, "type");
  lua_getfield(L, 1, "name");
  const char *type = lua_tostring(L, -2), *name = lua_tostring(L, -1);
  int final =
      type && (strcmp(type, "COMPLETED") == 0 || strcmp(type, "FAILED") == 0 ||
               strcmp(type, "CRASHED") == 0 || strcmp(type, "CANCELLED") == 0 ||
               (name && strcmp(name, "NotReady") == 0));
  return final;
}

static int state_is_final(lua_State *L) {
  check_state(L);
  lua_pushboolean(L, is_final_state(L));
  return 1;
}

static int state_type_is(lua_State *L, const char *type) {
  check_state(L);
  lua_getfield(L, 1, "type");
  const char *t = lua_tostring(L, -1);
  lua_pushboolean(L, t && strcmp(t, type) == 0);
  return 1;
}

static int state_is_completed(lua_State *L) {
  return state_type_is(L, "COMPLETED");
}
static int state_is_failed(lua_State *L) { return state_type_is(L, "FAILED"); }
static int state_is_cancelled(lua_State *L) {
  return state_type_is(L, "CANCELLED");
}
static int state_is_running(lua_State *L) {
  return state_type_is(L, "RUNNING");
}
static int state_is_pending(lua_State *L) {
  return state_type_is(L, "PENDING");
}

/* state:result(raise_on_failure?) -> the run's results (final states) */
static int state_result(lua_State *L) {
  check_state(L);
  int raise = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  lua_rawgetp(L, 1, &future_key);
  mfl_future *f = mfl_to_future(L, -1);
  if (!f || !mf_run_is_final(f->run) || !is_final_state(L))
    return mfl_raise(L, "UsageError",
                     "state:result() needs a final state of a run");
  int fut = lua_gettop(L) - 2; /* is_final_state left type and name */
  lua_settop(L, fut);
  return mfl_push_results(L, fut, raise, 0);
}

/* The string field of the table at 1, or dflt (never raising). */
static const char *string_field(lua_State *L, const char *key,
                                const char *dflt) {
  lua_getfield(L, 1, key);
  return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : dflt;
}

static int state_tostring(lua_State *L) {
  check_state(L);
  const char *name = string_field(L, "name", "?");
  const char *run = string_field(L, "run_name", "?");
  const char *message = string_field(L, "message", NULL);
  if (message)
    lua_pushfstring(L, "%s(%s: %s)", name, run, message);
  else
    lua_pushfstring(L, "%s(%s)", name, run);
  return 1;
}

/* Pushes the message of the run's final state, or nil. */
static void push_message(lua_State *L, mf_run *run, int box) {
  char name[256];
  if (mf_run_state_name(run) == MF_NAME_NOT_READY) {
    mf_run_name(mf_run_cause(run), name, sizeof name);
    lua_pushfstring(L, "upstream run %s did not complete", name);
    return;
  }
  int top = lua_gettop(L);
  lua_getiuservalue(L, box, MFL_UV_INFO); /* a message the run chose */
  if (lua_istable(L, -1) && lua_getfield(L, -1, "message") == LUA_TSTRING) {
    lua_remove(L, -2);
    return;
  }
  lua_settop(L, top);
  switch (mf_run_state_type(run)) {
  case MF_CANCELLED:
    lua_pushliteral(L, "cancelled");
    return;
  case MF_FAILED:
  case MF_CRASHED: {
    if (mf_run_error_code(run)) {
      lua_pushstring(L, mf_strerror(mf_run_error_code(run)));
      return;
    }
    lua_getiuservalue(L, box, MFL_UV_RESULT);
    mfl_describe_error(L, -1);
    lua_remove(L, -2);
    return;
  }
  default:
    lua_pushnil(L);
  }
}

static void push_state_entry(lua_State *L, mf_run *run, int box,
                             const mf_state *entry, int attempt, int last) {
  lua_createtable(L, 0, 10);
  int t = lua_gettop(L);
  lua_pushstring(L, mf_state_type_string(entry->type));
  lua_setfield(L, t, "type");
  lua_pushstring(L, mf_state_name_string(entry->name));
  lua_setfield(L, t, "name");
  lua_pushnumber(L, entry->timestamp);
  lua_setfield(L, t, "timestamp");
  lua_pushfstring(L, "%I", (lua_Integer)mf_run_id(run));
  lua_setfield(L, t, "run_id");
  mfl_run_name(L, run);
  lua_setfield(L, t, "run_name");
  lua_pushinteger(L, attempt);
  lua_setfield(L, t, "attempt");
  if (last && mf_run_is_final(run)) {
    push_message(L, run, box);
    lua_setfield(L, t, "message");
    mfl_push_full_traceback(L, box);
    lua_setfield(L, t, "traceback");
  }
  lua_pushvalue(L, box);
  lua_rawsetp(L, t, &future_key);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state_mt);
  lua_setmetatable(L, t);
}

void mfl_push_state(lua_State *L, int box) {
  box = lua_absindex(L, box);
  mf_run *run = mfl_check_future(L, box)->run;
  const mf_state *history;
  size_t len = mf_run_history(run, &history);
  push_state_entry(L, run, box, &history[len - 1], mf_run_attempt(run), 1);
}

void mfl_push_outcome_state(lua_State *L, int box) {
  box = lua_absindex(L, box);
  mf_run *run = mfl_check_future(L, box)->run;
  const mf_state *history;
  size_t len = mf_run_history(run, &history);
  mf_state entry = history[len - 1]; /* its time: the latest state's */
  mf_run_outcome(run, &entry.type, &entry.name);
  push_state_entry(L, run, box, &entry, mf_run_attempt(run), 0);
  int t = lua_gettop(L);
  if (entry.type == MF_FAILED || entry.type == MF_CRASHED) {
    lua_getiuservalue(L, box, MFL_UV_RESULT);
    mfl_describe_error(L, -1);
    lua_setfield(L, t, "message");
    lua_pop(L, 1);
    mfl_push_full_traceback(L, box);
    lua_setfield(L, t, "traceback");
  } else if (entry.type == MF_CANCELLED) {
    lua_pushliteral(L, "cancelled");
    lua_setfield(L, t, "message");
  }
}

void mfl_push_history(lua_State *L, int box) {
  box = lua_absindex(L, box);
  mf_run *run = mfl_check_future(L, box)->run;
  const mf_state *history;
  size_t len = mf_run_history(run, &history);
  lua_createtable(L, (int)len, 0);
  int attempt = 0;
  for (size_t i = 0; i < len; i++) {
    if (history[i].type == MF_RUNNING)
      attempt++;
    push_state_entry(L, run, box, &history[i], attempt, i + 1 == len);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static const luaL_Reg state_methods[] = {{"is_completed", state_is_completed},
                                         {"is_failed", state_is_failed},
                                         {"is_final", state_is_final},
                                         {"is_cancelled", state_is_cancelled},
                                         {"is_running", state_is_running},
                                         {"is_pending", state_is_pending},
                                         {"result", state_result},
                                         {NULL, NULL}};

void mfl_open_state(lua_State *L) {
  /* core -> core */
  lua_createtable(L, 0, 3);
  lua_newtable(L);
  mfl_setfuncs(L, state_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "State"); /* core.State = methods */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, state_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonflow.State");
  lua_setfield(L, -2, "__name");
  mfl_register_mt(L, &mfl_key_state_mt);
}
