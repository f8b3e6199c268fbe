/*
 * collect.c -- waiting on a long list of Futures inside a run, in slices.
 *
 * list:wait(), list:result() and mf.wait over a million Futures did all
 * their work in one C call: referencing every run, registering the wait on
 * each, building the results -- the loop stalled for a quarter of a second.
 * Inside a run that can yield, the list is copied at the call (the
 * snapshot: changing the list afterwards changes nothing, as before), and
 * the rest goes in chunks between which the run yields, as map does, when
 * its slice is used up.  The engine is asked to wait only for the runs not
 * yet final: in mode ALL at most WAIT_CHUNK at a time, one chunk after the
 * other under the one deadline (which ends when all of them have ended,
 * as one wait would); ALL_FAST and ANY must watch every pending run at
 * once, so they get one wait over all of them.
 *
 * Stack of a collection, above the caller's arguments: the snapshot (a
 * table of the Futures), the holder of their runs' references, the job
 * (ctx of every continuation); then scratch slots: during the collection
 * the seen set (dedupe) and the list's copy, and the pending runs; the
 * caller's finisher uses the slots above the job as it likes.
 */
#include <string.h>

#include "binding.h"

#define WAIT_CHUNK 8192 /* runs given to the engine in one wait (mode ALL) */
#define LOOK_EVERY 256  /* elements between two looks at the clock */

enum { TAKING, SCANNING, WAITING, DONE };

static int step_k(lua_State *L, int status, lua_KContext ctx);

static void collect_enter(lua_State *L, mfl_collect *c) {
  mfl_state *S = mfl_state_get(L);
  c->self = mfl_slice_run(L, S);
  c->since = c->self ? mfl_slice_clock(S) : 0;
}

mfl_collect *mfl_collect_resumed(lua_State *L, int status, lua_KContext ctx) {
  mfl_collect *c = lua_touserdata(L, (int)ctx);
  if (status != LUA_OK)
    collect_enter(L, c);
  return c;
}

int mfl_collect_over(lua_State *L, mfl_collect *c, size_t i) {
  return c->self && (i % LOOK_EVERY) == 0 &&
         mfl_slice_over(mfl_state_get(L), L, c->self, c->since);
}

int mfl_collect_yield(lua_State *L, mfl_collect *c, lua_KContext ctx,
                      lua_KFunction k) {
  return mfl_yield_slice(L, mfl_state_get(L), c->self, ctx, k);
}

/* Pushes the room for the runs a wait is given (c->pending). */
static void push_pending(lua_State *L, mfl_collect *c) {
  size_t room = c->count ? c->count : 1;
  if (c->mode == MF_WAIT_ALL && room > WAIT_CHUNK)
    room = WAIT_CHUNK;
  c->pending_held = mfl_new_run_holder(L, room);
  c->pending = c->pending_held->runs;
}

/* Pushes a new job (what every continuation gets as ctx). */
static mfl_collect *push_job(lua_State *L, lua_KFunction fin, mf_wait_mode mode,
                             double timeout, int phase) {
  mfl_collect *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->fin = fin;
  c->mode = mode;
  c->reason = MF_WAKE_DONE;
  c->phase = phase;
  c->deadline = -1;
  if (timeout >= 0)
    c->deadline = mf_engine_now(mfl_state_get(L)->engine) + timeout;
  collect_enter(L, c);
  return c;
}

/* Takes the list's elements into the snapshot, checking each is a Future
 * and referencing its run.  Returns 1 when it yielded (the return value
 * of the yield in *ret). */
static int take(lua_State *L, mfl_collect *c, int job, int *ret) {
  int snap = job - 2, seen = job + 1, copy = job + 2;
  mfl_run_holder *held = lua_touserdata(L, job - 1);
  if (c->dedupe && lua_isnil(L, seen)) {
    /* Made here, not at the call (which has the copy to make): sized at
     * once, so that no insertion rehashes a big table. */
    lua_createtable(L, (int)c->length, 0);
    lua_replace(L, snap);
    mfl_run_set_new(L, (size_t)c->length);
    lua_replace(L, seen);
    if (c->self && c->length > LOOK_EVERY &&
        mfl_slice_over(mfl_state_get(L), L, c->self, c->since)) {
      *ret = mfl_collect_yield(L, c, job, step_k);
      return 1;
    }
  }
  while (c->next <= c->length) {
    lua_Integer i = c->next++;
    lua_rawgeti(L, c->dedupe ? copy : snap, i);
    mfl_future *f = mfl_to_future(L, -1);
    if (!f)
      return mfl_raise(L, "UsageError", "element %I is not a Future (%s)", i,
                       luaL_typename(L, -1));
    if (c->dedupe) {
      if (!mfl_run_set_add(lua_touserdata(L, seen), f->run)) {
        lua_pop(L, 1);
        continue;
      }
      lua_rawseti(L, snap, (lua_Integer)c->count + 1);
    } else {
      lua_pop(L, 1); /* the copy is the snapshot */
    }
    c->runs[c->count++] = f->run;
    mf_run_ref(f->run);
    held->count = c->count;
    if (c->next <= c->length && mfl_collect_over(L, c, (size_t)i)) {
      *ret = mfl_collect_yield(L, c, job, step_k);
      return 1;
    }
  }
  lua_pushnil(L);
  lua_replace(L, seen);
  lua_pushnil(L);
  lua_replace(L, copy);
  push_pending(L, c);
  lua_replace(L, job + 3);
  c->phase = SCANNING;
  return 0;
}

