/*
 * module.c -- the Lua module: luaopen_moonflow, the engine a lua_State
 * owns, and the run callbacks that execute task bodies as coroutines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "embedded.h"

const char mfl_key_state, mfl_key_spare, mfl_key_attached;
const char mfl_key_future_mt, mfl_key_list_mt, mfl_key_task_mt,
    mfl_key_state_mt, mfl_key_error_mt, mfl_key_unmapped_mt, mfl_key_quote_mt,
    mfl_key_allow_mt;

/* Coroutines kept for reuse: a finished coroutine's stack is reset and it
 * runs the next body, which saves creating a thread per run. */
#define MFL_POOL_MAX 256

/* {====== Helpers ====== */

mfl_state *mfl_state_get(lua_State *L) {
  mfl_state *S = NULL;
  if (lua_type(L, lua_upvalueindex(1)) == LUA_TUSERDATA) {
    S = lua_touserdata(L, lua_upvalueindex(1)); /* see mfl_setfuncs */
  } else {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
    S = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  if (!S || S->closed)
    luaL_error(L, "moonflow: the engine of this Lua state is closed");
  return S;
}

void mfl_setfuncs(lua_State *L, const luaL_Reg *funcs) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  luaL_setfuncs(L, funcs, 1);
}

void mfl_pushcfunction(lua_State *L, lua_CFunction fn) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  lua_pushcclosure(L, fn, 1);
}

void mfl_register_mt(lua_State *L, const char *key) {
  lua_pushlightuserdata(L, (void *)key);
  lua_rawseti(L, -2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

int mfl_is_kind(lua_State *L, int idx, const char *key) {
  if (!lua_getmetatable(L, idx))
    return 0;
  int same = lua_rawgeti(L, -1, 1) == LUA_TLIGHTUSERDATA &&
             lua_touserdata(L, -1) == key;
  lua_pop(L, 2);
  return same;
}

mfl_future *mfl_to_future(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA ||
      !mfl_is_kind(L, idx, &mfl_key_future_mt))
    return NULL;
  return lua_touserdata(L, idx);
}

mfl_future *mfl_check_future(lua_State *L, int idx) {
  mfl_future *f = mfl_to_future(L, idx);
  if (!f)
    mfl_raise(L, "UsageError", "bad argument #%d: a Future expected, got %s",
              idx, luaL_typename(L, idx));
  return f;
}

/* Pushes the Future userdata of a run the engine holds. */
void mfl_push_future_of(lua_State *L, mf_run *run) {
  mfl_run *lr = mf_run_body(run);
  mfl_push_pins(L, lr->S);
  lua_rawgeti(L, -1, lr->pin);
  lua_remove(L, -2);
}

/* The run whose coroutine is L, or NULL (top level, a callback, or a
 * coroutine the user created inside a run). */
mf_run *mfl_current_run(lua_State *L, mfl_state *S) {
  mf_run *run = mf_engine_current(S->engine);
  if (!run || S->callback_depth > 0)
    return NULL; /* a callback called inside a run is not the run */
  mfl_run *lr = mf_run_body(run);
  return lr->co == L ? run : NULL;
}

int mfl_run_name(lua_State *L, mf_run *run) {
  char buf[256];
  size_t len = mf_run_name(run, buf, sizeof buf);
  lua_pushlstring(L, buf, len);
  return 1;
}

void mfl_report(mfl_state *S, const char *what, const char *msg) {
  if (S->engine && !S->closed) {
    char line[1024];
    snprintf(line, sizeof line, "%s: %s", what, msg);
    mf_engine_report(S->engine, line); /* the host's error sink */
    return;
  }
  fprintf(stderr, "moonflow: %s: %s\n", what, msg);
  fflush(stderr);
}

/* }====== */

/* {====== Coroutine pool ====== */

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

/* }====== */

/* {====== Run callbacks ====== */

static void stop_killed(lua_State *L, mfl_state *S, mf_run *run, int box);

/* Stores the n values on top of co (which may be L itself) as the result
 * of the run whose Future is at box: one value as it is, several packed. */
void mfl_store_results(lua_State *L, mfl_run *lr, int box, lua_State *co,
                       int n) {
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

/* Stores the error on top of co, with a traceback, as the run's result. */
static void store_error(lua_State *L, mfl_run *lr, int box, lua_State *co) {
  /* lua_tostring would turn a number error into a string in place. */
  const char *msg =
      lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
  lua_xmove(co, L, 1);
  lua_setiuservalue(L, box, MFL_UV_RESULT);
  lr->nresults = 1;
  lua_getiuservalue(L, box, MFL_UV_INFO); /* a flow may have left info */
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
  }
  lua_getfield(L, -1, "traceback");
  int has_traceback = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!has_traceback) {
    luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
    lua_setfield(L, -2, "traceback");
  }
  lua_setiuservalue(L, box, MFL_UV_INFO);
  lua_pushnil(L);
  lua_setiuservalue(L, box, MFL_UV_CO);
}

