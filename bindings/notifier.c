/*
 * notifier.c -- a bell that done callbacks ring for one waiting caller:
 * mf.as_completed waits on it, not on every Future still going.  A wait for
 * any of k Futures costs k (a waiter on each, taken off again when it
 * ends), and as_completed waited once per batch of runs that finished: with
 * runs that end one by one (timers, I/O), that was k times the number of
 * batches, quadratic in the list.  The bell costs the same at every ring.
 *
 * The caller parks as an I/O wait does (io.c: a park in a run, a driven
 * loop at top level).  Nothing in the engine knows what the bell stands
 * for: when no run can progress and nothing else can wake the caller, the
 * engine wakes it as deadlocked (mf__sched_break_deadlocks), and the caller
 * says which Futures could never finish.
 */
#include <string.h>

#include "io.h"

typedef struct notifier {
  mfl_io_wait wait;
  int rung; /* rung while nobody waited: the next wait returns at once */
} notifier;

static const char notifier_key = 0;

/* A waiter that goes (its run cancelled, the state closing) holds nothing
 * to stop. */
static void abandoned(mfl_io_wait *w) { (void)w; }

static notifier *check_notifier(lua_State *L, int idx) {
  notifier *n = lua_touserdata(L, idx);
  if (n && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &notifier_key);
    int ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (ours)
      return n;
  }
  mfl_raise(L, "UsageError", "a notifier expected, got %s",
            luaL_typename(L, idx));
  return NULL;
}

/* core.notifier() -> a bell */
static int l_notifier(lua_State *L) {
  notifier *n = lua_newuserdatauv(L, sizeof *n, 0);
  memset(n, 0, sizeof *n);
  n->wait.on_abandon = abandoned;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &notifier_key);
  lua_setmetatable(L, -2);
  return 1;
}

/* core.notify(bell): wakes its waiter, or the next wait returns at once. */
static int l_notify(lua_State *L) {
  notifier *n = check_notifier(L, 1);
  if (n->wait.state == MFL_IO_PARKED)
    mfl_io_wake(&n->wait);
  else
    n->rung = 1;
  return 0;
}

/* Stack: bell timeout */
static int rung_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  notifier *n = (notifier *)ctx;
  switch (mfl_io_back(&n->wait)) {
  case MF_WAKE_DONE:
    lua_pushboolean(L, 1);
    return 1;
  case MF_WAKE_DEADLOCK:
    lua_pushnil(L);
    lua_pushliteral(L, "deadlock");
    return 2;
  default: /* the timeout */
    lua_pushboolean(L, 0);
    return 1;
  }
}

/* core.await_notify(bell, timeout?) -> true when it rang, false when the
 * timeout passed first, nil and "deadlock" when nothing could ever ring it
 * (the caller's to raise). */
static int l_await_notify(lua_State *L) {
  notifier *n = check_notifier(L, 1);
  double timeout = mfl_opt_timeout(L, 2);
  lua_settop(L, 2);
  if (n->rung) {
    n->rung = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (n->wait.state != MFL_IO_IDLE)
    return mfl_raise(L, "UsageError", "this notifier is already waited on");
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mfl_waiting_run(L, S, "mf.as_completed");
  return mfl_io_park(L, run, &n->wait, timeout, (lua_KContext)n, rung_k);
}

void mfl_open_notifier(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "moonflow.notifier");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &notifier_key);
  mfl_pushcfunction(L, l_notifier);
  lua_setfield(L, -2, "notifier");
  mfl_pushcfunction(L, l_notify);
  lua_setfield(L, -2, "notify");
  mfl_pushcfunction(L, l_await_notify);
  lua_setfield(L, -2, "await_notify");
}
