/*
 * runner.c -- how a Lua run executes: its coroutine (a spare one, a pool),
 * the run callbacks the engine calls (step, abandon, hold, retry), and the
 * one dispatcher that reads why a coroutine yielded (mfl_yield).
 *
 * The engine owns the run's life: it steps the body for an attempt
 * (MF_STEP_START), for the hooks of a point (MF_STEP_HOOKS), or to go on
 * after a park (MF_STEP_RESUME).  Each step resumes the run's coroutine
 * once; when it yields, the reason set at the yield site says what the
 * engine is told.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"

/* Coroutines kept for reuse: a finished coroutine's stack is reset and it
 * runs the next body, which saves creating a thread per run. */
#define MFL_POOL_MAX 256

static const char spare_key = 0;

/* {====== Coroutines ====== */

static lua_State *pool_take(lua_State *L, mfl_state *S) {
  /* L: ... -> ... co */
  if (S->pool_size > 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->pool_ref);
    lua_rawgeti(L, -1, S->pool_size);
    lua_pushnil(L);
    lua_rawseti(L, -3, S->pool_size--);
    lua_remove(L, -2);
    return lua_tothread(L, -1);
  }
  return lua_newthread(L);
}

static void pool_give(lua_State *L, mfl_state *S, lua_State *co) {
  /* L: ... co -> ... */
  lua_settop(co, 0);
  if (S->pool_size >= MFL_POOL_MAX) {
    lua_pop(L, 1);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->pool_ref);
  lua_insert(L, -2);
  lua_rawseti(L, -2, ++S->pool_size);
  lua_pop(L, 1);
}

/*
 * A run starts on the spare coroutine (anchored in the registry's spare
 * slot), which most runs hand back finished, ready for the next one.  Only
 * a run that parks moves its coroutine into its Future (MFL_UV_CO) and
 * takes it out of the spare slot; it comes back through the pool.
 */
static lua_State *take_spare(lua_State *L, mfl_state *S) {
  lua_State *co = S->spare;
  if (co) {
    S->spare = NULL;
    return co;
  }
  co = pool_take(L, S); /* pushes it */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &spare_key);
  return co;
}

/* The coroutines of parked runs, which nothing but the scheduler may
 * resume (the replaced coroutine.resume checks). */
static void mark_parked(lua_State *L, mfl_state *S, lua_State *co, int on) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->threads_ref);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  if (on)
    lua_pushboolean(L, 1);
  else
    lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Moves a parked run's coroutine into its Future, off the spare slot. */
static void anchor(lua_State *L, mfl_run *lr, int box, lua_State *co) {
  if (lr->co_in_box)
    return;
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_setiuservalue(L, box, MFL_UV_CO);
  lr->co_in_box = 1;
  mark_parked(L, lr->S, co, 1);
}

/* The coroutine of a finished step (settop 0 done) goes back. */
static void give_back(lua_State *L, mfl_run *lr, int box, lua_State *co) {
  mfl_state *S = lr->S;
  lr->co = NULL;
  if (!lr->co_in_box) {
    S->spare = co; /* still anchored in the spare slot */
    return;
  }
  mark_parked(L, S, co, 0);
  lua_getiuservalue(L, box, MFL_UV_CO);
  lua_pushnil(L);
  lua_setiuservalue(L, box, MFL_UV_CO);
  lr->co_in_box = 0;
  pool_give(L, S, co);
}

/* A coroutine stopped mid-step: its to-be-closed variables are closed and
 * it is dropped (never pooled: it may still be referenced). */
static void drop_coroutine(lua_State *L, mfl_run *lr, int box) {
  lua_State *co = lr->co;
  lr->co = NULL;
  if (!co)
    return;
  if (lr->co_in_box)
    mark_parked(L, lr->S, co, 0);
  mfl_closethread(co, L);
  lr->co_in_box = 0;
  lua_pushnil(L);
  lua_setiuservalue(L, box, MFL_UV_CO);
}

/* }====== */

/* {====== Results and errors ====== */

