/*
 * group.c -- the runs of a map, made without a Future each.
 *
 * A map over one plain array (the common case: `t:map(xs)`) makes its runs
 * in a group: a userdata holding a reference to each run, the task, its
 * function, and two tables, the runs' arguments and their results.  A run's
 * Future is made only when something asks for it: `list[i]`, an error to
 * keep, a park, a hook, a retry, a runner that copies, a report.  Making it
 * ("materializing") moves the run's values into the new Future, which the
 * FutureList then holds at i; from then on the run is like any other.  A
 * run that only starts, returns one value and completes never gets one: its
 * attempt is taken from the group and its result put back there (runner.c),
 * and `list:result()` reads the results from the group.  That spares each
 * run of a map its userdata, its finalizer and its pin.
 *
 * The FutureList of a group is an empty table with a metatable of its own
 * (a proxy): `#list`, `list[i]`, `ipairs` and `pairs` see every run, the
 * Futures made are kept in the group.  Any write goes through __newindex
 * (every key is absent), which expands the list: every Future made and put
 * in it, its metatable the plain one, a table like any other from then on.
 * Code that reads FutureLists raw expands them first (mfl_list_expand).
 *
 * While the engine holds a run whose Future is not made, the group is
 * pinned (one slot for all its runs), so the values outlive the user's
 * references, as a Future's do.
 *
 * A run that completed that way, once nothing but the group refers to it,
 * gives its record back ("retires"): the group keeps its summary (48 bytes,
 * mf_run_summarize) and puts its placeholder, a final Completed run, in its
 * place in runs[], so that waits and collections see a completed run.  Its
 * Future, if asked for later, gets a record made again from the summary.
 * Runs retire in order, a sweep behind the runs that end (the run that ends
 * is still in its step: it retires at a later sweep).
 */
#include <stdlib.h>

#include "binding.h"

struct mfl_group {
  mfl_state *S;
  lua_Integer n;      /* runs made so far (each holds a reference here) */
  int held;           /* runs the engine holds whose Futures are not made */
  int pin;            /* the group's slot in the pins table while held > 0 */
  int collected;      /* __gc ran: the references are dropped */
  lua_Integer length; /* runs it has room for */
  lua_Integer flat;   /* slots in the slots table's array; past: chunks */
  int chunk_shift;    /* log2 of a chunk's slots */
  lua_Integer swept;  /* runs before this one are retired or never will */
  mf_run *retired;    /* the placeholder of retired runs (one reference) */
  mf_run_summary *summaries; /* by index, for the retired */
  unsigned char *no_results; /* bit i: retired run i returned nothing */
  mfl_run model;             /* the body of the first that retired */
  unsigned model_flags;      /* and its flags (mf_run_flags) */
  /* Room for length runs, malloc'd as the summaries are: made on the Lua
   * heap, a map of a million put 8 MB of debt on the collector in one
   * allocation, and the step it then took stalled the loop for up to 4 ms
   * (bench/compare.lua --stall). */
  mf_run **runs;
};

/* The group's user values. */
enum {
  GROUP_UV_TASK = 1, /* the Task (anchors the runs' names and tags) */
  GROUP_UV_FN,       /* its function */
  GROUP_UV_SLOTS,    /* slot i: run i's argument, until it starts (or
                        while it retries); then its result, when it
                        completed without its Future (lr->group_result);
                        see "Slots" below */
  GROUP_UV_LIST,     /* the FutureList */
  GROUP_UV_FUTURES,  /* the Futures made, by index (made with the first) */
  GROUP_NUV = GROUP_UV_FUTURES
};

/* The lazy list's metatable: 1 the FutureList mark, 2 the group, 3 the
 * list itself when it is not the group's own (push_lazy_list). */
enum { LIST_MT_MARK = 1, LIST_MT_GROUP, LIST_MT_SELF };

static const char key_group_mt, key_list_fields, key_next;

static int list_index(lua_State *L);

/* The room a table of n elements is made with (MFL_SLICED_PREALLOC). */
static int prealloc(lua_State *L, mfl_state *S, lua_Integer n) {
  return (int)(n > MFL_SLICED_PREALLOC && mfl_slice_run(L, S)
                   ? MFL_SLICED_PREALLOC
                   : n);
}

/* {------ Slots ------
 *
 * A group's slots are one table made full size, but for a map of more than
 * SLOT_FLAT runs made inside a run: there the first SLOT_FLAT are the
 * table's array (g->flat) and the rest are in chunks of 2^SLOT_CHUNK_SHIFT,
 * chunk k at key -k, made as the map reaches them.  A table that doubles
 * touches its new half at once, fresh memory the kernel zeroes page by page
 * (8 MB, 2 to 25 ms on the machines measured), in one step of the run: a
 * chunk is 64 KB.  The array is no bigger than a chunk: made with room for
 * 65,536 (1 MB), it took 2.5 to 2.7 ms in the step that called map.
 * (core.slot_geometry makes both smaller, for the tests and the fuzzer.) */

#define SLOT_CHUNK_SHIFT 12 /* chunks of 4,096 slots */
#define SLOT_FLAT ((lua_Integer)1 << SLOT_CHUNK_SHIFT)

/* The chunk holding slot i (1 the first), 0 for a slot of the array. */
static lua_Integer slot_chunk(const mfl_group *g, lua_Integer i) {
  return i <= g->flat ? 0 : ((i - g->flat - 1) >> g->chunk_shift) + 1;
}