/* Pushes the body function and the arguments onto co. */
static int push_call(lua_State *L, mfl_run *lr, int box, lua_State *co) {
  lua_getiuservalue(L, box, MFL_UV_TASK);
  lua_getiuservalue(L, -1, MFL_TASK_UV_FN);
  lua_remove(L, -2);
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
  lua_pushnil(L);
  lua_setiuservalue(L, box, MFL_UV_ARGS);
  lua_checkstack(co, nargs + 1);
  lua_xmove(L, co, nargs + 1);
  return nargs;
}

/*
 * Coroutines: a run starts on the spare coroutine (anchored in the
 * registry's spare slot), which most runs hand back finished, ready for the
 * next one.  Only a run that parks moves its coroutine into its Future
 * (MFL_UV_CO) and takes it out of the spare slot; it comes back through the
 * pool.
 */
static lua_State *take_spare(lua_State *L, mfl_state *S) {
  lua_State *co = S->spare;
  if (co) {
    S->spare = NULL;
    return co;
  }
  co = pool_take(L, S); /* pushes it */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mfl_key_spare);
  return co;
}

/* The coroutine of a finished run (settop 0 done) goes back. */
static void give_back(lua_State *L, mfl_state *S, mfl_run *lr, int box,
                      lua_State *co) {
  if (!lr->co_in_box) {
    S->spare = co; /* still anchored in the spare slot */
    return;
  }
  lua_getiuservalue(L, box, MFL_UV_CO);
  lua_pushnil(L);
  lua_setiuservalue(L, box, MFL_UV_CO);
  lr->co_in_box = 0;
  pool_give(L, S, co);
}

/* The lifecycle line of a run that did not complete: ERROR with the
 * traceback when it failed, the lifecycle level when it was cancelled. */
static void log_failure(lua_State *L, mfl_state *S, mf_run *run, int box,
                        int lifecycle) {
  mf_state_type type = mf_run_state_type(run);
  int level = type == MF_CANCELLED ? lifecycle : MFL_LOG_ERROR;
  if (level < S->lifecycle_level)
    return;
  const char *name = mf_state_name_string(mf_run_state_name(run));
  lua_getiuservalue(L, box, MFL_UV_INFO);
  const char *traceback = NULL;
  if (lua_istable(L, -1) && lua_getfield(L, -1, "traceback") == LUA_TSTRING)
    traceback = lua_tostring(L, -1);
  if (!traceback) {
    lua_getiuservalue(L, box, MFL_UV_RESULT);
    traceback = luaL_tolstring(L, -1, NULL);
  }
  mfl_log_run(S, level, run, "finished: %s: %s", name, traceback);
}

