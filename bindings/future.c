/*
 * future.c -- Future and FutureList: waiting for runs, reading their results
 * and errors, cancelling them, done callbacks.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"

/* {====== Results ====== */

static int push_engine_error(lua_State *L, mf_run *run) {
  char name[256];
  mf_run_name(run, name, sizeof name);
  switch (mf_run_error_code(run)) {
  case MF_EDEADLK:
    return mfl_push_error(
        L, "Deadlock", "run %s waited for inputs that can never finish", name);
  default:
    return mfl_push_error(L, "Crashed", "run %s crashed: %s", name,
                          mf_strerror(mf_run_error_code(run)));
  }
}

/* Pushes ": <error text>" of a run that failed with an error value of its
 * own (stored in its Future, if the Future is still there), else "". */
static void push_error_suffix(lua_State *L, mf_run *run) {
  if (mf_run_state_type(run) != MF_FAILED || mf_run_error_code(run) ||
      !mfl_push_failed_future(L, run)) {
    lua_pushliteral(L, "");
    return;
  }
  lua_getiuservalue(L, -1, MFL_UV_RESULT);
  lua_pushfstring(L, ": %s", mfl_describe_error(L, -1));
  lua_replace(L, -4);
  lua_pop(L, 2);
}

/* Pushes the UpstreamFailed error of a run that never started: it names
 * the upstream run and quotes the error that began the cascade. */
static int push_upstream_failed(lua_State *L, mf_run *run) {
  char name[256], cause[256], root_name[256];
  mf_run_name(run, name, sizeof name);
  mf_run *up = mf_run_cause(run);
  mf_run_name(up, cause, sizeof cause);
  mf_run *root = up; /* iterative: a cascade may be 100,000 runs long */
  while (mf_run_state_name(root) == MF_NAME_NOT_READY && mf_run_cause(root))
    root = mf_run_cause(root);
  push_error_suffix(L, root);
  const char *suffix = lua_tostring(L, -1);
  if (root == up) {
    mfl_push_error(L, "UpstreamFailed",
                   "run %s did not start: upstream run %s ended %s%s", name,
                   cause, mf_state_name_string(mf_run_state_name(up)), suffix);
  } else {
    mf_run_name(root, root_name, sizeof root_name);
    mfl_push_error(
        L, "UpstreamFailed",
        "run %s did not start: upstream run %s ended %s, after run %s "
        "ended %s%s",
        name, cause, mf_state_name_string(mf_run_state_name(up)), root_name,
        mf_state_name_string(mf_run_state_name(root)), suffix);
  }
  lua_remove(L, -2);
  return 1;
}

/* Pushes the error value of a final run that did not complete. */
static int push_failure(lua_State *L, mf_run *run) {
  if (mf_run_state_name(run) == MF_NAME_NOT_READY)
    return push_upstream_failed(L, run);
  if (mf_run_state_type(run) == MF_CANCELLED) {
    char name[256];
    mf_run_name(run, name, sizeof name);
    return mfl_push_error(L, "Cancelled", "run %s was cancelled", name);
  }
  if (mf_run_error_code(run) == MF_ETIMEDOUT)
    return 0; /* its TimedOut error is stored */
  if (mf_run_error_code(run))
    return push_engine_error(L, run);
  return 0; /* the caller reads the stored error */
}

void mfl_push_error_value(lua_State *L, int idx) {
  if (!push_failure(L, mfl_check_future(L, idx)->run))
    lua_getiuservalue(L, idx, MFL_UV_RESULT);
}

int mfl_push_results(lua_State *L, int idx, int raise, int first_only) {
  return mfl_push_results_of(L, idx, mfl_check_future(L, idx), raise,
                             first_only);
}

