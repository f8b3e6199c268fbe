/*
 * wait.c -- waiting from Lua.  Inside a run the coroutine parks (a yield
 * with a continuation); at top level the loop is driven until the wait ends;
 * in a callback, in a coroutine the user made inside a run, or inside a C
 * call that cannot yield, waiting is a UsageError, because nothing could
 * resume that code.
 *
 * Every continuation is told whether a wait happened: mfl_wait calls it
 * with status LUA_YIELD after a wait (as Lua does after a park), and a
 * caller that found nothing to wait for calls it with LUA_OK, so that the
 * outcome of an earlier wait never leaks into a later call.
 */
#include <stdio.h>
#include <string.h>

#include "binding.h"

double mfl_opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return -1;
  double t = mfl_check_number(L, idx, "timeout");
  if (t < 0)
    mfl_raise(L, "UsageError", "timeout must be >= 0, got %f", t);
  return t;
}

/* Pushes the tag list of a run's task (a table), or nothing: returns 0. */
static int push_tags(lua_State *L, mf_run *run) {
  mfl_run *lr = mf_run_body(run);
  if (!mfl_run_reachable(lr))
    return 0;
  mfl_push_future_of(L, run);
  lua_getiuservalue(L, -1, MFL_UV_TASK);
  if (lua_type(L, -1) != LUA_TUSERDATA) {
    lua_pop(L, 2);
    return 0;
  }
  lua_getiuservalue(L, -1, MFL_TASK_UV_OPTS);
  if (lua_istable(L, -1))
    lua_getfield(L, -1, "tags");
  else
    lua_pushnil(L);
  lua_replace(L, -4);
  lua_pop(L, 2);
  if (lua_istable(L, -1))
    return 1;
  lua_pop(L, 1);
  return 0;
}

/* The full concurrency limit that the waiter holds a slot of and the
 * target needs one of (what makes a limit deadlock), or NULL. */
