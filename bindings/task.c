/*
 * task.c -- Task objects and the hot path: submit, map and call.
 *
 * A Task is a userdata holding the function, its name and its options.
 * Submitting makes a run and its Future, stores the arguments in the
 * Future, turns the futures found in them into inputs, and hands the run to
 * the engine.  Flows are Tasks too, whose function is the flow body built in
 * lua/moonflow/flow.lua.
 */
#include <string.h>

#include "binding.h"
#include "store.h"

/* Task options read on every call, cached as flags. */
enum {
  MFL_TASK_WAIT_FOR = 1,
  MFL_TASK_RETURN_STATE = 2,
  MFL_TASK_POLICY = 4,       /* retries, a timeout or hooks: the run's policy */
  MFL_TASK_QUIET = 8,        /* the program's own runs (main, REPL chunks): no
                                lifecycle log lines */
  MFL_TASK_TAGS = 16,        /* its runs carry tags (limits) */
  MFL_TASK_LOG_PRINTS = 32,  /* print inside its runs goes to the log */
  MFL_TASK_RUNNER_FLOW = 64, /* a flow with a task_runner (runners.c) */
  MFL_TASK_CACHE = 128       /* cache_key, cache or persist_result */
};

/* A Task: its options as the engine takes them, read once at definition
 * (the delays follow the struct in the same userdata). */
typedef struct mfl_task_full {
  mfl_task base;
  unsigned call_flags;
  mf_run_policy policy;
  double delays[];
} mfl_task_full;

/* Gives the run the task's tags; the strings live in the task's options
 * (a copy the task owns), which the run's Future anchors. */
