/*
 * flow.c -- the primitives the flow body (lua/moonflow/flow.lua) is built
 * from: waiting for and cancelling the runs a flow started, reading its
 * unhandled failures, and choosing its final state.
 */
#include <malloc.h>

#include "binding.h"

/* The run executing L, or a UsageError naming the primitive. */
static mf_run *need_run(lua_State *L, mfl_state *S, const char *what) {
  mf_run *run = mfl_current_run(L, S);
  if (!run)
    mfl_raise(L, "UsageError", "%s can only be called inside a run", what);
  return run;
}

static int wait_children_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  mfl_wait_outcome(L, status);
  return 0;
}

/* core.wait_children(): parks until every run the current run started is
 * final. */
static int l_wait_children(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = need_run(L, S, "wait_children");
  mfl_check_yieldable(L, run, "a flow");
  int rc = mf_run_wait_children(run);
  if (rc == MF_EDEADLK) {
    char name[256];
    mf_run_name(run, name, sizeof name);
    return mfl_raise(L, "Deadlock",
                     "flow run %s waits for the runs inside it, and one of "
                     "them waits (through its inputs) for %s itself: neither "
                     "can ever finish",
                     name, name);
  }
  if (rc)
    return mfl_raise(L, "UsageError", "wait failed: %s", mf_strerror(rc));
  return mfl_yield_parked(L, run, 0, wait_children_k);
}

/* core.cancel_children(): cancels what the current run started. */
static int l_cancel_children(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run_cancel_children(need_run(L, S, "cancel_children"));
  return 0;
}

/* core.unhandled() -> count, future of the oldest unhandled failure */
static int l_unhandled(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = need_run(L, S, "unhandled");
  mf_run *first = NULL;
  size_t n = mf_run_unhandled(S->engine, run, &first);
  lua_pushinteger(L, (lua_Integer)n);
  if (!first)
    return 1;
  mfl_push_future_of(L, first);
  return 2;
}

static mf_state_type type_from_string(lua_State *L, int idx) {
  static const char *const names[] = {"PENDING",   "SCHEDULED", "RUNNING",
                                      "COMPLETED", "FAILED",    "CRASHED",
                                      "CANCELLED", NULL};
  return (mf_state_type)luaL_checkoption(L, idx, NULL, names);
}

static mf_state_name name_from_string(lua_State *L, int idx) {
  static const char *const names[] = {
      "Pending",   "Scheduled",     "Running",  "Completed", "Failed",
      "Retrying",  "AwaitingRetry", "NotReady", "TimedOut",  "Cached",
      "Cancelled", "Crashed",       NULL};
  return (mf_state_name)luaL_checkoption(L, idx, NULL, names);
}

/* core.set_outcome(type, name, message?, traceback?): the final state the
 * current run takes when its body ends. */
static int l_set_outcome(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = need_run(L, S, "set_outcome");
  mfl_run *lr = mf_run_body(run);
  lr->outcome_type = (unsigned char)type_from_string(L, 1);
  lr->outcome_name = (unsigned char)name_from_string(L, 2);
  lr->has_outcome = 1;
  if (lua_isnoneornil(L, 3) && lua_isnoneornil(L, 4))
    return 0;
  mfl_push_future_of(L, run);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "message");
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "traceback");
  lua_setiuservalue(L, -2, MFL_UV_INFO);
  return 0;
}

/* core.attempt() -> the current run's attempt number */
static int l_attempt(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_pushinteger(L, mf_run_attempt(need_run(L, S, "attempt")));
  return 1;
}

/* core.current() -> the Future of the current run, or nil */
static int l_current(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mfl_current_run(L, S);
  if (!run)
    return 0;
  mfl_push_future_of(L, run);
  return 1;
}

/* core.mark_handled(future): handles its failure, or (before it is final)
 * claims its outcome for a caller that will take it. */
static int l_mark_handled(lua_State *L) {
  mf_run_mark_handled(mfl_check_future(L, 1)->run);
  return 0;
}

/* The bytes of an mf_heap's pages that malloc does not count: those of
 * its regions (under AddressSanitizer its pages are malloc's). */
static size_t region_bytes(const mf_heap_stats *stats) {
  return stats->regions ? stats->pages * MF_HEAP_PAGE : 0;
}