/* Slot i's index in the table that holds it (push_slot_table). */
static lua_Integer slot_index(const mfl_group *g, lua_Integer i) {
  return i <= g->flat
             ? i
             : ((i - g->flat - 1) & (((lua_Integer)1 << g->chunk_shift) - 1)) +
                   1;
}

/* Pushes the table that holds slot i of the group's slots table at slots
 * (absolute): that table, or i's chunk (made when make, else nil when it
 * was not). */
static void push_slot_table(lua_State *L, const mfl_group *g, int slots,
                            lua_Integer i, int make) {
  lua_Integer chunk = -slot_chunk(g, i); /* (its key) */
  if (chunk == 0) {
    lua_pushvalue(L, slots);
    return;
  }
  if (lua_rawgeti(L, slots, chunk) == LUA_TTABLE || !make)
    return;
  lua_pop(L, 1);
  lua_createtable(L, 1 << g->chunk_shift, 0);
  /* (the collector may have run a finalizer that made it meanwhile) */
  if (lua_rawgeti(L, slots, chunk) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, slots, chunk);
}

/* Puts the table holding slot i at c->table; returns i's index in it. */
static lua_Integer cursor_at(lua_State *L, const mfl_group *g,
                             mfl_slot_cursor *c, lua_Integer i) {
  lua_Integer chunk = slot_chunk(g, i);
  if (chunk != c->chunk) {
    push_slot_table(L, g, c->slots, i, 1);
    lua_replace(L, c->table);
    c->chunk = chunk;
  }
  return slot_index(g, i);
}

/* Pushes slot i of the group's slots table at slots (absolute). */
static void get_slot(lua_State *L, const mfl_group *g, int slots,
                     lua_Integer i) {
  if (i <= g->flat) {
    lua_rawgeti(L, slots, i);
    return;
  }
  push_slot_table(L, g, slots, i, 0);
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, slot_index(g, i));
    lua_replace(L, -2);
  } /* (else nil: never set) */
}

/* Sets slot i of the group's slots table at slots (absolute) to the value
 * on top, popped. */
static void set_slot(lua_State *L, const mfl_group *g, int slots,
                     lua_Integer i) {
  if (i <= g->flat) {
    lua_rawseti(L, slots, i);
    return;
  }
  push_slot_table(L, g, slots, i, !lua_isnil(L, -1));
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, slot_index(g, i));
  } /* (else a nil for a chunk never made: nothing to clear) */
  lua_pop(L, 2);
}

/* }------ */

/* {====== The group and its runs ====== */

/* Releases the group's runs (its __gc, or the state's: mfl_note_box). */
static void release_group(void *box) {
  mfl_group *g = box;
  if (g->collected)
    return;
  g->collected = 1;
  for (lua_Integer i = 0; i < g->n; i++) {
    mf_run *run = g->runs[i];
    if (run == g->retired)
      continue;
    mfl_run *lr = mf_run_body(run);
    if (lr->group == g) {
      lr->group = NULL;
      lr->group_held = 0;
      /* The name points into the task this group anchors: a run that
       * outlives it (a downstream run's reference) keeps a copy. */
      if (!lr->S->closed && mf_run_refcount(run) > 1) {
        char name[256];
        mf_run_name(run, name, sizeof name);
        mf_run_set_custom_name(run, name);
      }
    }
    mf_run_unref(run);
  }
  g->n = 0;
  if (g->retired)
    mf_run_unref(g->retired);
  g->retired = NULL;
  free(g->summaries);
  g->summaries = NULL;
  free(g->no_results);
  g->no_results = NULL;
  free(g->runs);
  g->runs = NULL;
}

static int group_gc(lua_State *L) {
  /* Only a group's own metatable calls it; by hand (debug), anything. */
  int ours = lua_getmetatable(L, 1) &&
             lua_rawgetp(L, LUA_REGISTRYINDEX, &key_group_mt) &&
             lua_rawequal(L, -1, -2);
  mfl_group *g = ours ? lua_touserdata(L, 1) : NULL;
  lua_Debug caller;
  /* By hand (debug.getmetatable) while it serves held runs: refused. */
  if (!g || g->collected || (g->held > 0 && lua_getstack(L, 1, &caller)))
    return 0;
  mfl_forget_box(g->S, g);
  release_group(g);
  return 0;
}

/* Pushes the group of the run (pinned, as the run is held), or nil when
 * nothing holds it any more. */
static void push_group(lua_State *L, const mfl_group *g) {
  if (g->pin == LUA_NOREF) {
    lua_pushnil(L);
    return;
  }
  mfl_push_pins(L, g->S);
  lua_rawgeti(L, -1, g->pin);
  lua_remove(L, -2);
}

static void hold(lua_State *L, mfl_group *g, int gidx) {
  if (g->held++ > 0)
    return;
  mfl_push_pins(L, g->S);
  lua_pushvalue(L, gidx);
  g->pin = mfl_pin(L, g->S, lua_gettop(L) - 1);
  lua_pop(L, 1);
}

static void release(lua_State *L, mfl_group *g) {
  if (--g->held > 0)
    return;
  mfl_push_pins(L, g->S);
  mfl_unpin(L, g->S, lua_gettop(L), g->pin);
  g->pin = LUA_NOREF;
  lua_pop(L, 1);
}

/* Pushes a lazy FutureList of the group at gidx: an empty table with a
 * metatable of its own.  The map's own list is the group's (GROUP_UV_LIST);
 * another (mf.wait's done) is its metatable's LIST_MT_SELF, which a table
 * given that metatable by hand is not: expanded, it gets no Future. */
