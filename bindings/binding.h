/*
 * binding.h -- internals shared by the files of the Lua module.
 *
 * Every run created from Lua has a Future userdata (mfl_future) that points
 * at the engine's mf_run, and an mfl_run in the run's body memory.  The Lua
 * values of a run live in the Future's user values; while the engine holds
 * the run, the Future is pinned in the pins table, so those values outlive
 * every Lua reference the user drops.
 */
#ifndef MFL_BINDING_H
#define MFL_BINDING_H

#include <lauxlib.h>
#include <lua.h>

#include "moonflow_lua.h"

#define MFL_INTERNAL __attribute__((visibility("hidden")))

/* Closes a coroutine's pending to-be-closed variables and resets it
 * (lua_closethread from Lua 5.4.6, lua_resetthread before). */
#if LUA_VERSION_RELEASE_NUM >= 50406
#define mfl_closethread(co, from) lua_closethread((co), (from))
#else
#define mfl_closethread(co, from) ((void)(from), lua_resetthread(co))
#endif

/* The user values of a Future userdata. */
enum {
  MFL_UV_TASK = 1, /* the Task it runs (pins the task's name and function) */
  MFL_UV_ARGS,     /* before start: the argument, or a packed table */
  MFL_UV_CO,       /* while running: the coroutine */
  MFL_UV_RESULT,   /* once final: the result, a packed table, or the error */
  MFL_UV_INFO,     /* failed: { traceback = ..., message = ... } */
  MFL_NUV = MFL_UV_INFO
};

/* Registry keys (their addresses are the keys). */
MFL_INTERNAL extern const char mfl_key_state, mfl_key_attached;
MFL_INTERNAL extern const char mfl_key_future_mt, mfl_key_list_mt,
    mfl_key_task_mt, mfl_key_state_mt, mfl_key_error_mt, mfl_key_unmapped_mt,
    mfl_key_quote_mt, mfl_key_allow_mt;

/* One per lua_State: the module's engine. */
typedef struct mfl_state {
  mf_engine *engine;
  lua_State *L;       /* the main thread: the only state entering Lua */
  int closed;         /* the engine is gone: no Lua entry any more */
  int closing;        /* the state is closing: run callbacks skip Lua */
  int borrowed;       /* the engine is the host's (mf_lua_attach) */
  int on_luv;         /* the engine runs on luv's loop (luv.c) */
  int callback_depth; /* Lua callbacks executing (done callbacks) */
  int pool_size;      /* coroutines in the pool */
  lua_State *spare;   /* a finished coroutine ready to run the next body */
  /* Slots of the pins table: a stack of free ones (cheaper than luaL_ref,
   * which keeps its free list inside the table). */
  int pins_ref, pool_ref; /* registry slots of the pins and pool tables */
  int future_mt_ref;      /* and of the Future metatable (an array slot:
                             cheaper to reach than its key, mfl_key_future_mt) */
  int threads_ref; /* weak-keyed: coroutines of parked runs (no resume) */
  int hooks_ref;   /* the Lua function that runs a run's hooks */
  int print_ref, saved_print_ref; /* log_prints: the logger, the print */
  int *free_pins;
  int free_pin_count, free_pin_capacity, pin_high;
  mf_wake_reason last_wake; /* how the last top-level wait ended */
  double slice;             /* seconds a run computes before it is parked */
  size_t runs_made;         /* runs created, for the collector's pacing */
  lua_Integer slots_flat;   /* group.c: a sliced map's slots in one table */
  int slots_chunk_shift;    /* and past them, in chunks of 2^this */
  int submits_since_turn;   /* task.c: submits since a top-level turn */
  int gc_pacing;            /* tell the collector of runs' C memory */
  /* Preemption (preempt.c): written by the loop thread, read by the
   * signal handler running on that same thread. */
  struct mfl_watch *watch;        /* registered with the watchdog, or NULL */
  lua_State *volatile running_co; /* the coroutine executing in a step */
  volatile int tick_hooked;       /* the hook is set on hooked_co */
  unsigned long slice_step; /* mfl_slice_clock: the step it was asked in */
  uint64_t slice_since;     /* and that step's first reading */
  uint64_t slice_look;      /* mfl_slice_over's last reading (or the clock's) */
  uint64_t slice_chunk;     /* the step's longest time between two readings */
  lua_State *volatile hooked_co;
  int alloc_failing; /* the hook made the allocator fail (preempt.c) */
  lua_Alloc saved_alloc;
  void *saved_alloc_data;
  int remote_runners;  /* live runners that copy (threads, processes) */
  int log_level;       /* MFL_LOG_*: lines below it are not written */
  int lifecycle_level; /* the same for lifecycle lines: OFF unless
                          MOONFLOW_LOG_LEVEL was set */
  struct mfl_io *io;   /* I/O inside runs (io.c), made on first use */
  /* The run store and the cache (store_lua.c, cache.c); NULL: off. */
  struct mfl_store *store;
  struct mfl_cache *cache;
  int observing;                  /* the engine observer is installed */
  struct mfl_submit_note *submit; /* what the next submit records */
  /* Boxes made inside a finalizer (mfl_note_box), which Lua may never
   * finalize: released by the state's own __gc if still here. */
  struct mfl_noted_box *noted;
  size_t noted_count, noted_capacity;
} mfl_state;