static void op_step(mf_run *run, mf_step_reason reason) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  lua_State *L = S->L;
  int top = lua_gettop(L);
  mfl_push_future_of(L, run);
  int box = lua_gettop(L);
  int nargs = 0;
  S->steps++;
  int lifecycle = lr->kind == MFL_FLOW ? MFL_LOG_INFO : MFL_LOG_DEBUG;
  if (reason == MF_STEP_START && !lr->quiet)
    mfl_log_run(S, lifecycle, run, "%s started",
                lr->kind == MFL_FLOW ? "flow run" : "task run");
  if (reason == MF_STEP_START) {
    lua_State *co = take_spare(L, S);
    lr->co = co;
    lr->co_in_box = 0;
    nargs = push_call(L, lr, box, co);
  }
  lua_State *co = lr->co;
  int nres = 0;
  S->running_co = co;
  if (reason == MF_STEP_RESUME && lr->preempted && mf_run_cancel_requested(run))
    mfl_deliver_cancel(S, co);
  lr->preempted = 0;
  int status = lua_resume(co, L, nargs, &nres);
  mfl_step_ended(S, co);
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (!lr->co_in_box) {
      lua_pushthread(co);
      lua_xmove(co, L, 1);
      lua_setiuservalue(L, box, MFL_UV_CO);
      lr->co_in_box = 1;
    }
    /* A bare coroutine.yield() in the body parks nothing: it yields the
     * loop once, as mf.sleep(0) does. */
    if (S->killed) {
      S->killed = 0;
      stop_killed(L, S, run, box);
    } else if (S->preempted) {
      /* Behind what the loop's turn makes ready (timers, I/O). */
      S->preempted = 0;
      lr->preempted = 1;
      mf_run_sleep(run, 1e-6);
    } else if (!lr->parked) {
      mf_run_sleep(run, 0);
    }
    lr->parked = 0;
  } else if (status == LUA_OK) {
    mfl_store_results(L, lr, box, co, nres);
    lr->co = NULL;
    lua_settop(co, 0);
    give_back(L, S, lr, box, co);
    mf_run_finish(run, lr->has_outcome ? lr->outcome_type : MF_COMPLETED,
                  lr->has_outcome ? lr->outcome_name : MF_NAME_COMPLETED);
    if (!lr->quiet)
      mfl_log_run(S, lifecycle, run, "finished: %s",
                  mf_state_name_string(mf_run_state_name(run)));
  } else {
    lr->co = NULL;
    lr->co_in_box = 0;
    store_error(L, lr, box, co); /* also clears MFL_UV_CO */
    mf_run_finish(run, lr->has_outcome ? lr->outcome_type : MF_FAILED,
                  lr->has_outcome ? lr->outcome_name : MF_NAME_FAILED);
    if (!lr->quiet)
      log_failure(L, S, run, box, lifecycle);
  }
  lua_settop(L, top);
}

/* A run that kept computing past its deadline, catching its TimedOut: its
 * coroutine is dropped and it ends TimedOut, what it started cancelled. */
static void stop_killed(lua_State *L, mfl_state *S, mf_run *run, int box) {
  mfl_run *lr = mf_run_body(run);
  lua_State *co = lr->co;
  lr->co = NULL;
  lr->co_in_box = 0;
  lua_resetthread(co);
  lua_pushnil(L);
  lua_setiuservalue(L, box, MFL_UV_CO);
  char name[256];
  mf_run_name(run, name, sizeof name);
  mfl_push_error(L, "TimedOut", "run %s exceeded its timeout", name);
  lua_setiuservalue(L, box, MFL_UV_RESULT);
  lr->nresults = 1;
  mf_run_cancel_children(run);
  mf_run_finish(run, MF_FAILED, MF_NAME_TIMED_OUT);
  (void)S;
}

/* The run ends without its body finishing: drop the coroutine (closing its
 * pending to-be-closed variables) and the arguments. */
static void op_abandon(mf_run *run) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  if (S->closed || lr->pin == LUA_NOREF)
    return;
  lua_State *L = S->L;
  int top = lua_gettop(L);
  mfl_push_future_of(L, run);
  lua_State *co = lr->co;
  lr->co = NULL;
  if (co)
    lua_resetthread(co);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, MFL_UV_CO);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, MFL_UV_ARGS);
  lua_settop(L, top);
}

int mfl_pin(lua_State *L, mfl_state *S, int pins_idx) {
  int slot =
      S->free_pin_count > 0 ? S->free_pins[--S->free_pin_count] : ++S->pin_high;
  lua_rawseti(L, pins_idx, slot);
  return slot;
}

void mfl_unpin(lua_State *L, mfl_state *S, int pins_idx, int slot) {
  lua_pushnil(L);
  lua_rawseti(L, pins_idx, slot);
  if (S->free_pin_count == S->free_pin_capacity) {
    int cap = S->free_pin_capacity ? S->free_pin_capacity * 2 : 1024;
    int *grown = realloc(S->free_pins, (size_t)cap * sizeof *grown);
    if (!grown)
      return; /* the slot is not reused; nothing is lost but the slot */
    S->free_pins = grown;
    S->free_pin_capacity = cap;
  }
  S->free_pins[S->free_pin_count++] = slot;
}

static void op_hold(mf_run *run, int held) {
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  /* Runs are pinned when their Future is made, so a hold that starts
   * finds the pin in place; only its end matters here. */
  if (held || lr->pin == LUA_NOREF || !S->L)
    return;
  lua_State *L = S->L;
  mfl_push_pins(L, S);
  mfl_unpin(L, S, lua_gettop(L), lr->pin);
  lr->pin = LUA_NOREF;
  lua_pop(L, 1);
}