static void push_lazy_list(lua_State *L, int gidx, int another) {
  lua_newtable(L);
  int list = lua_gettop(L);
  lua_createtable(L, 3, 8);
  lua_pushlightuserdata(L, (void *)&mfl_key_list_mt);
  lua_rawseti(L, -2, LIST_MT_MARK);
  lua_pushvalue(L, gidx);
  lua_rawseti(L, -2, LIST_MT_GROUP);
  if (another) {
    lua_pushvalue(L, list);
    lua_rawseti(L, -2, LIST_MT_SELF);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_list_fields);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, list + 1);
  }
  lua_pop(L, 1);
  /* list[i] finds its group as an upvalue: no check of the list's
   * metatables at each index. */
  lua_pushvalue(L, gidx);
  lua_pushcclosure(L, list_index, 1);
  lua_setfield(L, list + 1, "__index");
  lua_setmetatable(L, list);
}

void mfl_group_push_new(lua_State *L, mfl_state *S, int task_idx,
                        lua_Integer length) {
  task_idx = lua_absindex(L, task_idx);
  mfl_group *g = lua_newuserdatauv(L, sizeof *g, GROUP_NUV);
  g->S = S;
  g->runs = NULL;
  g->n = 0;
  g->held = 0;
  g->pin = LUA_NOREF;
  g->collected = 0;
  g->length = length;
  g->flat =
      length > S->slots_flat && mfl_slice_run(L, S) ? S->slots_flat : length;
  g->chunk_shift = S->slots_chunk_shift;
  g->swept = 0;
  g->retired = NULL;
  g->summaries = NULL;
  g->no_results = NULL;
  int gidx = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_group_mt);
  lua_setmetatable(L, gidx);
  mfl_note_box(L, S, g, release_group);
  g->runs = malloc((size_t)(length ? length : 1) * sizeof *g->runs);
  if (!g->runs)
    luaL_error(L, "moonflow: out of memory (a map of %I runs)", length);
  lua_pushvalue(L, task_idx);
  lua_setiuservalue(L, gidx, GROUP_UV_TASK);
  lua_getiuservalue(L, task_idx, MFL_TASK_UV_FN);
  lua_setiuservalue(L, gidx, GROUP_UV_FN);
  lua_createtable(L, (int)g->flat, 0);
  lua_setiuservalue(L, gidx, GROUP_UV_SLOTS);
  push_lazy_list(L, gidx, 0);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, gidx, GROUP_UV_LIST);
}

void mfl_group_push_slots(lua_State *L, int gidx, mfl_slot_cursor *c) {
  lua_getiuservalue(L, gidx, GROUP_UV_SLOTS);
  c->slots = lua_gettop(L);
  lua_pushnil(L);
  c->table = lua_gettop(L);
  c->chunk = -1;
}

void mfl_group_adopt(lua_State *L, int gidx, mfl_slot_cursor *c, mf_run *run,
                     int arg_idx) {
  mfl_group *g = lua_touserdata(L, gidx);
  mfl_run *lr = mf_run_body(run);
  g->runs[g->n++] = run; /* the reference mf_run_new gave */
  lr->group = g;
  lr->group_index = (int)g->n;
  lr->group_held = 1;
  lr->pin = LUA_NOREF;
  lr->nargs = 1;
  hold(L, g, gidx);
  lua_Integer at = cursor_at(L, g, c, g->n);
  lua_pushvalue(L, arg_idx);
  lua_rawseti(L, c->table, at);
}

void mfl_group_drop_last(lua_State *L, int gidx) {
  mfl_group *g = lua_touserdata(L, gidx);
  mf_run *run = g->runs[--g->n];
  mfl_run *lr = mf_run_body(run);
  lr->group = NULL;
  if (lr->group_held) {
    lr->group_held = 0;
    release(L, g);
  }
  lua_getiuservalue(L, gidx, GROUP_UV_SLOTS);
  lua_pushnil(L);
  set_slot(L, g, lua_gettop(L) - 1, g->n + 1);
  lua_pop(L, 1);
  mf_run_unref(run);
}

void mfl_group_cancel(lua_State *L, int gidx) {
  mfl_group *g = lua_touserdata(L, gidx);
  for (lua_Integer i = 0; i < g->n; i++)
    if (g->runs[i] != g->retired)
      mf_run_cancel(g->runs[i]);
}

/* {------ Retiring finished runs ------ */

/* A body for a record of the group's, made again or the placeholder. */
static void init_body(mfl_group *g, mf_run *run) {
  mf_run_set_data(run, g->S); /* a run of this state's */
  mfl_run *lr = mf_run_body(run);
  lr->S = g->S;
  lr->kind = MFL_TASK;
  lr->pin = LUA_NOREF;
}

/* Room for the summaries and the placeholder; 0 when there is none (the
 * runs then keep their records). */
static int retire_room(mfl_group *g, mf_run *first) {
  if (g->retired)
    return 1;
  static const mf_run_summary nothing;
  g->summaries = malloc((size_t)g->length * sizeof *g->summaries);
  g->no_results = calloc(((size_t)g->length + 7) / 8, 1);
  g->retired = mf_run_from_summary(g->S->engine, &mfl_run_ops, sizeof(mfl_run),
                                   0, &nothing);
  if (!g->summaries || !g->no_results || !g->retired) {
    free(g->summaries);
    free(g->no_results);
    if (g->retired)
      mf_run_unref(g->retired);
    g->summaries = NULL;
    g->no_results = NULL;
    g->retired = NULL;
    return 0;
  }
  init_body(g, g->retired);
  g->model = *(mfl_run *)mf_run_body(first);
  g->model_flags = mf_run_flags(first);
  return 1;
}