typedef enum mfl_kind { MFL_TASK, MFL_FLOW, MFL_EXTERNAL } mfl_kind;

/* Why a run's coroutine yielded: set at every yield site, read by the step
 * (runner.c) when lua_resume returns LUA_YIELD. */
typedef enum mfl_yield {
  MFL_YIELD_BARE,      /* a coroutine.yield() of the body: yields once */
  MFL_YIELD_PARKED,    /* an API call parked the run with the engine */
  MFL_YIELD_PREEMPTED, /* the hook: it computed for a whole time slice */
  MFL_YIELD_STOPPED,   /* the hook: it computed past its deadline */
} mfl_yield;

/* The body of a run created from Lua. */
typedef struct mfl_run {
  mfl_state *S;
  lua_State *co; /* the coroutine while the body runs, else NULL */
  void *remote;  /* the job a remote attempt is parked on (runners.c) */
  struct mfl_io_wait *io; /* the I/O it is parked on (io.c): stopped when
                             its body is abandoned */
  struct mfl_note *note;  /* store or cache: what its final state carries */
  /* A run of a map made without its Future (group.c): its values are in
   * the group until the Future is made; NULL once it is. */
  struct mfl_group *group;
  int pin;         /* ref in the pins table while held, else LUA_NOREF */
  int group_index; /* in its map's group (group.c): its index there */
  /* (small fields last, packed: the record is one malloc chunk per run) */
  signed char nargs;    /* arguments in MFL_UV_ARGS: 0, 1, or packed (-1) */
  signed char nresults; /* results in MFL_UV_RESULT: 0, 1, or packed (-1) */
  unsigned char kind;
  unsigned char needs_resolve;  /* arguments hold futures or wrappers */
  unsigned char resolve_tables; /* ... inside tables (resolving may raise) */
  unsigned char has_outcome;    /* a flow chose its final state */
  unsigned char yield;          /* mfl_yield: why co yielded last */
  unsigned char co_in_box;      /* co is anchored in MFL_UV_CO */
  unsigned char outcome_type;   /* mf_state_type (has_outcome) */
  unsigned char outcome_name;   /* mf_state_name (has_outcome) */
  unsigned keep_args : 1;       /* retries: the arguments serve every attempt */
  unsigned quiet : 1;           /* no lifecycle log lines */
  unsigned log_prints : 1;      /* print goes to the log during its steps */
  unsigned noted : 1;           /* passed on errors of others (origin.c) */
  unsigned cached : 1;          /* its task caches or persists results */
  unsigned runner_flow : 1;     /* a flow with a task_runner (runners.c) */
  unsigned group_held : 1;      /* held: its group is pinned for it */
  unsigned group_result : 1;    /* its result is in its group's slot */
  unsigned making_future : 1;   /* group.c's materialize is making its
                                   Future: it does not retire meanwhile */
} mfl_run;

typedef struct mfl_future {
  const char *mark; /* &mfl_key_future_mt: what tells a Future's box */
  mf_run *run;      /* one reference, dropped by __gc */
} mfl_future;
/* The Future box at idx, or NULL for any other value: told by its size
 * and mark, not its metatable (a third of the cost, and no userdata of
 * another kind passes, whatever debug.setmetatable did to it). */
static inline mfl_future *mfl_future_box(lua_State *L, int idx) {
  /* Two calls, not three: lua_touserdata is NULL for anything but a
   * userdata, and lua_rawlen 0 for a light one. */
  mfl_future *f = lua_touserdata(L, idx);
  if (!f || lua_rawlen(L, idx) != sizeof(mfl_future))
    return NULL;
  return f->mark == &mfl_key_future_mt ? f : NULL;
}
/* future.c: drops a Future's reference (a noted box, mfl_note_box). */
MFL_INTERNAL void mfl_release_future(void *box);