static void set_tags(lua_State *L, int task_idx, mf_run *run) {
  lua_getiuservalue(L, task_idx, MFL_TASK_UV_OPTS);
  lua_getfield(L, -1, "tags");
  size_t n = lua_rawlen(L, -1);
  const char **tags = lua_newuserdatauv(L, (n ? n : 1) * sizeof *tags, 0);
  size_t count = 0;
  for (size_t i = 1; i <= n; i++) {
    if (lua_rawgeti(L, -2, (lua_Integer)i) == LUA_TSTRING)
      tags[count++] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  int rc = mf_run_set_tags(run, tags, count);
  lua_pop(L, 3);
  if (rc != 0)
    luaL_error(L, "moonflow: out of memory");
}

static mfl_task_full *check_task(lua_State *L, int idx) {
  if (!mfl_task_box(L, idx)) /* (every Task box is an mfl_task_full) */
    mfl_raise(L, "UsageError",
              "expected a Task or Flow as self (use t:submit(...), not "
              "t.submit(...)), got %s",
              luaL_typename(L, idx));
  return lua_touserdata(L, idx);
}

/* {====== Creating and submitting runs ====== */

/* Makes a run of the task at task_idx with the nargs values from first as
 * its arguments, and pushes its Future. */
/* What every new run of the task at task_idx gets: its name, flags,
 * policy, tags, and the store's note of its submit (arguments from first). */
static void setup_run(lua_State *L, mfl_state *S, int task_idx, mf_run *run,
                      int first, int nargs, const char *name) {
  mfl_task_full *t = lua_touserdata(L, task_idx);
  mfl_run *lr = mf_run_body(run);
  /* The name string is anchored by the task, which the run's Future (or
   * its map's group) anchors. */
  if (!name) {
    lua_getiuservalue(L, task_idx, MFL_TASK_UV_NAME);
    name = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  mf_run_set_name(run, name, ++t->base.runs);
  mf_run_set_flags(run, t->base.is_flow ? MF_RUN_FLOW : 0);
  if (t->call_flags & MFL_TASK_POLICY) {
    if (mf_run_set_policy(run, &t->policy) != 0)
      luaL_error(L, "moonflow: out of memory");
    lr->keep_args = t->policy.retries > 0;
  }
  lr->quiet = (t->call_flags & MFL_TASK_QUIET) != 0;
  lr->log_prints = (t->call_flags & MFL_TASK_LOG_PRINTS) != 0;
  if (t->call_flags & MFL_TASK_TAGS)
    set_tags(L, task_idx, run);
  /* (a flag, not mf_run_data: that says the run is this state's, which
   * the store's observer goes by) */
  lr->runner_flow = (t->call_flags & MFL_TASK_RUNNER_FLOW) != 0;
  lr->cached = (t->call_flags & MFL_TASK_CACHE) != 0;
  if (S->store)
    mfl_store_before_submit(L, S, run, task_idx, first, nargs);
}

static mfl_future *create_run(lua_State *L, mfl_state *S, int task_idx,
                              int first, int nargs, const mfl_hot *hot,
                              const char *name) {
  mfl_task_full *t = lua_touserdata(L, task_idx);
  mfl_future *f = mfl_new_future(L, S, t->base.is_flow ? MFL_FLOW : MFL_TASK,
                                 task_idx, hot);
  int box = lua_gettop(L);
  mf_run *run = f->run;
  mfl_run *lr = mf_run_body(run);
  if (nargs == 1) {
    lua_pushvalue(L, first);
    lua_setiuservalue(L, box, MFL_UV_ARGS);
  } else if (nargs > 1) {
    lua_createtable(L, nargs, 1);
    for (int i = 0; i < nargs; i++) {
      lua_pushvalue(L, first + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, nargs);
    lua_setfield(L, -2, "n");
    lua_setiuservalue(L, box, MFL_UV_ARGS);
  }
  lr->nargs = nargs > 1 ? -1 : nargs;
  setup_run(L, S, task_idx, run, first, nargs, name);
  return f;
}

/* Gives up a run that could not be submitted. */
static void drop_run(lua_State *L, mfl_future *f) {
  mfl_run *lr = mf_run_body(f->run);
  if (lr->pin != LUA_NOREF) {
    mfl_push_pins(L, lr->S);
    mfl_unpin(L, lr->S, lua_gettop(L), lr->pin);
    lr->pin = LUA_NOREF;
    lua_pop(L, 1);
  }
}

static void raise_submit_error(lua_State *L, const char *name, int rc);

/* Adds the task's wait_for inputs and hands the run to the engine. */
static void submit_run(lua_State *L, mfl_future *f, int task_idx) {
  mfl_task_full *t = lua_touserdata(L, task_idx);
  mf_run *run = f->run;
  if (t->call_flags & MFL_TASK_WAIT_FOR) {
    /* Futures, FutureLists, allow_failure wrappers: as arguments are. */
    lua_getiuservalue(L, task_idx, MFL_TASK_UV_OPTS);
    lua_getfield(L, -1, "wait_for");
    mfl_list_expand(L, -1); /* (a FutureList itself: read raw) */
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      mfl_scan_arg(L, lua_gettop(L), run);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  int rc = mf_run_submit(run, NULL);
  if (rc == 0)
    return;
  drop_run(L, f);
  char name[256];
  mf_run_name(run, name, sizeof name);
  raise_submit_error(L, name, rc);
}

/* A submit of the run named name that failed with rc. */
static void raise_submit_error(lua_State *L, const char *name, int rc) {
  if (rc == MF_EDEADLK)
    mfl_raise(L, "Deadlock",
              "run %s has an input that is a flow containing it: it could "
              "never start",
              name);
  mfl_raise(L, "UsageError", "cannot submit run %s: %s", name, mf_strerror(rc));
}

/* The argument at idx held futures (found): it is resolved before the
 * run starts; one that is a table is copied, which may raise (a key that
 * resolves to NaN), so the run's start is then protected. */
static void note_resolve(lua_State *L, mfl_run *lr, int idx, int found) {
  if (!found)
    return;
  lr->needs_resolve = 1;
  if (lua_type(L, idx) == LUA_TTABLE)
    lr->resolve_tables = 1;
}

/* Submits one run with the arguments first..first+nargs-1; pushes its
 * Future. */
static mfl_future *submit_one(lua_State *L, mfl_state *S, int task_idx,
                              int first, int nargs) {
  mfl_future *f = create_run(L, S, task_idx, first, nargs, NULL, NULL);
  mfl_run *lr = mf_run_body(f->run);
  for (int i = 0; i < nargs; i++)
    note_resolve(L, lr, first + i, mfl_scan_arg(L, first + i, f->run));
  submit_run(L, f, task_idx);
  return f;
}

static int state_k(lua_State *L, int status, lua_KContext ctx) {
  mfl_wait_outcome(L, status);
  mfl_push_state(L, (int)ctx);
  mf_run_mark_handled(mfl_to_future(L, (int)ctx)->run);
  return 1;
}

/* After t:submit gave up its slice: the Future on top. */
static int submitted_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  return 1;
}

/* Every RUNS_PER_TURN runs made, by a map or by submits, the runs made so
 * far start and give their records back while the rest are made.  Made
 * all at once first, runs held every record and its Lua values live
 * together: a map of 100,000 took 47 MB and 12,000 page faults against 18
 * MB and 4,200, a chain of 100,000 submits 71 MB against 16 MB, twice the
 * time and more.  Outside any run (a script's main chunk under lua5.4),
 * where a wait runs the engine's own loop, the loop takes a turn
 * (top_level_turn, mf_engine_step).  Inside a run, the run gives up its
 * slice: its slices of 10 ms made some 30,000 runs each, and a map of
 * 100,000 in a run took 0.41-0.49 us per run against 0.35-0.37 this way
 * (the program, whose main chunk is a run), a chain of 100,000 submits
 * 0.74-0.86 against 0.62-0.68.  A host's loop (mf_lua_attach, luv) is the
 * host's to run; inside a callback or a loop's turn the engine is busy. */
#define RUNS_PER_TURN 4096

/* The loop's turn outside any run; returns whether it took it. */
static int top_level_turn(lua_State *L, mfl_state *S) {
  if (S->borrowed || S->on_luv || mfl_slice_run(L, S))
    return 0;
  return mf_engine_step(S->engine) >= 0;
}

/* t:submit(...) -> Future (or its final State, with return_state) */
static int task_submit(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mfl_task_full *t = check_task(L, 1);
  int nargs = lua_gettop(L) - 1;
  mfl_future *f = submit_one(L, S, 1, 2, nargs);
  if (!(t->call_flags & MFL_TASK_RETURN_STATE)) {
    /* A run that submits in a loop while the store's writer is behind
     * gives up its slice here and waits at the engine's start gate,
     * rather than fill the ring and stall the loop (store_lua.c). */
    mf_run *self;
    if (S->store && mfl_store_busy(S->store) && (self = mfl_slice_run(L, S)))
      return mfl_yield_slice(L, S, self, lua_gettop(L), submitted_k);
    if (++S->submits_since_turn >= RUNS_PER_TURN) {
      S->submits_since_turn = 0;
      if ((self = mfl_slice_run(L, S)) != NULL)
        return mfl_yield_slice(L, S, self, lua_gettop(L), submitted_k);
      top_level_turn(L, S);
    }
    return 1;
  }
  /* The caller takes the outcome (a State): the run is handled now, even
   * if the caller ends before its wait does. */
  mf_run_mark_handled(f->run);
  int box = lua_gettop(L);
  return mfl_wait(L, &f->run, 1, MF_WAIT_ALL, -1, box, state_k);
}

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  mfl_wait_outcome(L, status);
  int box = (int)ctx;
  int n = mfl_push_results(L, box, 1, 0);
  return n;
}

/* t(...) -> the run's return values (runs it and waits) */
static int task_call(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  check_task(L, 1);
  int nargs = lua_gettop(L) - 1;
  mfl_future *f = submit_one(L, S, 1, 2, nargs);
  /* Its failure raises in the caller: handled from the start, so a caller
   * that times out or is cancelled first leaves no orphan to report. */
  mf_run_mark_handled(f->run);
  int box = lua_gettop(L);
  return mfl_wait(L, &f->run, 1, MF_WAIT_ALL, -1, box, call_k);
}

/* }====== */

/* {====== Mapping ====== */

typedef enum arg_kind {
  ARG_BROADCAST, /* the same value for every run */
  ARG_ARRAY,     /* element i for run i, searched for futures */
  ARG_LIST,      /* a FutureList: future i for run i */
  ARG_QUOTED,    /* mf.quote(array): element i for run i, unsearched */
} arg_kind;

#define MAP_MAX_ARGS 64

/* Whether the key on top is one of a sequence's 1..n. */
static int sequence_key(lua_State *L, lua_Integer n) {
  if (!lua_isinteger(L, -1))
    return 0;
  lua_Integer k = lua_tointeger(L, -1);
  return k >= 1 && k <= n;
}

/* Whether the plain table at idx is a sequence 1..n (n returned). */
static int is_sequence(lua_State *L, int idx, lua_Integer *n) {
  lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
  lua_Integer count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!sequence_key(L, len)) {
      lua_pop(L, 1);
      return 0;
    }
    count++;
  }
  *n = len;
  return count == len;
}