/* Whether retired run i (from 0) returned nothing (not even nil). */
static int returned_nothing(const mfl_group *g, lua_Integer i) {
  return (g->no_results[i / 8] >> (i % 8)) & 1;
}

/* Retires run i (from 0) if it completed without its Future and nothing
 * else refers to it. */
static void retire(mfl_group *g, lua_Integer i) {
  mf_run *run = g->runs[i];
  mfl_run *lr = mf_run_body(run);
  if (lr->making_future || g->S->closing || g->S->closed || !g->S->engine ||
      lr->group != g || !lr->group_result || lr->group_held || lr->note ||
      lr->co || lr->io || lr->remote || lr->has_outcome || lr->noted ||
      lr->pin != LUA_NOREF || !retire_room(g, run) ||
      !mf_run_summarize(run, &g->summaries[i]))
    return;
  if (lr->nresults == 0)
    g->no_results[i / 8] |= (unsigned char)(1u << (i % 8));
  g->runs[i] = g->retired;
  mf_run_unref(run); /* the group's, its last */
}

/* Retires the runs that ended before run `upto` (from 0; that one may
 * still be in its step), stopping at the first that has not ended. */
static void sweep(mfl_group *g, lua_Integer upto) {
  for (; g->swept < upto; g->swept++) {
    mf_run *run = g->runs[g->swept];
    if (run == g->retired ||
        ((mfl_run *)mf_run_body(run))->group != g) /* its Future has it */
      continue;
    if (!mf_run_is_final(run))
      return;
    retire(g, g->swept);
  }
}

/* Retires run i (from 0) if it ended and can: after a wait on the whole
 * list, whose references kept every run while it lasted, or behind the
 * last run of the group to end. */
static void retire_if_final(mfl_group *g, lua_Integer i) {
  if (g->runs[i] != g->retired && mf_run_is_final(g->runs[i]))
    retire(g, i);
}

/* The record of retired run i (from 1) made again, in runs[]. */
static mf_run *revive(lua_State *L, mfl_group *g, lua_Integer i) {
  mfl_state *S = g->S;
  if (S->closed || !S->engine)
    luaL_error(L, "moonflow: the state is closed");
  mf_run *run = mf_run_from_summary(S->engine, &mfl_run_ops, sizeof(mfl_run),
                                    g->model_flags, &g->summaries[i - 1]);
  if (!run)
    luaL_error(L, "moonflow: out of memory");
  mfl_run *lr = mf_run_body(run);
  *lr = g->model;
  lr->co = NULL;
  lr->remote = NULL;
  lr->io = NULL;
  lr->note = NULL;
  lr->pin = LUA_NOREF;
  lr->nargs = 0;
  lr->yield = 0;
  lr->co_in_box = 0;
  lr->needs_resolve = lr->resolve_tables = 0;
  lr->group = g;
  lr->group_index = (int)i;
  lr->group_held = 0;
  lr->group_result = 1;
  lr->nresults = returned_nothing(g, i - 1) ? 0 : 1;
  init_body(g, run);
  g->runs[i - 1] = run; /* the reference it was made with */
  return run;
}

/* }------ */

/* Pushes the Future made before for run i. */
static void push_made(lua_State *L, int gidx, lua_Integer i) {
  lua_getiuservalue(L, gidx, GROUP_UV_FUTURES);
  lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
}

/* Makes the Future of run i of the group at gidx (its values move into it)
 * and pushes it; or pushes the one made before.
 *
 * Any allocation of Lua memory may run the collector, and its finalizers
 * may ask for this very Future (mf.context() in the run, list[i]): entered
 * again halfway, this made two Futures for one run and lost its result
 * (fuzzer, seed 1796188687 case 19).  So whatever allocates comes first
 * (the Futures table and its key i, the box, its pin), then whether a
 * finalizer made the Future meanwhile is asked again, and what follows
 * allocates nothing.  The Futures table is asked for again once made: a
 * finalizer that made it first, and this Future in it, would otherwise lose
 * its table to this one (CI, lazy_lists_spec under processes: false where
 * the Future should be).  (revive allocates C memory only.)  A finalizer
 * may also end the run's record meanwhile: a list:result() in it retires
 * the runs that ended (a use after free, spec'd).  So the run does not
 * retire while its Future is made (lr->making_future; left set by an
 * error, out of memory, it only keeps the record). */
