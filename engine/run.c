/*
 * run.c -- the life of a run: creation, references and engine holds, states
 * and history, submission, execution by the scheduler, and finalization.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* {====== Memory ====== */

mf_run *mf_run_new(mf_engine *engine, const mf_run_ops *ops, size_t body_size) {
  mf_run *run = mf__run_alloc(engine, body_size);
  if (!run)
    return NULL;
  run->engine = engine;
  run->ops = ops;
  run->refs = 1;
  run->life = MF_LIFE_NEW;
  run->history = run->history_inline;
  run->history_cap = MF_HISTORY_INLINE;
  mf__run_push_state(run, MF_PENDING, MF_NAME_PENDING);
  return run;
}

void *mf_run_body(mf_run *run) { return run->body; }

static void run_free(mf_run *run) {
  if (run->ops && run->ops->free)
    run->ops->free(run);
  if (run->waiter) {
    mf__waiter_free(run->waiter);
    mf__waiter_dealloc(run->engine, run->waiter);
  }
  if (run->extra && run->extra->deadline) {
    mf__waiter_free(run->extra->deadline);
    mf__waiter_dealloc(run->engine, run->extra->deadline);
  }
  if (run->extra)
    free(run->extra->tags);
  free(run->extra);
  mf_done_callback *cb = run->done_callbacks;
  while (cb) {
    mf_done_callback *next = cb->next;
    free(cb);
    cb = next;
  }
  if (run->history != run->history_inline)
    free(run->history);
  free(run->custom_name);
  mf__run_dealloc(run->engine, run);
}

/* Frees runs whose last reference or hold went, following the NotReady
 * cause chain iteratively so that a long chain never recurses. */
static void maybe_free(mf_run *run) {
  while (run && run->refs == 0 && run->holds == 0) {
    mf_run *cause = run->cause;
    run->cause = NULL;
    run_free(run);
    if (!cause || --cause->refs != 0)
      break;
    run = cause;
  }
}

mf_waiter *mf__run_waiter(mf_run *run) {
  if (!run->waiter) {
    run->waiter = mf__waiter_alloc(run->engine);
    if (!run->waiter)
      return NULL;
    mf__waiter_init(run->waiter, run->engine, run);
  }
  return run->waiter;
}

mf_run_extra *mf__run_extra(mf_run *run) {
  if (!run->extra)
    run->extra = calloc(1, sizeof *run->extra);
  return run->extra;
}

void mf_run_ref(mf_run *run) { run->refs++; }
int mf_run_refcount(const mf_run *run) { return run->refs; }

void mf_run_unref(mf_run *run) {
  if (--run->refs == 0)
    maybe_free(run);
}

void mf__run_hold(mf_run *run) {
  if (run->holds++ == 0 && run->ops && run->ops->hold)
    run->ops->hold(run, 1);
}

void mf__run_release(mf_run *run) {
  if (--run->holds == 0) {
    if (run->ops && run->ops->hold)
      run->ops->hold(run, 0);
    maybe_free(run);
  }
}

/* }====== */

/* {====== Names and queries ====== */

void mf_run_set_flags(mf_run *run, unsigned flags) { run->flags = flags; }
unsigned mf_run_flags(const mf_run *run) { return run->flags; }

void mf_run_set_name(mf_run *run, const char *prefix, uint64_t number) {
  run->name_prefix = prefix;
  run->number = number;
}

int mf_run_set_custom_name(mf_run *run, const char *name) {
  char *copy = strdup(name);
  if (!copy)
    return MF_ENOMEM;
  free(run->custom_name);
  run->custom_name = copy;
  return 0;
}

size_t mf_run_name(const mf_run *run, char *buf, size_t size) {
  int n;
  if (run->custom_name)
    n = snprintf(buf, size, "%s", run->custom_name);
  else if (run->name_prefix)
    n = snprintf(buf, size, "%s-%" PRIu64, run->name_prefix, run->number);
  else
    n = snprintf(buf, size, "run-%" PRIu64, run->id);
  if (n < 0)
    n = 0;
  return (size_t)n < size ? (size_t)n : (size ? size - 1 : 0);
}