/* A table of named values where map wants an array: keyword arguments
 * (Python's map(xs, y=unmapped(10))) get the explanation that Lua's are
 * positional. */
static void raise_not_sequence(lua_State *L, int idx, int argno) {
  int named = 0, other = 0;
  lua_pushliteral(L, ""); /* the names, "a = ..., b = ..." */
  int names = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      other++;
      continue;
    }
    if (named < 3)
      lua_pushfstring(L, "%s%s%s = ...", lua_tostring(L, names),
                      named ? ", " : "", lua_tostring(L, -1));
    else
      lua_pushfstring(L, "%s%s", lua_tostring(L, names),
                      named == 3 ? ", ..." : "");
    lua_replace(L, names);
    named++;
  }
  lua_settop(L, names);
  if (named > 0 && other == 0)
    mfl_raise(L, "UsageError",
              "map: argument #%d is a table of named values {%s}: arguments "
              "are positional in Lua (no keyword arguments), so pass each "
              "one at its place, e.g. t:map(xs, mf.unmapped(10)); to give "
              "this table itself to every run, wrap it in mf.unmapped()",
              argno, lua_tostring(L, -1));
  mfl_raise(L, "UsageError",
            "map: argument #%d is a table with keys that are not 1..n; wrap "
            "it in mf.unmapped() to pass it to every run",
            argno);
}

/* Replaces a final single-Future argument by its result, which must be an
 * array. */