/* Drops the references of the pending runs (the wait for them is over). */
static void release_pending(mfl_collect *c) {
  for (size_t i = 0; i < c->npending; i++)
    mf_run_unref(c->pending[i]);
  c->npending = 0;
  if (c->pending_held)
    c->pending_held->count = 0;
}

static int finish(lua_State *L, mfl_collect *c, int job) {
  release_pending(c);
  c->phase = DONE;
  c->pending = NULL;
  c->pending_held = NULL;
  lua_settop(L, job);
  return c->fin(L, LUA_OK, job);
}

/* Looks for the runs not final yet from the cursor on, then waits for
 * them; at the end (or when what was found ends the wait at once: a final
 * run for ANY, a failed one for ALL_FAST) calls the finisher. */
static int scan(lua_State *L, mfl_collect *c, int job) {
  size_t room = c->mode == MF_WAIT_ALL ? WAIT_CHUNK : c->count;
  while (c->cursor < c->count && c->npending < room) {
    mf_run *run = c->runs[c->cursor++];
    if (!mf_run_is_final(run)) {
      mf_run_ref(run); /* kept across the yields below */
      c->pending[c->npending++] = run;
      c->pending_held->count = c->npending;
    } else if (c->mode == MF_WAIT_ANY ||
               (c->mode == MF_WAIT_ALL_FAST &&
                mf_run_state_type(run) != MF_COMPLETED))
      return finish(L, c, job);
    if (c->cursor < c->count && mfl_collect_over(L, c, c->cursor))
      return mfl_collect_yield(L, c, job, step_k);
  }
  if (c->npending == 0)
    return finish(L, c, job);
  double timeout = -1;
  if (c->deadline >= 0) {
    timeout = c->deadline - mf_engine_now(mfl_state_get(L)->engine);
    if (timeout < 0)
      timeout = 0; /* the engine wakes it, timed out, at its next turn */
  }
  c->phase = WAITING;
  return mfl_wait(L, c->pending, c->npending, c->mode, timeout, job, step_k);
}

static int step_k(lua_State *L, int status, lua_KContext ctx) {
  int job = (int)ctx;
  mfl_collect *c = mfl_collect_resumed(L, status, ctx);
  lua_settop(L, job + 3);
  if (c->phase == WAITING) {
    c->reason = mfl_wait_outcome(L, status);
    c->waited = 1;
    release_pending(c);
    c->phase = SCANNING;
    if (c->reason != MF_WAKE_DONE || c->mode != MF_WAIT_ALL)
      return finish(L, c, job);
  }
  if (c->phase == TAKING) {
    int ret = 0;
    if (take(L, c, job, &ret))
      return ret;
  }
  return scan(L, c, job);
}

int mfl_collect_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mfl_collect *c = lua_touserdata(L, (int)ctx);
  lua_pushboolean(L, c->reason == MF_WAKE_DONE);
  return 1;
}

int mfl_collect_list(lua_State *L, int idx, int dedupe, mf_wait_mode mode,
                     double timeout, lua_KFunction fin) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE)
    return mfl_raise(L, "UsageError", "a list of futures expected, got %s",
                     luaL_typename(L, idx));
  mfl_list_expand(L, idx); /* read raw below */
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n > (lua_Integer)(1 << 30))
    return mfl_raise(L, "UsageError", "too many futures (%I)", n);
  luaL_checkstack(L, 12, "collecting futures");
  /* The copy, at the call: one pass of plain copies, under half of what
   * checking and referencing each run costs; the rest goes in slices. */
  lua_createtable(L, dedupe ? 0 : (int)n, 0); /* the snapshot */
  mfl_run_holder *held = mfl_new_run_holder(L, (size_t)n);
  mfl_collect *c = push_job(L, fin, mode, timeout, TAKING);
  int job = lua_gettop(L);
  c->runs = held->runs;
  c->length = n;
  c->next = 1;
  c->dedupe = dedupe;
  int into = job - 2;
  lua_pushnil(L); /* seen (dedupe: made when the taking starts) */
  if (dedupe) {
    lua_createtable(L, (int)n, 0);
    into = job + 2;
  } else {
    lua_pushnil(L);
  }
  lua_pushnil(L); /* the pending runs, once taken */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    lua_rawseti(L, into, i);
  }
  if (c->self && n > LOOK_EVERY &&
      mfl_slice_over(mfl_state_get(L), L, c->self, c->since))
    return mfl_collect_yield(L, c, job, step_k);
  return step_k(L, LUA_OK, job);
}

int mfl_collect_runs(lua_State *L, int anchor, mf_run **runs, size_t n,
                     mf_wait_mode mode, double timeout, lua_KFunction fin) {
  anchor = lua_absindex(L, anchor);
  luaL_checkstack(L, 12, "collecting futures");
  lua_pushvalue(L, anchor); /* in the snapshot's slot: it holds the runs */
  mfl_new_run_holder(L, 0);
  mfl_collect *c = push_job(L, fin, mode, timeout, SCANNING);
  int job = lua_gettop(L);
  c->runs = runs;
  c->count = n;
  c->length = (lua_Integer)n;
  c->next = (lua_Integer)n + 1; /* nothing to take */
  lua_pushnil(L);
  lua_pushnil(L);
  push_pending(L, c);
  return step_k(L, LUA_OK, job);
}