int mfl_push_results_of(lua_State *L, int idx, mfl_future *f, int raise,
                        int first_only) {
  mf_run *run = f->run;
  mfl_run *lr = mf_run_body(run);
  mf_run_mark_handled(run);
  if (mf_run_state_type(run) != MF_COMPLETED) {
    mfl_push_error_value(L, idx);
    if (!raise)
      return 1;
    mfl_note_reraise(L, lr->S, -1, idx, "result");
    return lua_error(L);
  }
  if (lr->nresults == 0) {
    if (!first_only)
      return 0;
    lua_pushnil(L);
    return 1;
  }
  lua_getiuservalue(L, idx, MFL_UV_RESULT);
  if (lr->nresults == 1)
    return 1;
  int table = lua_gettop(L);
  if (first_only) {
    lua_rawgeti(L, table, 1);
    lua_remove(L, table);
    return 1;
  }
  lua_getfield(L, table, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, table, i);
  lua_remove(L, table);
  return n;
}

/* }====== */

/* {====== Future methods ====== */

static mf_run *check_run(lua_State *L, int idx) {
  return mfl_check_future(L, idx)->run;
}

/* The self of a method: a Future, else a UsageError that shows the colon
 * (fut.wait() is a Python habit). */
static mf_run *check_self(lua_State *L, const char *method) {
  mfl_future *f = mfl_to_future(L, 1);
  if (!f) {
    mfl_raise(L, "UsageError",
              "expected a Future as self (use fut:%s(...), not "
              "fut.%s(...)), got %s",
              method, method, luaL_typename(L, 1));
    return NULL; /* not reached */
  }
  return f->run;
}

/* The timeout argument of a method; a boolean there is raise_on_failure
 * given first (result(false)). */
static double method_timeout(lua_State *L, const char *self,
                             const char *method) {
  if (lua_isboolean(L, 2)) {
    if (strcmp(method, "result") == 0)
      mfl_raise(L, "UsageError",
                "%s:result(%s): the first argument is the timeout in seconds; "
                "to get the error value instead of having it raised, use "
                "%s:result(nil, false)",
                self, lua_toboolean(L, 2) ? "true" : "false", self);
    mfl_raise(L, "UsageError",
              "%s:%s(%s): the argument is the timeout in seconds, a number",
              self, method, lua_toboolean(L, 2) ? "true" : "false");
  }
  return mfl_opt_timeout(L, 2);
}

static int future_wait(lua_State *L) {
  mf_run *run = check_self(L, "wait");
  double timeout = method_timeout(L, "fut", "wait");
  if (mf_run_is_final(run)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 2);
  return mfl_wait(L, &run, 1, MF_WAIT_ALL, timeout, 0, mfl_wait_done_k);
}

static int future_result_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  mf_run *run = check_run(L, 1);
  if (mfl_wait_outcome(L, status) == MF_WAKE_TIMEOUT || !mf_run_is_final(run)) {
    char name[256];
    mf_run_name(run, name, sizeof name);
    lua_pushfstring(L, "%f", lua_tonumber(L, 2));
    return mfl_raise(L, "Timeout", "run %s did not finish within %s s", name,
                     lua_tostring(L, -1));
  }
  int raise = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
  lua_settop(L, 1);
  return mfl_push_results(L, 1, raise, 0);
}

static int future_result(lua_State *L) {
  mf_run *run = check_self(L, "result");
  double timeout = method_timeout(L, "fut", "result");
  lua_settop(L, 3);
  if (mf_run_is_final(run))
    return future_result_k(L, LUA_OK, 0);
  return mfl_wait(L, &run, 1, MF_WAIT_ALL, timeout, 0, future_result_k);
}

static int future_state(lua_State *L) {
  mf_run *run = check_self(L, "state");
  if (mf_run_is_final(run))
    mf_run_mark_handled(run);
  mfl_push_state(L, 1);
  return 1;
}

static int future_history(lua_State *L) {
  check_self(L, "history");
  mfl_push_history(L, 1);
  return 1;
}

static int future_done(lua_State *L) {
  lua_pushboolean(L, mf_run_is_final(check_self(L, "done")));
  return 1;
}