static void future_arg_to_array(lua_State *L, int idx, int argno) {
  mf_run *run = mfl_to_future(L, idx)->run;
  if (mf_run_state_type(run) != MF_COMPLETED) {
    char name[256];
    mf_run_name(run, name, sizeof name);
    mfl_raise(L, "UpstreamFailed",
              "map: argument #%d is the future of run %s, which ended %s",
              argno, name, mf_state_name_string(mf_run_state_name(run)));
  }
  mfl_push_results(L, idx, 1, 1);
  if (!lua_istable(L, -1) || lua_getmetatable(L, -1))
    mfl_raise(L, "UsageError",
              "map: argument #%d is a future whose result is not an array "
              "(%s)",
              argno, luaL_typename(L, -1));
  lua_replace(L, idx);
}

static int has_metatable(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx))
    return 0;
  lua_pop(L, 1);
  return 1;
}

/* mf.quote(array) at idx: replaced by the array; returns 1. */
static int unquote_array(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !mfl_is_kind(L, idx, &mfl_key_quote_mt))
    return 0;
  if (lua_rawgeti(L, idx, 1) != LUA_TTABLE || has_metatable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_replace(L, idx);
  return 1;
}

typedef struct map_plan {
  int first, nargs;
  lua_Integer length;
  int sliced; /* called by a run that can yield: long checks in slices */
  arg_kind kinds[MAP_MAX_ARGS];
  int collectors[MAP_MAX_ARGS]; /* broadcast args' collector index, or 0 */
  unsigned char unchecked[MAP_MAX_ARGS]; /* arrays to check (check_k) */
} map_plan;

/* Arrays at least this long are checked in slices inside a run. */
#define MAP_CHECK_SLICED 4096

/* Classifies the arguments (after single futures were resolved). */
static void plan_map(lua_State *L, map_plan *p) {
  int mapped = 0, first_mapped = 0;
  for (int i = 0; i < p->nargs; i++) {
    int idx = p->first + i, argno = i + 1;
    lua_Integer n = 0;
    p->collectors[i] = 0;
    p->unchecked[i] = 0;
    if (mfl_list_expand(L, idx)) { /* (read raw below) */
      p->kinds[i] = ARG_LIST;
      n = (lua_Integer)lua_rawlen(L, idx);
    } else if (mfl_to_future(L, idx)) {
      future_arg_to_array(L, idx, argno);
      i--; /* classify the array again */
      continue;
    } else if (lua_type(L, idx) == LUA_TTABLE && !has_metatable(L, idx)) {
      n = (lua_Integer)lua_rawlen(L, idx);
      p->unchecked[i] = p->sliced && n >= MAP_CHECK_SLICED;
      if (!p->unchecked[i] && !is_sequence(L, idx, &n))
        raise_not_sequence(L, idx, argno);
      p->kinds[i] = ARG_ARRAY;
    } else if (unquote_array(L, idx)) {
      /* A quoted array is still mapped, each element unsearched. */
      p->kinds[i] = ARG_QUOTED;
      n = (lua_Integer)lua_rawlen(L, idx);
    } else {
      if (lua_type(L, idx) == LUA_TTABLE &&
          mfl_is_kind(L, idx, &mfl_key_unmapped_mt)) {
        lua_rawgeti(L, idx, 1);
        lua_replace(L, idx);
      }
      p->kinds[i] = ARG_BROADCAST;
      continue;
    }
    if (mapped && n != p->length)
      mfl_raise(L, "MappingLengthMismatch",
                "map: mapped arguments differ in length: argument #%d has "
                "%I elements, argument #%d has %I",
                first_mapped, (lua_Integer)p->length, argno, n);
    if (!mapped) {
      mapped = 1;
      first_mapped = argno;
      p->length = n;
    }
  }
  if (!mapped)
    mfl_raise(L, "MappingMissingIterable",
              "map: no argument to map over: pass an array or a FutureList "
              "(values meant for every run may be wrapped in mf.unmapped)");
}

static int map_k(lua_State *L, int status, lua_KContext ctx);
static int map_start(lua_State *L, const map_plan *checked);

/* Checking long arrays inside a run, in slices (no run is made before
 * every argument is checked): where each check is. */
typedef struct map_check {
  map_plan plan;
  int arg;          /* the argument being checked */
  lua_Integer key;  /* the last key seen (0: none yet) */
  lua_Integer seen; /* keys 1..n seen so far */
} map_check;

#define MAP_CHECK_CHUNK 1024 /* keys checked between two looks at the clock */

static void raise_changed(lua_State *L, int argno) {
  mfl_raise(L, "UsageError",
            "map: argument #%d was changed while map was checking it (a "
            "long array is checked in slices inside a run: change it before "
            "the call or after map returns)",
            argno);
}

/* Goes on checking that the plan's unchecked arrays are sequences 1..n, as
 * is_sequence does; ctx is the check's index (the arguments below it). */