static void materialize(lua_State *L, int gidx, lua_Integer i) {
  mfl_group *g = lua_touserdata(L, gidx);
  luaL_checkstack(L, 6, NULL);
  mf_run *run = g->runs[i - 1];
  if (run == g->retired)
    run = revive(L, g, i);
  mfl_run *lr = mf_run_body(run);
  if (lr->group != g) { /* made before (the list may have changed since) */
    push_made(L, gidx, i);
    return;
  }
  lr->making_future = 1;
  if (lua_getiuservalue(L, gidx, GROUP_UV_FUTURES) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    /* A finalizer run by that allocation may have made the table, and
     * this very Future in it: that table stays, this one goes. */
    if (lua_getiuservalue(L, gidx, GROUP_UV_FUTURES) == LUA_TTABLE) {
      lua_remove(L, -2);
    } else {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, gidx, GROUP_UV_FUTURES);
    }
    if (lr->group != g) {
      lr->making_future = 0;
      lua_pop(L, 1);
      push_made(L, gidx, i);
      return;
    }
  }
  int futures = lua_gettop(L);
  lua_pushboolean(L, 0); /* key i made now: storing the Future will not */
  lua_rawseti(L, futures, i);
  mfl_future *f = lua_newuserdatauv(L, sizeof *f, MFL_NUV);
  f->mark = &mfl_key_future_mt;
  f->run = NULL;
  int box = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->S->future_mt_ref);
  lua_setmetatable(L, box);
  int pin = LUA_NOREF;
  if (lr->group_held) { /* the Future takes the pin from the group */
    mfl_push_pins(L, g->S);
    lua_pushvalue(L, box);
    pin = mfl_pin(L, g->S, lua_gettop(L) - 1);
    lua_pop(L, 1);
  }
  if (lr->group != g) { /* a finalizer made it: this box goes unused */
    lr->making_future = 0;
    if (pin != LUA_NOREF) {
      mfl_push_pins(L, g->S);
      mfl_unpin(L, g->S, lua_gettop(L), pin);
      lua_pop(L, 1);
    }
    lua_settop(L, futures - 1);
    push_made(L, gidx, i);
    return;
  }
  lua_getiuservalue(L, gidx, GROUP_UV_TASK);
  lua_setiuservalue(L, box, MFL_UV_TASK);
  lua_getiuservalue(L, gidx, GROUP_UV_SLOTS);
  int slots = lua_gettop(L);
  get_slot(L, g, slots, i);
  /* The slot is not read again: a value the collector owns is let go. */
  int collectable = lua_type(L, -1) >= LUA_TSTRING;
  if (lr->group_result)
    lua_setiuservalue(L, box, MFL_UV_RESULT);
  else if (lr->nargs != 0)
    lua_setiuservalue(L, box, MFL_UV_ARGS);
  else
    lua_pop(L, 1); /* an attempt took it, and no other will */
  if (collectable) {
    lua_pushnil(L);
    set_slot(L, g, slots, i);
  }
  lua_pop(L, 1);
  lr->group_result = 0;
  mf_run_ref(run);
  f->run = run;
  mfl_note_box(L, g->S, f, mfl_release_future);
  lr->group = NULL;
  if (lr->group_held) {
    lr->group_held = 0;
    lr->pin = pin;
    release(L, g);
  }
  lua_pushvalue(L, box);
  lua_rawseti(L, futures, i);
  lua_replace(L, futures); /* the box, where the table was */
  lr->making_future = 0;
}

void mfl_group_push_future(lua_State *L, mfl_run *lr) {
  mfl_group *g = lr->group;
  push_group(L, g);
  if (lua_isnil(L, -1))
    return; /* nothing holds it: no Future to give, as for a dropped one */
  int gidx = lua_gettop(L);
  materialize(L, gidx, lr->group_index);
  lua_remove(L, gidx);
}

void mfl_group_release(lua_State *L, mfl_run *lr) {
  if (!lr->group_held)
    return;
  lr->group_held = 0;
  mfl_group *g = lr->group;
  lua_Integer self = lr->group_index - 1;
  sweep(g, self);
  if (g->held == 1 && g->swept == self) /* the last: the rest ended */
    for (lua_Integer i = self + 1; i < g->n; i++)
      retire_if_final(g, i);
  release(L, g);
}

int mfl_group_push_attempt(lua_State *L, mfl_run *lr) {
  /* (the pins and the group stay below: the caller's settop takes them) */
  mfl_push_pins(L, lr->S);
  lua_rawgeti(L, -1, lr->group->pin); /* held: the group is pinned */
  int gidx = lua_gettop(L);
  lua_getiuservalue(L, gidx, GROUP_UV_SLOTS);
  push_slot_table(L, lr->group, gidx + 1, lr->group_index, 1);
  lua_replace(L, gidx + 1);
  lua_getiuservalue(L, gidx, GROUP_UV_FN);
  /* The argument stays in its slot (the result takes its place); unless
   * retries need it again, the run has none from now on (what makes its
   * Future leaves it out). */
  lua_rawgeti(L, gidx + 1, slot_index(lr->group, lr->group_index));
  if (!lr->keep_args)
    lr->nargs = 0;
  return 1;
}

void mfl_group_store_result(lua_State *L, int slot_table, mfl_run *lr) {
  lua_rawseti(L, slot_table, slot_index(lr->group, lr->group_index));
  lr->group_result = 1;
}

/* }====== */

/* {====== The lazy FutureList ====== */

/* The group of the lazy FutureList at idx, pushed; NULL (nothing pushed)
 * for any other value. */
static mfl_group *push_list_group(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return NULL;
  int group = lua_rawgeti(L, -1, LIST_MT_GROUP) == LUA_TUSERDATA;
  lua_rawgeti(L, -2, LIST_MT_MARK);
  if (!group || lua_touserdata(L, -1) != &mfl_key_list_mt) {
    lua_pop(L, 3);
    return NULL;
  }
  lua_pop(L, 1);
  /* A group's own metatable (a table dressed up as a list with debug's
   * help must not pass any userdata off as a group). */
  int top = lua_gettop(L); /* mt group */
  int ours = lua_getmetatable(L, -1) &&
             lua_rawgetp(L, LUA_REGISTRYINDEX, &key_group_mt) == LUA_TTABLE &&
             lua_rawequal(L, -1, -2);
  lua_settop(L, top);
  if (!ours) {
    lua_pop(L, 2);
    return NULL;
  }
  lua_remove(L, -2);
  return lua_touserdata(L, -1);
}