void mfl_store_results(lua_State *L, mfl_run *lr, int box, lua_State *co,
                       int n) {
  if (co != L && !lua_checkstack(L, n + 4))
    luaL_error(L, "too many results (%d)", n);
  lua_xmove(co, L, n); /* nothing to move when co is L */
  if (n == 1) {
    lr->nresults = 1;
  } else if (n == 0) {
    lua_pushnil(L);
    lr->nresults = 0;
  } else {
    lua_createtable(L, n, 1);
    lua_insert(L, -(n + 1)); /* the table, then the values */
    for (int i = n; i >= 1; i--)
      lua_rawseti(L, -(i + 1), i);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lr->nresults = -1;
  }
  lua_setiuservalue(L, box, MFL_UV_RESULT);
}

/* Stores the error value on top of L as the run's result, with the
 * traceback of co (unless a flow left one in its info), and where the
 * error came from (origin.c). */
static void store_error(lua_State *L, mfl_run *lr, int box, lua_State *co) {
  int err = lua_gettop(L);
  lua_pushvalue(L, err);
  lua_setiuservalue(L, box, MFL_UV_RESULT);
  lr->nresults = 1;
  lua_getiuservalue(L, box, MFL_UV_INFO); /* a flow may have left info */
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
  }
  int info = lua_gettop(L);
  if (lua_getfield(L, info, "traceback") == LUA_TNIL && co) {
    const char *msg = mfl_describe_error(L, err);
    luaL_traceback(L, co, msg, 0);
    lua_setfield(L, info, "traceback");
    lua_pop(L, 1); /* the description */
  }
  lua_pop(L, 1);
  mfl_future *f = mfl_future_box(L, box);
  if (f && f->run) /* (a Future finalized as the state closes links none) */
    mfl_link_origin(L, f->run, box, err, info);
  lua_settop(L, info);
  if (lr->S->store) { /* the store records the error with the run */
    lua_getfield(L, -1, "traceback");
    mfl_note_error(L, lr, err, lua_gettop(L));
    lua_pop(L, 1);
  }
  lua_setiuservalue(L, box, MFL_UV_INFO);
  lua_settop(L, err - 1);
}

/* Pushes a TimedOut error naming the run. */
static void push_timed_out(lua_State *L, mf_run *run) {
  char name[256];
  mf_run_name(run, name, sizeof name);
  mfl_push_error(L, "TimedOut", "run %s exceeded its timeout", name);
}

/* }====== */

/* {====== Lifecycle log lines ====== */

static int lifecycle_level(const mfl_run *lr) {
  return lr->kind == MFL_FLOW ? MFL_LOG_INFO : MFL_LOG_DEBUG;
}

/* After an attempt ended: the line of how the run ends (unless it retries,
 * which op_retry tells): ERROR with the traceback when it failed. */
static void log_outcome(lua_State *L, mf_run *run, mfl_run *lr, int box) {
  mfl_state *S = lr->S;
  if (S->lifecycle_level == MFL_LOG_OFF || lr->quiet ||
      mf_run_state_name(run) == MF_NAME_AWAITING_RETRY)
    return;
  mf_state_type type;
  mf_state_name name;
  mf_run_outcome(run, &type, &name);
  const char *state = mf_state_name_string(name);
  if (type == MF_COMPLETED || type == MF_CANCELLED) {
    mfl_log_run(S, lifecycle_level(lr), run, "finished: %s", state);
    return;
  }
  if (MFL_LOG_ERROR < S->lifecycle_level)
    return;
  int top = lua_gettop(L);
  lua_getiuservalue(L, box, MFL_UV_INFO);
  const char *text = NULL;
  if (lua_istable(L, -1) && lua_getfield(L, -1, "traceback") == LUA_TSTRING)
    text = lua_tostring(L, -1);
  if (!text) {
    lua_getiuservalue(L, box, MFL_UV_RESULT);
    text = mfl_describe(L, -1);
  }
  mfl_log_run(S, MFL_LOG_ERROR, run, "finished: %s: %s", state, text);
  lua_settop(L, top);
}

/* }====== */

/* {====== Beginning a step ====== */

