/*
 * module.c -- the Lua module: luaopen_moonflow, the engine a lua_State
 * owns, the pins that keep live runs' Futures, and the helpers every file
 * of the bindings shares.  The run callbacks are in runner.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "binding.h"
#include "embedded.h"
#include "lua_heap.h"

const char mfl_key_state, mfl_key_attached;
const char mfl_key_future_mt, mfl_key_list_mt, mfl_key_task_mt,
    mfl_key_state_mt, mfl_key_error_mt, mfl_key_unmapped_mt, mfl_key_quote_mt,
    mfl_key_allow_mt;

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

void mfl_protect_mt(lua_State *L) {
  lua_getfield(L, -1, "__name");
  lua_setfield(L, -2, "__metatable");
}

/* {------ Kinds ------
 * A moonflow metatable holds its key at [1] and is registered under it.
 * mfl_is_kind is on every hot path (each Future argument, each submit), so
 * each thread remembers, per key, the registered metatable it last found:
 * the check is then one pointer comparison.  A remembered pointer is only
 * ever a registered metatable, which is freed only after its state closes
 * or another is registered under its key; both bump the generation, which
 * forgets every remembered pointer (of every thread) before that memory
 * could hold another table. */

#define KIND_SLOTS 16

typedef struct kind_seen {
  const char *key;
  const void *mt;
  unsigned gen;
} kind_seen;

static atomic_uint kind_generation = 1;
static _Thread_local kind_seen kinds_seen[KIND_SLOTS];

static void forget_kinds(void) {
  atomic_fetch_add_explicit(&kind_generation, 1, memory_order_acq_rel);
}

void mfl_register_mt(lua_State *L, const char *key) {
  /* Errors are the exception: their metatable is mf.Error. */
  if (key != &mfl_key_error_mt)
    mfl_protect_mt(L);
  lua_pushlightuserdata(L, (void *)key);
  lua_rawseti(L, -2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  forget_kinds();
}

/* The metatable on top is not the one remembered for key: the check by
 * its [1]; remembered if it is the registered one. */
static int is_kind_slow(lua_State *L, const char *key, kind_seen *seen,
                        unsigned gen) {
  const void *mt = lua_topointer(L, -1);
  int same = lua_rawgeti(L, -1, 1) == LUA_TLIGHTUSERDATA &&
             lua_touserdata(L, -1) == key;
  lua_pop(L, 2);
  if (same) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    if (lua_topointer(L, -1) == mt) {
      seen->key = key;
      seen->mt = mt;
      seen->gen = gen;
    }
    lua_pop(L, 1);
  }
  return same;
}

int mfl_is_kind(lua_State *L, int idx, const char *key) {
  if (!lua_getmetatable(L, idx))
    return 0;
  unsigned gen = atomic_load_explicit(&kind_generation, memory_order_acquire);
  kind_seen *seen = &kinds_seen[(uintptr_t)key % KIND_SLOTS];
  if (seen->mt == lua_topointer(L, -1) && seen->key == key &&
      seen->gen == gen) {
    lua_pop(L, 1);
    return 1;
  }
  return is_kind_slow(L, key, seen, gen);
}

/* }------ */

mfl_future *mfl_to_future(lua_State *L, int idx) {
  mfl_future *f = mfl_future_box(L, idx);
  if (!f)
    return NULL;
  if (!f->run) /* collected, then reached again from a finalizer */
    mfl_raise(L, "UsageError",
              "this Future was collected (a finalizer brought it back): it "
              "stands for no run any more");
  return f;
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
  if (lr->group) {
    mfl_group_push_future(L, lr);
    return;
  }
  mfl_push_pins(L, lr->S);
  lua_rawgeti(L, -1, lr->pin);
  lua_remove(L, -2);
}

/* The run whose coroutine is L, or NULL (top level, a callback, or a
 * coroutine the user created inside a run). */
int mfl_is_key(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return 0;
  case LUA_TNUMBER:
    if (!lua_isinteger(L, idx)) {
      lua_Number n = lua_tonumber(L, idx);
      return n == n;
    }
    return 1;
  default:
    return 1;
  }
}

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
  if (len < sizeof buf) {
    lua_pushlstring(L, buf, len);
    return 1;
  }
  luaL_Buffer b; /* a name longer than the buffer: all of it */
  char *full = luaL_buffinitsize(L, &b, len + 1);
  mf_run_name(run, full, len + 1);
  luaL_pushresultsize(&b, len);
  return 1;
}