int mfl_list_expand(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  mfl_group *g = push_list_group(L, idx);
  if (!g)
    return lua_type(L, idx) == LUA_TTABLE &&
           mfl_is_kind(L, idx, &mfl_key_list_mt);
  int gidx = lua_gettop(L);
  lua_getiuservalue(L, gidx, GROUP_UV_LIST);
  int same = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  if (!same && lua_getmetatable(L, idx)) {
    lua_rawgeti(L, -1, LIST_MT_SELF);
    same = lua_rawequal(L, -1, idx);
    lua_pop(L, 2);
  }
  if (same) /* (a list's own group; a copied metatable cannot be had) */
    for (lua_Integer i = 1; i <= g->n; i++) {
      /* (a value the user put there raw stays: the list is the user's) */
      if (lua_rawgeti(L, idx, i) == LUA_TNIL) {
        materialize(L, gidx, i);
        lua_rawseti(L, idx, i);
      }
      lua_pop(L, 1);
    }
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_list_mt);
  lua_setmetatable(L, idx);
  return 1;
}

lua_Integer mfl_list_retired(lua_State *L, int idx) {
  mfl_group *g = push_list_group(L, idx);
  if (!g)
    return 0;
  lua_pop(L, 1);
  lua_Integer count = 0;
  for (lua_Integer i = 0; i < g->n; i++)
    count += g->runs[i] == g->retired;
  return count;
}

/* __index(list, k) of a lazy list, its group the upvalue: run k's Future,
 * made now; or a FutureList method.  (Called on another table by hand,
 * through debug.getmetatable, it still gives its own group's Futures.) */