/* Pushes the body function and the arguments onto co; returns nargs. */
static int push_attempt(lua_State *L, mf_run *run, mfl_run *lr, int box,
                        lua_State *co) {
  lua_getiuservalue(L, box, MFL_UV_TASK);
  lua_getiuservalue(L, -1, MFL_TASK_UV_FN);
  lua_remove(L, -2);
  /* A runner that copies: the attempt is the remote one (runners.c). */
  int remote = lr->S->remote_runners ? mfl_remote_prepare(L, run, box) : 0;
  int nargs = lr->nargs;
  lua_getiuservalue(L, box, MFL_UV_ARGS);
  if (nargs < 0) {
    lua_getfield(L, -1, "n");
    nargs = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, nargs + 2, "too many arguments");
    for (int i = 1; i <= nargs; i++)
      lua_rawgeti(L, -i, i);
    lua_remove(L, -(nargs + 1));
  } else if (nargs == 0) {
    lua_pop(L, 1);
  }
  if (lr->needs_resolve) /* each argument: futures become results */
    for (int i = lua_gettop(L) - nargs + 1; i <= lua_gettop(L); i++)
      mfl_resolve_value(L, i);
  if (!lr->keep_args) {
    lua_pushnil(L);
    lua_setiuservalue(L, box, MFL_UV_ARGS);
  }
  /* A new attempt ends as its body does. */
  if (lr->has_outcome || mf_run_attempt(run) > 1) {
    lr->has_outcome = 0;
    lua_pushnil(L);
    lua_setiuservalue(L, box, MFL_UV_INFO);
  }
  if (lr->cached && mfl_cache_start(L, run, lr, box, nargs)) {
    lua_pop(L,
            nargs + 1 + remote); /* a cached result: the body is not called */
    return -2;
  }
  nargs += remote;
  if (nargs + 1 > LUA_MINSTACK) /* a pooled coroutine has that much */
    luaL_checkstack(co, nargs + 1, "too many arguments");
  lua_xmove(L, co, nargs + 1);
  return nargs;
}

static const char *hook_point_name(unsigned point) {
  switch (point) {
  case MF_HOOK_RUNNING:
    return "on_running";
  case MF_HOOK_COMPLETED:
    return "on_completion";
  case MF_HOOK_CANCELLED:
    return "on_cancellation";
  case MF_HOOK_CRASHED:
    return "on_crashed";
  default:
    return "on_failure";
  }
}

/* Pushes the hooks' runner with (hooks, task, future, state) onto co. */
static int push_hooks(lua_State *L, mf_run *run, int box, lua_State *co) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  const char *kind = hook_point_name(mf_run_hook_point(run));
  if (lr->kind == MFL_TASK && mf_run_hook_point(run) == MF_HOOK_CRASHED)
    kind = "on_failure"; /* a task has no on_crashed: it failed */
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->hooks_ref);
  lua_getiuservalue(L, box, MFL_UV_TASK);
  lua_getiuservalue(L, -1, MFL_TASK_UV_OPTS);
  lua_getfield(L, -1, kind);
  lua_remove(L, -2);
  lua_insert(L, -2); /* runner hooks task */
  lua_pushvalue(L, box);
  mfl_push_outcome_state(L, box);
  lua_pushstring(L, kind);
  lua_xmove(L, co, 6);
  return 5;
}

/* }====== */

/* {====== Ending a step ====== */