/* A Task (or Flow) definition. */
typedef struct mfl_task {
  const char *mark; /* &mfl_key_task_mt: what tells a Task's box */
  uint64_t runs;    /* runs created: the n of "<name>-<n>" */
  unsigned char is_flow;
  /* The run store's copy of its name and tags (mfl_store_intern) and the
   * store it is of (mfl_store_serial; 0: none yet). */
  const char *store_shared;
  uint64_t store_serial;
} mfl_task;
/* The Task (or Flow) box at idx, or NULL for any other value: told by its
 * mark, as a Future's (mfl_future_box). */
static inline mfl_task *mfl_task_box(lua_State *L, int idx) {
  mfl_task *t = lua_touserdata(L, idx);
  if (!t || lua_rawlen(L, idx) < sizeof(mfl_task))
    return NULL;
  return t->mark == &mfl_key_task_mt ? t : NULL;
}
/* Task user values: 1 function, 2 name (string), 3 options table. */
enum { MFL_TASK_UV_FN = 1, MFL_TASK_UV_NAME, MFL_TASK_UV_OPTS, MFL_TASK_NUV };

/* module.c */
/* Registers functions (or pushes one) with the state as upvalue 1, which
 * mfl_state_get reads without a registry lookup. */
MFL_INTERNAL void mfl_setfuncs(lua_State *L, const luaL_Reg *funcs);
MFL_INTERNAL void mfl_pushcfunction(lua_State *L, lua_CFunction fn);
/* getmetatable(v) gives the type's name (__metatable = __name): the
 * metatable on top cannot be read to forge an object, nor changed.  Every
 * moonflow metatable is protected so. */
MFL_INTERNAL void mfl_protect_mt(lua_State *L);
/* Registers the metatable on top (popped) under key, marking it so that
 * mfl_is_kind can recognise it without a registry lookup. */
MFL_INTERNAL void mfl_register_mt(lua_State *L, const char *key);
/* Pushes the table of pinned Futures. */
#define mfl_push_pins(L, S) lua_rawgeti((L), LUA_REGISTRYINDEX, (S)->pins_ref)
/* Stores the value on top (popped) in the pins table at pins_idx; returns
 * its slot.  mfl_unpin empties a slot. */
MFL_INTERNAL int mfl_pin(lua_State *L, mfl_state *S, int pins_idx);
MFL_INTERNAL void mfl_unpin(lua_State *L, mfl_state *S, int pins_idx, int slot);
MFL_INTERNAL mfl_state *mfl_state_get(lua_State *L);
/* Whether the value at idx can be a table key (not nil, not NaN): values
 * of the user's (an error, a future's result) used as keys. */
MFL_INTERNAL int mfl_is_key(lua_State *L, int idx);
/* noted_boxes.c */
/* A box (a userdata with a __gc that releases C resources) made inside a
 * finalizer may have no finalizer itself: Lua gives none to an object made
 * while lua_close runs the finalizers.  mfl_note_box notes such a box
 * (only inside a finalizer: cheap elsewhere) with the function that
 * releases it; its __gc calls mfl_forget_box; the state's __gc releases
 * those still noted, after the engine closed.  Call mfl_note_box before the
 * box holds anything (it may raise a memory error). */
typedef void (*mfl_release_fn)(void *box);
MFL_INTERNAL void mfl_note_box(lua_State *L, mfl_state *S, void *box,
                               mfl_release_fn release);
MFL_INTERNAL void mfl_forget_box(mfl_state *S, void *box);
/* Releases the boxes still noted (the state's __gc). */
MFL_INTERNAL void mfl_release_noted_boxes(mfl_state *S);
MFL_INTERNAL void mfl_push_future_of(lua_State *L, mf_run *run);
/* Whether the run's Future can be pushed (mfl_push_future_of): it is
 * held, pinned or in its pinned group. */
#define mfl_run_reachable(lr)                                                  \
  ((lr)->pin != LUA_NOREF || ((lr)->group && (lr)->group_held))
MFL_INTERNAL mfl_future *mfl_to_future(lua_State *L, int idx);
MFL_INTERNAL mfl_future *mfl_check_future(lua_State *L, int idx);
MFL_INTERNAL mf_run *mfl_current_run(lua_State *L, mfl_state *S);
MFL_INTERNAL int mfl_is_kind(lua_State *L, int idx, const char *key);
/* Stack indices of values a loop that makes many Futures looks up once. */
typedef struct mfl_hot {
  int future_mt, pins;
} mfl_hot;
MFL_INTERNAL void mfl_push_hot(lua_State *L, mfl_state *S, mfl_hot *hot);
/* Makes a run of a task without a Future, for a map's group. */
MFL_INTERNAL mf_run *mfl_new_grouped_run(lua_State *L, mfl_state *S);
MFL_INTERNAL mfl_future *mfl_new_future(lua_State *L, mfl_state *S,
                                        mfl_kind kind, int task_idx,
                                        const mfl_hot *hot);