static int check_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; /* a slice's yield carries no outcome */
  int check_idx = (int)ctx;
  map_check *c = lua_touserdata(L, check_idx);
  mfl_state *S = mfl_state_get(L);
  mf_run *self = mfl_slice_run(L, S);
  uint64_t since = self ? mfl_slice_clock(S) : 0;
  lua_settop(L, check_idx);
  for (; c->arg < c->plan.nargs; c->arg++, c->key = 0, c->seen = 0) {
    if (!c->plan.unchecked[c->arg])
      continue;
    int idx = c->plan.first + c->arg, argno = c->arg + 1;
    lua_Integer n = c->plan.length;
    if (c->key == 0) {
      lua_pushnil(L);
    } else { /* (next from a key no longer there would raise) */
      if (lua_rawgeti(L, idx, c->key) == LUA_TNIL)
        raise_changed(L, argno);
      lua_pop(L, 1);
      lua_pushinteger(L, c->key);
    }
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (!sequence_key(L, n)) {
        lua_settop(L, check_idx);
        if ((lua_Integer)lua_rawlen(L, idx) != n)
          raise_changed(L, argno);
        raise_not_sequence(L, idx, argno);
      }
      if (++c->seen % MAP_CHECK_CHUNK == 0 && self &&
          mfl_slice_over(S, L, self, since)) {
        c->key = lua_tointeger(L, -1);
        lua_settop(L, check_idx);
        return mfl_yield_slice(L, S, self, ctx, check_k);
      }
    }
    if ((lua_Integer)lua_rawlen(L, idx) != n)
      raise_changed(L, argno);
    if (c->seen != n)
      raise_not_sequence(L, idx, argno);
  }
  map_plan plan = c->plan;
  lua_settop(L, check_idx - 1);
  return map_start(L, &plan);
}

/* The States of every run of the FutureList at ctx. */
static int states_k(lua_State *L, int status, lua_KContext ctx) {
  mfl_wait_outcome(L, status);
  int list = (int)ctx;
  lua_Integer n = (lua_Integer)lua_rawlen(L, list);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer r = 1; r <= n; r++) {
    lua_rawgeti(L, list, r);
    mf_run_mark_handled(mfl_to_future(L, -1)->run);
    mfl_push_state(L, -1);
    lua_rawseti(L, -3, r);
    lua_pop(L, 1);
  }
  return 1;
}

/* Waits for the single-Future arguments that are not final yet. */
static int wait_future_args(lua_State *L, int top) {
  mf_run *pending[MAP_MAX_ARGS];
  size_t n = 0;
  for (int idx = 2; idx <= top; idx++) {
    mfl_future *f = mfl_to_future(L, idx);
    if (f && !mf_run_is_final(f->run))
      pending[n++] = f->run;
  }
  if (n == 0)
    return -1;
  return mfl_wait(L, pending, n, MF_WAIT_ALL, -1, top, map_k);
}

/*
 * Making the runs.  Inside a run, map yields between chunks of runs when
 * its slice is used up, as a Lua loop is preempted: the loop turns (timers,
 * I/O, other runs, the runs made so far) while a long map is made.  What
 * it needs across those yields lives on the caller's stack: the arguments,
 * the collectors, the job (a userdata) and the FutureList being filled.
 * Each run is made and submitted whole between two yields, so a caller
 * cancelled while parked leaves only whole runs: its children, cancelled
 * with it.
 */

#define MAP_CHUNK 64 /* runs made between two looks at the clock */

typedef struct map_job {
  map_plan plan;
  lua_Integer next; /* the element of the next run to make */
  int list;         /* stack index of the FutureList */
  int group;        /* stack index of its group (group.c), or 0 */
  int made;         /* every run made: the FutureList goes to the caller */
} map_job;

static const char key_map_job_mt;

/* __close of a map's job (a to-be-closed slot of the call): a map that
 * raises while it makes its runs (an element that is a collected Future,
 * an input that is a flow containing the new run) returns no FutureList,
 * so the runs it made before are cancelled -- else nobody could wait for
 * them, stop them or read their failures.  Its user value is the list. */
static int map_job_close(lua_State *L) {
  map_job *job = lua_touserdata(L, 1);
  if (!job || job->made || lua_isnoneornil(L, 2))
    return 0;
  if (job->group) { /* its user value 2 */
    lua_getiuservalue(L, 1, 2);
    mfl_group_cancel(L, lua_gettop(L));
    return 0;
  }
  lua_getiuservalue(L, 1, 1);
  for (lua_Integer r = 1; lua_rawgeti(L, -1, r) == LUA_TUSERDATA; r++) {
    mfl_future *f = lua_touserdata(L, -1);
    if (f->run)
      mf_run_cancel(f->run);
    lua_pop(L, 1);
  }
  return 0;
}