static const mf_limit_info *full_limit_between(lua_State *L, mf_run *waiter,
                                               mf_run *target,
                                               const mf_limit_info *info,
                                               size_t n) {
  const mf_limit_info *found = NULL;
  int top = lua_gettop(L);
  if (!push_tags(L, target) || !push_tags(L, waiter)) {
    lua_settop(L, top);
    return NULL;
  }
  int target_tags = top + 1, waiter_tags = top + 2;
  for (lua_Integer i = 1;
       !found && lua_rawgeti(L, target_tags, i) == LUA_TSTRING; i++) {
    const char *tag = lua_tostring(L, -1);
    int shared = 0;
    for (lua_Integer j = 1;
         !shared && lua_rawgeti(L, waiter_tags, j) == LUA_TSTRING; j++) {
      shared = strcmp(tag, lua_tostring(L, -1)) == 0;
      lua_pop(L, 1);
    }
    if (!shared)
      lua_pop(L, 1); /* the nil after the waiter's last tag */
    for (size_t k = 0; shared && !found && k < n; k++)
      if (strcmp(info[k].tag, tag) == 0 && info[k].capacity >= 0 &&
          info[k].holders >= (size_t)info[k].capacity)
        found = &info[k];
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  return found;
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
  mfl_state *S = mfl_state_get(L);
  size_t count = waiter ? mf_limit_each(S->engine, NULL, 0) : 0;
  if (count > 0) {
    mf_limit_info *info = lua_newuserdatauv(L, count * sizeof *info, 0);
    mf_limit_each(S->engine, info, count);
    for (size_t i = 0; i < n; i++) {
      const mf_limit_info *l =
          full_limit_between(L, waiter, targets[i], info, count);
      if (!l)
        continue;
      mf_run_name(targets[i], what, sizeof what);
      return mfl_raise(
          L, "Deadlock",
          "%s waits for %s, which needs a slot of limit '%s' (capacity %I): "
          "every slot is held by a waiting run (%s holds one), so %s can "
          "never start",
          who, what, l->tag, (lua_Integer)l->capacity, who, what);
    }
  }
  return mfl_raise(L, "Deadlock",
                   "%s waits for %s, which can never finish before it", who,
                   what);
}

/* The run L is, for a call that waits: NULL at top level; raises where no
 * wait can happen (a callback, a coroutine of the user's, a C call). */
mf_run *mfl_waiting_run(lua_State *L, mfl_state *S, const char *what) {
  if (S->callback_depth > 0)
    mfl_raise(L, "UsageError",
              "%s cannot wait inside a callback (a done callback, "
              "retry_condition, cache_key or task_run_name function): it "
              "must return without waiting",
              what);
  mf_run *current = mf_engine_current(S->engine);
  if (!current)
    return NULL;
  mfl_run *lr = mf_run_body(current);
  if (lr->co != L) {
    char name[256];
    mf_run_name(current, name, sizeof name);
    mfl_raise(L, "UsageError",
              "%s cannot wait inside a coroutine created within run %s: "
              "nothing would resume it; wait from the run's own code instead",
              what, name);
  }
  mfl_check_yieldable(L, current, what);
  return current;
}

/* Outside any run: drives the loop (refused while luv's uv.run() runs
 * it, which would nest). */
static int drive(lua_State *L, mfl_state *S, mf_run *const *targets, size_t n,
                 mf_wait_mode mode, double timeout) {
  if (mfl_luv_running(L, S))
    return mfl_raise(L, "UsageError",
                     "cannot wait outside a run while uv.run() runs the "
                     "loop: submit the code as a task or flow instead");
  int rc = mf_engine_wait(S->engine, targets, n, mode, timeout);
  switch (rc) {
  case 0:
    S->last_wake = MF_WAKE_DONE;
    return 0;
  case MF_ETIMEDOUT:
    S->last_wake = MF_WAKE_TIMEOUT;
    return 0;
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
}

int mfl_wait(lua_State *L, mf_run *const *targets, size_t n, mf_wait_mode mode,
             double timeout, lua_KContext ctx, mfl_continuation k) {
  mfl_state *S = mfl_state_get(L);
  mf_run *current = mfl_waiting_run(L, S, "this call");
  if (current) {
    int rc = mf_run_wait(current, targets, n, mode, timeout);
    if (rc == MF_EDEADLK)
      return raise_deadlock_for(L, current, targets, n);
    if (rc)
      return mfl_raise(L, "UsageError", "wait failed: %s", mf_strerror(rc));
    return mfl_yield_parked(L, current, ctx, k);
  }
  drive(L, S, targets, n, mode, timeout);
  return k(L, LUA_YIELD, ctx);
}

int mfl_sleep(lua_State *L, double seconds, lua_KContext ctx,
              mfl_continuation k) {
  mfl_state *S = mfl_state_get(L);
  mf_run *current = mfl_waiting_run(L, S, "mf.sleep");
  if (current) {
    int rc = mf_run_sleep(current, seconds);
    if (rc)
      return mfl_raise(L, "UsageError", "mf.sleep failed: %s", mf_strerror(rc));
    return mfl_yield_parked(L, current, ctx, k);
  }
  drive(L, S, NULL, 0, MF_WAIT_ANY, seconds);
  return k(L, LUA_YIELD, ctx);
}

mf_wake_reason mfl_wait_outcome(lua_State *L, int status) {
  if (status != LUA_YIELD)
    return MF_WAKE_DONE; /* called without a wait */
  mfl_state *S = mfl_state_get(L);
  mf_run *current = mfl_current_run(L, S);
  mf_wake_reason reason = current ? mf_run_wake_reason(current) : S->last_wake;
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

/* {====== Snapshots of what is waited on ====== */

/* Pushes a snapshot of the futures in the array at idx (duplicates removed
 * when dedupe is set: a table of Futures, which anchors them) and an array
 * of their runs (userdata); returns the count.  Changing the array while the
 * wait goes on changes nothing. */
/* The runs of a snapshot, each referenced until the collector takes the
 * snapshot: a continuation reads them after the wait, and a Future's hold
 * alone may go before (its __gc called by hand through the debug library). */
static const char snapshot_key;

static void release_holder(void *box) {
  mfl_run_holder *s = box;
  for (size_t i = 0; i < s->count; i++)
    mf_run_unref(s->runs[i]);
  s->count = 0;
}

static int snapshot_gc(lua_State *L) {
  mfl_run_holder *s = lua_touserdata(L, 1);
  mfl_forget_box(s->S, s);
  release_holder(s);
  return 0;
}

mf_run **mfl_snapshot_runs(lua_State *L, int idx) {
  mfl_run_holder *held = lua_touserdata(L, idx);
  return held->runs;
}

mfl_run_holder *mfl_new_run_holder(lua_State *L, size_t n) {
  mfl_run_holder *held = lua_newuserdatauv(
      L, sizeof *held + (n ? n : 1) * sizeof held->runs[0], 0);
  held->S = mfl_state_get(L);
  held->count = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &snapshot_key);
  lua_setmetatable(L, -2);
  mfl_note_box(L, held->S, held, release_holder);
  return held;
}

size_t mfl_snapshot(lua_State *L, int idx, int dedupe, mf_run ***out) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE)
    mfl_raise(L, "UsageError", "a list of futures expected, got %s",
              luaL_typename(L, idx));
  mfl_list_expand(L, idx); /* read raw below */
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n > (lua_Integer)(1 << 30))
    mfl_raise(L, "UsageError", "too many futures (%I)", n);
  lua_createtable(L, (int)n, 0); /* the snapshot */
  int snap = lua_gettop(L);
  mfl_run_holder *held = mfl_new_run_holder(L, (size_t)n);
  mf_run **runs = held->runs;
  mfl_run_set *seen = dedupe ? mfl_run_set_new(L, (size_t)n) : NULL;
  size_t count = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    mfl_future *f = mfl_to_future(L, -1);
    if (!f) {
      mfl_raise(L, "UsageError", "element %I is not a Future (%s)", i,
                luaL_typename(L, -1));
      return 0; /* not reached: mfl_raise does not return */
    }
    if (seen && !mfl_run_set_add(seen, f->run)) {
      lua_pop(L, 1);
      continue;
    }
    runs[count++] = f->run;
    mf_run_ref(f->run);
    held->count = count;
    lua_rawseti(L, snap, (lua_Integer)count);
  }
  if (dedupe)
    lua_pop(L, 1);
  *out = runs;
  return count;
}