MFL_INTERNAL int mfl_run_name(lua_State *L, mf_run *run);
MFL_INTERNAL void mfl_report(mfl_state *S, const char *what, const char *msg);
/* The text of the value at idx, never raising (a __tostring that raises or
 * returns no string gives "(error object: <type>)"); pushes it. */
MFL_INTERNAL const char *mfl_describe(lua_State *L, int idx);
/* Raises a UsageError unless the value at idx is a number (not NaN);
 * what names the argument ("mf.sleep: seconds"). */
MFL_INTERNAL double mfl_check_number(lua_State *L, int idx, const char *what);

/* runner.c: run callbacks, coroutines and the step. */
MFL_INTERNAL extern const mf_run_ops mfl_run_ops, mfl_external_ops;
/* Stores the n values on top of co (which may be L itself) as the result
 * of the run whose Future is at box; raises when L cannot hold them. */
MFL_INTERNAL void mfl_store_results(lua_State *L, mfl_run *lr, int box,
                                    lua_State *co, int n);
/* Parks L, the run's own coroutine, after an engine park call: every API
 * call that waits in a run ends with it. */
MFL_INTERNAL int mfl_yield_parked(lua_State *L, mf_run *run, lua_KContext ctx,
                                  lua_KFunction k);
/* Raises a UsageError when L cannot yield (inside a C call without a
 * continuation): checked before anything is registered with the engine. */
MFL_INTERNAL void mfl_check_yieldable(lua_State *L, mf_run *run,
                                      const char *what);
MFL_INTERNAL void mfl_open_runner(lua_State *L);
/* Whether each run's C memory is added to the collector's work (on by
 * default; the program, which runs it in generational mode, turns it off). */
MFL_INTERNAL void mfl_gc_pacing(lua_State *L, int on);

/* errors.c */
MFL_INTERNAL int mfl_push_error(lua_State *L, const char *kind, const char *fmt,
                                ...);
MFL_INTERNAL int mfl_raise(lua_State *L, const char *kind, const char *fmt,
                           ...);
MFL_INTERNAL void mfl_open_errors(lua_State *L);

/* codec.c (codec.h): core.encode, core.decode; after mfl_open_errors */
MFL_INTERNAL void mfl_open_codec(lua_State *L);

/* wait.c: waiting from Lua, in a run or at top level. */
typedef int (*mfl_continuation)(lua_State *L, int status, lua_KContext ctx);
/* Waits for the targets: parks the run L is (then k runs when it is
 * resumed), or drives the loop at top level (then k runs at once); k gets
 * status LUA_YIELD.  Raises where no wait can happen. */
MFL_INTERNAL int mfl_wait(lua_State *L, mf_run *const *targets, size_t n,
                          mf_wait_mode mode, double timeout, lua_KContext ctx,
                          mfl_continuation k);
/* The same for a sleep of that many seconds. */
MFL_INTERNAL int mfl_sleep(lua_State *L, double seconds, lua_KContext ctx,
                           mfl_continuation k);
/* The run L is, for a call that is about to wait (what names it): NULL at
 * top level; raises a UsageError where no wait can happen. */
MFL_INTERNAL mf_run *mfl_waiting_run(lua_State *L, mfl_state *S,
                                     const char *what);
MFL_INTERNAL double mfl_opt_timeout(lua_State *L, int idx);
/* In a continuation: how the wait ended (MF_WAKE_DONE or MF_WAKE_TIMEOUT;
 * MF_WAKE_DONE when status says no wait happened); raises Deadlock when
 * the engine found the wait could never end. */
MFL_INTERNAL mf_wake_reason mfl_wait_outcome(lua_State *L, int status);
/* A continuation that gives true when the wait ended with its runs final
 * (false: timed out). */
MFL_INTERNAL int mfl_wait_done_k(lua_State *L, int status, lua_KContext ctx);
/* Pushes a snapshot (a table of the Futures) of the array at idx and a
 * userdata holding a reference to each of their runs (released when it is
 * collected); *runs points at them.  Returns the count.  Raises on a
 * non-Future. */
MFL_INTERNAL size_t mfl_snapshot(lua_State *L, int idx, int dedupe,
                                 mf_run ***runs);
/* The runs of the snapshot userdata at idx (in a continuation). */
MFL_INTERNAL mf_run **mfl_snapshot_runs(lua_State *L, int idx);
/* The holder of runs' references: pushes a userdata with room for n runs,
 * of which the first count are released when it is collected. */