/* The body returned: the attempt's results (or the end of its hooks). */
static void on_return(lua_State *L, mf_run *run, mfl_run *lr, int box,
                      lua_State *co, int nres) {
  mfl_forget_reraises(L, lr, box);
  if (mf_run_hook_point(run)) {
    lua_settop(co, 0);
    give_back(L, lr, box, co);
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  mf_state_type type =
      lr->has_outcome ? (mf_state_type)lr->outcome_type : MF_COMPLETED;
  mf_state_name name =
      lr->has_outcome ? (mf_state_name)lr->outcome_name : MF_NAME_COMPLETED;
  /* One verdict on the deadline, the engine's too: storing the results
   * below may take time, and must not turn them into the error. */
  if (mf_run_stop_deadline(run)) {
    /* It returned after its deadline (it caught its TimedOut). */
    lua_settop(co, 0);
    push_timed_out(L, run);
    store_error(L, lr, box, NULL);
    type = MF_FAILED;
    name = MF_NAME_TIMED_OUT;
  } else if (nres > 8 && !lua_checkstack(L, nres + 4)) {
    lua_settop(co, 0);
    char who[256];
    mf_run_name(run, who, sizeof who);
    lua_pushfstring(L, "run %s returned too many values (%d)", who, nres);
    store_error(L, lr, box, NULL);
    type = MF_FAILED;
    name = MF_NAME_FAILED;
  } else if (type == MF_COMPLETED) {
    mfl_store_results(L, lr, box, co, nres);
    if (lr->note && mfl_cache_result(L, lr, box) != 0) {
      store_error(L, lr, box, NULL); /* a result that cannot be kept */
      type = MF_FAILED;
      name = MF_NAME_FAILED;
    }
  }
  lua_settop(co, 0);
  give_back(L, lr, box, co);
  mf_run_finish(run, type, name);
  log_outcome(L, run, lr, box);
}

/* The body raised (status is the resume's): the attempt failed, crashed
 * (out of memory), or timed out. */
static void on_error(lua_State *L, mf_run *run, mfl_run *lr, int box,
                     lua_State *co, int status) {
  int hooks = mf_run_hook_point(run) != 0;
  int late = !hooks && mf_run_stop_deadline(run);
  lua_xmove(co, L, 1); /* the error */
  if (hooks) {
    mfl_report(lr->S, "error in a hook", mfl_describe(L, -1));
    lua_pop(L, 2);
  } else if (late) {
    lua_pop(L, 1); /* whatever stopping it raised: it timed out */
    push_timed_out(L, run);
    store_error(L, lr, box, co);
  } else {
    store_error(L, lr, box, co);
  }
  drop_coroutine(L, lr, box);
  if (hooks) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  mf_state_type type = MF_FAILED;
  mf_state_name name = MF_NAME_FAILED;
  if (late) {
    name = MF_NAME_TIMED_OUT;
  } else if (lr->has_outcome) {
    type = (mf_state_type)lr->outcome_type;
    name = (mf_state_name)lr->outcome_name;
  } else if (status == LUA_ERRMEM) {
    type = MF_CRASHED;
    name = MF_NAME_CRASHED;
  }
  mf_run_finish(run, type, name);
  log_outcome(L, run, lr, box);
}

/* The body yielded: what the yield site said it was for. */
static void on_yield(lua_State *L, mf_run *run, mfl_run *lr, int box,
                     lua_State *co, int nres) {
  lua_pop(co, nres);
  switch ((mfl_yield)lr->yield) {
  case MFL_YIELD_PARKED:
    anchor(L, lr, box, co);
    return;
  case MFL_YIELD_BARE: /* coroutine.yield() in the body: once, as sleep(0) */
    anchor(L, lr, box, co);
    mf_run_sleep(run, 0);
    return;
  case MFL_YIELD_PREEMPTED:
    /* Behind the runs ready to start; what the loop's turn wakes (timers,
     * I/O) comes first (mfl_yield_slice ended the pass). */
    anchor(L, lr, box, co);
    mf_run_sleep(run, 0);
    return;
  case MFL_YIELD_STOPPED:
    /* It computed past its deadline: stopped for good, where it was. */
    push_timed_out(L, run);
    store_error(L, lr, box, co);
    drop_coroutine(L, lr, box);
    mf_run_finish(run, MF_FAILED, MF_NAME_TIMED_OUT);
    log_outcome(L, run, lr, box);
    return;
  }
}

/* lua_CFunction: prepares the coroutine of a step, protected (resolving
 * the arguments allocates).  Arguments: the run, the reason. */
static int prepare_step(lua_State *L) {
  mf_run *run = lua_touserdata(L, 1);
  mf_step_reason reason = (mf_step_reason)lua_tointeger(L, 2);
  mfl_run *lr = mf_run_body(run);
  mfl_push_future_of(L, run);
  int box = lua_gettop(L);
  int nargs = reason == MF_STEP_START ? push_attempt(L, run, lr, box, lr->co)
                                      : push_hooks(L, run, box, lr->co);
  lua_pushinteger(L, nargs);
  return 1;
}

/* The common attempt needs no protection: with one argument or none, and
 * no table to resolve, nothing it does can raise but running out of
 * memory, which the whole step shares.  Packed arguments may be too many
 * for a stack; a resolved table may not take a key (NaN); a Future whose
 * __gc ran (by hand) raises UsageError when resolved, and so may what a
 * wrapper holds: one argument to resolve is simple only as a live Future
 * (the chain's case). */
static int simple_attempt(lua_State *L, const mfl_run *lr, int box) {
  /* (a cache lookup calls the user's cache_key and may end the attempt) */
  if (lr->nargs < 0 || lr->resolve_tables || lr->cached)
    return 0;
  if (!lr->needs_resolve)
    return 1;
  lua_getiuservalue(L, box, MFL_UV_ARGS);
  mfl_future *f = mfl_future_box(L, -1);
  lua_pop(L, 1);
  return f && f->run;
}

/* Starts the step's coroutine: returns the arguments pushed onto it, or
 * -1 when that failed (the error is then the step's outcome). */
static int begin_step(lua_State *L, mf_run *run, mfl_run *lr, int box,
                      mf_step_reason reason) {
  mfl_state *S = lr->S;
  if (reason == MF_STEP_START && mf_run_attempt(run) == 1 && !lr->quiet)
    mfl_log_run(S, lifecycle_level(lr), run, "%s started",
                lr->kind == MFL_FLOW ? "flow run" : "task run");
  lr->co = take_spare(L, S);
  lr->co_in_box = 0;
  if (reason == MF_STEP_START && simple_attempt(L, lr, box))
    return push_attempt(L, run, lr, box, lr->co);
  lua_pushcfunction(L, prepare_step);
  lua_pushlightuserdata(L, run);
  lua_pushinteger(L, reason);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    lua_settop(lr->co, 0);
    give_back(L, lr, box, lr->co);
    if (mf_run_hook_point(run)) {
      mfl_report(S, "error in a hook", mfl_describe(L, -1));
      lua_settop(L, box);
      mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
      return -1;
    }
    store_error(L, lr, box, NULL);
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    log_outcome(L, run, lr, box);
    return -1;
  }
  int nargs = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (nargs == -2) { /* a cache hit: the attempt ends Cached */
    lua_settop(lr->co, 0);
    give_back(L, lr, box, lr->co);
    if (mf_run_stop_deadline(run)) { /* its cache_key took it past */
      push_timed_out(L, run);
      store_error(L, lr, box, NULL);
      mf_run_finish(run, MF_FAILED, MF_NAME_TIMED_OUT);
    } else {
      mf_run_finish(run, MF_COMPLETED, MF_NAME_CACHED);
    }
    log_outcome(L, run, lr, box);
    return -1;
  }
  return nargs;
}