/* Makes the run of element r and submits it; pushes its Future. */
static void make_mapped_run(lua_State *L, mfl_state *S, const map_plan *p,
                            lua_Integer r, const mfl_hot *hot,
                            const char *name) {
  int base = lua_gettop(L) + 1;
  for (int i = 0; i < p->nargs; i++) {
    if (p->kinds[i] == ARG_BROADCAST)
      lua_pushvalue(L, p->first + i);
    else
      lua_rawgeti(L, p->first + i, r);
  }
  mfl_future *f = create_run(L, S, 1, base, p->nargs, hot, name);
  mfl_run *lr = mf_run_body(f->run);
  for (int i = 0; i < p->nargs; i++) {
    if (p->kinds[i] == ARG_ARRAY || p->kinds[i] == ARG_LIST) {
      note_resolve(L, lr, base + i, mfl_scan_arg(L, base + i, f->run));
    } else if (p->collectors[i]) {
      mfl_add_collected(L, p->collectors[i], f->run);
      lr->needs_resolve = lr->resolve_tables = 1;
    }
  }
  submit_run(L, f, 1);
  lua_replace(L, base); /* the Future, where the arguments began */
  lua_settop(L, base);
}

/* The same, for a map whose runs go in a group (group.c): the element of
 * the one mapped argument is the run's argument. */
static void make_grouped_run(lua_State *L, mfl_state *S, const map_plan *p,
                             lua_Integer r, int group, mfl_slot_cursor *slots,
                             const char *name) {
  int arg = lua_gettop(L) + 1;
  lua_rawgeti(L, p->first, r);
  mf_run *run = mfl_new_grouped_run(L, S);
  mfl_group_adopt(L, group, slots, run, arg);
  setup_run(L, S, 1, run, arg, 1, name);
  if (p->kinds[0] == ARG_ARRAY)
    note_resolve(L, mf_run_body(run), arg, mfl_scan_arg(L, arg, run));
  int rc = mf_run_submit(run, NULL);
  if (rc != 0) {
    char who[256];
    mf_run_name(run, who, sizeof who);
    mfl_group_drop_last(L, group);
    lua_settop(L, arg - 1);
    raise_submit_error(L, who, rc);
  }
  lua_settop(L, arg - 1);
}

/* Every run is made: the FutureList, or (return_state) their States. */
static int map_made(lua_State *L, map_job *job) {
  mfl_task_full *t = lua_touserdata(L, 1);
  int list = job->list;
  job->made = 1;
  lua_Integer length = job->plan.length;
  lua_settop(L, list);
  if (!(t->call_flags & MFL_TASK_RETURN_STATE))
    return 1;
  /* return_state: wait for every run, then give their States. */
  mf_run **runs =
      lua_newuserdatauv(L, (size_t)(length ? length : 1) * sizeof *runs, 0);
  for (lua_Integer r = 1; r <= length; r++) {
    lua_rawgeti(L, list, r);
    runs[r - 1] = mfl_to_future(L, -1)->run;
    mf_run_mark_handled(runs[r - 1]); /* the caller takes the States */
    lua_pop(L, 1);
  }
  return mfl_wait(L, runs, (size_t)length, MF_WAIT_ALL, -1, list, states_k);
}

/* Makes the job's runs from job->next on; ctx is the job's index.  Called
 * directly (status LUA_OK) and as the continuation after a slice's yield.
 * Every RUNS_PER_TURN runs made the runs made so far start: inside a run
 * the caller yields its slice, outside any run the loop takes a turn
 * (top_level_turn); where neither can be, every run is made in one call. */
static int make_runs_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; /* a slice's yield carries no outcome */
  int job_idx = (int)ctx;
  map_job *job = lua_touserdata(L, job_idx);
  mfl_state *S = mfl_state_get(L);
  mf_run *self = mfl_slice_run(L, S); /* NULL: this call cannot yield */
  uint64_t since = self ? mfl_slice_clock(S) : 0;
  int drive = !self;
  lua_settop(L, job->list);
  luaL_checkstack(L, job->plan.nargs + 8, "too many arguments to map");
  mfl_hot hot;
  mfl_push_hot(L, S, &hot);
  lua_getiuservalue(L, 1, MFL_TASK_UV_NAME);
  const char *name = lua_tostring(L, -1); /* anchored by the task */
  mfl_slot_cursor slots = {0, 0, -1};
  if (job->group)
    mfl_group_push_slots(L, job->group, &slots);
  while (job->next <= job->plan.length) {
    lua_Integer r = job->next;
    job->next++;
    if (job->group) {
      make_grouped_run(L, S, &job->plan, r, job->group, &slots, name);
    } else {
      make_mapped_run(L, S, &job->plan, r, &hot, name);
      lua_rawseti(L, job->list, r);
    }
    if (self && job->next <= job->plan.length && r % MAP_CHUNK == 0 &&
        (r % RUNS_PER_TURN == 0 || mfl_slice_over(S, L, self, since))) {
      lua_settop(L, job->list);
      return mfl_yield_slice(L, S, self, ctx, make_runs_k);
    }
    if (drive && job->next <= job->plan.length && r % RUNS_PER_TURN == 0)
      drive = top_level_turn(L, S);
  }
  return map_made(L, job);
}