static int future_cancel(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = check_self(L, "cancel");
  int cancelled = mf_run_cancel(run);
  if (cancelled && mfl_current_run(L, S) == run) {
    char name[256];
    mf_run_name(run, name, sizeof name);
    return mfl_raise(L, "Cancelled", "run %s was cancelled", name);
  }
  lua_pushboolean(L, cancelled);
  return 1;
}

/* Calls fn(future) from the scheduler; a raising callback is reported. */
/* Calls fn(future) from the scheduler; a raising callback is reported.
 * The callback's slot in the pins table and whether it counts as handling
 * the run are packed in the callback's data: slot * 2 + quiet. */
static void call_done_callback(mfl_state *S, intptr_t data, mf_run *run) {
  lua_State *L = S->L;
  int top = lua_gettop(L);
  int slot = (int)(data / 2), quiet = (int)(data % 2);
  mfl_push_pins(L, S);
  lua_rawgeti(L, -1, slot);
  mfl_unpin(L, S, top + 1, slot);
  mfl_push_future_of(L, run);
  if (!quiet)
    mf_run_mark_handled(run);
  S->callback_depth++;
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    mfl_report(S, "error in a done callback", mfl_describe(L, -1));
  S->callback_depth--;
  lua_settop(L, top);
}

static void on_done(mf_run *run, void *data) {
  mfl_run *lr = mf_run_body(run);
  if (lr->S->closed)
    return;
  call_done_callback(lr->S, (intptr_t)data, run);
}

static int add_callback(lua_State *L, int quiet) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = check_self(L, "add_done_callback");
  if (lua_type(L, 2) != LUA_TFUNCTION)
    return mfl_raise(L, "UsageError",
                     "add_done_callback expects a function, got %s",
                     luaL_typename(L, 2));
  if (mf_run_is_final(run)) {
    if (!quiet)
      mf_run_mark_handled(run);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    S->callback_depth++;
    int status = lua_pcall(L, 1, 0, 0);
    S->callback_depth--;
    if (status != LUA_OK)
      return lua_error(L);
    return 0;
  }
  mfl_push_pins(L, S);
  int pins = lua_gettop(L);
  lua_pushvalue(L, 2);
  int slot = mfl_pin(L, S, pins);
  intptr_t data = (intptr_t)slot * 2 + quiet;
  if (mf_run_on_done(run, on_done, (void *)data) != 0) {
    mfl_unpin(L, S, pins, slot);
    return luaL_error(L, "moonflow: out of memory");
  }
  return 0;
}

static int future_add_done_callback(lua_State *L) { return add_callback(L, 0); }

/* core.watch(future, fn): a done callback that does not count as handling
 * the run (for as_completed, which only orders runs). */
static int l_watch(lua_State *L) { return add_callback(L, 1); }

/* The text of a Future's value: a value that is itself a Future is named,
 * not described (a Future whose result is itself would never end). */
static const char *describe_value(lua_State *L, int idx) {
  mfl_future *inner = mfl_future_box(L, idx);
  if (!inner)
    return mfl_describe(L, idx);
  if (!inner->run)
    return lua_pushliteral(L, "<Future (collected)>");
  char name[256];
  mf_run_name(inner->run, name, sizeof name);
  return lua_pushfstring(L, "<Future %s>", name);
}

/* Set while a Future's value is described: a Future met inside it (a
 * table error holding Futures, each failed with such a table...) is named,
 * not described again -- nothing else bounds the depth across Futures, and
 * a value holding its Futures several times grew as (count)^depth.  Per
 * thread: worker threads describe their own Futures. */
static _Thread_local int describing;

