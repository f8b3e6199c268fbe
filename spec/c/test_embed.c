/*
 * test_embed.c -- fault tests of a C host embedding moonflow: a Lua error
 * reaching the host, closing the engine with runs in flight, freeing the
 * lua_State after the engine, re-entering the engine from its callbacks,
 * futures completed from C, and a thread posting a million items into a
 * busy loop.
 *
 * Each test gets a fresh engine and lua_State, and runs in a child process
 * of its own (test.h: a crash or a hang fails that test only, and under
 * ASan or valgrind each child's leak check is its own; `test_embed NAME`
 * runs one, MF_TEST_NOFORK=1 runs them in this process).
 */
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moonflow_lua.h"
#include "test.h"

/* {====== The host ====== */

typedef struct host {
  uv_loop_t loop; /* the host's loop (unused when the engine owns one) */
  int own_loop;   /* the engine created its loop */
  mf_engine *e;
  lua_State *L;
  int errors; /* messages the error sink received */
  char last_error[512];
  void (*on_error_hook)(struct host *h); /* called by the sink, if set */
} host;

static void error_sink(mf_engine *e, const char *message, void *data) {
  host *h = data;
  (void)e;
  h->errors++;
  snprintf(h->last_error, sizeof h->last_error, "%s", message);
  if (h->on_error_hook)
    h->on_error_hook(h);
}

/* C functions Lua calls (registered as globals by host_open). */
static int l_grab(lua_State *L);

static void host_open(host *h, int own_loop) {
  memset(h, 0, sizeof *h);
  h->own_loop = own_loop;
  mf_config cfg = {.on_error = error_sink, .error_data = h};
  if (!own_loop) {
    if (uv_loop_init(&h->loop) != 0) {
      fprintf(stderr, "cannot create a loop\n");
      exit(2);
    }
    cfg.loop = &h->loop;
  }
  if (mf_engine_new(&h->e, &cfg) != 0) {
    fprintf(stderr, "cannot create the engine\n");
    exit(2);
  }
  h->L = luaL_newstate();
  luaL_openlibs(h->L);
  if (mf_lua_attach(h->L, h->e) != 0) {
    fprintf(stderr, "mf_lua_attach failed\n");
    exit(2);
  }
  luaL_requiref(h->L, "moonflow", luaopen_moonflow, 1);
  lua_setglobal(h->L, "mf");
  lua_register(h->L, "grab", l_grab);
}

/* The order a host follows at the end: close the engine, let the host's
 * loop close the engine's handles, free the lua_State, close the loop.
 * Returns what uv_loop_close returned. */
static int host_close(host *h) {
  mf_engine_close(h->e);
  if (!h->own_loop)
    uv_run(&h->loop, UV_RUN_DEFAULT);
  lua_close(h->L);
  return h->own_loop ? 0 : uv_loop_close(&h->loop);
}

/* Runs Lua code at top level; prints the error and returns 0 if it
 * raised. */