/* core.heap_in_use() -> bytes malloc has handed out and not taken back
 * (the Lua heap included when Lua allocates through realloc), the blocks
 * it maps on their own (the big arrays) too, and the pages held by the
 * mf_heaps of this state and of the engine (run records): for the memory
 * figures of bench/.  (The mappings of an mf_heap's blocks of 2 MiB and
 * more are not counted.) */
static int l_heap_in_use(lua_State *L) {
  struct mallinfo2 info = mallinfo2();
  size_t bytes = info.uordblks + info.hblkhd;
  mf_heap_stats stats;
  void *heap;
  if (lua_getallocf(L, &heap) == mf_heap_realloc) {
    mf_heap_get_stats(heap, &stats);
    bytes += region_bytes(&stats);
  }
  mf_engine_heap_stats(mfl_state_get(L)->engine, &stats);
  bytes += region_bytes(&stats);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 1;
}

/* core.retired_runs(list) -> how many runs of a map's lazy list keep only
 * their summary (group.c). */
static int l_retired_runs(lua_State *L) {
  lua_pushinteger(L, mfl_list_retired(L, 1));
  return 1;
}

/* core.release_children(future): its live children move to the top level. */
static int l_release_children(lua_State *L) {
  mf_run_release_children(mfl_check_future(L, 1)->run);
  return 0;
}

/* core.rename(future, name): gives the run a name of its own ("main"). */
static int l_rename(lua_State *L) {
  mf_run *run = mfl_check_future(L, 1)->run;
  if (mf_run_set_custom_name(run, luaL_checkstring(L, 2)) != 0)
    return luaL_error(L, "moonflow: out of memory");
  mfl_store_renamed(mfl_state_get(L), run);
  return 0;
}

/* core.is_future(v), core.is_future_list(v), core.is_task(v) */
static int l_is_future(lua_State *L) {
  lua_pushboolean(L, mfl_to_future(L, 1) != NULL);
  return 1;
}

static int l_is_future_list(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE &&
                         mfl_is_kind(L, 1, &mfl_key_list_mt));
  return 1;
}

static int l_is_state(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE &&
                         mfl_is_kind(L, 1, &mfl_key_state_mt));
  return 1;
}

static int l_is_task(lua_State *L) {
  lua_pushboolean(L, mfl_task_box(L, 1) != NULL);
  return 1;
}

/* core.unhandled_root() -> array of the Futures of unhandled failures of
 * runs outside any flow; forgets them (they are being reported). */
static void push_each(mf_run *run, void *data) {
  lua_State *L = data;
  mfl_push_future_of(L, run);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static int l_unhandled_root(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_newtable(L);
  mf_run_each_unhandled(S->engine, NULL, push_each, L);
  mf_run_clear_unhandled(S->engine, NULL);
  return 1;
}

/* core.live() -> number of runs not final */
static int l_live(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_pushinteger(L, (lua_Integer)mf_engine_live_runs(S->engine));
  return 1;
}

/* core.longest_pass([reset]) -> seconds of the longest scheduler pass so
 * far (mf_engine_longest_pass); reset starts the count again. */
static int l_longest_pass(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_pushnumber(L, mf_engine_longest_pass(S->engine, lua_toboolean(L, 1)));
  return 1;
}

static const luaL_Reg flow_functions[] = {
    {"wait_children", l_wait_children},
    {"cancel_children", l_cancel_children},
    {"unhandled", l_unhandled},
    {"unhandled_root", l_unhandled_root},
    {"set_outcome", l_set_outcome},
    {"current", l_current},
    {"attempt", l_attempt},
    {"mark_handled", l_mark_handled},
    {"is_future", l_is_future},
    {"is_future_list", l_is_future_list},
    {"is_task", l_is_task},
    {"is_state", l_is_state},
    {"live", l_live},
    {"longest_pass", l_longest_pass},
    {"rename", l_rename},
    {"release_children", l_release_children},
    {"heap_in_use", l_heap_in_use},
    {"retired_runs", l_retired_runs},
    {NULL, NULL}};

void mfl_open_flow(lua_State *L) { mfl_setfuncs(L, flow_functions); }