typedef struct mfl_run_holder {
  mfl_state *S;
  size_t count;
  mf_run *runs[];
} mfl_run_holder;
MFL_INTERNAL mfl_run_holder *mfl_new_run_holder(lua_State *L, size_t n);
/* run_set.c: a set of runs by address, with room for n (pushed: a
 * userdata); add returns 1 when run was not in it yet, else 0. */
typedef struct mfl_run_set mfl_run_set;
MFL_INTERNAL mfl_run_set *mfl_run_set_new(lua_State *L, size_t n);
MFL_INTERNAL int mfl_run_set_add(mfl_run_set *set, const mf_run *run);

/* collect.c: waiting on a list of Futures inside a run, in slices (only
 * where mfl_slice_run gives a run).  mfl_collect_list snapshots the list at idx
 * (as mfl_snapshot), waits for its runs per mode and timeout, yielding when
 * the run's slice is used up, then calls fin(L, LUA_OK, ctx): ctx is the
 * job's stack index (an mfl_collect; the snapshot is at ctx - 2, the slots
 * above ctx are fin's).  fin reads the outcome from the job, and slices its
 * own loops with mfl_collect_over/mfl_collect_yield (continuing in fin, so
 * it must resume from its own fields: step, at, acc). */
typedef struct mfl_collect {
  lua_KFunction fin;
  mf_run **runs;                /* the snapshot's runs (count of them) */
  mf_run **pending;             /* runs to wait for, npending of them (each
                                   referenced: a map's group gives back the records
                                   of runs that end, group.c) */
  mfl_run_holder *pending_held; /* the holder of pending */
  lua_Integer length;           /* elements of the list */
  lua_Integer next;             /* the next element to take */
  size_t count, cursor, npending;
  double deadline; /* on mf_engine_now's clock; < 0: none */
  mf_wait_mode mode;
  int phase, dedupe;
  int waited;            /* a wait happened */
  mf_wake_reason reason; /* how the last wait ended (DONE when none) */
  mf_run *self;          /* the run, and when its step began */
  uint64_t since;
  int step; /* the finisher's: where it is */
  size_t at;
  lua_Integer acc, acc2;
  double best_time;
} mfl_collect;
MFL_INTERNAL int mfl_collect_list(lua_State *L, int idx, int dedupe,
                                  mf_wait_mode mode, double timeout,
                                  lua_KFunction fin);
/* The same for runs[0..n) that the value at anchor keeps alive (put in
 * the snapshot's slot): nothing is copied or referenced. */
MFL_INTERNAL int mfl_collect_runs(lua_State *L, int anchor, mf_run **runs,
                                  size_t n, mf_wait_mode mode, double timeout,
                                  lua_KFunction fin);
/* The job at ctx, given to a finisher or a collection's continuation; when
 * status says it was resumed after a yield, a step (and its slice) starts. */
MFL_INTERNAL mfl_collect *mfl_collect_resumed(lua_State *L, int status,
                                              lua_KContext ctx);
/* A finisher that gives true when every run waited for ended in time. */
MFL_INTERNAL int mfl_collect_done_k(lua_State *L, int status, lua_KContext ctx);
MFL_INTERNAL int mfl_collect_over(lua_State *L, mfl_collect *c, size_t i);
MFL_INTERNAL int mfl_collect_yield(lua_State *L, mfl_collect *c,
                                   lua_KContext ctx, lua_KFunction k);
MFL_INTERNAL void mfl_open_wait(lua_State *L);

/* luv.c */
MFL_INTERNAL uv_loop_t *mfl_luv_loop(lua_State *L);
MFL_INTERNAL int mfl_luv_running(lua_State *L, mfl_state *S);

/* future.c */
/* Pushes the results of the final run of the Future at idx: all of them,
 * or only the first.  A run that did not complete raises its error (or
 * pushes it, when raise is 0). */
MFL_INTERNAL int mfl_push_results(lua_State *L, int idx, int raise,
                                  int first_only);
/* The same for f, the Future at idx its caller has checked. */
MFL_INTERNAL int mfl_push_results_of(lua_State *L, int idx, mfl_future *f,
                                     int raise, int first_only);
/* Pushes the error value of the final run at idx that did not complete
 * (without counting as handling it). */
MFL_INTERNAL void mfl_push_error_value(lua_State *L, int idx);
MFL_INTERNAL void mfl_open_future(lua_State *L);

/* The failed run of runs[0..n) that finished first (fail-fast), as an
 * index from 1, or 0. */
MFL_INTERNAL size_t mfl_first_failure(mf_run *const *runs, size_t n);
/* One step of that search: the run, at that index, becomes *best when it
 * failed (final, not completed) before *best_at (or *best is 0). */