static int future_tostring(lua_State *L) {
  mf_run *run = check_run(L, 1);
  char name[256];
  mf_run_name(run, name, sizeof name);
  const char *state = mf_state_name_string(mf_run_state_name(run));
  if (describing) {
    lua_pushfstring(L, "<Future %s %s>", name, state);
    return 1;
  }
  if (mf_run_state_type(run) == MF_COMPLETED) {
    mfl_run *lr = mf_run_body(run);
    if (lr->nresults == 0) {
      lua_pushfstring(L, "<Future %s %s>", name, state);
      return 1;
    }
    lua_getiuservalue(L, 1, MFL_UV_RESULT);
    if (lr->nresults == -1)
      lua_rawgeti(L, -1, 1);
    describing = 1; /* (describing never raises, but out of memory) */
    const char *value = describe_value(L, -1);
    describing = 0;
    lua_pushfstring(L, "<Future %s %s: %s>", name, state, value);
    return 1;
  }
  if (mf_run_is_final(run) && mf_run_state_type(run) != MF_CANCELLED &&
      mf_run_state_name(run) != MF_NAME_NOT_READY) {
    lua_getiuservalue(L, 1, MFL_UV_RESULT);
    describing = 1;
    const char *value = mfl_describe_error(L, -1);
    describing = 0;
    lua_pushfstring(L, "<Future %s %s: %s>", name, state, value);
    return 1;
  }
  lua_pushfstring(L, "<Future %s %s>", name, state);
  return 1;
}

static int future_index(lua_State *L) {
  const char *key = lua_tostring(L, 2);
  if (key && strcmp(key, "id") == 0) {
    lua_pushfstring(L, "%I", (lua_Integer)mf_run_id(check_run(L, 1)));
    return 1;
  }
  if (key && strcmp(key, "name") == 0)
    return mfl_run_name(L, check_run(L, 1));
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));
  return 1;
}

void mfl_release_future(void *box) {
  mfl_future *f = box;
  mf_run *run = f->run;
  f->run = NULL;
  if (run)
    mf_run_unref(run);
}

static int future_gc(lua_State *L) {
  /* Only a Future's own metatable calls it (that metatable is protected):
   * a cheap check of the argument suffices against a call by hand. */
  mfl_future *f = mfl_future_box(L, 1);
  if (!f)
    return 0;
  mf_run *run = f->run;
  if (!run)
    return 0;
  mfl_run *lr = mf_run_body(run);
  /* A pinned Future is reachable (the pins table holds it), so the
   * collector finalizes it only when the state closes, from the base of
   * the main thread's stack; a call with a caller above it is by hand
   * (debug.getmetatable) and must not take the run's box away while the
   * run still uses it. */
  lua_Debug caller;
  if (lr->pin != LUA_NOREF && lua_getstack(L, 1, &caller))
    return 0;
  f->run = NULL;
  if (lr->S->noted_count)
    mfl_forget_box(lr->S, f);
  /* Even after the engine closed: its memory lasts until its last run is
   * released, here.  The run may outlive this userdata (a downstream
   * run's reference): keep its name, which points into the task this
   * userdata anchors. */
  if (!lr->S->closed && mf_run_refcount(run) > 1) {
    char name[256];
    mf_run_name(run, name, sizeof name);
    mf_run_set_custom_name(run, name);
  }
  mf_run_unref(run);
  return 0;
}

/* }====== */

/* {====== FutureList ====== */

/* The self of a FutureList method (the colon hint, as for Futures). */
static void check_list_self(lua_State *L, const char *method) {
  if (lua_type(L, 1) != LUA_TTABLE)
    mfl_raise(L, "UsageError",
              "expected a FutureList as self (use list:%s(...), not "
              "list.%s(...)), got %s",
              method, method, luaL_typename(L, 1));
}

/* Inside a run the list's runs are collected in slices (collect.c); the
 * finishers below read the job at ctx (the snapshot at ctx - 2). */
static int list_wait(lua_State *L) {
  check_list_self(L, "wait");
  double timeout = method_timeout(L, "list", "wait");
  if (mfl_group_list_ready(L)) /* a map's runs, Futures not made */
    return mfl_group_list_wait(L, timeout);
  lua_settop(L, 2);
  if (mfl_slice_run(L, mfl_state_get(L)))
    return mfl_collect_list(L, 1, 0, MF_WAIT_ALL, timeout, mfl_collect_done_k);
  mf_run **runs;
  size_t n = mfl_snapshot(L, 1, 0, &runs);
  if (n == 0)
    return mfl_wait_done_k(L, LUA_OK, 0);
  return mfl_wait(L, runs, n, MF_WAIT_ALL, timeout, 0, mfl_wait_done_k);
}