static int list_index(lua_State *L) {
  int integral = 0;
  lua_Integer i = lua_type(L, 2) == LUA_TNUMBER
                      ? lua_tointegerx(L, 2, &integral)
                      : 0; /* (2.0 is the key 2, as in any table) */
  if (integral) {
    mfl_group *g = lua_touserdata(L, lua_upvalueindex(1));
    if (i >= 1 && i <= g->n) {
      lua_pushvalue(L, lua_upvalueindex(1));
      materialize(L, lua_gettop(L), i);
      return 1;
    }
    return 0;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_list_mt);
  lua_getfield(L, -1, "__index"); /* the methods */
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* The length of a lazy list: its group's.  A value put there raw
 * (rawset) is the user's, as in any table: the list is made plain first,
 * so that # says what list:result() and ipairs see. */
static lua_Integer lazy_length(lua_State *L) {
  mfl_group *g = push_list_group(L, 1);
  if (!g)
    return (lua_Integer)lua_rawlen(L, 1);
  lua_pop(L, 1);
  lua_pushnil(L);
  if (!lua_next(L, 1))
    return g->n;
  lua_pop(L, 2);
  mfl_list_expand(L, 1);
  return (lua_Integer)lua_rawlen(L, 1);
}

static int list_len(lua_State *L) {
  lua_pushinteger(L, lazy_length(L));
  return 1;
}

/* Writing to a lazy list, or iterating it with pairs, makes it plain. */
static int list_newindex(lua_State *L) {
  mfl_list_expand(L, 1);
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

static int list_pairs(lua_State *L) {
  mfl_list_expand(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int list_tostring(lua_State *L) {
  lua_pushfstring(L, "<FutureList of %I>", lazy_length(L));
  return 1;
}

/* A next that does not depend on the globals (pairs of a lazy list). */
static int raw_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  return lua_next(L, 1) ? 2 : (lua_pushnil(L), 1);
}

/* }====== */

/* {====== list:wait() and list:result() of a lazy list ====== */

int mfl_group_list_ready(lua_State *L) {
  if (!push_list_group(L, 1))
    return 0;
  lua_pop(L, 1);
  /* Writes go through __newindex, which expands: a lazy list holds
   * nothing, but what rawset put there. */
  lua_pushnil(L);
  if (!lua_next(L, 1))
    return 1;
  lua_pop(L, 2);
  mfl_list_expand(L, 1);
  return 0;
}

/* Stack of both: list timeout [raise] group */

/* The end of mf.wait(list) (stack: list timeout group ...): done and
 * not_done.  When the wait for every run ended (all_done, the wait's own
 * outcome), done is another lazy list of the same runs (their Futures made
 * when read, the same as list[i]) and not_done is empty: waiting on a
 * map's list makes no Future.  Else (a timeout) each run's Future is made,
 * into one or the other. */
static int push_split(lua_State *L, int gidx, int all_done) {
  if (all_done) {
    push_lazy_list(L, gidx, 1);
    lua_newtable(L);
    return 2;
  }
  mfl_group *g = lua_touserdata(L, gidx);
  lua_Integer n = g->n;
  lua_newtable(L);
  lua_newtable(L);
  int done = lua_gettop(L) - 1;
  lua_Integer ndone = 0, nnot = 0;
  for (lua_Integer i = 1; i <= n && i <= g->n; i++) {
    /* (final before its Future is made: a finalizer run meanwhile may
     * wait, and the answer is the wait's, at its end) */
    int final = mf_run_is_final(g->runs[i - 1]);
    materialize(L, gidx, i);
    lua_rawseti(L, final ? done : done + 1, final ? ++ndone : ++nnot);
  }
  return 2;
}

/* How a wait on a lazy list ends (stack: list timeout group ...): the runs
 * that ended retire (the wait referred to every run while it lasted),
 * then list:wait() gives whether all ended, mf.wait(list) done and
 * not_done. */
static int end_wait(lua_State *L, int split, int all_done) {
  mfl_group *g = lua_touserdata(L, 3);
  for (lua_Integer i = 0; i < g->n; i++)
    retire_if_final(g, i);
  if (split)
    return push_split(L, 3, all_done);
  lua_pushboolean(L, all_done);
  return 1;
}

static int group_wait_done_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  return end_wait(L, 0, mfl_wait_outcome(L, status) == MF_WAKE_DONE);
}

static int group_wait_split_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  return end_wait(L, 1, mfl_wait_outcome(L, status) == MF_WAKE_DONE);
}

/* The same inside a run, in slices (collect.c's job at ctx). */
static int collect_end(lua_State *L, int status, lua_KContext ctx, int split,
                       lua_KFunction self) {
  mfl_collect *c = mfl_collect_resumed(L, status, ctx);
  mfl_group *g = lua_touserdata(L, 3);
  if (c->step == 0) {
    c->step = 1;
    c->at = 0;
  }
  while (c->at < (size_t)g->n) {
    retire_if_final(g, (lua_Integer)c->at++);
    if (c->at < (size_t)g->n && mfl_collect_over(L, c, c->at))
      return mfl_collect_yield(L, c, ctx, self);
  }
  return split ? push_split(L, 3, c->reason == MF_WAKE_DONE)
               : mfl_collect_done_k(L, LUA_OK, ctx);
}

static int group_collect_done_k(lua_State *L, int status, lua_KContext ctx) {
  return collect_end(L, status, ctx, 0, group_collect_done_k);
}

static int group_collect_split_k(lua_State *L, int status, lua_KContext ctx) {
  return collect_end(L, status, ctx, 1, group_collect_split_k);
}

/* list:wait(timeout) (split 0) or mf.wait(list, timeout) (split 1). */
static int wait_group(lua_State *L, double timeout, int split) {
  lua_settop(L, 2);
  mfl_group *g = push_list_group(L, 1);
  if (mfl_slice_run(L, mfl_state_get(L))) /* in a run: in slices */
    return mfl_collect_runs(L, 3, g->runs, (size_t)g->n, MF_WAIT_ALL, timeout,
                            split ? group_collect_split_k
                                  : group_collect_done_k);
  lua_KFunction k = split ? group_wait_split_k : group_wait_done_k;
  for (lua_Integer i = 0; i < g->n; i++)
    if (!mf_run_is_final(g->runs[i]))
      return mfl_wait(L, g->runs, (size_t)g->n, MF_WAIT_ALL, timeout, 0, k);
  return k(L, LUA_OK, 0);
}

int mfl_group_list_wait(lua_State *L, double timeout) {
  return wait_group(L, timeout, 0);
}

int mfl_group_wait_split(lua_State *L, double timeout) {
  return wait_group(L, timeout, 1);
}

/* What list:result() has seen of the runs so far. */
typedef struct seen_runs {
  size_t failed;     /* the failure that finished first (index), or 0 */
  double failed_at;  /* when it finished */
  size_t unfinished; /* runs not final */
} seen_runs;

/* Puts run i's result at out[i] (in raise mode, not a failure's error):
 * the group's slot for a run that completed without its Future, else what
 * its Future gives; notes the failures and the unfinished. */
static void put_result(lua_State *L, int gidx, mfl_slot_cursor *slots, int out,
                       size_t i, int raise, seen_runs *seen) {
  mfl_group *g = lua_touserdata(L, gidx);
  retire_if_final(g, (lua_Integer)i - 1);
  mf_run *run = g->runs[i - 1];
  if (run == g->retired) {
    if (returned_nothing(g, (lua_Integer)i - 1))
      lua_pushnil(L);
    else
      lua_rawgeti(L, slots->table, cursor_at(L, g, slots, (lua_Integer)i));
    lua_rawseti(L, out, (lua_Integer)i);
    return;
  }
  mfl_run *lr = mf_run_body(run);
  if (!mf_run_is_final(run)) {
    seen->unfinished++;
    return;
  }
  if (mf_run_state_type(run) != MF_COMPLETED) {
    mfl_note_failure(run, i, &seen->failed, &seen->failed_at);
    if (raise)
      return;
  }
  if (lr->group == g && lr->group_result) {
    mf_run_mark_handled(run);
    if (lr->nresults != 0)
      lua_rawgeti(L, slots->table, cursor_at(L, g, slots, (lua_Integer)i));
    else
      lua_pushnil(L);
  } else {
    materialize(L, gidx, (lua_Integer)i);
    mfl_push_results(L, lua_gettop(L), 0, 1);
    lua_remove(L, -2);
  }
  lua_rawseti(L, out, (lua_Integer)i);
}

/* The end of list:result(): the first failure raised (raise mode), a
 * Timeout, or the results (out, left on top). */
static int end_result(lua_State *L, int gidx, int out, size_t n, int raise,
                      int timed_out, const seen_runs *seen) {
  if (raise && seen->failed) {
    materialize(L, gidx, (lua_Integer)seen->failed);
    return mfl_push_results(L, lua_gettop(L), 1, 1);
  }
  if (timed_out && seen->unfinished > 0)
    return mfl_raise(L, "Timeout", "%I (of %I) futures unfinished",
                     (lua_Integer)seen->unfinished, (lua_Integer)n);
  lua_settop(L, out);
  lua_pushinteger(L, (lua_Integer)n);
  lua_setfield(L, out, "n");
  return 1;
}

/* Stack: list timeout raise group.  One pass over the runs (a million of
 * them do not fit in the cache). */
static int group_result_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  mfl_group *g = lua_touserdata(L, 4);
  size_t n = (size_t)g->n;
  int raise = lua_isnil(L, 3) || lua_toboolean(L, 3);
  int timed_out = mfl_wait_outcome(L, status) == MF_WAKE_TIMEOUT;
  lua_settop(L, 4);
  mfl_slot_cursor slots;
  mfl_group_push_slots(L, 4, &slots);
  lua_createtable(L, (int)n, 1);
  int out = lua_gettop(L);
  seen_runs seen = {0, 0, 0};
  for (size_t i = 1; i <= n; i++)
    put_result(L, 4, &slots, out, i, raise, &seen);
  return end_result(L, 4, out, n, raise, timed_out, &seen);
}