MFL_INTERNAL void mfl_note_failure(mf_run *run, size_t index, size_t *best,
                                   double *best_at);

/* group.c: the runs of a map made without a Future each, until one is
 * asked for. */
typedef struct mfl_group mfl_group;
/* Pushes a group for length runs of the task at task_idx, then its
 * FutureList (empty, lazy). */
MFL_INTERNAL void mfl_group_push_new(lua_State *L, mfl_state *S, int task_idx,
                                     lua_Integer length);
/* Accesses to a group's slots in order of index (group.c): the table that
 * holds the slot last reached stays on the stack at `table`. */
typedef struct mfl_slot_cursor {
  int slots, table;  /* stack indices: the slots table, the holding table */
  lua_Integer chunk; /* the slots' chunk at `table` (0: the array; -1: none) */
} mfl_slot_cursor;
/* The new run (made, not yet submitted) joins the group at gidx as its
 * next run, with the value at arg_idx as its one argument (in the slot the
 * cursor reaches); the group takes the run's reference and is pinned while
 * the engine holds it. */
MFL_INTERNAL void mfl_group_adopt(lua_State *L, int gidx, mfl_slot_cursor *c,
                                  mf_run *run, int arg_idx);
/* Pushes the group's slots table and a place for the cursor's table, and
 * sets the cursor, which mfl_group_adopt takes. */
MFL_INTERNAL void mfl_group_push_slots(lua_State *L, int gidx,
                                       mfl_slot_cursor *c);
/* Takes back the last run adopted (its submit failed): released. */
MFL_INTERNAL void mfl_group_drop_last(lua_State *L, int gidx);
/* Cancels every run of the group at gidx. */
MFL_INTERNAL void mfl_group_cancel(lua_State *L, int gidx);
/* Makes the Future of a grouped run and pushes it (nil when nothing holds
 * the run any more); the run is an ordinary one from then on. */
MFL_INTERNAL void mfl_group_push_future(lua_State *L, mfl_run *lr);
/* The engine stopped holding a grouped run. */
MFL_INTERNAL void mfl_group_release(lua_State *L, mfl_run *lr);
/* Pushes the table holding a grouped run's slot in its group (group.c),
 * then the function and the argument of its attempt; returns the count of
 * arguments.  (It leaves two values below that table.) */
MFL_INTERNAL int mfl_group_push_attempt(lua_State *L, mfl_run *lr);
/* Pops the value on top into the run's slot, in the table that holds it
 * (at slot_table, as mfl_group_push_attempt pushed it): the grouped run's
 * result. */
MFL_INTERNAL void mfl_group_store_result(lua_State *L, int slot_table,
                                         mfl_run *lr);
/* Whether the value at idx is a FutureList; a lazy one has every Future
 * made, so that it can be read raw.  Code that reads lists raw calls it. */
MFL_INTERNAL int mfl_list_expand(lua_State *L, int idx);
/* How many runs of the lazy list at idx gave their records back (0 for
 * any other value): for the specs and benches. */
MFL_INTERNAL lua_Integer mfl_list_retired(lua_State *L, int idx);
/* Whether the FutureList at 1 is lazy and holds exactly its runs (nothing
 * written in it raw): then list:wait(timeout), list:result(timeout,
 * raise) and mf.wait(list, timeout) are answered from its group by these
 * three.  A lazy list that was changed raw is expanded. */
MFL_INTERNAL int mfl_group_list_ready(lua_State *L);
MFL_INTERNAL int mfl_group_list_wait(lua_State *L, double timeout);
MFL_INTERNAL int mfl_group_list_result(lua_State *L, double timeout, int raise);
MFL_INTERNAL int mfl_group_wait_split(lua_State *L, double timeout);
MFL_INTERNAL void mfl_open_group(lua_State *L);

/* origin.c: where an error was first raised. */
/* The current run (or the top level) passes on the error at err, which
 * the run at from_box raised; how: "result", "unhandled", "returned". */
MFL_INTERNAL void mfl_note_reraise(lua_State *L, mfl_state *S, int err,
                                   int from_box, const char *how);
/* The run (its Future at box) fails with the error at err: its failure
 * info (a table at info) gets what reports need, and the link to the run
 * the error came from when the run passed it on; the run's notes are
 * forgotten.  mfl_forget_reraises forgets them (an attempt that
 * completed).  Raises nothing but memory errors: the scheduler calls it. */
MFL_INTERNAL void mfl_link_origin(lua_State *L, mf_run *run, int box, int err,
                                  int info);
MFL_INTERNAL void mfl_forget_reraises(lua_State *L, mfl_run *lr, int box);
/* mfl_describe, but a table without __tostring is shown readably. */
MFL_INTERNAL const char *mfl_describe_error(lua_State *L, int idx);
/* The traceback a State shows: the run's own, then the one of the run its
 * error came from (and so on); or nil. */
