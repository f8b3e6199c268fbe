/*
 * wait.c -- waiting from Lua.  Inside a run the coroutine parks (a yield
 * with a continuation); at top level the loop is driven until the wait ends;
 * in a callback, or in a coroutine the user made inside a run, waiting is a
 * UsageError, because nothing could resume that code.
 */
#include <stdio.h>

#include "binding.h"

double mfl_opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return -1;
  double t = luaL_checknumber(L, idx);
  if (t < 0 || t != t)
    mfl_raise(L, "UsageError", "timeout must be >= 0, got %f", t);
  return t;
}

static int raise_deadlock_for(lua_State *L, mf_run *waiter,
                              mf_run *const *targets, size_t n) {
  char who[256], what[256] = "its targets";
  if (waiter)
    mf_run_name(waiter, who, sizeof who);
  else
    snprintf(who, sizeof who, "the top-level wait");
  if (n == 1)
    mf_run_name(targets[0], what, sizeof what);
  return mfl_raise(L, "Deadlock",
                   "%s waits for %s, which can never finish before it", who,
                   what);
}

int mfl_wait(lua_State *L, mf_run *const *targets, size_t n, mf_wait_mode mode,
             double timeout, lua_KContext ctx, mfl_continuation k) {
  mfl_state *S = mfl_state_get(L);
  if (S->callback_depth > 0)
    return mfl_raise(L, "UsageError",
                     "cannot wait inside a callback (a done callback, "
                     "cache_key or task_run_name function): it must return "
                     "without waiting");
  mf_run *current = mf_engine_current(S->engine);
  if (current) {
    mfl_run *lr = mf_run_body(current);
    if (lr->co != L) {
      char name[256];
      mf_run_name(current, name, sizeof name);
      return mfl_raise(
          L, "UsageError",
          "cannot wait inside a coroutine created within run %s: nothing "
          "would resume it; wait from the run's own code instead",
          name);
    }
    if (mf_run_timed_out(current)) /* stopped at its next yield */
      return mfl_raise_timed_out(L, current);
    int rc = mf_run_wait(current, targets, n, mode, timeout);
    if (rc == MF_EDEADLK)
      return raise_deadlock_for(L, current, targets, n);
    if (rc)
      return mfl_raise(L, "UsageError", "wait failed: %s", mf_strerror(rc));
    lr->parked = 1;
    return lua_yieldk(L, 0, ctx, k);
  }
  if (S->luv_mode && *S->luv_mode != -1)
    return mfl_raise(L, "UsageError",
                     "cannot wait outside a run while uv.run() runs the "
                     "loop: submit the code as a task or flow instead");
  int rc = mf_engine_wait(S->engine, targets, n, mode, timeout);
  switch (rc) {
  case 0:
    S->last_wake = MF_WAKE_DONE;
    break;
  case MF_ETIMEDOUT:
    S->last_wake = MF_WAKE_TIMEOUT;
    break;
  case MF_EDEADLK:
    return mfl_raise(L, "Deadlock",
                     "the wait can never finish: no run left could make "
                     "progress and nothing else can wake one");
  case MF_EINTR:
    return mfl_raise(L, "Cancelled", "wait interrupted");
  case MF_EBUSY:
    return mfl_raise(L, "UsageError",
                     "cannot wait here: the event loop is already running "
                     "this code (a callback)");
  default:
    return mfl_raise(L, "UsageError", "wait failed: %s", mf_strerror(rc));
  }
  return k(L, LUA_OK, ctx);
}

int mfl_raise_timed_out(lua_State *L, mf_run *run) {
  char name[256];
  mf_run_name(run, name, sizeof name);
  return mfl_raise(L, "TimedOut", "run %s exceeded its timeout", name);
}