static const mf_run_ops run_ops = {op_step, op_abandon, op_hold, NULL};
/* A future C completes has no body to step. */
static const mf_run_ops external_ops = {NULL, op_abandon, op_hold, NULL};

/* Creates a run and its Future; the Future is pushed and pinned.  The task
 * (at task_idx, or none when 0) is kept in the Future. */
mfl_future *mfl_new_future(lua_State *L, mfl_state *S, mfl_kind kind,
                           int task_idx, const mfl_hot *hot) {
  if (task_idx < 0)
    task_idx = lua_gettop(L) + task_idx + 1;
  mfl_future *f = lua_newuserdatauv(L, sizeof *f, MFL_NUV);
  f->run = NULL;
  if (hot)
    lua_pushvalue(L, hot->future_mt);
  else
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_future_mt);
  lua_setmetatable(L, -2);
  mf_run *run =
      mf_run_new(S->engine, kind == MFL_EXTERNAL ? &external_ops : &run_ops,
                 sizeof(mfl_run));
  if (!run)
    luaL_error(L, "moonflow: out of memory");
  f->run = run;
  mfl_run *lr = mf_run_body(run);
  lr->S = S;
  lr->kind = (unsigned char)kind;
  lr->box_alive = 1;
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

void mfl_push_hot(lua_State *L, mfl_state *S, mfl_hot *hot) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_future_mt);
  hot->future_mt = lua_gettop(L);
  mfl_push_pins(L, S);
  hot->pins = lua_gettop(L);
}

/* }====== */

/* {====== Module functions ====== */

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  mfl_wait_outcome(L); /* a timeout or a cancellation is raised here */
  return 0;
}

static int l_sleep(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  double seconds = luaL_checknumber(L, 1);
  if (seconds < 0 || seconds != seconds)
    return mfl_raise(L, "UsageError", "mf.sleep: seconds must be >= 0, got %f",
                     seconds);
  mf_run *run = mfl_current_run(L, S);
  if (run) {
    mfl_run *lr = mf_run_body(run);
    if (mf_run_timed_out(run))
      return mfl_raise_timed_out(L, run);
    mf_run_sleep(run, seconds);
    lr->parked = 1;
    return lua_yieldk(L, 0, 0, sleep_k);
  }
  /* Outside a run: wait on nothing, with a timeout. */
  return mfl_wait(L, NULL, 0, MF_WAIT_ANY, seconds, 0, sleep_k);
}

static int l_now(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_pushnumber(L, mf_engine_now(S->engine));
  return 1;
}

static int l_context(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mf_engine_current(S->engine);
  if (!run) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 5);
  lua_pushfstring(L, "%I", (lua_Integer)mf_run_id(run));
  lua_setfield(L, -2, "id");
  mfl_run_name(L, run);
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, mf_run_attempt(run));
  lua_setfield(L, -2, "attempt");
  mfl_push_future_of(L, run);
  lua_getiuservalue(L, -1, MFL_UV_TASK);
  lua_getiuservalue(L, -1, MFL_TASK_UV_OPTS);
  lua_getfield(L, -1, "tags");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_setfield(L, -5, "tags");
  lua_pop(L, 3);
  mf_run *flow = run;
  while (flow && !(mf_run_flags(flow) & MF_RUN_FLOW))
    flow = mf_run_parent(flow);
  if (flow) {
    lua_createtable(L, 0, 2);
    lua_pushfstring(L, "%I", (lua_Integer)mf_run_id(flow));
    lua_setfield(L, -2, "id");
    mfl_run_name(L, flow);
    lua_setfield(L, -2, "name");
    lua_setfield(L, -2, "flow_run");
  }
  return 1;
}

static int l_run(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (mf_engine_current(S->engine) || S->callback_depth > 0)
    return mfl_raise(L, "UsageError",
                     "mf.run() runs the loop at top level; it cannot be "
                     "called inside a run or a callback");
  int rc = mf_engine_run(S->engine);
  if (rc == MF_EBUSY)
    return mfl_raise(L, "UsageError", "mf.run(): the loop is already running");
  return 0;
}

/* }====== */

/* {====== State and module ====== */

static void report_unhandled(mf_run *run, void *data) {
  mfl_state *S = data;
  lua_State *L = S->L;
  char name[256];
  mf_run_name(run, name, sizeof name);
  mfl_push_future_of(L, run);
  lua_getiuservalue(L, -1, MFL_UV_RESULT);
  const char *msg = luaL_tolstring(L, -1, NULL);
  fprintf(stderr, "moonflow: unhandled failure of run %s: %s\n", name, msg);
  lua_pop(L, 3);
}