/* lua_CFunction: luaL_tolstring of its argument. */
static int tostring_protected(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

const char *mfl_describe(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_pushvalue(L, idx);
    return lua_tostring(L, -1);
  }
  lua_pushcfunction(L, tostring_protected);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    return lua_pushfstring(L, "(error object: %s)", luaL_typename(L, idx));
  }
  return lua_tostring(L, -1);
}

double mfl_check_number(lua_State *L, int idx, const char *what) {
  int isnum = 0;
  double n = (double)lua_tonumberx(L, idx, &isnum);
  if (!isnum || lua_type(L, idx) != LUA_TNUMBER)
    mfl_raise(L, "UsageError", "%s must be a number, got %s", what,
              luaL_typename(L, idx));
  if (n != n)
    mfl_raise(L, "UsageError", "%s must be a number, got NaN", what);
  return n;
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

/* {====== Pins ====== */

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

/* }====== */

/* {====== Module functions ====== */

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  mfl_wait_outcome(L, status);
  return 0;
}

static int l_sleep(lua_State *L) {
  double seconds = mfl_check_number(L, 1, "mf.sleep: seconds");
  if (seconds < 0)
    return mfl_raise(L, "UsageError", "mf.sleep: seconds must be >= 0, got %f",
                     seconds);
  return mfl_sleep(L, seconds, 0, sleep_k);
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
  /* lua_close finalizes the Futures before this state: the run itself is
   * still held (as an unhandled failure), so its Future stands for it
   * again while the report is written. */
  mfl_future *f = mfl_future_box(L, -1);
  if (!f) { /* a map's run whose list went first: no Future, no error */
    fprintf(stderr, "moonflow: run %s failed and nothing handled it\n", name);
    lua_pop(L, 1);
    return;
  }
  mf_run *was = f->run;
  f->run = run;
  mfl_push_failure_report(L, -1);
  f->run = was;
  if (lua_isstring(L, -1)) {
    fprintf(stderr, "moonflow: %s\n", lua_tostring(L, -1));
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_getiuservalue(L, -1, MFL_UV_RESULT);
  const char *msg = mfl_describe(L, -1);
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
  mfl_io_close_state(S); /* its handles are on the host's loop */
  S->closed = 1;
}

static int state_gc(lua_State *L) {
  mfl_state *S = lua_touserdata(L, 1);
  forget_kinds(); /* its metatables are freed next */
  /* Boxes Lua will not finalize: released first, as Lua finalizes every
   * other box before the state (they are all younger). */
  if (S)
    mfl_release_noted_boxes(S);
  if (!S || !S->engine || S->closed) {
    if (S) {
      S->observing = 0; /* the host closed the engine: nothing to remove */
      mfl_store_shutdown(S);
      mfl_preempt_stop(S);
      S->closed = 1;
      S->engine = NULL;
      free(S->free_pins);
      S->free_pins = NULL;
    }
    return 0;
  }
  mfl_preempt_stop(S);
  report_live(S);
  mf_run_each_unhandled(S->engine, NULL, report_unhandled, S);
  /* The state is closing: run callbacks no longer enter Lua (abandoned
   * coroutines are not reset, no hook runs). */
  S->closing = 1;
  mfl_io_close_state(S); /* handles closed properly, before the engine */
  if (S->borrowed) {
    /* The host closes its engine later: leave it nothing of this state. */
    mf_engine_cancel_all(S->engine, NULL, NULL);
    mf_run_clear_unhandled(S->engine, NULL);
    mf_engine_on_close(S->engine, NULL, NULL);
    mfl_store_shutdown(S); /* removes the observer, flushes */
  } else {
    mf_engine_close(S->engine); /* its last states reach the store */
    S->observing = 0;
    mfl_store_shutdown(S);
  }
  S->engine = NULL;
  S->closed = 1;
  free(S->free_pins);
  S->free_pins = NULL;
  return 0;
}

/* Upvalues: the module's entry, and whether its bytecode may be loaded. */
static int open_embedded(lua_State *L) {
  const mf_embedded_module *m = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushfstring(L, MF_EMBEDDED_CHUNKNAME "%s", m->name);
  int loaded =
      lua_toboolean(L, lua_upvalueindex(2))
          ? luaL_loadbufferx(L, (const char *)m->bytecode, m->bytecode_size,
                             lua_tostring(L, -1), "b")
          : luaL_loadbufferx(L, m->source, m->size, lua_tostring(L, -1), "t");
  if (loaded != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

typedef struct probe_dump {
  size_t at;
  int same;
} probe_dump;

static int compare_dump(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  probe_dump *d = ud;
  d->same = d->same && d->at + n <= mf_embedded_probe_size &&
            memcmp(mf_embedded_probe + d->at, p, n) == 0;
  d->at += n;
  return 0;
}

/* Whether this Lua makes the embedded bytecode's instructions: it dumps
 * the probe chunk exactly as the build's Lua did (embedded.h).  Else the
 * modules' text is compiled, as by a Lua whose bytecode differs. */
static int bytecode_usable(lua_State *L) {
  if (mf_embedded_probe_size == 0 || getenv("MOONFLOW_EMBEDDED_SOURCE"))
    return 0;
  if (luaL_loadbufferx(L, MF_EMBEDDED_PROBE, strlen(MF_EMBEDDED_PROBE),
                       MF_EMBEDDED_CHUNKNAME "probe", "t") != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  probe_dump d = {0, 1};
  lua_dump(L, compare_dump, &d, 0);
  lua_pop(L, 1);
  return d.same && d.at == mf_embedded_probe_size;
}

static void preload_embedded(lua_State *L) {
  int bytecode = bytecode_usable(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const mf_embedded_module *m = mf_embedded_modules; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushboolean(L, bytecode && m->bytecode);
    lua_pushcclosure(L, open_embedded, 2);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

/* libuv asserts that the descriptors it closes are above 2: when standard
 * input, output or error is closed, the loop's own descriptors could take
 * those numbers.  Each closed one is reopened on /dev/null first. */
static void guard_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      int null = open("/dev/null", O_RDWR);
      if (null >= 0 && null != fd) {
        dup2(null, fd);
        close(null);
      }
    }
}

static mfl_state *open_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (S)
    return S;
  S = lua_newuserdatauv(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  S->gc_pacing = 1;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_attached);
  S->engine = lua_touserdata(L, -1); /* a host's engine (mf_lua_attach) */
  lua_pop(L, 1);
  guard_std_fds();
  uv_loop_t *luv_loop = S->engine ? NULL : mfl_luv_loop(L);
  S->on_luv = luv_loop != NULL;
  if (S->engine) {
    S->borrowed = 1;
    mf_engine_on_close(S->engine, on_engine_close, S);
  } else {
    mf_config cfg = {
        .size = sizeof cfg, .loop = luv_loop, .keep_loop_alive = 1};
    int rc = mf_engine_new(&S->engine, &cfg);
    if (rc)
      luaL_error(L, "moonflow: cannot create the engine: %s", mf_strerror(rc));
    mfl_heap_tend(L, S->engine);
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

/* Keeps the Future metatable just registered at S->future_mt_ref too (the
 * same slot when the module is opened again). */
static void remember_future_mt(lua_State *L, mfl_state *S) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_future_mt);
  if (S->future_mt_ref > 0)
    lua_rawseti(L, LUA_REGISTRYINDEX, S->future_mt_ref);
  else
    S->future_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The C part, "moonflow.core"; lua/moonflow/init.lua builds the API. */
static int open_core(lua_State *L) {
  mfl_state *S = open_state(L);
  lua_newtable(L);
  mfl_setfuncs(L, core_functions);
  mfl_open_errors(L);
  mfl_open_runner(L);
  mfl_open_codec(L);
  mfl_open_state(L);
  mfl_open_future(L);
  remember_future_mt(L, S);
  mfl_open_group(L);
  mfl_open_origin(L);
  mfl_open_wait(L);
  mfl_open_args(L);
  mfl_open_task(L);
  mfl_open_flow(L);
  mfl_open_control(L);
  mfl_open_runners(L);
  mfl_open_io(L);
  mfl_open_cache(L);
  lua_pushliteral(L, MF_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

__attribute__((visibility("default"))) int luaopen_moonflow(lua_State *L) {
  mfl_heap_adopt(L); /* (stock lua5.4's state: small blocks on a heap) */
  preload_embedded(L);
  luaL_requiref(L, "moonflow.core", open_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.init");
  lua_call(L, 1, 1);
  return 1;
}

/* }====== */