/* }====== */

/* {====== mf.wait and the primitive behind as_completed ====== */

/* Stack of mf.wait: futures timeout snapshot runs */
static int wait_all_k(lua_State *L, int status, lua_KContext ctx) {
  mfl_wait_outcome(L, status);
  size_t n = (size_t)ctx;
  mf_run **runs = mfl_snapshot_runs(L, 4);
  size_t nfinal = 0;
  for (size_t i = 0; i < n; i++)
    nfinal += mf_run_is_final(runs[i]) != 0;
  lua_createtable(L, (int)nfinal, 0);       /* done */
  lua_createtable(L, (int)(n - nfinal), 0); /* not_done */
  lua_Integer ndone = 0, nnot = 0;
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 3, (lua_Integer)i + 1);
    if (mf_run_is_final(runs[i]))
      lua_rawseti(L, -3, ++ndone);
    else
      lua_rawseti(L, -2, ++nnot);
  }
  return 2;
}

/* The same inside a run, in slices: the job at ctx, the snapshot at
 * ctx - 2; done and not_done are built above the job. */
static int wait_all_sliced_k(lua_State *L, int status, lua_KContext ctx) {
  int job = (int)ctx;
  mfl_collect *c = mfl_collect_resumed(L, status, ctx);
  if (c->step == 0) {
    lua_settop(L, job);
    lua_newtable(L); /* done */
    lua_newtable(L); /* not_done */
    c->step = 1;
    c->at = 0;
    c->acc = c->acc2 = 0;
  }
  lua_settop(L, job + 2);
  while (c->at < c->count) {
    size_t i = c->at++;
    lua_rawgeti(L, job - 2, (lua_Integer)i + 1);
    if (mf_run_is_final(c->runs[i]))
      lua_rawseti(L, job + 1, ++c->acc);
    else
      lua_rawseti(L, job + 2, ++c->acc2);
    if (c->at < c->count && mfl_collect_over(L, c, c->at))
      return mfl_collect_yield(L, c, ctx, wait_all_sliced_k);
  }
  return 2;
}

/* core.wait(futures, timeout) -> done, not_done */
static int l_wait(lua_State *L) {
  double timeout = mfl_opt_timeout(L, 2);
  lua_settop(L, 2);
  if (mfl_group_list_ready(L)) /* a map's runs, Futures not made */
    return mfl_group_wait_split(L, timeout);
  if (mfl_slice_run(L, mfl_state_get(L)))
    return mfl_collect_list(L, 1, 1, MF_WAIT_ALL, timeout, wait_all_sliced_k);
  mf_run **runs;
  size_t n = mfl_snapshot(L, 1, 1, &runs);
  if (n == 0)
    return wait_all_k(L, LUA_OK, 0);
  return mfl_wait(L, runs, n, MF_WAIT_ALL, timeout, (lua_KContext)n,
                  wait_all_k);
}

int mfl_wait_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  lua_pushboolean(L, mfl_wait_outcome(L, status) == MF_WAKE_DONE);
  return 1;
}

/* core.wait_any(futures, timeout) -> true when one is final, false on
 * timeout.  An empty list returns true at once. */
static int l_wait_any(lua_State *L) {
  double timeout = mfl_opt_timeout(L, 2);
  lua_settop(L, 2);
  if (mfl_slice_run(L, mfl_state_get(L)))
    return mfl_collect_list(L, 1, 1, MF_WAIT_ANY, timeout, mfl_collect_done_k);
  mf_run **runs;
  size_t n = mfl_snapshot(L, 1, 1, &runs);
  for (size_t i = 0; i < n; i++)
    if (mf_run_is_final(runs[i]))
      return mfl_wait_done_k(L, LUA_OK, 0);
  if (n == 0)
    return mfl_wait_done_k(L, LUA_OK, 0);
  return mfl_wait(L, runs, n, MF_WAIT_ANY, timeout, 0, mfl_wait_done_k);
}

void mfl_open_wait(lua_State *L) {
  lua_createtable(L, 0, 1); /* the metatable of the snapshots' runs */
  lua_pushcfunction(L, snapshot_gc);
  lua_setfield(L, -2, "__gc");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &snapshot_key);
  mfl_pushcfunction(L, l_wait);
  lua_setfield(L, -2, "wait");
  mfl_pushcfunction(L, l_wait_any);
  lua_setfield(L, -2, "wait_any");
}

/* }====== */