void mfl_note_failure(mf_run *run, size_t index, size_t *best,
                      double *best_at) {
  if (!mf_run_is_final(run) || mf_run_state_type(run) == MF_COMPLETED)
    return;
  const mf_state *history;
  size_t len = mf_run_history(run, &history);
  double at = history[len - 1].timestamp;
  if (*best == 0 || at < *best_at) {
    *best = index;
    *best_at = at;
  }
}

size_t mfl_first_failure(mf_run *const *runs, size_t n) {
  size_t best = 0;
  double best_at = 0;
  for (size_t i = 0; i < n; i++)
    mfl_note_failure(runs[i], i + 1, &best, &best_at);
  return best;
}

/* Stack: list timeout raise snapshot runs; ctx: the count */
static int list_result_k(lua_State *L, int status, lua_KContext ctx) {
  size_t n = (size_t)ctx;
  mf_run **runs = mfl_snapshot_runs(L, 5);
  int raise = lua_isnil(L, 3) || lua_toboolean(L, 3);
  int timed_out = mfl_wait_outcome(L, status) == MF_WAKE_TIMEOUT;
  if (raise) {
    size_t failed = mfl_first_failure(runs, n);
    if (failed) {
      lua_rawgeti(L, 4, (lua_Integer)failed);
      return mfl_push_results(L, lua_gettop(L), 1, 1);
    }
  }
  if (timed_out) {
    size_t unfinished = 0;
    for (size_t i = 0; i < n; i++)
      unfinished += !mf_run_is_final(runs[i]);
    if (unfinished > 0)
      return mfl_raise(L, "Timeout", "%I (of %I) futures unfinished",
                       (lua_Integer)unfinished, (lua_Integer)n);
  }
  lua_createtable(L, (int)n, 1);
  int out = lua_gettop(L);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, (lua_Integer)i);
    int fut = lua_gettop(L);
    mfl_push_results(L, fut, 0, 1);
    lua_rawseti(L, out, (lua_Integer)i);
    lua_settop(L, out);
  }
  lua_pushinteger(L, (lua_Integer)n);
  lua_setfield(L, out, "n");
  return 1;
}

/* list_result_k in slices.  Stack: list timeout raise snapshot holder
 * job (at ctx) [results]; c->step: 0 the first failure, 1 the unfinished
 * count, 2 the results. */
static int list_result_sliced_k(lua_State *L, int status, lua_KContext ctx) {
  int job = (int)ctx;
  mfl_collect *c = mfl_collect_resumed(L, status, ctx);
  int raise = lua_isnil(L, 3) || lua_toboolean(L, 3);
  if (c->step == 0) {
    for (; raise && c->at < c->count;) {
      size_t i = c->at++, failed = (size_t)c->acc;
      mfl_note_failure(c->runs[i], i + 1, &failed, &c->best_time);
      c->acc = (lua_Integer)failed;
      if (c->at < c->count && mfl_collect_over(L, c, c->at))
        return mfl_collect_yield(L, c, ctx, list_result_sliced_k);
    }
    if (c->acc) {
      lua_settop(L, job);
      lua_rawgeti(L, job - 2, c->acc);
      return mfl_push_results(L, lua_gettop(L), 1, 1);
    }
    c->step = 1;
    c->at = 0;
  }
  if (c->step == 1) {
    for (; c->reason == MF_WAKE_TIMEOUT && c->at < c->count;) {
      c->acc2 += !mf_run_is_final(c->runs[c->at++]);
      if (c->at < c->count && mfl_collect_over(L, c, c->at))
        return mfl_collect_yield(L, c, ctx, list_result_sliced_k);
    }
    if (c->acc2 > 0)
      return mfl_raise(L, "Timeout", "%I (of %I) futures unfinished", c->acc2,
                       (lua_Integer)c->count);
    c->step = 2;
    c->at = 0;
    lua_settop(L, job);
    lua_createtable(L, (int)c->count, 1);
  }
  int out = job + 1;
  lua_settop(L, out);
  while (c->at < c->count) {
    lua_Integer i = (lua_Integer)++c->at;
    lua_rawgeti(L, job - 2, i);
    mfl_push_results(L, out + 1, 0, 1);
    lua_rawseti(L, out, i);
    lua_settop(L, out);
    if (c->at < c->count && mfl_collect_over(L, c, c->at))
      return mfl_collect_yield(L, c, ctx, list_result_sliced_k);
  }
  lua_pushinteger(L, (lua_Integer)c->count);
  lua_setfield(L, out, "n");
  return 1;
}