/* log_prints: print goes to the log while the run's steps execute, and
 * is the user's own everywhere else. */
static void swap_print(lua_State *L, mfl_state *S, int in) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  if (in) {
    lua_getfield(L, -1, "print");
    lua_rawseti(L, LUA_REGISTRYINDEX, S->saved_print_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->print_ref);
  } else {
    lua_getfield(L, -1, "print");
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->print_ref);
    int ours = lua_rawequal(L, -1, -2); /* the step did not set its own */
    lua_pop(L, 2);
    if (!ours) {
      lua_pop(L, 1);
      return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->saved_print_ref);
  }
  lua_setfield(L, -2, "print");
  lua_pop(L, 1);
}

/* The step's outcome, with the run's Future at box. */
static void end_step(lua_State *L, mf_run *run, mfl_run *lr, int box,
                     lua_State *co, int status, int nres) {
  if (status == LUA_YIELD)
    on_yield(L, run, lr, box, co, nres);
  else if (status == LUA_OK)
    on_return(L, run, lr, box, co, nres);
  else
    on_error(L, run, lr, box, co, status);
  assert(lua_gettop(L) == box); /* each step leaves the stack balanced */
}

/* Whether the attempt of a run of a map's group can run without its
 * Future: one argument, nothing to resolve or look up, on this thread. */
static int simple_grouped(const mfl_run *lr, mf_step_reason reason) {
  return reason == MF_STEP_START && !lr->needs_resolve && !lr->cached &&
         !lr->log_prints && !lr->S->remote_runners;
}

/* The first attempt of a grouped run (group.c): when the body returns at
 * most one value, the result goes to the group and no Future is made; any
 * other end (an error, a park, a timeout) makes the Future and ends the
 * step as usual. */