MFL_INTERNAL void mfl_push_full_traceback(lua_State *L, int box);
/* Pushes the Future of a run that failed with an error of its own and
 * returns 1, if that Future still exists; else pushes nothing, returns 0. */
MFL_INTERNAL int mfl_push_failed_future(lua_State *L, mf_run *run);
/* A run at box that never started (NotReady) keeps the Future of the run
 * the cascade began with, for reports. */
MFL_INTERNAL void mfl_keep_cause(lua_State *L, mf_run *run, int box);
/* The report of the unhandled failure of the run at box (report.lua), or
 * nil when it cannot be made. */
MFL_INTERNAL void mfl_push_failure_report(lua_State *L, int box);
MFL_INTERNAL void mfl_open_origin(lua_State *L);

/* state.c */
/* The current State, or every State so far, of the Future at idx. */
MFL_INTERNAL void mfl_push_state(lua_State *L, int idx);
MFL_INTERNAL void mfl_push_history(lua_State *L, int idx);
/* The State a run is about to end in (its outcome), for hooks and the
 * retry condition: type, name, message and traceback of the outcome. */
MFL_INTERNAL void mfl_push_outcome_state(lua_State *L, int idx);
MFL_INTERNAL void mfl_open_state(lua_State *L);

/* args.c */
/* Plain tables in arguments are searched for futures this deep at most. */
#define MFL_MAX_DEPTH 200
MFL_INTERNAL int mfl_scan_arg(lua_State *L, int idx, mf_run *run);
MFL_INTERNAL int mfl_scan_collect(lua_State *L, int idx);
MFL_INTERNAL void mfl_add_collected(lua_State *L, int idx, mf_run *run);
MFL_INTERNAL void mfl_resolve_value(lua_State *L, int idx);
MFL_INTERNAL void mfl_open_args(lua_State *L);

/* control.c */
enum {
  MFL_LOG_DEBUG = 10,
  MFL_LOG_INFO = 20,
  MFL_LOG_WARNING = 30,
  MFL_LOG_ERROR = 40,
  MFL_LOG_OFF = 100
};
/* preempt.c: time slices and timeouts of computing runs. */
/* Around each step of a run's coroutine. */
/* deadline: the run's, in monotonic seconds (mf_run_deadline), < 0: none. */
MFL_INTERNAL void mfl_step_began(mfl_state *S, lua_State *co, double deadline);
MFL_INTERNAL void mfl_step_ended(mfl_state *S, lua_State *co);
MFL_INTERNAL void mfl_preempt_start(mfl_state *S);
MFL_INTERNAL void mfl_preempt_stop(mfl_state *S);
MFL_INTERNAL void mfl_preempt_configure(mfl_state *S);
/* A C call that computes long inside a run (map) yields between chunks:
 * mfl_slice_run gives the run L is the coroutine of, where it can yield to
 * the scheduler (else NULL: outside a run, a callback, a coroutine of the
 * user's, a C call that cannot yield, preemption off); mfl_slice_over says
 * whether the run, computing since `since` (mfl_slice_clock), used up its
 * slice or passed its deadline; mfl_yield_slice yields (parked for the
 * slice, stopped past the deadline), k continuing. */
MFL_INTERNAL mf_run *mfl_slice_run(lua_State *L, mfl_state *S);
/* Inside a run, the tables of a long map are made with room for this many
 * elements: making (and clearing) a table of a million slots at once takes
 * longer than a slice.  A group's slots go on in chunks (group.c); the
 * results of list:result() grow as they fill. */
#define MFL_SLICED_PREALLOC 65536
MFL_INTERNAL uint64_t mfl_slice_clock(mfl_state *S);
MFL_INTERNAL int mfl_slice_over(mfl_state *S, lua_State *L, mf_run *run,
                                uint64_t since);
MFL_INTERNAL int mfl_yield_slice(lua_State *L, mfl_state *S, mf_run *run,
                                 lua_KContext ctx, lua_KFunction k);
/* Puts back the allocator the hook made fail to stop a run. */
MFL_INTERNAL void mfl_restore_alloc(mfl_state *S, lua_State *L);
/* Resumes a coroutine of the user's inside a step, tracking it so its time
 * counts (the replaced coroutine.resume). */
MFL_INTERNAL void mfl_open_preempt(lua_State *L);
/* Signals the watchdog sent this state's loop thread (core.preempt_signals). */
MFL_INTERNAL unsigned long mfl_preempt_signals(const mfl_state *S);
MFL_INTERNAL int mfl_log_level_from_env(void);
MFL_INTERNAL void mfl_log_write(int level, const char *who,
                                const char *message);