static void report_live(mfl_state *S) {
  size_t live = mf_engine_live_runs(S->engine);
  if (live > 0)
    fprintf(stderr,
            "moonflow: %zu run(s) still going when the Lua state closed were "
            "cancelled\n",
            live);
}

/* The host closes its engine: from now on nothing enters Lua. */
static void on_engine_close(mf_engine *engine, void *data) {
  (void)engine;
  mfl_state *S = data;
  S->closed = 1;
}

static int state_gc(lua_State *L) {
  mfl_state *S = lua_touserdata(L, 1);
  if (!S->engine || S->closed) {
    mfl_stop_ticks(S);
    S->closed = 1;
    S->engine = NULL;
    free(S->free_pins);
    S->free_pins = NULL;
    return 0;
  }
  mfl_stop_ticks(S);
  report_live(S);
  mf_run_each_unhandled(S->engine, NULL, report_unhandled, S);
  if (S->borrowed) {
    /* The host closes its engine later: leave it nothing of this state. */
    mf_engine_cancel_all(S->engine, NULL, NULL);
    mf_run_clear_unhandled(S->engine, NULL);
    mf_engine_on_close(S->engine, NULL, NULL);
  } else {
    mf_engine_close(S->engine);
  }
  S->engine = NULL;
  S->closed = 1;
  free(S->free_pins);
  S->free_pins = NULL;
  return 0;
}

static int open_embedded(lua_State *L) {
  const mf_embedded_module *m = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushfstring(L, "=[moonflow] %s", m->name);
  if (luaL_loadbuffer(L, m->source, m->size, lua_tostring(L, -1)) != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

static void preload_embedded(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const mf_embedded_module *m = mf_embedded_modules; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, open_embedded, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

/* The start of luv's context (luv.h, luv_ctx_t), which luv keeps in the
 * registry under "luv_context": its loop, and whether uv.run() runs it. */
typedef struct luv_context_start {
  uv_loop_t *loop;
  lua_State *L;
  void *cb_pcall, *thrd_pcall, *thrd_cpcall;
  int mode; /* -1 when the loop is not running */
} luv_context_start;

/* When luv was loaded first, moonflow shares its loop. */
static uv_loop_t *find_luv_loop(lua_State *L, mfl_state *S) {
  lua_getfield(L, LUA_REGISTRYINDEX, "luv_context");
  luv_context_start *ctx =
      lua_type(L, -1) == LUA_TUSERDATA ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  if (!ctx || !ctx->loop)
    return NULL;
  S->luv_mode = &ctx->mode;
  return ctx->loop;
}

static mfl_state *open_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (S)
    return S;
  S = lua_newuserdatauv(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_attached);
  S->engine = lua_touserdata(L, -1); /* a host's engine (mf_lua_attach) */
  lua_pop(L, 1);
  uv_loop_t *luv_loop = find_luv_loop(L, S);
  if (S->engine) {
    S->borrowed = 1;
    mf_engine_on_close(S->engine, on_engine_close, S);
  } else {
    mf_config cfg = {.loop = luv_loop, .keep_loop_alive = 1};
    int rc = mf_engine_new(&S->engine, &cfg);
    if (rc)
      luaL_error(L, "moonflow: cannot create the engine: %s", mf_strerror(rc));
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  S->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  mf_engine_set_data(S->engine, S);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  lua_newtable(L);
  S->pins_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  S->pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return S;
}

static const luaL_Reg core_functions[] = {{"sleep", l_sleep},
                                          {"now", l_now},
                                          {"context", l_context},
                                          {"run", l_run},
                                          {NULL, NULL}};

/* The C part, "moonflow.core"; lua/moonflow/init.lua builds the API. */
static int open_core(lua_State *L) {
  open_state(L);
  lua_newtable(L);
  mfl_setfuncs(L, core_functions);
  mfl_open_errors(L);
  mfl_open_codec(L);
  mfl_open_state(L);
  mfl_open_future(L);
  mfl_open_wait(L);
  mfl_open_args(L);
  mfl_open_task(L);
  mfl_open_flow(L);
  mfl_open_control(L);
  lua_pushliteral(L, MF_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

__attribute__((visibility("default"))) int luaopen_moonflow(lua_State *L) {
  preload_embedded(L);
  luaL_requiref(L, "moonflow.core", open_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.init");
  lua_call(L, 1, 1);
  return 1;
}

/* }====== */