static void step_grouped(lua_State *L, mf_run *run, mfl_run *lr) {
  mfl_state *S = lr->S;
  if (!lr->quiet)
    mfl_log_run(S, lifecycle_level(lr), run, "task run started");
  int base = lua_gettop(L);
  int nargs = mfl_group_push_attempt(L, lr);
  int slot_table = lua_gettop(L) - nargs - 1;
  lua_State *co = lr->co = take_spare(L, S);
  lr->co_in_box = 0;
  lua_xmove(L, co, nargs + 1);
  int nres = 0;
  lr->yield = MFL_YIELD_BARE;
  mfl_step_began(S, co, mf_run_deadline(run));
  int status = lua_resume(co, L, nargs, &nres);
  mfl_step_ended(S, co);
  if (status == LUA_OK && lr->group && nres <= 1 && !lr->has_outcome &&
      !lr->note && !mf_run_stop_deadline(run)) {
    if (nres == 0)
      lua_pushnil(L);
    else
      lua_xmove(co, L, 1);
    lr->nresults = nres;
    mfl_group_store_result(L, slot_table, lr);
    lua_settop(L, base);
    lua_settop(co, 0);
    give_back(L, lr, 0, co);
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    log_outcome(L, run, lr, 0);
    return;
  }
  lua_settop(L, base);
  mfl_push_future_of(L, run); /* made now, unless the body made it */
  end_step(L, run, lr, lua_gettop(L), co, status, nres);
}

/* Pushes the run's Future, when it still stands for the run: lua_close
 * finalizes every Future, pinned ones too, and a finalizer after it may
 * still drive the loop (a wait), where such a run must not run Lua (its
 * Future's checks would raise, out of the scheduler).  Else pushes
 * nothing and returns 0. */
static int push_live_future(lua_State *L, mf_run *run) {
  mfl_push_future_of(L, run);
  mfl_future *f = mfl_future_box(L, -1);
  if (f && f->run == run)
    return 1;
  lua_pop(L, 1);
  return 0;
}

static void op_step(mf_run *run, mf_step_reason reason) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  lua_State *L = S->L;
  int top = lua_gettop(L);
  if (lr->group && lr->group_held && simple_grouped(lr, reason)) {
    step_grouped(L, run, lr);
    lua_settop(L, top);
    return;
  }
  if (!push_live_future(L, run)) { /* the Lua state is closing */
    mf_run_finish(run, MF_CANCELLED, MF_NAME_CANCELLED);
    return;
  }
  int box = lua_gettop(L);
  int nargs = 0;
  if (reason != MF_STEP_RESUME &&
      (nargs = begin_step(L, run, lr, box, reason)) < 0) {
    lua_settop(L, top);
    return;
  }
  lua_State *co = lr->co;
  int nres = 0;
  lr->yield = MFL_YIELD_BARE;
  if (lr->log_prints)
    swap_print(L, S, 1);
  mfl_step_began(S, co, mf_run_deadline(run));
  int status = lua_resume(co, L, nargs, &nres);
  mfl_step_ended(S, co);
  if (lr->log_prints)
    swap_print(L, S, 0);
  end_step(L, run, lr, box, co, status, nres);
  lua_settop(L, top);
}

/* }====== */

/* {====== The other callbacks ====== */

/* The body will not continue (a stopped step, or a run that ends without
 * its body running to its end): drop the coroutine, closing its pending
 * to-be-closed variables, and, once the run is final, the arguments. */
static void op_abandon(mf_run *run) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  if (lr->remote) /* parked on a worker's job (runners.c) */
    mfl_remote_abandon(lr);
  mfl_io_abandon(lr); /* the I/O it was parked on stops (C only) */
  if (S->closed || S->closing || !mfl_run_reachable(lr))
    return;
  lua_State *L = S->L;
  int top = lua_gettop(L);
  lua_checkstack(L, 8);
  if (!push_live_future(L, run))
    return; /* (its coroutine goes with the state) */
  int box = lua_gettop(L);
  if (!mf_run_is_final(run) && !mf_run_hook_point(run) &&
      mf_run_error_code(run) == MF_ETIMEDOUT) {
    /* Stopped at its deadline: its error, with where it was waiting. */
    push_timed_out(L, run);
    store_error(L, lr, box, lr->co);
  }
  drop_coroutine(L, lr, box);
  if (mf_run_is_final(run) || mf_run_cancel_requested(run)) {
    mfl_keep_cause(L, run, box); /* before the arguments that hold it go */
    lua_pushnil(L);              /* no attempt will need them again */
    lua_setiuservalue(L, box, MFL_UV_ARGS);
  }
  lua_settop(L, top);
}

