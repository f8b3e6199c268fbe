/*
 * run.h -- the run record: state, history, place in the tree of runs, the
 * engine's holds on it, and the internals of its life cycle (life.c).
 */
#ifndef MF_RUN_H
#define MF_RUN_H

#include "wait.h"

/* Where a run is in its life, as the scheduler sees it.  Every change goes
 * through mf__run_set_life, which checks it (in debug builds). */
typedef enum mf_life {
  MF_LIFE_NEW,      /* created, not submitted */
  MF_LIFE_INPUTS,   /* submitted, waiting for its inputs */
  MF_LIFE_READY,    /* in the ready queue (ready_action says for what) */
  MF_LIFE_SLOT,     /* waits for a slot of a limit, or its rate spacing */
  MF_LIFE_ACTIVE,   /* its body is executing (it is engine->current) */
  MF_LIFE_PARKED,   /* its body waits (waiter armed) */
  MF_LIFE_RETRY,    /* AwaitingRetry: the retry delay runs */
  MF_LIFE_CLOSING,  /* a flow waiting for its children (closing_step) */
  MF_LIFE_EXTERNAL, /* no body: completed from outside (a C future) */
  MF_LIFE_FINAL
} mf_life;

/* What the scheduler does when it pops a ready run. */
typedef enum mf_ready_action {
  MF_READY_INPUTS,  /* inputs are final: check them, then start */
  MF_READY_START,   /* take the slots, then begin an attempt */
  MF_READY_RESUME,  /* the body's park is over */
  MF_READY_ATTEMPT, /* the on_running hooks are done: execute the body */
  MF_READY_HOOKS,   /* step the body for the hooks of hook_point */
  MF_READY_CLOSE,   /* a closing flow's children are all final */
  MF_READY_SLOTS,   /* try again to take the slots of its limits */
} mf_ready_action;

/* What a closing flow does once its children are final. */
typedef enum mf_closing_step {
  MF_CLOSE_AFTER_ATTEMPT, /* decide: retry, hooks, or final */
  MF_CLOSE_FINALIZE,      /* become final with the outcome */
} mf_closing_step;

/* What the body is stepped for. */
typedef enum mf_phase {
  MF_PHASE_NONE,    /* between steps of the life (inputs, slots, retry) */
  MF_PHASE_ATTEMPT, /* an attempt of the body */
  MF_PHASE_HOOKS,   /* the hooks of hook_point */
} mf_phase;

typedef struct mf_done_callback {
  mf_done_fn fn;
  void *data;
  struct mf_done_callback *next;
} mf_done_callback;

#define MF_HISTORY_INLINE 3

/* Rare parts of a run, allocated on demand: unhandled-failure links, the
 * progress of a top-level flow, the deadline, limits, the policy. */
typedef struct mf_run_extra {
  mf_run *unhandled_prev, *unhandled_next; /* in its scope's list */
  mf_run *unhandled_scope; /* the flow whose list holds it (NULL: root) */
  mf_run *scope_first, *scope_last; /* a flow's own list */
  /* A top-level flow: its progress, and its place in the engine's list. */
  mf_flow_stats stats;
  mf_run *top_prev, *top_next;
  mf_waiter *deadline; /* the attempt's timeout, armed while it executes */
  double deadline_at;  /* its time, kept once it passed; < 0: none */
  unsigned char timed_out;
  /* Limits: the run's tags, the limit whose queue it waits in. */
  const char **tags;
  size_t tag_count;
  mf_limit *limit_queued;
  mf_run *limit_prev, *limit_next;
  unsigned char rate_reserved;
  /* The policy (mf_run_set_policy); delays owned. */
  int retries;
  double *retry_delays;
  size_t retry_delay_count;
  double retry_jitter;
  double timeout;
  unsigned hooks;
  /* Resources closed when the run ends (mf_run_attach). */
  mf_resource *resources;
} mf_run_extra;

/* Kept small (one per run, a million live runs are normal): rare parts are
 * allocated on demand, enums are stored in bytes. */
struct mf_run {
  mf_engine *engine;
  const mf_run_ops *ops; /* NULL: completed from outside */
  void *data;            /* host data */

