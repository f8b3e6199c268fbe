/*
 * engine.h -- the engine record, and the scheduler's and timers' internals.
 */
#ifndef MF_ENGINE_H
#define MF_ENGINE_H

#include <stdatomic.h>

#include "heap.h"
#include "run.h"

/* The longest delay or timeout the engine arms (about 31 years): longer
 * ones, infinity included, are clamped to it, so that a timer's
 * milliseconds never overflow. */
#define MF_MAX_SECONDS 1e9

struct mf_engine {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  unsigned char owns_loop;
  unsigned char closing;
  unsigned char draining;
  unsigned char interrupted;
  unsigned char timers_firing;
  unsigned char end_pass;      /* mf_engine_end_pass was called */
  unsigned char pass_cut;      /* the last pass ended on its budget */
  unsigned char force_cancel;  /* closing: cancel without clean-up */
  unsigned char step_only;     /* mf_config.step_only */
  unsigned char no_preemption; /* mf_config.no_preemption */
  uint64_t random_state;       /* xorshift: retry jitter */

  uv_idle_t idle;        /* active while the ready or done queue has entries */
  uv_async_t post_async; /* wakes the loop for mf_engine_post */
  uv_mutex_t post_lock;  /* guards post_head/post_tail */
  struct mf_post *post_head, *post_tail;
  atomic_int posts_waiting; /* a hint, set by posters: posts are queued */
  unsigned max_steps;
  double pass_budget;          /* seconds a scheduler pass may take */
  double pass_started;         /* when the pass running began; < 0: none */
  double longest_pass;         /* mf_engine_longest_pass */
  unsigned char running_loop;  /* inside the engine's own uv_run */
  unsigned char top_wait_over; /* the top-level wait's target was reached */
  void (*close_fn)(mf_engine *, void *);
  void *close_data;
  mf_observe_fn observe; /* mf_engine_observe: NULL when none */
  void *observe_data;
  uv_timer_t timer; /* due at the earliest deadline of the timer heap */
  double timer_due; /* < 0: timer stopped */
  /* mf_engine_set_start_gate: while starts_held, runs to start wait;
   * gate_timer opens them again (and the gate is asked anew). */
  mf_start_gate_fn start_gate;
  void *start_gate_data;
  unsigned char starts_held;
  uv_timer_t gate_timer;

  /* Ready runs, in two FIFOs served in turn while both have runs: those
   * to start (or that gave up their slice: mf_run_yield), and those woken
   * from a wait (a timer, I/O, a run they waited for), so that a map's
   * new runs never keep a woken run waiting for long. */
  mf_run *ready_head, *ready_tail;
  mf_run *woken_head, *woken_tail;
  unsigned char woken_last; /* the last pop took a woken run */
  /* Final runs whose done callbacks are due: a ring of held runs (a run
   * may still sit in the ready queue as a zombie, so it has no link). */
  mf_run **done;
  size_t done_first, done_count, done_cap;

  mf_waiter **heap;          /* min-heap of armed deadlines */
  size_t heap_len, heap_cap; /* heap_cap > waiters_out: adding never fails */
  size_t waiters_out;        /* waiters handed out by mf__waiter_alloc */

  mf_run *parked;     /* every run whose waiter is armed */
  mf_run *first_root; /* live runs without a parent (sibling-linked) */
  mf_run *top_flows, *top_flows_last; /* live top-level flows, oldest first */
  mf_limit *limits;
  size_t live_roots;

  mf_run *current; /* the run whose body is executing */
  int depth;       /* engine frames on the C stack (drain, close) */

  uint64_t next_id;
  size_t live; /* submitted runs not yet final */
  unsigned epoch;

  /* The root scope: unhandled failures of runs outside any flow. */
  mf_run *unhandled_first, *unhandled_last;

  /* Memory: run records and waiters come from a heap of the engine's own
   * (a map makes a million of each).  The engine's own memory outlives
   * close while runs remain (a host may read a run after closing the
   * engine). */
  size_t runs_alive;
  unsigned char handles_closed;
  int handles_closing; /* handles whose close callback is still due */
  mf_heap *records;    /* NULL: malloc's (under AddressSanitizer) */
  mf_heap *tended;     /* a host's heap kept ahead too (mf_engine_tend_heap) */
  struct mf_prefault { /* regions made ahead, on the thread pool */
    uv_work_t req;
    mf_engine *engine;
    mf_heap *heap; /* for which; NULL: not busy */
    void *region;  /* (written by the pool's thread, read after) */
  } prefaults[2 * MF__HEAP_SPARES_MAX];
  int prefaulting;          /* of them busy */
  unsigned allocs_unlooked; /* run records made since the heaps' last look */