static void op_hold(mf_run *run, int held) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  /* Runs are pinned when their Future is made, so a hold that starts
   * finds the pin in place; only its end matters here. */
  if (held || !S->L)
    return;
  lua_State *L = S->L;
  if (lr->group) {
    mfl_group_release(L, lr);
    return;
  }
  if (lr->pin == LUA_NOREF)
    return;
  mfl_push_pins(L, S);
  mfl_unpin(L, S, lua_gettop(L), lr->pin);
  lr->pin = LUA_NOREF;
  lua_pop(L, 1);
}

/* The retry condition: retry_condition(err, state) of the task, called as
 * a plain callback; an error in it is logged and means no retry. */
static int op_retry(mf_run *run) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  if (S->closed || S->closing)
    return 0;
  lua_State *L = S->L;
  int top = lua_gettop(L);
  if (!push_live_future(L, run))
    return 0; /* the Lua state is closing */
  int box = lua_gettop(L);
  int again = 1;
  lua_getiuservalue(L, box, MFL_UV_TASK);
  lua_getiuservalue(L, -1, MFL_TASK_UV_OPTS);
  if (lua_getfield(L, -1, "retry_condition") == LUA_TFUNCTION) {
    lua_getiuservalue(L, box, MFL_UV_RESULT);
    mfl_push_outcome_state(L, box);
    S->callback_depth++;
    int status = lua_pcall(L, 2, 1, 0);
    S->callback_depth--;
    if (status != LUA_OK) {
      mfl_log_run(S, MFL_LOG_ERROR, run, "retry_condition failed: %s",
                  mfl_describe(L, -1));
      again = 0;
    } else {
      again = lua_toboolean(L, -1);
    }
  }
  if (again && !lr->quiet) {
    lua_getiuservalue(L, box, MFL_UV_RESULT);
    mfl_log_run(S, MFL_LOG_INFO, run, "attempt %d failed (%s); retrying",
                mf_run_attempt(run), mfl_describe(L, -1));
  }
  lua_settop(L, top);
  return again;
}

const mf_run_ops mfl_run_ops = {
    .step = op_step, .abandon = op_abandon, .hold = op_hold, .retry = op_retry};
/* A future C completes has no body to step. */
const mf_run_ops mfl_external_ops = {.abandon = op_abandon, .hold = op_hold};

/* }====== */

/* {====== Yield sites ====== */

void mfl_check_yieldable(lua_State *L, mf_run *run, const char *what) {
  if (lua_isyieldable(L))
    return;
  char name[256];
  mf_run_name(run, name, sizeof name);
  mfl_raise(L, "UsageError",
            "%s cannot wait here: run %s is inside a C call that cannot "
            "yield (a table.sort comparator, a string.gsub callback, a "
            "metamethod called from C, require); wait outside it",
            what, name);
}

int mfl_yield_parked(lua_State *L, mf_run *run, lua_KContext ctx,
                     lua_KFunction k) {
  ((mfl_run *)mf_run_body(run))->yield = MFL_YIELD_PARKED;
  return lua_yieldk(L, 0, ctx, k);
}

/* }====== */

/* {====== Creating runs ====== */

/* The collector sees only the Lua side of a run (its Future); its C record
 * and history are about three times as big.  With Lua's default
 * (incremental) collector, every so many runs made, the collector is told
 * of that memory as work to do, so that garbage Futures (and the records
 * they keep) are reclaimed at the pace they are made (else a run that
 * submits in a loop grows by gigabytes).  The moonflow program runs the
 * collector in generational mode instead, where young garbage is cheap,
 * and turns this off (mfl_gc_pacing). */
#define MFL_GC_EVERY 64
#define MFL_RUN_C_BYTES 384