static int list_result(lua_State *L) {
  check_list_self(L, "result");
  double timeout = method_timeout(L, "list", "result");
  lua_settop(L, 3);
  int raise = lua_isnil(L, 3) || lua_toboolean(L, 3);
  if (mfl_group_list_ready(L)) /* a map's runs, Futures not made */
    return mfl_group_list_result(L, timeout, raise);
  if (mfl_slice_run(L, mfl_state_get(L)))
    return mfl_collect_list(L, 1, 0, raise ? MF_WAIT_ALL_FAST : MF_WAIT_ALL,
                            timeout, list_result_sliced_k);
  mf_run **runs;
  size_t n = mfl_snapshot(L, 1, 0, &runs);
  size_t pending = 0;
  for (size_t i = 0; i < n; i++)
    pending += !mf_run_is_final(runs[i]);
  if (pending == 0 || (raise && mfl_first_failure(runs, n)))
    return list_result_k(L, LUA_OK, (lua_KContext)n);
  return mfl_wait(L, runs, n, raise ? MF_WAIT_ALL_FAST : MF_WAIT_ALL, timeout,
                  (lua_KContext)n, list_result_k);
}

static int list_tostring(lua_State *L) {
  lua_pushfstring(L, "<FutureList of %I>", (lua_Integer)lua_rawlen(L, 1));
  return 1;
}

/* }====== */

static const luaL_Reg future_methods[] = {
    {"wait", future_wait},
    {"result", future_result},
    {"state", future_state},
    {"history", future_history},
    {"done", future_done},
    {"cancel", future_cancel},
    {"add_done_callback", future_add_done_callback},
    {NULL, NULL}};

static const luaL_Reg list_methods[] = {
    {"wait", list_wait}, {"result", list_result}, {NULL, NULL}};

void mfl_open_future(lua_State *L) {
  /* core -> core */
  mfl_pushcfunction(L, l_watch);
  lua_setfield(L, -2, "watch");
  lua_createtable(L, 0, 4); /* Future metatable */
  lua_newtable(L);
  mfl_setfuncs(L, future_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "Future"); /* core.Future = methods */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  lua_insert(L, -2);
  lua_pushcclosure(L, future_index, 2); /* the state, the methods */
  lua_setfield(L, -2, "__index");
  mfl_pushcfunction(L, future_gc);
  lua_setfield(L, -2, "__gc");
  mfl_pushcfunction(L, future_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonflow.Future");
  lua_setfield(L, -2, "__name");
  /* (getmetatable(fut) gives this name: its __gc is not the user's to call,
   * and setmetatable cannot take the Future's away) */
  mfl_register_mt(L, &mfl_key_future_mt);

  lua_createtable(L, 0, 3); /* FutureList metatable */
  lua_newtable(L);
  mfl_setfuncs(L, list_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "FutureList");
  lua_setfield(L, -2, "__index");
  mfl_pushcfunction(L, list_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonflow.FutureList");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "FutureListMT");
  mfl_register_mt(L, &mfl_key_list_mt);
}