  double wall_offset; /* wall seconds minus monotonic seconds */
  double clock_cache; /* monotonic seconds, refreshed every few uses */
  unsigned clock_uses;
  mf_error_fn on_error;
  void *error_data;
  void *data;
};

/* Scheduler (sched.c). */
MF_INTERNAL void mf__sched_push(mf_engine *e, mf_run *run,
                                mf_ready_action action);
/* The same at the back of the runs to start (a yield: mf_run_sleep 0). */
MF_INTERNAL void mf__sched_push_back(mf_engine *e, mf_run *run);
/* Returns 0 or MF_ENOMEM (the callbacks are then never called). */
MF_INTERNAL int mf__sched_push_done(mf_engine *e, mf_run *run);
MF_INTERNAL mf_run *mf__sched_pop_done(mf_engine *e);
MF_INTERNAL void mf__sched_drop_ready(mf_engine *e);
/* Drops the runs at the heads of both queues that are no longer ready
 * (final or parked again while queued), their queue holds released, as a
 * pass does on its way: after a pass that ended early, or a wait that
 * returned between two passes, none is left to look like work
 * (mf_engine_timeout). */
MF_INTERNAL void mf__sched_drop_zombies(mf_engine *e);
MF_INTERNAL void mf__sched_drain(mf_engine *e);
MF_INTERNAL void mf__sched_drain_from_loop(mf_engine *e);
MF_INTERNAL void mf__sched_parked_add(mf_engine *e, mf_run *run);
MF_INTERNAL void mf__sched_parked_remove(mf_engine *e, mf_run *run);
/* Wakes parked waits no event can end; returns how many were woken. */
MF_INTERNAL size_t mf__sched_break_deadlocks(mf_engine *e);
MF_INTERNAL int mf__sched_has_work(const mf_engine *e);
/* Opens the runs to start that the gate holds, without waiting for the
 * gate timer: for a loop that nothing keeps alive (a host's, whose handles
 * the engine does not reference), where the timer would never fire.
 * Returns whether they were held. */
MF_INTERNAL int mf__sched_reopen_starts(mf_engine *e);

/* Timers (timers.c). */
MF_INTERNAL void mf__timers_add(mf_engine *e, mf_waiter *w);
MF_INTERNAL void mf__timers_remove(mf_engine *e, mf_waiter *w);
MF_INTERNAL void mf__timers_close(mf_engine *e);

/* Tree (tree.c). */
MF_INTERNAL void mf__tree_link(mf_engine *e, mf_run *run, mf_run *parent);
MF_INTERNAL void mf__tree_unlink(mf_engine *e, mf_run *run);
MF_INTERNAL void mf__tree_adopt_children(mf_engine *e, mf_run *run);
/* Makes the subtree of root final at once, children first, allocating
 * nothing (engine close, out of memory included). */
MF_INTERNAL void mf__tree_force_final(mf_engine *e, mf_run *root);
MF_INTERNAL void mf__unhandled_add(mf_engine *e, mf_run *run, mf_run *scope);
MF_INTERNAL mf_run *mf__nearest_flow(const mf_run *run);
MF_INTERNAL void mf__unhandled_release_scope(mf_engine *e, mf_run *flow);

/* Progress of top-level flows (tree.c). */
MF_INTERNAL void mf__progress_submit(mf_engine *e, mf_run *run);
MF_INTERNAL void mf__progress_start(mf_run *run);
MF_INTERNAL void mf__progress_final(mf_engine *e, mf_run *run, int started);

/* Memory (engine.c). */
MF_INTERNAL mf_run *mf__run_alloc(mf_engine *e, size_t body_size);
MF_INTERNAL void mf__run_dealloc(mf_engine *e, mf_run *run);
MF_INTERNAL mf_waiter *mf__waiter_alloc(mf_engine *e);
MF_INTERNAL void mf__waiter_dealloc(mf_engine *e, mf_waiter *w);

/* Limits (limits.c). */
MF_INTERNAL int mf__limits_acquire(mf_run *run);
MF_INTERNAL void mf__limits_release(mf_run *run);
MF_INTERNAL int mf__limits_deadlock(const mf_run *waiter, const mf_run *target);
MF_INTERNAL void mf__limits_free(mf_engine *e);

/* A number in [0, 1) (engine.c): the jitter of retry delays. */
MF_INTERNAL double mf__random(mf_engine *e);

/* Clock (engine.c). */
/* Wall-clock seconds for state timestamps: read from a cache refreshed
 * every 32 uses and at each scheduler pass, so stamping three states per
 * run does not cost three clock reads. */
MF_INTERNAL double mf__wall_now(mf_engine *e);
MF_INTERNAL void mf__clock_refresh(mf_engine *e);

#endif