static void pace_collector(lua_State *L, mfl_state *S) {
  /* Not while a host stopped the collector (it collects in its own spare
   * time: mf_lua_collect). */
  if (S->gc_pacing && ++S->runs_made % MFL_GC_EVERY == 0 &&
      lua_gc(L, LUA_GCISRUNNING))
    lua_gc(L, LUA_GCSTEP, MFL_GC_EVERY * MFL_RUN_C_BYTES / 1024);
}

mf_run *mfl_new_grouped_run(lua_State *L, mfl_state *S) {
  pace_collector(L, S);
  mf_run *run = mf_run_new(S->engine, &mfl_run_ops, sizeof(mfl_run));
  if (!run)
    luaL_error(L, "moonflow: out of memory");
  mf_run_set_data(run, S);
  mfl_run *lr = mf_run_body(run);
  lr->S = S;
  lr->kind = MFL_TASK;
  lr->pin = LUA_NOREF;
  return run;
}

/* Creates a run and its Future; the Future is pushed and pinned.  The task
 * (at task_idx, or none when 0) is kept in the Future. */
mfl_future *mfl_new_future(lua_State *L, mfl_state *S, mfl_kind kind,
                           int task_idx, const mfl_hot *hot) {
  if (task_idx < 0)
    task_idx = lua_gettop(L) + task_idx + 1;
  pace_collector(L, S);
  mfl_future *f = lua_newuserdatauv(L, sizeof *f, MFL_NUV);
  f->mark = &mfl_key_future_mt;
  f->run = NULL;
  if (hot)
    lua_pushvalue(L, hot->future_mt);
  else
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->future_mt_ref);
  lua_setmetatable(L, -2);
  mf_run *run = mf_run_new(
      S->engine, kind == MFL_EXTERNAL ? &mfl_external_ops : &mfl_run_ops,
      sizeof(mfl_run));
  if (!run)
    luaL_error(L, "moonflow: out of memory");
  f->run = run;
  mfl_note_box(L, S, f, mfl_release_future);
  mf_run_set_data(run, S); /* a run of this state's (the store observer) */
  mfl_run *lr = mf_run_body(run);
  lr->S = S;
  lr->kind = (unsigned char)kind;
  if (task_idx) {
    lua_pushvalue(L, task_idx);
    lua_setiuservalue(L, -2, MFL_UV_TASK);
  }
  if (hot) {
    lua_pushvalue(L, -1);
    lr->pin = mfl_pin(L, S, hot->pins);
    return f;
  }
  mfl_push_pins(L, S);
  lua_pushvalue(L, -2);
  lr->pin = mfl_pin(L, S, lua_gettop(L) - 1);
  lua_pop(L, 1);
  return f;
}

void mfl_gc_pacing(lua_State *L, int on) { mfl_state_get(L)->gc_pacing = on; }

void mfl_push_hot(lua_State *L, mfl_state *S, mfl_hot *hot) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->future_mt_ref);
  hot->future_mt = lua_gettop(L);
  mfl_push_pins(L, S);
  hot->pins = lua_gettop(L);
}

/* core.set_hooks_runner(fn): the Lua function a hooks step calls as
 * fn(hooks, task, future, state). */
static int l_set_hooks_runner(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_rawseti(L, LUA_REGISTRYINDEX, S->hooks_ref);
  return 0;
}

/* core.set_print_logger(fn): print inside log_prints runs. */
static int l_set_print_logger(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_rawseti(L, LUA_REGISTRYINDEX, S->print_ref);
  return 0;
}

/* core.is_parked_thread(co) -> whether co is a parked run's coroutine */
static int l_is_parked_thread(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->threads_ref);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, lua_rawget(L, -2) != LUA_TNIL);
  return 1;
}

void mfl_open_runner(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_newtable(L); /* threads of parked runs: weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  S->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  S->hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  S->print_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  S->saved_print_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  mfl_pushcfunction(L, l_set_print_logger);
  lua_setfield(L, -2, "set_print_logger");
  mfl_pushcfunction(L, l_set_hooks_runner);
  lua_setfield(L, -2, "set_hooks_runner");
  mfl_pushcfunction(L, l_is_parked_thread);
  lua_setfield(L, -2, "is_parked_thread");
}

/* }====== */