static int map_k(lua_State *L, int status, lua_KContext ctx) {
  mfl_wait_outcome(L, status);
  int top = (int)ctx;
  lua_settop(L, top);
  map_plan plan = {.first = 2, .nargs = top - 1};
  int waited = wait_future_args(L, top);
  if (waited >= 0)
    return waited;
  plan.sliced = mfl_slice_run(L, mfl_state_get(L)) != NULL;
  plan_map(L, &plan); /* every check, before any run is made */
  for (int i = 0; i < plan.nargs; i++)
    if (plan.unchecked[i]) { /* the long ones in slices, then map_start */
      map_check *check = lua_newuserdatauv(L, sizeof *check, 0);
      memset(check, 0, sizeof *check);
      check->plan = plan;
      return check_k(L, LUA_OK, lua_gettop(L));
    }
  return map_start(L, &plan);
}

/* Makes the job and its runs, every check done. */
static int map_start(lua_State *L, const map_plan *checked) {
  map_plan plan = *checked;
  for (int i = 0; i < plan.nargs; i++) {
    if (plan.kinds[i] != ARG_BROADCAST)
      continue;
    if (mfl_scan_collect(L, plan.first + i))
      plan.collectors[i] = lua_gettop(L);
    else
      lua_pop(L, 1);
  }
  map_job *job = lua_newuserdatauv(L, sizeof *job, 2);
  int job_idx = lua_gettop(L);
  job->plan = plan;
  job->next = 1;
  job->made = 0;
  job->group = 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_map_job_mt) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, map_job_close);
    lua_setfield(L, -2, "__close");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_map_job_mt);
  }
  lua_setmetatable(L, job_idx);
  mfl_task_full *t = lua_touserdata(L, 1);
  if (plan.nargs == 1 &&
      (plan.kinds[0] == ARG_ARRAY || plan.kinds[0] == ARG_QUOTED) &&
      !t->base.is_flow &&
      !(t->call_flags & (MFL_TASK_RETURN_STATE | MFL_TASK_WAIT_FOR))) {
    /* The common map: its runs' Futures are made when asked for. */
    mfl_group_push_new(L, mfl_state_get(L), 1, plan.length);
    job->group = lua_gettop(L) - 1;
    job->list = lua_gettop(L);
    lua_pushvalue(L, job->group);
    lua_setiuservalue(L, job_idx, 2);
  } else {
    lua_createtable(L, (int)plan.length, 0);
    job->list = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_list_mt);
    lua_setmetatable(L, job->list);
  }
  lua_pushvalue(L, job->list);
  lua_setiuservalue(L, job_idx, 1);
  lua_toclose(L, job_idx);
  return make_runs_k(L, LUA_OK, job_idx);
}

/* t:map(...) -> FutureList */
static int task_map(lua_State *L) {
  check_task(L, 1);
  int top = lua_gettop(L);
  if (top - 1 > MAP_MAX_ARGS)
    return mfl_raise(L, "UsageError", "map: at most %d arguments",
                     MAP_MAX_ARGS);
  return map_k(L, LUA_OK, top);
}

/* }====== */

/* {====== Definition ====== */

/* The number at key in opts, or dflt. */
static double opt_number(lua_State *L, int opts, const char *key, double dflt) {
  double n =
      lua_getfield(L, opts, key) == LUA_TNUMBER ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return n;
}

/* The delays of opts.retry_delay (a number or a list), into out (NULL:
 * only counted); returns how many. */