/* Logs a line about the run when level passes the threshold. */
MFL_INTERNAL void mfl_log_run(mfl_state *S, int level, mf_run *run,
                              const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
MFL_INTERNAL void mfl_open_log(lua_State *L);
MFL_INTERNAL void mfl_open_control(lua_State *L);

/* store_lua.c: the run store seen from the bindings. */
/* What a run's final state carries to the store and the cache: the error
 * of its last attempt, its cache key and encoded result.  Made on demand,
 * freed when the run is final. */
typedef struct mfl_note {
  char *message, *traceback;
  char *key;          /* the cache key; NULL: none */
  double expires;     /* wall seconds; 0: never */
  unsigned char keep; /* the result is to be kept (a key, or persisted) */
  char *value;        /* the encoded result, once completed */
  size_t len;
} mfl_note;
MFL_INTERNAL mfl_note *mfl_note_of(mfl_run *lr);
/* Records the error at err (and the traceback string at tb, 0: none) in the
 * run's note, when the store is on. */
MFL_INTERNAL void mfl_note_error(lua_State *L, mfl_run *lr, int err, int tb);
/* Before a submit from Lua (the store is on): the task's name and tags and
 * a summary of the nargs arguments from first, for the next submit. */
MFL_INTERNAL void mfl_store_before_submit(lua_State *L, mfl_state *S,
                                          mf_run *run, int task_idx, int first,
                                          int nargs);
/* Opens the store at path (NULL or "off": closes it); 0, or -1 with the
 * message pushed. */
MFL_INTERNAL int mfl_store_configure(lua_State *L, mfl_state *S,
                                     const char *path);
/* The run got a name of its own after its submit (task_run_name). */
MFL_INTERNAL void mfl_store_renamed(mfl_state *S, mf_run *run);
/* Installs the engine observer (once). */
MFL_INTERNAL void mfl_store_observe(mfl_state *S);
/* Closes the store (state close), after the engine's last states. */
MFL_INTERNAL void mfl_store_shutdown(mfl_state *S);
/* A log line of the run (NULL: none) for the store. */
MFL_INTERNAL void mfl_store_log_line(mfl_state *S, mf_run *run, int level,
                                     const char *message);
MFL_INTERNAL void mfl_open_store(lua_State *L);
/* store_read.c: core.store_reader for the CLI. */
MFL_INTERNAL void mfl_open_store_reader(lua_State *L);

/* cache.c: results kept and reused. */
/* At an attempt's start, with the body function and its nargs arguments
 * on top of L: 1 when a cached result was found (stored as the run's
 * result), else 0 (the key noted for the result's write). */
MFL_INTERNAL int mfl_cache_start(lua_State *L, mf_run *run, mfl_run *lr,
                                 int box, int nargs);
/* After the body returned (results stored): encodes the result to keep;
 * 0, or -1 with the error pushed (a value that cannot be kept). */
MFL_INTERNAL int mfl_cache_result(lua_State *L, mfl_run *lr, int box);
/* The final Completed state of a run that kept its result: remembered in
 * this process (value copied). */
MFL_INTERNAL void mfl_cache_remember(mfl_state *S, const mfl_note *note);
MFL_INTERNAL void mfl_cache_free(mfl_state *S);
MFL_INTERNAL void mfl_open_cache(lua_State *L);

/* flow.c */
MFL_INTERNAL void mfl_open_flow(lua_State *L);

/* io.c: I/O inside runs (io.h).  core.io; the I/O a run's abandoned body
 * was parked on is stopped; everything is closed before the engine. */
MFL_INTERNAL void mfl_open_io(lua_State *L);
MFL_INTERNAL void mfl_io_abandon(mfl_run *lr);
MFL_INTERNAL void mfl_io_close_state(mfl_state *S);

/* task.c */
MFL_INTERNAL void mfl_open_task(lua_State *L);

/* runners.c: task runners that copy (runners.h has the rest). */
/* mf_run_data of a flow run whose flow has a task_runner. */
/* At an attempt's start, with the task's function on top: when the run
 * executes on a runner that copies, replaces it by the remote attempt and
 * its first two arguments (the runner, the function); returns how many
 * values it added (0 or 2). */
MFL_INTERNAL int mfl_remote_prepare(lua_State *L, mf_run *run, int box);
/* The run's remote attempt was abandoned while parked: its job goes
 * (touches no Lua: also while the state closes). */
MFL_INTERNAL void mfl_remote_abandon(mfl_run *lr);
MFL_INTERNAL void mfl_open_runners(lua_State *L);

#endif