mf_wake_reason mfl_wait_outcome(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *current = mfl_current_run(L, S);
  mf_wake_reason reason = current ? mf_run_wake_reason(current) : S->last_wake;
  if (reason == MF_WAKE_TIMEDOUT)
    mfl_raise_timed_out(L, current);
  if (reason == MF_WAKE_CANCELLED) {
    char name[256];
    mf_run_name(current, name, sizeof name);
    mfl_raise(L, "Cancelled", "run %s was cancelled", name);
  }
  if (reason == MF_WAKE_DEADLOCK) {
    char name[256];
    mf_run_name(current, name, sizeof name);
    mfl_raise(L, "Deadlock",
              "run %s waits for something that can never finish: no run "
              "left could make progress and nothing else can wake one",
              name);
  }
  return reason;
}

/* {====== mf.wait and the primitive behind as_completed ====== */

/* Collects the distinct runs of the futures in the array at idx into a new
 * userdata array (pushed); returns the count. */
static size_t collect_runs(lua_State *L, int idx, mf_run ***out) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  mf_run **runs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *runs, 0);
  size_t count = 0;
  lua_createtable(L, 0, (int)n); /* seen */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    mfl_future *f = mfl_to_future(L, -1);
    if (!f) {
      mfl_raise(L, "UsageError", "element %d is not a Future (%s)", (int)i,
                luaL_typename(L, -1));
      return 0; /* not reached: mfl_raise does not return */
    }
    lua_pushlightuserdata(L, f->run);
    if (lua_rawget(L, -3) == LUA_TNIL) {
      lua_pushlightuserdata(L, f->run);
      lua_pushboolean(L, 1);
      lua_rawset(L, -5);
      runs[count++] = f->run;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  *out = runs;
  return count;
}

/* Stack of mf.wait after collect: futures timeout runs */
static int wait_all_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  mfl_wait_outcome(L);
  lua_newtable(L); /* done */
  lua_newtable(L); /* not_done */
  lua_Integer n = luaL_len(L, 1), ndone = 0, nnot = 0;
  lua_newtable(L); /* seen */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    mfl_future *f = mfl_to_future(L, -1);
    lua_pushlightuserdata(L, f->run);
    if (lua_rawget(L, -3) != LUA_TNIL) {
      lua_pop(L, 2);
      continue;
    }
    lua_pushlightuserdata(L, f->run);
    lua_pushboolean(L, 1);
    lua_rawset(L, -5);
    lua_pop(L, 1);
    if (mf_run_is_final(f->run)) {
      lua_rawseti(L, -4, ++ndone);
    } else {
      lua_rawseti(L, -3, ++nnot);
    }
  }
  lua_pop(L, 1);
  return 2;
}

/* core.wait(futures, timeout) -> done, not_done */
static int l_wait(lua_State *L) {
  double timeout = mfl_opt_timeout(L, 2);
  lua_settop(L, 2);
  mf_run **runs;
  size_t n = collect_runs(L, 1, &runs);
  return mfl_wait(L, runs, n, MF_WAIT_ALL, timeout, 0, wait_all_k);
}

static int wait_any_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pushboolean(L, mfl_wait_outcome(L) == MF_WAKE_DONE);
  return 1;
}

/* core.wait_any(futures, timeout) -> true when one is final, false on
 * timeout.  An empty list returns true at once. */
static int l_wait_any(lua_State *L) {
  double timeout = mfl_opt_timeout(L, 2);
  lua_settop(L, 2);
  mf_run **runs;
  size_t n = collect_runs(L, 1, &runs);
  for (size_t i = 0; i < n; i++)
    if (mf_run_is_final(runs[i])) {
      lua_pushboolean(L, 1);
      return 1;
    }
  if (n == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return mfl_wait(L, runs, n, MF_WAIT_ANY, timeout, 0, wait_any_k);
}

void mfl_open_wait(lua_State *L) {
  mfl_pushcfunction(L, l_wait);
  lua_setfield(L, -2, "wait");
  mfl_pushcfunction(L, l_wait_any);
  lua_setfield(L, -2, "wait_any");
}

/* }====== */