uint64_t mf_run_id(const mf_run *run) { return run->id; }
mf_run *mf_run_parent(const mf_run *run) { return run->parent; }
mf_state_type mf_run_state_type(const mf_run *run) { return run->type; }
mf_state_name mf_run_state_name(const mf_run *run) { return run->name; }
int mf_run_attempt(const mf_run *run) { return run->attempt; }
mf_run *mf_run_cause(const mf_run *run) { return run->cause; }
int mf_run_error_code(const mf_run *run) { return run->error_code; }
int mf_run_is_final(const mf_run *run) { return run->life == MF_LIFE_FINAL; }
void mf_run_set_data(mf_run *run, void *data) { run->data = data; }
void *mf_run_data(const mf_run *run) { return run->data; }
mf_wake_reason mf_run_wake_reason(const mf_run *run) {
  return run->waiter ? run->waiter->reason : MF_WAKE_NONE;
}
int mf_run_cancel_requested(const mf_run *run) { return run->cancel_requested; }

size_t mf_run_history(const mf_run *run, const mf_state **out) {
  *out = run->history;
  return run->history_len;
}

/* }====== */

/* {====== States ====== */

void mf__run_push_state(mf_run *run, mf_state_type type, mf_state_name name) {
  run->type = type;
  run->name = name;
  if (run->history_len == run->history_cap) {
    size_t cap = run->history_cap * 2;
    mf_state *history;
    if (run->history == run->history_inline) {
      history = malloc(cap * sizeof *history);
      if (history)
        memcpy(history, run->history_inline, sizeof run->history_inline);
    } else {
      history = realloc(run->history, cap * sizeof *history);
    }
    if (!history)
      return; /* the current state is kept; only its history entry is lost */
    run->history = history;
    run->history_cap = cap;
  }
  mf_state *entry = &run->history[run->history_len++];
  entry->type = type;
  entry->name = name;
  /* Pending is stamped from the cached clock (a map stamps a million of
   * them); the states that order runs (Running, final) read the clock. */
  entry->timestamp =
      type == MF_PENDING && name == MF_NAME_PENDING
          ? mf__wall_now(run->engine)
          : mf_engine_now(run->engine) + run->engine->wall_offset;
}

void mf_run_release_slots(mf_run *run) { mf__limits_release(run); }

int mf_run_acquire_slots(mf_run *run) { return mf__limits_acquire(run); }

void mf_run_next_attempt(mf_run *run) {
  if (run->life == MF_LIFE_FINAL)
    return;
  run->attempt++;
  mf__run_push_state(run, MF_RUNNING, MF_NAME_RETRYING);
}

int mf_run_set_deadline(mf_run *run, double seconds) {
  mf_run_extra *x = mf__run_extra(run);
  if (!x)
    return MF_ENOMEM;
  if (!x->deadline) {
    x->deadline = mf__waiter_alloc(run->engine);
    if (!x->deadline)
      return MF_ENOMEM;
    mf__waiter_init(x->deadline, run->engine, run);
    x->deadline->kind = MF_WAITER_DEADLINE;
  }
  mf__waiter_clear(x->deadline);
  x->timed_out = 0;
  mf__waiter_arm(x->deadline, MF_WAIT_ALL, seconds < 0 ? 0 : seconds);
  x->deadline_at = x->deadline->deadline;
  return 0;
}

void mf_run_clear_deadline(mf_run *run) {
  if (run->extra && run->extra->deadline) {
    mf__waiter_clear(run->extra->deadline);
    run->extra->deadline->active = 0;
  }
  if (run->extra) {
    run->extra->timed_out = 0; /* the next attempt starts afresh */
    run->extra->deadline_at = -1;
  }
}

int mf_run_timed_out(const mf_run *run) {
  return run->extra && run->extra->timed_out;
}

double mf_run_deadline(const mf_run *run) {
  return run->extra && run->extra->deadline ? run->extra->deadline_at : -1;
}

/* The timeout passed: a parked body is woken to raise it; a computing one
 * sees mf_run_timed_out at its next check. */
void mf__run_deadline_passed(mf_run *run) {
  run->extra->timed_out = 1;
  if (run->life == MF_LIFE_PARKED && mf__run_waiting(run))
    mf__waiter_wake(run->waiter, MF_WAKE_TIMEDOUT);
}