  uint64_t id;
  uint64_t number;         /* the n of "<prefix>-<n>" */
  const char *name_prefix; /* not owned */
  char *custom_name;       /* owned; freed with the run */

  int refs;  /* external references (mf_run_ref) */
  int holds; /* engine holds; ops->hold(1) on 0 -> 1, (0) on 1 -> 0 */
  int attempt;
  int error_code; /* MF_E* when the engine itself failed the run, else 0 */

  unsigned char flags;        /* MF_RUN_* */
  unsigned char life;         /* mf_life */
  unsigned char ready_action; /* mf_ready_action */
  unsigned char type;         /* mf_state_type */
  unsigned char name;         /* mf_state_name */
  unsigned char phase;        /* mf_phase */
  unsigned char hook_point;   /* MF_HOOK_*: the hooks being run */
  unsigned char closing_step; /* mf_closing_step */
  /* The outcome of the last attempt: the final state, once decided. */
  unsigned char outcome_type, outcome_name;
  unsigned char cancel_requested;
  unsigned char handled;
  unsigned char in_unhandled;
  unsigned char body_started;    /* an attempt began once */
  unsigned char body_active;     /* a step began that has not ended its phase */
  unsigned char queued;          /* in the ready queue (maybe as a zombie) */
  unsigned char queue_hold;      /* the queue holds a final run (a zombie) */
  unsigned char deciding;        /* the retry condition is being asked */
  unsigned char outcome_decided; /* the last attempt is over */

  /* History: inline for the usual Pending, Running, Completed. */
  unsigned short history_len, history_cap;
  unsigned visit_epoch;
  unsigned body_size;
  unsigned park_ticket;   /* counts external parks (mf_run_park) */
  unsigned live_children; /* (here, where it fills what the pointers'
                             alignment would leave empty) */
  mf_state *history;
  mf_state history_inline[MF_HISTORY_INLINE];

  mf_run *next_ready; /* ready queue or done queue link */

  /* Tree: parent holds no hold on the child; a live child's parent is live
   * (children of a finished task move to its parent). */
  mf_run *parent;
  mf_run *first_child;
  mf_run *prev_sibling, *next_sibling;

  mf_waiter *waiter;     /* inputs or the body's park; NULL until needed */
  mf_wait_node *waiters; /* nodes of waiters on this run */
  mf_run *cause;         /* NotReady: the upstream that failed (a ref) */
  mf_run *top_flow;      /* the top-level flow it is inside; only while live */
  mf_run_extra *extra;   /* rare parts; NULL until needed */
  mf_done_callback *done_callbacks;

  max_align_t body[]; /* body_size bytes for the ops */
};

/* The run's waiter, created on first use; NULL when out of memory. */
MF_INTERNAL mf_waiter *mf__run_waiter(mf_run *run);
MF_INTERNAL mf_run_extra *mf__run_extra(mf_run *run);
/* Whether the run's waiter is armed. */
static inline int mf__run_waiting(const mf_run *run) {
  return run->waiter && run->waiter->active;
}

MF_INTERNAL void mf__run_hold(mf_run *run);
MF_INTERNAL void mf__run_release(mf_run *run);
MF_INTERNAL void mf__run_push_state(mf_run *run, mf_state_type type,
                                    mf_state_name name);

/* Life (life.c). */
/* The one place a run's life changes: checks the transition. */
MF_INTERNAL void mf__run_set_life(mf_run *run, mf_life to);
/* Makes the run final with that state.  Idempotent on a final run. */
MF_INTERNAL void mf__run_finalize(mf_run *run, mf_state_type type,
                                  mf_state_name name);
/* The attempt's deadline passed. */
MF_INTERNAL void mf__run_deadline_passed(mf_run *run);
/* A child became final: tell a closing or child-waiting parent. */
MF_INTERNAL void mf__run_child_final(mf_run *parent);
/* Scheduler hook: executes what the ready run is due to do. */
MF_INTERNAL void mf__run_execute(mf_run *run);
/* Cancels one run whose subtree was marked (tree.c walks the tree). */
MF_INTERNAL void mf__run_cancel_one(mf_run *run);
/* Engine close: the run ends CANCELLED at once, whatever it is doing. */
MF_INTERNAL void mf__run_force_final(mf_run *run);

#endif
