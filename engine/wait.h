/*
 * wait.h -- waiters: what a parked run (or a top-level wait) is waiting for.
 *
 * A waiter owns an array of nodes, one per target run; each node is linked
 * into its target's list of waiters while the target is not final.  The
 * waiter wakes when its mode is satisfied, its deadline passes, or the engine
 * declares a deadlock.
 */
#ifndef MF_WAIT_H
#define MF_WAIT_H

#include "moonflow.h"

#define MF_INTERNAL __attribute__((visibility("hidden")))
#define MF_NO_HEAP_INDEX ((size_t)-1)

typedef struct mf_waiter mf_waiter;

typedef struct mf_wait_node {
  mf_waiter *waiter;
  mf_run *target; /* holds a reference while the waiter uses the node */
  struct mf_wait_node *prev, *next; /* in target->waiters while linked */
  unsigned char allow_failure;
  unsigned char linked;
} mf_wait_node;

typedef enum mf_waiter_kind {
  MF_WAITER_TARGETS,  /* runs to be final */
  MF_WAITER_SLEEP,    /* only the deadline */
  MF_WAITER_CHILDREN, /* the owner's live children */
  MF_WAITER_DEADLINE, /* the owner's own timeout (not a park) */
  MF_WAITER_EXTERNAL, /* mf_run_unpark with the ticket */
} mf_waiter_kind;

struct mf_waiter {
  mf_engine *engine;
  mf_run *owner; /* the parked run; NULL for a top-level wait */
  mf_waiter_kind kind;
  mf_wait_mode mode;
  size_t count;        /* nodes in use */
  size_t capacity;     /* nodes allocated */
  size_t pending;      /* nodes still linked */
  mf_wait_node *nodes; /* &inline_node, or malloc'd when capacity > 1 */
  mf_wait_node inline_node;
  double deadline;   /* engine seconds; < 0 for none */
  size_t heap_index; /* in the engine's timer heap, or MF_NO_HEAP_INDEX */
  mf_wake_reason reason;
  unsigned char active;              /* armed and not yet woken */
  unsigned ticket;                   /* MF_WAITER_EXTERNAL: the park's */
  mf_run *parked_prev, *parked_next; /* engine's parked list, by owner */
};

MF_INTERNAL void mf__waiter_init(mf_waiter *w, mf_engine *e, mf_run *owner);
/* Appends a target (taking a reference); resets nothing else. */
MF_INTERNAL int mf__waiter_add(mf_waiter *w, mf_run *target, int allow_fail);
/* Links the nodes of non-final targets and arms the deadline.  Returns 1 if
 * the condition already holds (nothing was linked). */
MF_INTERNAL int mf__waiter_arm(mf_waiter *w, mf_wait_mode mode, double timeout);
/* Unlinks every node, leaves the heap, drops the targets' references. */
MF_INTERNAL void mf__waiter_clear(mf_waiter *w);
MF_INTERNAL void mf__waiter_free(mf_waiter *w);
/* Called by the run module when target becomes final. */
MF_INTERNAL void mf__waiters_notify(mf_run *target);
/* Ends the wait with that reason and makes the owner ready. */
MF_INTERNAL void mf__waiter_wake(mf_waiter *w, mf_wake_reason reason);

/* Non-zero if waiter_run waiting on target can never finish. */
MF_INTERNAL int mf__deadlock_check(mf_engine *e, mf_run *waiter_run,
                                   mf_run *target);
/* Non-zero if the parked run waits, through any chain of waits, on
 * itself (every wait counted, as when the loop is stuck). */
MF_INTERNAL int mf__deadlock_in_cycle(mf_engine *e, mf_run *run);

#endif