static void drop_deadline(mf_run *run) {
  if (run->extra && run->extra->deadline) {
    mf__waiter_free(run->extra->deadline);
    mf__waiter_dealloc(run->engine, run->extra->deadline);
    run->extra->deadline = NULL;
  }
}

void mf_run_set_state(mf_run *run, mf_state_type type, mf_state_name name) {
  if (run->life != MF_LIFE_FINAL)
    mf__run_push_state(run, type, name);
}

/* }====== */

/* {====== Submission and execution ====== */

int mf_run_add_input(mf_run *run, mf_run *input, int allow_failure) {
  if (run->life != MF_LIFE_NEW)
    return MF_ESTATE;
  mf_waiter *w = mf__run_waiter(run);
  if (!w)
    return MF_ENOMEM;
  return mf__waiter_add(w, input, allow_failure);
}

/* An input that is a flow containing the new run could never finish. */
static int input_contains(const mf_run *run, const mf_run *parent) {
  if (!run->waiter)
    return 0;
  for (size_t i = 0; i < run->waiter->count; i++) {
    const mf_run *input = run->waiter->nodes[i].target;
    for (const mf_run *p = parent; p; p = p->parent)
      if (p == input && (p->flags & MF_RUN_FLOW))
        return 1;
  }
  return 0;
}

int mf_run_submit(mf_run *run, mf_run *parent) {
  mf_engine *e = run->engine;
  if (run->life != MF_LIFE_NEW || e->closing)
    return MF_ESTATE;
  if (run->flags & MF_RUN_ROOT)
    parent = NULL;
  else if (!parent)
    parent = e->current;
  if (parent && mf_run_is_final(parent))
    parent = NULL;
  if (input_contains(run, parent))
    return MF_EDEADLK;
  run->id = ++e->next_id;
  mf__tree_link(e, run, parent);
  mf__progress_submit(e, run);
  e->live++;
  mf__run_hold(run); /* the live hold, released when final */
  if (!run->ops || !run->ops->step) {
    run->life = MF_LIFE_EXTERNAL; /* mf_run_finish from outside ends it */
    return 0;
  }
  if (!run->waiter || run->waiter->count == 0) {
    mf__sched_push(e, run, MF_READY_START);
    return 0;
  }
  run->life = MF_LIFE_INPUTS;
  if (mf__waiter_arm(run->waiter, MF_WAIT_ALL_FAST, -1))
    mf__sched_push(e, run, MF_READY_INPUTS);
  else
    mf__sched_parked_add(e, run);
  return 0;
}

/* The first input that did not complete and whose failure is not allowed. */
static mf_run *failed_input(const mf_run *run) {
  for (size_t i = 0; i < run->waiter->count; i++) {
    const mf_wait_node *node = &run->waiter->nodes[i];
    if (node->target->type != MF_COMPLETED && !node->allow_failure &&
        mf_run_is_final(node->target))
      return node->target;
  }
  return NULL;
}

static void step(mf_run *run, mf_step_reason reason) {
  mf_engine *e = run->engine;
  mf_run *previous = e->current;
  mf_run_ref(run); /* the body may drop the last other reference */
  e->current = run;
  run->life = MF_LIFE_ACTIVE;
  if (reason == MF_STEP_START) {
    if (run->attempt == 0)
      mf__progress_start(run);
    run->attempt++;
    run->body_started = 1;
    mf__run_push_state(run, MF_RUNNING, MF_NAME_RUNNING);
  }
  run->ops->step(run, reason);
  e->current = previous;
  if (run->life == MF_LIFE_ACTIVE) {
    /* The body returned without finishing or parking: it is broken. */
    run->body_done = 1;
    run->error_code = MF_ESTATE;
    mf__run_finalize(run, MF_CRASHED, MF_NAME_CRASHED);
  } else if (run->cancel_requested && run->life != MF_LIFE_FINAL &&
             !(run->flags & MF_RUN_CANCEL_IN_BODY)) {
    /* Cancelled while executing: whatever the body parked on, it ends.
     * (A body that runs its own clean-up is left to finish it.) */
    mf_run_cancel(run);
  }
  mf_run_unref(run);
}