/* The same inside a run, in slices (collect.c's job at ctx; the group at
 * 4): step 0 sets up, step 1 goes through the runs from c->at. */
static int group_result_sliced_k(lua_State *L, int status, lua_KContext ctx) {
  int job = (int)ctx;
  mfl_collect *c = mfl_collect_resumed(L, status, ctx);
  int raise = lua_isnil(L, 3) || lua_toboolean(L, 3);
  int out = job + 2;
  /* (job + 3: the cursor's table, whatever it held at the yield) */
  mfl_slot_cursor slots = {.slots = job + 1, .table = job + 3, .chunk = -1};
  if (c->step == 0) {
    lua_settop(L, job);
    lua_getiuservalue(L, 4, GROUP_UV_SLOTS);
    lua_createtable(L, prealloc(L, mfl_state_get(L), (lua_Integer)c->count), 1);
    lua_pushnil(L);
    c->step = 1;
    c->at = 0;
    c->acc = 0;
    c->acc2 = 0;
  }
  seen_runs seen = {(size_t)c->acc, c->best_time, (size_t)c->acc2};
  while (c->at < c->count) {
    put_result(L, 4, &slots, out, ++c->at, raise, &seen);
    if (c->at < c->count && mfl_collect_over(L, c, c->at)) {
      c->acc = (lua_Integer)seen.failed;
      c->best_time = seen.failed_at;
      c->acc2 = (lua_Integer)seen.unfinished;
      return mfl_collect_yield(L, c, ctx, group_result_sliced_k);
    }
  }
  return end_result(L, 4, out, c->count, raise, c->reason == MF_WAKE_TIMEOUT,
                    &seen);
}

int mfl_group_list_result(lua_State *L, double timeout, int raise) {
  lua_settop(L, 3);
  mfl_group *g = push_list_group(L, 1);
  size_t n = (size_t)g->n, pending = 0;
  int failure = 0;
  for (size_t i = 0; i < n && !failure; i++) {
    mf_run *run = g->runs[i];
    if (!mf_run_is_final(run))
      pending++;
    else
      failure = raise && mf_run_state_type(run) != MF_COMPLETED;
  }
  mf_wait_mode mode = raise ? MF_WAIT_ALL_FAST : MF_WAIT_ALL;
  if (mfl_slice_run(L, mfl_state_get(L))) /* in a run: in slices */
    return mfl_collect_runs(L, 4, g->runs, n, mode, timeout,
                            group_result_sliced_k);
  if (pending == 0 || failure)
    return group_result_k(L, LUA_OK, 0);
  return mfl_wait(L, g->runs, n, mode, timeout, 0, group_result_k);
}

/* }====== */

static const luaL_Reg list_fields[] = {
    {"__len", list_len}, /* (and __index: a closure of each list's) */
    {"__newindex", list_newindex},
    {"__pairs", list_pairs},
    {"__tostring", list_tostring},
    {NULL, NULL}};

/* core.slot_geometry(flat, chunk_shift): the slots of the maps made inside
 * runs from now on: flat in one table, then chunks of 2^chunk_shift (the
 * tests' and the fuzzer's, to reach the chunks with small maps). */
static int l_slot_geometry(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_Integer flat = luaL_checkinteger(L, 1);
  lua_Integer shift = luaL_checkinteger(L, 2);
  luaL_argcheck(L, flat >= 1 && flat <= MFL_SLICED_PREALLOC, 1,
                "1 to 65536 slots");
  luaL_argcheck(L, shift >= 0 && shift <= SLOT_CHUNK_SHIFT, 2, "0 to 12");
  S->slots_flat = flat;
  S->slots_chunk_shift = (int)shift;
  return 0;
}

void mfl_open_group(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  S->slots_flat = SLOT_FLAT;
  S->slots_chunk_shift = SLOT_CHUNK_SHIFT;
  lua_pushcfunction(L, l_slot_geometry);
  lua_setfield(L, -2, "slot_geometry");
  lua_createtable(L, 0, 3); /* the group's metatable */
  lua_pushcfunction(L, group_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "moonflow.MapGroup");
  lua_setfield(L, -2, "__name");
  mfl_protect_mt(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_group_mt);
  lua_pushcfunction(L, raw_next);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_next);
  /* What a lazy list's metatable gets, besides its mark and group. */
  lua_createtable(L, 0, 7);
  luaL_setfuncs(L, list_fields, 0);
  lua_pushliteral(L, "moonflow.FutureList");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "moonflow.FutureList");
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_list_fields);
}