static size_t retry_delays(lua_State *L, int opts, double *out) {
  size_t n = 0;
  int type = lua_getfield(L, opts, "retry_delay");
  if (type == LUA_TNUMBER) {
    if (out)
      out[0] = lua_tonumber(L, -1);
    n = 1;
  } else if (type == LUA_TTABLE) {
    n = lua_rawlen(L, -1);
    for (size_t i = 0; out && i < n; i++) {
      lua_rawgeti(L, -1, (lua_Integer)i + 1);
      out[i] = lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return n;
}

/* Reads the options the engine owns (checked in Lua) into the policy. */
static void read_policy(lua_State *L, int opts, mfl_task_full *t,
                        size_t ndelays) {
  static const struct {
    const char *option;
    unsigned point;
  } hooks[] = {{"on_running", MF_HOOK_RUNNING},
               {"on_completion", MF_HOOK_COMPLETED},
               {"on_failure", MF_HOOK_FAILED},
               {"on_cancellation", MF_HOOK_CANCELLED},
               {"on_crashed", MF_HOOK_CRASHED}};
  mf_run_policy *p = &t->policy;
  p->retries = (int)opt_number(L, opts, "retries", 0);
  p->retry_jitter = opt_number(L, opts, "retry_jitter", 0);
  p->timeout = opt_number(L, opts, "timeout", 0);
  p->retry_delay_count = retry_delays(L, opts, t->delays);
  p->retry_delays = ndelays ? t->delays : NULL;
  for (size_t i = 0; i < sizeof hooks / sizeof *hooks; i++) {
    if (lua_getfield(L, opts, hooks[i].option) == LUA_TTABLE &&
        lua_rawlen(L, -1) > 0)
      p->hooks |= hooks[i].point;
    lua_pop(L, 1);
  }
  /* A task's run that crashed (its worker died) failed: on_failure. */
  if (!t->base.is_flow && (p->hooks & MF_HOOK_FAILED))
    p->hooks |= MF_HOOK_CRASHED;
  if (p->retries > 0 || p->timeout > 0 || p->hooks)
    t->call_flags |= MFL_TASK_POLICY;
}

/* Whether opts[key] is truthy (nil_ok: present at all). */
static int opt_flag(lua_State *L, int opts, const char *key, int present) {
  int type = lua_getfield(L, opts, key);
  int yes = present ? type != LUA_TNIL : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

/* core.new_task(fn, name, opts, is_flow) -> Task */
static int l_new_task(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TTABLE);
  else {
    lua_settop(L, 4);
    lua_newtable(L);
    lua_replace(L, 3);
  }
  size_t ndelays = retry_delays(L, 3, NULL);
  mfl_task_full *t = lua_newuserdatauv(L, sizeof *t + ndelays * sizeof(double),
                                       MFL_TASK_NUV - 1);
  memset(t, 0, sizeof *t);
  t->base.mark = &mfl_key_task_mt;
  t->base.is_flow = (unsigned char)lua_toboolean(L, 4);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, MFL_TASK_UV_FN);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, MFL_TASK_UV_NAME);
  if (opt_flag(L, 3, "wait_for", 1))
    t->call_flags |= MFL_TASK_WAIT_FOR;
  if (opt_flag(L, 3, "return_state", 0))
    t->call_flags |= MFL_TASK_RETURN_STATE;
  if (opt_flag(L, 3, "_quiet", 0))
    t->call_flags |= MFL_TASK_QUIET;
  if (opt_flag(L, 3, "log_prints", 0))
    t->call_flags |= MFL_TASK_LOG_PRINTS;
  if (t->base.is_flow && opt_flag(L, 3, "task_runner", 1))
    t->call_flags |= MFL_TASK_RUNNER_FLOW;
  if (opt_flag(L, 3, "cache_key", 1) || opt_flag(L, 3, "cache", 0) ||
      opt_flag(L, 3, "persist_result", 0))
    t->call_flags |= MFL_TASK_CACHE;
  if (lua_getfield(L, 3, "tags") == LUA_TTABLE && lua_rawlen(L, -1) > 0)
    t->call_flags |= MFL_TASK_TAGS;
  lua_pop(L, 1);
  read_policy(L, 3, t, ndelays);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, MFL_TASK_UV_OPTS);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_task_mt);
  lua_setmetatable(L, -2);
  return 1;
}

/* core.task_info(task) -> fn, name, opts, is_flow */
static int l_task_info(lua_State *L) {
  mfl_task_full *t = check_task(L, 1);
  lua_getiuservalue(L, 1, MFL_TASK_UV_FN);
  lua_getiuservalue(L, 1, MFL_TASK_UV_NAME);
  lua_getiuservalue(L, 1, MFL_TASK_UV_OPTS);
  lua_pushboolean(L, t->base.is_flow);
  return 4;
}

static int task_tostring(lua_State *L) {
  mfl_task_full *t = check_task(L, 1);
  lua_getiuservalue(L, 1, MFL_TASK_UV_NAME);
  lua_pushfstring(L, "<%s %s>", t->base.is_flow ? "Flow" : "Task",
                  lua_tostring(L, -1));
  return 1;
}

/* The methods first: t:submit(...) is the hot path (core.Task has no
 * "name": that is the task's own). */
static int task_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
    return 1;
  const char *key = lua_tostring(L, 2);
  if (key && strcmp(key, "name") == 0) {
    check_task(L, 1);
    lua_getiuservalue(L, 1, MFL_TASK_UV_NAME);
  }
  return 1;
}

static const luaL_Reg task_methods[] = {
    {"submit", task_submit}, {"map", task_map}, {NULL, NULL}};

void mfl_open_task(lua_State *L) {
  lua_createtable(L, 0, 4); /* Task metatable */
  lua_newtable(L);
  mfl_setfuncs(L, task_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "Task"); /* core.Task: methods, Lua adds more */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  lua_insert(L, -2);
  lua_pushcclosure(L, task_index, 2); /* the state, the methods */
  lua_setfield(L, -2, "__index");
  mfl_pushcfunction(L, task_call);
  lua_setfield(L, -2, "__call");
  mfl_pushcfunction(L, task_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonflow.Task");
  lua_setfield(L, -2, "__name");
  mfl_register_mt(L, &mfl_key_task_mt);
  mfl_pushcfunction(L, l_new_task);
  lua_setfield(L, -2, "new_task");
  mfl_pushcfunction(L, l_task_info);
  lua_setfield(L, -2, "task_info");
}