static void start_after_inputs(mf_run *run) {
  mf_run *failed = failed_input(run);
  if (failed) {
    mf_run_ref(failed);
    run->cause = failed;
    mf__run_finalize(run, MF_PENDING, MF_NAME_NOT_READY);
    return;
  }
  if (run->waiter->reason == MF_WAKE_DEADLOCK) {
    run->error_code = MF_EDEADLK;
    mf__run_finalize(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  mf__waiter_clear(run->waiter);
  if (mf__limits_acquire(run))
    step(run, MF_STEP_START);
}

/* Woken to take the slots of its limits (first start or, for a body
 * between attempts, a resume). */
static void start_after_slots(mf_run *run) {
  if (run->waiter)
    mf__waiter_clear(run->waiter);
  if (!mf__limits_acquire(run))
    return;
  step(run, run->body_started ? MF_STEP_RESUME : MF_STEP_START);
}

void mf__run_execute(mf_run *run) {
  switch (run->ready_action) {
  case MF_READY_INPUTS:
    start_after_inputs(run);
    break;
  case MF_READY_START:
    if (mf__limits_acquire(run))
      step(run, MF_STEP_START);
    break;
  case MF_READY_SLOTS:
    start_after_slots(run);
    break;
  case MF_READY_RESUME:
    if (run->waiter)
      mf__waiter_clear(run->waiter);
    step(run, MF_STEP_RESUME);
    break;
  case MF_READY_CLOSE:
    mf__run_finalize(run, run->closing_type, run->closing_name);
    break;
  }
}

/* }====== */

/* {====== Finalization ====== */

void mf_run_finish(mf_run *run, mf_state_type type, mf_state_name name) {
  if (run->life == MF_LIFE_FINAL)
    return;
  run->body_done = 1;
  if (run->cancel_requested) {
    type = MF_CANCELLED;
    name = MF_NAME_CANCELLED;
  }
  if ((run->flags & MF_RUN_FLOW) && run->live_children > 0) {
    run->life = MF_LIFE_CLOSING;
    run->closing_type = type;
    run->closing_name = name;
    return;
  }
  mf__run_finalize(run, type, name);
}

static int is_failure(const mf_run *run) {
  return run->type == MF_FAILED || run->type == MF_CRASHED ||
         run->name == MF_NAME_NOT_READY;
}

void mf__run_finalize(mf_run *run, mf_state_type type, mf_state_name name) {
  if (run->life == MF_LIFE_FINAL)
    return;
  mf_engine *e = run->engine;
  int submitted = run->life != MF_LIFE_NEW;
  if (run->life == MF_LIFE_READY)
    mf__sched_unlink(e, run);
  mf__sched_parked_remove(e, run);
  drop_deadline(run);
  mf__limits_release(run); /* every way out gives the slots back */
  if (run->waiter) {       /* inputs or park: drops their references */
    mf__waiter_free(run->waiter);
    mf__waiter_dealloc(e, run->waiter);
    run->waiter = NULL;
  }
  if (!run->body_done && run->ops && run->ops->abandon) {
    run->body_done = 1;
    run->ops->abandon(run);
  }
  run->body_done = 1;
  run->life = MF_LIFE_FINAL;
  mf__run_push_state(run, type, name);
  int unhandled_failure = is_failure(run) && !run->handled;
  mf_run *scope = unhandled_failure ? mf__nearest_flow(run) : NULL;
  if (submitted) {
    mf__progress_final(e, run, run->body_started);
    mf__tree_adopt_children(e, run);
    mf__tree_unlink(e, run);
    e->live--;
  }
  mf__waiters_notify(run);
  if (unhandled_failure)
    mf__unhandled_add(e, run, scope);
  if (run->flags & MF_RUN_FLOW)
    mf__unhandled_release_scope(e, run);
  if (run->done_callbacks)
    mf__sched_push_done(e, run);
  if (submitted)
    mf__run_release(run); /* the live hold */
}

int mf_run_on_done(mf_run *run, mf_done_fn fn, void *data) {
  mf_done_callback *cb = malloc(sizeof *cb);
  if (!cb)
    return MF_ENOMEM;
  cb->fn = fn;
  cb->data = data;
  cb->next = NULL;
  mf_done_callback **tail = &run->done_callbacks;
  while (*tail)
    tail = &(*tail)->next;
  *tail = cb;
  if (mf_run_is_final(run) && run->done_callbacks == cb)
    mf__sched_push_done(run->engine, run);
  return 0;
}

/* }====== */