static int run_lua(lua_State *L, const char *code) {
  if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 0, 0) != LUA_OK) {
    fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* The integer an expression evaluates to (-9999 if it raised). */
static long long lua_int(lua_State *L, const char *expr) {
  char code[512];
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -9999;
  }
  long long v = (long long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static double now(void) { return (double)uv_hrtime() / 1e9; }

static void on_frame(uv_timer_t *timer) { (void)timer; }

/* One turn of the host's frame: step the engine, then let the loop wait
 * for timers and I/O -- a frame of 2 ms at most, as a game host's is (the
 * engine may have nothing due for a long time). */
static void turn(host *h) {
  mf_engine_step(h->e);
  if (!h->own_loop) {
    uv_timer_t frame;
    uv_timer_init(&h->loop, &frame);
    uv_update_time(&h->loop); /* the frame counts from now */
    uv_timer_start(&frame, on_frame, 2, 0);
    uv_run(&h->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&frame, NULL);
    uv_run(&h->loop, UV_RUN_NOWAIT); /* its close callback */
    return;
  }
  int ms = mf_engine_timeout(h->e); /* mf_engine_step ran the loop */
  if (ms != 0)
    uv_sleep(ms < 0 || ms > 2 ? 2 : (unsigned)ms);
}

/* Turns until the Future at idx is final: returns mf_lua_result's code
 * (its values or error pushed), or MF_ETIMEDOUT after that many seconds. */
static int drive_result(host *h, int idx, double seconds) {
  idx = lua_absindex(h->L, idx);
  double end = now() + seconds;
  int rc;
  while ((rc = mf_lua_result(h->L, idx)) == MF_ESTATE) {
    if (now() > end) {
      fprintf(stderr, "drive_result: still not final after %.0f s\n", seconds);
      return MF_ETIMEDOUT;
    }
    turn(h);
  }
  return rc;
}

static void drive_for(host *h, double seconds) {
  double end = now() + seconds;
  while (now() < end)
    turn(h);
}

/* The runs Lua code grabbed: grab() takes a reference to the run that
 * calls it. */
#define MAX_GRABBED 64
static mf_run *grabbed[MAX_GRABBED];
static int ngrabbed;

static int l_grab(lua_State *L) {
  mf_engine *e = mf_lua_engine(L);
  mf_run *run = e ? mf_engine_current(e) : NULL;
  if (!run || ngrabbed == MAX_GRABBED)
    return luaL_error(L, "grab(): no run is executing");
  mf_run_ref(run);
  grabbed[ngrabbed++] = run;
  return 0;
}

static void unref_grabbed(void) {
  while (ngrabbed > 0)
    mf_run_unref(grabbed[--ngrabbed]);
}

/* }====== */

/* {====== 1. A Lua error reaches the host; the loop keeps running ====== */

static int ticks;
static void on_tick(uv_timer_t *t) {
  (void)t;
  ticks++;
}

TEST(lua_error_reaches_host) {
  host h;
  host_open(&h, 0);
  lua_State *L = h.L;
  ASSERT(run_lua(L, "boom = mf.flow({name = 'boom'}, function(x)\n"
                    "  mf.sleep(0.001) error('boom ' .. x) end)\n"
                    "local bad = mf.task({name = 'bad'}, function()\n"
                    "  error({code = 42}) end)\n"
                    "nested = mf.flow({name = 'nested'}, function()\n"
                    "  return bad() end)\n"
                    "add = mf.flow({name = 'add'}, function(a, b)\n"
                    "  mf.sleep(0.005) return a + b end)\n"));
  uv_timer_t ticker;
  uv_timer_init(&h.loop, &ticker);
  uv_timer_start(&ticker, on_tick, 1, 1); /* the host's own work */
  int base = lua_gettop(L);

  /* A flow called by name raises: its error value reaches the host. */
  lua_pushinteger(L, 7);
  ASSERT(mf_lua_call_flow(L, "boom", 1) == 0);
  ASSERT(lua_gettop(L) == base + 1);
  ASSERT(drive_result(&h, base + 1, 20) == MF_EFAILED);
  ASSERT(lua_type(L, -1) == LUA_TSTRING);
  ASSERT(strstr(lua_tostring(L, -1), "boom 7") != NULL);
  lua_settop(L, base);

  /* A task inside the flow raises a table: the same value reaches it. */
  ASSERT(mf_lua_call_flow(L, "nested", 0) == 0);
  ASSERT(drive_result(&h, base + 1, 20) == MF_EFAILED);
  ASSERT(lua_istable(L, -1));
  ASSERT(lua_getfield(L, -1, "code") == LUA_TNUMBER);
  ASSERT(lua_tointeger(L, -1) == 42);
  lua_settop(L, base);

  /* A chunk run as a flow raises. */
  static const char chunk[] = "mf.sleep(0.001)\nerror('chunk failed', 0)\n";
  ASSERT(mf_lua_run_chunk(L, chunk, sizeof chunk - 1, "=chunk") == 0);
  ASSERT(drive_result(&h, base + 1, 20) == MF_EFAILED);
  ASSERT(lua_type(L, -1) == LUA_TSTRING);
  ASSERT(strcmp(lua_tostring(L, -1), "chunk failed") == 0);
  lua_settop(L, base);

  /* Errors before any run starts: a message instead of a Future. */
  ASSERT(mf_lua_run_chunk(L, "return +", 8, "=syntax") == MF_EINVAL);
  ASSERT(lua_gettop(L) == base + 1 && lua_type(L, -1) == LUA_TSTRING);
  lua_settop(L, base);
  lua_pushinteger(L, 1);
  ASSERT(mf_lua_call_flow(L, "no_such_flow", 1) == MF_EINVAL);
  ASSERT(lua_gettop(L) == base + 1 && lua_type(L, -1) == LUA_TSTRING);
  lua_settop(L, base);

  /* The loop kept running: a later flow and a later chunk complete. */
  int ticks_before = ticks;
  lua_pushinteger(L, 40);
  lua_pushinteger(L, 2);
  ASSERT(mf_lua_call_flow(L, "add", 2) == 0);
  ASSERT(drive_result(&h, base + 1, 20) == 1);
  ASSERT(lua_tointeger(L, -1) == 42);
  ASSERT(ticks > ticks_before);
  lua_settop(L, base);
  static const char later[] = "mf.sleep(0.001) return 'still', 'running'";
  ASSERT(mf_lua_run_chunk(L, later, sizeof later - 1, "=later") == 0);
  ASSERT(drive_result(&h, base + 1, 20) == 2);
  ASSERT(strcmp(lua_tostring(L, -2), "still") == 0);
  ASSERT(strcmp(lua_tostring(L, -1), "running") == 0);
  lua_settop(L, base);

  uv_close((uv_handle_t *)&ticker, NULL);
  ASSERT(host_close(&h) == 0);
}

/* }====== */

/* {====== 2. Closing with runs in flight ====== */

static int closed; /* mf_engine_close returned */
static int c_done_calls, c_done_after_close;
static int c_steps, c_abandons, c_abandons_after_close;

static void count_done(mf_run *run, void *data) {
  (void)run;
  (void)data;
  c_done_calls++;
  if (closed)
    c_done_after_close++;
}

/* A C body: sleeps a long time, then completes. */
static void long_sleep_step(mf_run *run, mf_step_reason reason) {
  c_steps++;
  if (reason == MF_STEP_START && !closed) {
    mf_run_sleep(run, 100);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

static void count_abandon(mf_run *run) {
  (void)run;
  c_abandons++;
  if (closed)
    c_abandons_after_close++;
}

static const mf_run_ops long_sleep_ops = {.step = long_sleep_step,
                                          .abandon = count_abandon};

static const char in_flight_lua[] =
    "fired = {}\n"
    "local function note(what) fired[#fired + 1] = what end\n"
    "function watch(fut)\n"
    "  fut:add_done_callback(function() note('callback of ' .. fut.name) end)\n"
    "end\n"
    "sleeper = mf.flow({name = 'sleeper'}, function()\n"
    "  grab() mf.sleep(100) note('sleeper ended') end)\n"
    "waiter = mf.flow({name = 'waiter'}, function()\n"
    "  grab() local v = db:result() note('waiter ended') return v end)\n"
    "on_input = mf.flow({name = 'on_input'}, function(v)\n"
    "  note('on_input started') return v end)\n"
    "local nap = mf.task({name = 'nap',\n"
    "                    on_cancellation = {function() note('hook') end}},\n"
    "                    function() grab() mf.sleep(100) note('nap ended') "
    "end)\n"
    "local echo = mf.task({name = 'echo'}, function(v)\n"
    "  note('echo started') return v end)\n"
    "tree = mf.flow({name = 'tree'}, function()\n"
    "  watch(nap:submit())\n"
    "  watch(nap:submit())\n"
    "  watch(echo:submit(db)) -- waits on its input, the C future\n"
    "  grab()\n"
    "  return db:result()\n"
    "end)\n";

/* Submits the global flow name (with the global arg, if any) and watches
 * its Future from Lua. */
static int submit_watched(lua_State *L, const char *name, const char *arg) {
  int nargs = 0;
  if (arg) {
    lua_getglobal(L, arg);
    nargs = 1;
  }
  if (mf_lua_call_flow(L, name, nargs) != 0) {
    fprintf(stderr, "submitting %s: %s\n", name, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  lua_getglobal(L, "watch");
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "watch: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

static void close_in_flight(int own_loop) {
  host h;
  host_open(&h, own_loop);
  lua_State *L = h.L;
  closed = c_done_calls = c_done_after_close = 0;
  c_steps = c_abandons = c_abandons_after_close = 0;
  mf_run *db = mf_lua_future_new(L, "db"); /* never completed */
  ASSERT(db != NULL);
  mf_run_ref(db);
  lua_setglobal(L, "db");
  ASSERT(run_lua(L, in_flight_lua));
  int base = lua_gettop(L);
  ASSERT(submit_watched(L, "sleeper", NULL));
  ASSERT(submit_watched(L, "waiter", NULL));
  ASSERT(submit_watched(L, "on_input", "db"));
  ASSERT(submit_watched(L, "tree", NULL));
  ASSERT(lua_gettop(L) == base);

  /* C runs too: one waiting on the C future as its input, one asleep. */
  mf_run *c_input = mf_run_new(h.e, &long_sleep_ops, 0);
  ASSERT(mf_run_add_input(c_input, db, 0) == 0);
  ASSERT(mf_run_on_done(c_input, count_done, NULL) == 0);
  ASSERT(mf_run_submit(c_input, NULL) == 0);
  mf_run *c_sleep = mf_run_new(h.e, &long_sleep_ops, 0);
  ASSERT(mf_run_on_done(c_sleep, count_done, NULL) == 0);
  ASSERT(mf_run_submit(c_sleep, NULL) == 0);

  /* Every body that can start parks: sleeper, waiter, tree, nap x2. */
  double end = now() + 10;
  while (ngrabbed < 5 && now() < end)
    turn(&h);
  drive_for(&h, 0.02);
  ASSERT(ngrabbed == 5);
  for (int i = 0; i < ngrabbed; i++)
    ASSERT(!mf_run_is_final(grabbed[i]));
  mf_run *flows[8];
  size_t nflows = mf_engine_top_flows(h.e, flows, 8);
  ASSERT(nflows == 4); /* sleeper, waiter, on_input, tree */
  for (size_t i = 0; i < nflows; i++) {
    mf_run_ref(flows[i]);
    ASSERT(!mf_run_is_final(flows[i]));
  }
  ASSERT(mf_run_state_type(flows[2]) == MF_PENDING); /* on its input */
  ASSERT(mf_run_state_type(c_input) == MF_PENDING);
  ASSERT(!mf_run_is_final(db) && !mf_run_is_final(c_sleep));
  ASSERT(lua_int(L, "#fired") == 0);
  ASSERT(c_done_calls == 0);

  mf_engine_close(h.e);
  closed = 1;

  /* Every run ended CANCELLED. */
  for (int i = 0; i < ngrabbed; i++)
    ASSERT(mf_run_state_type(grabbed[i]) == MF_CANCELLED);
  for (size_t i = 0; i < nflows; i++)
    ASSERT(mf_run_state_type(flows[i]) == MF_CANCELLED);
  ASSERT(mf_run_state_type(db) == MF_CANCELLED);
  ASSERT(mf_run_state_type(c_input) == MF_CANCELLED);
  ASSERT(mf_run_state_type(c_sleep) == MF_CANCELLED);
  ASSERT(c_abandons == 2); /* while closing, not after */
  ASSERT(mf_engine_live_runs(h.e) == 0);
  ASSERT(mf_lua_engine(L) == NULL);
  /* The Lua side refuses work now, and says so. */
  ASSERT(mf_lua_run_chunk(L, "return 1", 8, "=late") == MF_ESTATE);
  ASSERT(lua_gettop(L) == base);
  lua_pushinteger(L, 1);
  ASSERT(mf_lua_future_resolve(L, db, 1) == MF_ESTATE);
  ASSERT(lua_gettop(L) == base);

  /* Nothing reaches Lua: neither while the loop closes the handles, nor
   * when the Futures are collected. */
  if (!own_loop)
    uv_run(&h.loop, UV_RUN_DEFAULT);
  lua_gc(L, LUA_GCCOLLECT, 0);
  if (lua_int(L, "#fired") != 0)
    run_lua(L, "io.stderr:write('reached Lua after close: ', "
               "table.concat(fired, ', '), '\\n')");
  ASSERT(lua_int(L, "#fired") == 0);
  ASSERT(c_done_after_close == 0);
  ASSERT(c_abandons_after_close == 0);
  ASSERT(c_steps == 1); /* c_sleep started; c_input never did */
  lua_close(L);

  /* The runs the host kept stay readable after the lua_State is gone. */
  for (size_t i = 0; i < nflows; i++) {
    ASSERT(mf_run_state_type(flows[i]) == MF_CANCELLED);
    mf_run_unref(flows[i]);
  }
  for (int i = 0; i < ngrabbed; i++)
    ASSERT(mf_run_state_type(grabbed[i]) == MF_CANCELLED);
  unref_grabbed();
  ASSERT(mf_run_state_type(db) == MF_CANCELLED);
  mf_run_unref(db);
  mf_run_unref(c_input);
  mf_run_unref(c_sleep);
  if (!own_loop)
    ASSERT(uv_loop_close(&h.loop) == 0);
}

TEST(close_in_flight_host_loop) { close_in_flight(0); }
TEST(close_in_flight_own_loop) { close_in_flight(1); }

/* }====== */

/* {====== 3. Freeing the lua_State after closing the engine ====== */

static int host_timer_fired;
static void on_host_timer(uv_timer_t *t) {
  if (++host_timer_fired == 3)
    uv_close((uv_handle_t *)t, NULL);
}

static void count_handle(uv_handle_t *handle, void *arg) {
  (void)handle;
  ++*(int *)arg;
}

static const char lua_state_lua[] =
    "local t = mf.task({name = 't'}, function(x) return x end)\n"
    "local xs = {} for i = 1, 1000 do xs[i] = i end\n"
    "finished = mf.map(t, xs)\n"
    "slow = mf.task({name = 'slow'}, function() mf.sleep(100) end)\n"
    "pending = {slow:submit(), slow:submit()}\n"
    "holder = mf.flow({name = 'holder'}, function()\n"
    "  local r = finished:result()\n"
    "  local inner = slow:submit()\n"
    "  return #r + inner:result()\n"
    "end)\n";

static void free_lua_state(int loop_before_lua_close) {
  host h;
  host_open(&h, 0);
  lua_State *L = h.L;
  host_timer_fired = 0;
  ASSERT(run_lua(L, lua_state_lua));
  ASSERT(mf_lua_call_flow(L, "holder", 0) == 0);
  lua_setglobal(L, "held");
  /* Until the map is done and holder waits on inner: holder, inner and
   * the 2 pending runs are left. */
  double end = now() + 20;
  while ((lua_int(L, "finished[1000]:done() and 1 or 0") != 1 ||
          mf_engine_live_runs(h.e) != 4) &&
         now() < end)
    turn(&h);
  drive_for(&h, 0.01);
  ASSERT(lua_int(L, "finished[1000]:done() and 1 or 0") == 1);
  ASSERT(mf_engine_live_runs(h.e) == 4);
  uv_timer_t host_timer; /* the host's own handle lives on */
  uv_timer_init(&h.loop, &host_timer);
  uv_timer_start(&host_timer, on_host_timer, 1, 1);

  mf_engine_close(h.e);
  /* Lua code still holding Futures and Tasks gets errors, not crashes. */
  ASSERT(run_lua(L, "ok_sleep = pcall(mf.sleep, 0)\n"
                    "ok_submit = pcall(slow.submit, slow)\n"
                    "ok_result = pcall(pending[1].result, pending[1])\n"));
  ASSERT(lua_int(L, "(ok_sleep or ok_submit or ok_result) and 1 or 0") == 0);

  if (loop_before_lua_close) {
    /* The documented order: the loop closes the handles first. */
    ASSERT(uv_run(&h.loop, UV_RUN_DEFAULT) == 0);
    int left = 0;
    uv_walk(&h.loop, count_handle, &left);
    ASSERT(left == 0);
    ASSERT(host_timer_fired == 3);
    lua_close(L);
  } else {
    lua_close(L); /* the Futures let go of their runs first */
    ASSERT(uv_run(&h.loop, UV_RUN_DEFAULT) == 0);
    ASSERT(host_timer_fired == 3);
  }
  ASSERT(uv_loop_close(&h.loop) == 0);
  ASSERT(h.errors == 0);
}

TEST(free_lua_state_after_close) { free_lua_state(1); }

/* The same order when no run is left at all (every Future collected
 * before the engine closes): the engine's memory goes while the loop
 * closes its handles. */
TEST(close_with_no_run_left) {
  host h;
  host_open(&h, 0);
  ASSERT(run_lua(h.L, "local t = mf.task(function(x) return x end)\n"
                      "fut = t:submit(1)\n"));
  double end = now() + 10;
  while (lua_int(h.L, "fut:done() and 1 or 0") != 1 && now() < end)
    turn(&h);
  ASSERT(lua_int(h.L, "fut:result()") == 1);
  ASSERT(run_lua(h.L, "fut = nil"));
  lua_gc(h.L, LUA_GCCOLLECT, 0);
  ASSERT(mf_engine_live_runs(h.e) == 0);
  ASSERT(host_close(&h) == 0);
}
TEST(free_lua_state_before_loop_runs) { free_lua_state(0); }

/* }====== */

/* {====== 4. Re-entering the engine from its callbacks ====== */

static int reenter_calls, reenter_refused;
static int in_reentry;   /* a callback is calling into the engine */
static int nested_steps; /* run bodies executed from inside such a call */

/* Calls each function that drives the loop; inside an engine callback
 * each must return MF_EBUSY without running anything. */
static void reenter(mf_engine *e, const char *where) {
  in_reentry++;
  int step = mf_engine_step(e);
  int run = mf_engine_run(e);
  int wait = mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, 0.001);
  in_reentry--;
  reenter_calls++;
  if (step == MF_EBUSY && run == MF_EBUSY && wait == MF_EBUSY)
    reenter_refused++;
  else
    fprintf(stderr,
            "re-entered from %s: mf_engine_step %d, mf_engine_run %d, "
            "mf_engine_wait %d (MF_EBUSY is %d)\n",
            where, step, run, wait, MF_EBUSY);
}

static int l_reenter(lua_State *L) {
  reenter(mf_lua_engine(L), luaL_checkstring(L, 1));
  return 0;
}

/* A C body that yields a few times; being stepped from inside a
 * re-entering call is the recursion that must not happen. */
typedef struct yielder {
  int left;
} yielder;

static void yield_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  yielder *y = mf_run_body(run);
  if (in_reentry)
    nested_steps++;
  if (y->left-- > 0) {
    mf_run_sleep(run, 0);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops yield_ops = {.step = yield_step};

static mf_run *submit_yielder(mf_engine *e, int steps) {
  mf_run *run = mf_run_new(e, &yield_ops, sizeof(yielder));
  ((yielder *)mf_run_body(run))->left = steps;
  mf_run_submit(run, NULL);
  return run;
}

static void reenter_from_sink(host *h) { reenter(h->e, "the error sink"); }

TEST(reenter_from_lua) {
  host h;
  host_open(&h, 0);
  lua_State *L = h.L;
  reenter_calls = reenter_refused = in_reentry = nested_steps = 0;
  lua_register(L, "reenter", l_reenter);
  h.on_error_hook = reenter_from_sink;
  mf_run *yielders[8];
  for (int i = 0; i < 8; i++)
    yielders[i] = submit_yielder(h.e, 50);
  ASSERT(run_lua(
      L,
      "local t = mf.task({name = 'inner'}, function()\n"
      "  reenter('a task body') mf.sleep(0)\n"
      "  reenter('a task body resumed') return 1\n"
      "end)\n"
      "outer = mf.flow({name = 'outer'}, function()\n"
      "  reenter('a flow body')\n"
      "  local a = t:submit()\n"
      "  a:add_done_callback(function() reenter('a Lua done callback') end)\n"
      "  a:add_done_callback(function() error('a failing callback') end)\n"
      "  local ok = pcall(mf.run)\n"
      "  return a:result() + t(), ok\n"
      "end)\n"));
  int base = lua_gettop(L);
  ASSERT(mf_lua_call_flow(L, "outer", 0) == 0);
  ASSERT(drive_result(&h, base + 1, 20) == 2);
  ASSERT(lua_tointeger(L, -2) == 2);
  ASSERT(lua_toboolean(L, -1) == 0); /* mf.run() inside a run: an error */
  lua_settop(L, base);
  ASSERT(h.errors == 1); /* the failing callback, through the sink */
  /* flow 1, task bodies 2 x 2, done callback 1, error sink 1 */
  ASSERT(reenter_calls == 7);
  ASSERT(reenter_refused == reenter_calls);
  ASSERT(nested_steps == 0);
  double end = now() + 20;
  while (mf_engine_live_runs(h.e) > 0 && now() < end)
    turn(&h);
  for (int i = 0; i < 8; i++) {
    ASSERT(mf_run_state_type(yielders[i]) == MF_COMPLETED);
    mf_run_unref(yielders[i]);
  }
  ASSERT(host_close(&h) == 0);
}

/* C bodies, done callbacks, posts and timers on the engine's own loop. */
static void reenter_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  if (in_reentry)
    nested_steps++;
  reenter(*(mf_engine **)mf_run_body(run), "a C run body");
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops reenter_ops = {.step = reenter_step};

static void reenter_done(mf_run *run, void *data) {
  (void)run;
  reenter(data, "a C done callback");
}

static int posts_seen;
static void reenter_post(mf_engine *e, void *data) {
  (void)data;
  posts_seen++;
  reenter(e, "a post callback");
}

static void reenter_timer(uv_timer_t *t) {
  reenter(t->data, "a uv timer while mf_engine_run runs the loop");
  uv_close((uv_handle_t *)t, NULL);
}

TEST(reenter_from_c_callbacks) {
  host h;
  host_open(&h, 1);
  reenter_calls = reenter_refused = in_reentry = nested_steps = 0;
  posts_seen = 0;
  mf_run *yielders[8];
  for (int i = 0; i < 8; i++)
    yielders[i] = submit_yielder(h.e, 200);
  mf_run *body = mf_run_new(h.e, &reenter_ops, sizeof(mf_engine *));
  *(mf_engine **)mf_run_body(body) = h.e;
  ASSERT(mf_run_on_done(body, reenter_done, h.e) == 0);
  ASSERT(mf_run_submit(body, NULL) == 0);
  ASSERT(mf_engine_post(h.e, reenter_post, NULL) == 0);
  uv_timer_t timer;
  uv_timer_init(mf_engine_loop(h.e), &timer);
  timer.data = h.e;
  uv_timer_start(&timer, reenter_timer, 1, 0);
  ASSERT(mf_engine_run(h.e) == 0);
  ASSERT(posts_seen == 1);
  ASSERT(reenter_calls == 4);
  ASSERT(reenter_refused == reenter_calls);
  ASSERT(nested_steps == 0);
  for (int i = 0; i < 8; i++) {
    ASSERT(mf_run_state_type(yielders[i]) == MF_COMPLETED);
    mf_run_unref(yielders[i]);
  }
  mf_run_unref(body);
  ASSERT(host_close(&h) == 0);
}

/* The callbacks of a run ending without its body: abandon, when the host
 * cancels the run and when it closes the engine. */
static mf_engine *abandon_engine;
static const char *abandon_where;
static int abandon_calls;

static void reenter_abandon(mf_run *run) {
  (void)run;
  abandon_calls++;
  reenter(abandon_engine, abandon_where);
}

static void park_step(mf_run *run, mf_step_reason reason) {
  if (in_reentry)
    nested_steps++;
  if (reason == MF_STEP_START) {
    mf_run_sleep(run, 3); /* a re-entered mf_engine_run would wait it out */
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops abandon_ops = {.step = park_step,
                                       .abandon = reenter_abandon};

TEST(reenter_from_abandon) {
  host h;
  host_open(&h, 1);
  reenter_calls = reenter_refused = in_reentry = nested_steps = 0;
  abandon_calls = 0;
  abandon_engine = h.e;
  mf_run *cancelled = mf_run_new(h.e, &abandon_ops, 0);
  mf_run *at_close = mf_run_new(h.e, &abandon_ops, 0);
  mf_run_submit(cancelled, NULL);
  mf_run_submit(at_close, NULL);
  mf_engine_step(h.e); /* both park */
  ASSERT(!mf_run_is_final(cancelled) && !mf_run_is_final(at_close));
  mf_run *yielders[4];
  for (int i = 0; i < 4; i++)
    yielders[i] = submit_yielder(h.e, 1000); /* ready when abandon runs */

  abandon_where = "an abandon callback (the host's mf_run_cancel)";
  CHECK(mf_run_cancel(cancelled) == 1);
  CHECK(abandon_calls == 1);
  CHECK(reenter_refused == reenter_calls);
  CHECK(nested_steps == 0);
  CHECK(mf_run_state_type(cancelled) == MF_CANCELLED);
  CHECK(!mf_run_is_final(at_close));
  abandon_where = "an abandon callback (mf_engine_close)";
  mf_engine_close(h.e);
  CHECK(abandon_calls == 2);
  CHECK(reenter_calls == 2);
  CHECK(reenter_refused == reenter_calls);
  CHECK(nested_steps == 0);
  CHECK(mf_run_state_type(at_close) == MF_CANCELLED);
  lua_close(h.L);
  mf_run_unref(cancelled);
  mf_run_unref(at_close);
  for (int i = 0; i < 4; i++)
    mf_run_unref(yielders[i]);
}

/* The close hook (mf_engine_on_close) is the binding's when Lua is
 * attached, so this one is checked on an engine of its own. */
static void reenter_close_hook(mf_engine *e, void *data) {
  (void)data;
  reenter(e, "the close hook (mf_engine_on_close)");
}

TEST(reenter_from_close_hook) {
  mf_engine *e;
  ASSERT(mf_engine_new(&e, NULL) == 0);
  reenter_calls = reenter_refused = in_reentry = nested_steps = 0;
  mf_engine_on_close(e, reenter_close_hook, NULL);
  mf_run *yielders[4];
  for (int i = 0; i < 4; i++)
    yielders[i] = submit_yielder(e, 1000);
  mf_engine_close(e);
  CHECK(reenter_calls == 1);
  CHECK(reenter_refused == reenter_calls);
  CHECK(nested_steps == 0);
  for (int i = 0; i < 4; i++) {
    CHECK(mf_run_state_type(yielders[i]) == MF_CANCELLED);
    mf_run_unref(yielders[i]);
  }
}

/* }====== */

/* {====== 5. Futures completed from C ====== */

typedef struct completer {
  host *h;
  mf_run *db, *multi, *rej, *rej_str;
  int rc[6];
  int balanced; /* the stack was left as found */
  int fired;
} completer;

static void on_resolve_timer(uv_timer_t *t) {
  completer *c = t->data;
  lua_State *L = c->h->L;
  int top = lua_gettop(L);
  lua_pushinteger(L, 21);
  c->rc[0] = mf_lua_future_resolve(L, c->db, 1);
  lua_pushinteger(L, 1);
  lua_pushstring(L, "two");
  lua_pushboolean(L, 1);
  c->rc[1] = mf_lua_future_resolve(L, c->multi, 3);
  c->balanced = lua_gettop(L) == top;
  c->fired++;
}

static void on_reject_timer(uv_timer_t *t) {
  completer *c = t->data;
  lua_State *L = c->h->L;
  int top = lua_gettop(L);
  lua_getglobal(L, "reason"); /* a table: the same one must reach Lua */
  c->rc[2] = mf_lua_future_reject(L, c->rej);
  lua_pushstring(L, "disk on fire");
  c->rc[3] = mf_lua_future_reject(L, c->rej_str);
  lua_pushinteger(L, 0); /* a second completion is refused */
  c->rc[4] = mf_lua_future_resolve(L, c->db, 1);
  lua_pushstring(L, "late");
  c->rc[5] = mf_lua_future_reject(L, c->db);
  c->balanced = c->balanced && lua_gettop(L) == top;
  c->fired++;
}

/* A C future in global gname (its run named name; NULL: the default). */
static mf_run *global_future(lua_State *L, const char *gname,
                             const char *name) {
  mf_run *run = mf_lua_future_new(L, name);
  if (run) {
    mf_run_ref(run); /* kept past the Future */
    lua_setglobal(L, gname);
  }
  return run;
}

static const char c_futures_lua[] =
    "reason = {code = 7}\n"
    "waiting = 0 -- flows about to wait on the C futures\n"
    "local double = mf.task({name = 'double'}, function(x) return 2 * x end)\n"
    "use_db = mf.flow({name = 'use_db'}, function()\n"
    "  local early = db:wait(0.001) -- not resolved yet: false\n"
    "  waiting = waiting + 1\n"
    "  local v = db:result()\n"
    "  local a, b, c = multi:result()\n"
    "  -- the C future as an input of a task\n"
    "  return early, v, double(v), double:submit(db):result(), a, b, c\n"
    "end)\n"
    "use_rej = mf.flow({name = 'use_rej'}, function()\n"
    "  waiting = waiting + 1\n"
    "  local ok, err = pcall(rej.result, rej)\n"
    "  local ok2, err2 = pcall(rej_str.result, rej_str)\n"
    "  local value = rej:result(nil, false)\n"
    "  return ok, err == reason, ok2, err2, value == reason\n"
    "end)\n"
    "raises = mf.flow({name = 'raises'}, function() return rej:result() end)\n";

TEST(c_futures) {
  host h;
  host_open(&h, 0);
  lua_State *L = h.L;
  completer c = {.h = &h};
  ASSERT((c.db = global_future(L, "db", "db")) != NULL);
  ASSERT((c.multi = global_future(L, "multi", "multi")) != NULL);
  ASSERT((c.rej = global_future(L, "rej", "rej")) != NULL);
  ASSERT((c.rej_str = global_future(L, "rej_str", NULL)) != NULL);
  ASSERT(run_lua(L, "assert(db.name == 'db', db.name)\n"
                    "assert(type(rej_str.name) == 'string')\n"));
  ASSERT(run_lua(L, c_futures_lua));
  int base = lua_gettop(L);
  ASSERT(mf_lua_call_flow(L, "use_db", 0) == 0);
  ASSERT(mf_lua_call_flow(L, "use_rej", 0) == 0);
  ASSERT(mf_lua_call_flow(L, "raises", 0) == 0);
  int use_db = base + 1, use_rej = base + 2, raises = base + 3;

  /* Once the flows wait, the host completes the futures from its loop's
   * timers. */
  double end = now() + 10;
  while (lua_int(L, "waiting") < 2 && now() < end)
    turn(&h);
  ASSERT(lua_int(L, "waiting") == 2);
  ASSERT(mf_lua_result(L, use_db) == MF_ESTATE); /* parked on db */
  ASSERT(mf_lua_result(L, use_rej) == MF_ESTATE);
  ASSERT(mf_lua_result(L, raises) == MF_ESTATE);
  ASSERT(lua_gettop(L) == raises);
  uv_timer_t resolve_timer, reject_timer;
  uv_timer_init(&h.loop, &resolve_timer);
  uv_timer_init(&h.loop, &reject_timer);
  resolve_timer.data = reject_timer.data = &c;
  uv_update_time(&h.loop);
  uv_timer_start(&resolve_timer, on_resolve_timer, 20, 0);
  uv_timer_start(&reject_timer, on_reject_timer, 40, 0);

  ASSERT(drive_result(&h, use_db, 20) == 7);
  ASSERT(lua_type(L, -7) == LUA_TBOOLEAN && !lua_toboolean(L, -7));
  ASSERT(lua_tointeger(L, -6) == 21);
  ASSERT(lua_tointeger(L, -5) == 42);
  ASSERT(lua_tointeger(L, -4) == 42);
  ASSERT(lua_tointeger(L, -3) == 1);
  ASSERT(strcmp(lua_tostring(L, -2), "two") == 0);
  ASSERT(lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1));
  lua_settop(L, raises);

  ASSERT(drive_result(&h, use_rej, 20) == 5);
  ASSERT(lua_type(L, -5) == LUA_TBOOLEAN && !lua_toboolean(L, -5));
  ASSERT(lua_toboolean(L, -4)); /* result() raised the very table */
  ASSERT(lua_type(L, -3) == LUA_TBOOLEAN && !lua_toboolean(L, -3));
  ASSERT(strcmp(lua_tostring(L, -2), "disk on fire") == 0);
  ASSERT(lua_toboolean(L, -1)); /* raise_on_failure = false: the value */
  lua_settop(L, raises);

  /* Not caught in the flow: the rejection is what the host reads. */
  ASSERT(drive_result(&h, raises, 20) == MF_EFAILED);
  lua_getglobal(L, "reason");
  ASSERT(lua_rawequal(L, -1, -2));
  lua_settop(L, base);

  ASSERT(c.fired == 2);
  ASSERT(c.rc[0] == 0 && c.rc[1] == 0 && c.rc[2] == 0 && c.rc[3] == 0);
  ASSERT(c.rc[4] == MF_ESTATE && c.rc[5] == MF_ESTATE);
  ASSERT(c.balanced);
  ASSERT(run_lua(L, "db, multi, rej, rej_str = nil"));
  lua_gc(L, LUA_GCCOLLECT, 0); /* the Futures go; the host's refs stay */
  ASSERT(mf_run_state_type(c.db) == MF_COMPLETED);
  ASSERT(mf_run_state_type(c.multi) == MF_COMPLETED);
  ASSERT(mf_run_state_type(c.rej) == MF_FAILED);
  ASSERT(mf_run_state_type(c.rej_str) == MF_FAILED);
  mf_run_unref(c.db);
  mf_run_unref(c.multi);
  mf_run_unref(c.rej);
  mf_run_unref(c.rej_str);
  uv_close((uv_handle_t *)&resolve_timer, NULL);
  uv_close((uv_handle_t *)&reject_timer, NULL);
  ASSERT(host_close(&h) == 0);
}

/* }====== */

/* {====== 6. A thread posting a million items into a busy loop ====== */

#define NPOSTS 1000000u

static struct {
  uint64_t count, sum, last;
  unsigned out_of_order, bad;
  unsigned while_busy; /* delivered while Lua runs were live */
  unsigned char *seen;
} got;
static atomic_int posting_done;
static atomic_int post_errors;

static void on_item(mf_engine *e, void *data) {
  uint64_t i = (uint64_t)(uintptr_t)data;
  got.count++;
  got.sum += i;
  if (i == 0 || i > NPOSTS || got.seen[i])
    got.bad++; /* unknown, or delivered twice */
  else
    got.seen[i] = 1;
  if (i != got.last + 1)
    got.out_of_order++;
  got.last = i;
  if (mf_engine_live_runs(e) > 0)
    got.while_busy++;
}

static void *poster(void *arg) {
  mf_engine *e = arg;
  for (uintptr_t i = 1; i <= NPOSTS; i++)
    if (mf_engine_post(e, on_item, (void *)i) != 0)
      atomic_fetch_add(&post_errors, 1);
  atomic_store(&posting_done, 1);
  return NULL;
}

static int l_posts_in(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)got.count);
  return 1;
}

/* True once the thread finished and 30 s passed: a post still missing then
 * is lost (measured in time, not rounds of work: several rounds may go by
 * between two polls of the loop; generous, as a loaded machine under the
 * sanitizers may take seconds to deliver the posts queued at the end). */
static double posting_done_seen;
static int l_give_up(lua_State *L) {
  int give_up = 0;
  if (atomic_load(&posting_done)) {
    if (posting_done_seen == 0)
      posting_done_seen = now();
    give_up = now() - posting_done_seen > 30;
  }
  lua_pushboolean(L, give_up);
  return 1;
}

/* loop: 0 the host's, 1 the engine's own, 2 the host's with a timer of
 * its own keeping it alive (as a server's listening socket would). */
static void post_from_thread(int loop) {
  host h;
  host_open(&h, loop == 1);
  lua_State *L = h.L;
  uv_timer_t host_timer;
  if (loop == 2) {
    uv_timer_init(&h.loop, &host_timer);
    uv_timer_start(&host_timer, on_tick, 1000, 1000);
  }
  posting_done_seen = 0;
  memset(&got, 0, sizeof got);
  got.seen = calloc(NPOSTS + 1, 1);
  ASSERT(got.seen != NULL);
  atomic_store(&posting_done, 0);
  atomic_store(&post_errors, 0);
  lua_register(L, "posts_in", l_posts_in);
  lua_register(L, "give_up", l_give_up);
  /* Busy until every post arrived (or, should one be lost, until
   * give_up()). */
  ASSERT(run_lua(L, "local work = mf.task({name = 'work'}, function(x)\n"
                    "  local s = 0 for i = 1, 300 do s = s + i * x end\n"
                    "  mf.sleep(0) return s\n"
                    "end)\n"
                    "local xs = {} for i = 1, 50 do xs[i] = i end\n"
                    "busy = mf.flow({name = 'busy'}, function(total)\n"
                    "  local rounds = 0\n"
                    "  repeat\n"
                    "    work:map(xs):result()\n"
                    "    rounds = rounds + 1\n"
                    "  until posts_in() >= total or give_up()\n"
                    "  return rounds\n"
                    "end)\n"));
  int base = lua_gettop(L);
  lua_pushinteger(L, NPOSTS);
  ASSERT(mf_lua_call_flow(L, "busy", 1) == 0);
  mf_engine_step(h.e); /* the runs are going before the thread starts */
  pthread_t thread;
  ASSERT(pthread_create(&thread, NULL, poster, h.e) == 0);
  int rc = drive_result(&h, base + 1, 280);
  pthread_join(thread, NULL);
  ASSERT(rc == 1);
  long long rounds = (long long)lua_tointeger(L, -1);
  lua_settop(L, base);
  drive_for(&h, 0.05); /* a late duplicate would arrive now */
  fprintf(stderr,
          "  %llu posts, %u while Lua runs were live, %lld rounds of work\n",
          (unsigned long long)got.count, got.while_busy, rounds);
  CHECK(atomic_load(&post_errors) == 0);
  CHECK(got.count == NPOSTS);
  CHECK(got.sum == (uint64_t)NPOSTS * (NPOSTS + 1) / 2);
  CHECK(got.bad == 0);
  CHECK(got.out_of_order == 0);
  unsigned missing = 0;
  for (uint64_t i = 1; i <= NPOSTS; i++)
    missing += got.seen[i] != 1;
  CHECK(missing == 0);
  CHECK(got.while_busy > 0);
  CHECK(rounds >= 1);
  free(got.seen);
  got.seen = NULL;
  if (loop == 2)
    uv_close((uv_handle_t *)&host_timer, NULL);
  ASSERT(host_close(&h) == 0);
}

/* The host's frame loop of minimal_host.c: mf_engine_step, then
 * uv_run(UV_RUN_ONCE) on the host's loop. */
TEST(post_from_thread_host_loop) { post_from_thread(0); }
TEST(post_from_thread_own_loop) { post_from_thread(1); }
TEST(post_from_thread_host_loop_alive) { post_from_thread(2); }

/* }====== */

TEST_MAIN("embed")
