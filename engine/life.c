/*
 * life.c -- the life of a run, owned by the engine: submission, inputs,
 * slots, attempts and their deadlines, retries and their delays, the hooks'
 * points, cancellation and the final state.  The body (a Lua coroutine, a C
 * function) only executes what it is stepped for and says how it ended.
 *
 *   NEW -> INPUTS -> READY -> [SLOT] -> attempt: ACTIVE <-> PARKED/READY
 *   attempt over -> [CLOSING: a flow's children] -> RETRY -> SLOT -> attempt
 *                -> hooks (ACTIVE/PARKED) -> [CLOSING] -> FINAL
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* {====== Transitions ====== */

#define TO(life) (1u << (life))
/* Where each life may go.  Most active lives reach most others (a cancel,
 * a deadline, a retry); the table catches what must never happen: leaving
 * FINAL, executing an external run, stepping a run never submitted. */
static const unsigned short allowed[MF_LIFE_FINAL + 1] = {
    [MF_LIFE_NEW] = TO(MF_LIFE_INPUTS) | TO(MF_LIFE_READY) |
                    TO(MF_LIFE_EXTERNAL) | TO(MF_LIFE_FINAL),
    [MF_LIFE_INPUTS] = TO(MF_LIFE_READY) | TO(MF_LIFE_FINAL),
    [MF_LIFE_READY] = TO(MF_LIFE_READY) | TO(MF_LIFE_SLOT) |
                      TO(MF_LIFE_ACTIVE) | TO(MF_LIFE_RETRY) |
                      TO(MF_LIFE_CLOSING) | TO(MF_LIFE_FINAL),
    [MF_LIFE_SLOT] = TO(MF_LIFE_SLOT) | TO(MF_LIFE_READY) | TO(MF_LIFE_ACTIVE) |
                     TO(MF_LIFE_CLOSING) | TO(MF_LIFE_FINAL),
    [MF_LIFE_ACTIVE] = TO(MF_LIFE_READY) | TO(MF_LIFE_PARKED) |
                       TO(MF_LIFE_SLOT) | TO(MF_LIFE_RETRY) |
                       TO(MF_LIFE_CLOSING) | TO(MF_LIFE_ACTIVE) |
                       TO(MF_LIFE_FINAL),
    [MF_LIFE_PARKED] = TO(MF_LIFE_READY) | TO(MF_LIFE_RETRY) |
                       TO(MF_LIFE_CLOSING) | TO(MF_LIFE_FINAL),
    [MF_LIFE_RETRY] =
        TO(MF_LIFE_READY) | TO(MF_LIFE_CLOSING) | TO(MF_LIFE_FINAL),
    [MF_LIFE_CLOSING] = TO(MF_LIFE_READY) | TO(MF_LIFE_RETRY) |
                        TO(MF_LIFE_CLOSING) | TO(MF_LIFE_FINAL),
    [MF_LIFE_EXTERNAL] = TO(MF_LIFE_FINAL),
    [MF_LIFE_FINAL] = 0,
};

void mf__run_set_life(mf_run *run, mf_life to) {
  assert(allowed[run->life] & TO(to));
  run->life = (unsigned char)to;
}

/* }====== */

static void begin_attempt(mf_run *run);
static void attempt_over(mf_run *run, mf_state_type type, mf_state_name name);
static void after_attempt(mf_run *run);
static void conclude(mf_run *run);

static int is_failure_type(mf_state_type type) {
  return type == MF_FAILED || type == MF_CRASHED;
}

/* {====== Submission and inputs ====== */

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
  if (__builtin_expect(e->observe != NULL, 0))
    e->observe(run, &run->history[0], e->observe_data);
  if (!run->ops || !run->ops->step) {
    mf__run_set_life(run, MF_LIFE_EXTERNAL); /* mf_run_finish ends it */
    return 0;
  }
  if (!run->waiter || run->waiter->count == 0) {
    mf__sched_push(e, run, MF_READY_START);
    return 0;
  }
  mf__run_set_life(run, MF_LIFE_INPUTS);
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
    begin_attempt(run);
}

/* }====== */

/* {====== Steps ====== */

/* Steps the body; afterwards, a body that neither ended its phase nor
 * parked broke the contract, and a run cancelled during its own step is
 * stopped where it parked. */
static void step(mf_run *run, mf_step_reason reason) {
  mf_engine *e = run->engine;
  mf_run *previous = e->current;
  mf_run_ref(run); /* the body may drop the last other reference */
  e->current = run;
  mf__run_set_life(run, MF_LIFE_ACTIVE);
  run->body_active = 1;
  run->ops->step(run, reason);
  e->current = previous;
  if (run->life == MF_LIFE_ACTIVE) {
    run->body_active = 0;
    run->error_code = MF_ESTATE;
    /* The end's hooks leave the outcome as decided; on_running hooks come
     * before any outcome: their attempt crashed. */
    if (run->phase == MF_PHASE_HOOKS && run->hook_point != MF_HOOK_RUNNING)
      conclude(run);
    else
      attempt_over(run, MF_CRASHED, MF_NAME_CRASHED);
  } else if (run->cancel_requested && run->phase == MF_PHASE_ATTEMPT &&
             run->body_active &&
             (run->life == MF_LIFE_PARKED || run->life == MF_LIFE_READY)) {
    mf__run_cancel_one(run);
  }
  mf_run_unref(run);
}

/* Takes the run off whatever it waits on: the ready queue (it stays there
 * as a zombie the scheduler skips), the parked list, its waiter, a limit's
 * queue. */
static void unpark(mf_run *run) {
  mf_engine *e = run->engine;
  if (run->waiter) {
    mf__sched_parked_remove(e, run);
    if (run->waiter->active || run->waiter->count)
      mf__waiter_clear(run->waiter);
  }
  if (run->extra && run->extra->limit_queued)
    mf__limits_release(run);
}

/* Stops the body where it is: the step it was in will never continue. */
static void abandon_body(mf_run *run) {
  unpark(run);
  if (run->body_active) {
    run->body_active = 0;
    if (run->ops && run->ops->abandon)
      run->ops->abandon(run);
  }
}

/* }====== */

/* {====== Attempts ====== */

static double clamp_seconds(double s) {
  return s > MF_MAX_SECONDS ? MF_MAX_SECONDS : s;
}

static void arm_deadline(mf_run *run) {
  mf_run_extra *x = run->extra;
  if (!x || !(x->timeout > 0))
    return;
  if (!x->deadline) {
    x->deadline = mf__waiter_alloc(run->engine);
    if (!x->deadline)
      return; /* out of memory: the attempt runs without its deadline */
    mf__waiter_init(x->deadline, run->engine, run);
    x->deadline->kind = MF_WAITER_DEADLINE;
  }
  mf__waiter_clear(x->deadline);
  mf__waiter_arm(x->deadline, MF_WAIT_ALL, clamp_seconds(x->timeout));
  x->deadline_at = x->deadline->deadline;
}

/* Returns whether the deadline of the attempt passed; disarms it. */
static int disarm_deadline(mf_run *run) {
  mf_run_extra *x = run->extra;
  if (!x)
    return 0;
  int passed = x->timed_out || (x->deadline_at >= 0 && x->deadline &&
                                mf_engine_now(run->engine) >= x->deadline_at);
  if (x->deadline) {
    mf__waiter_clear(x->deadline);
    x->deadline->active = 0;
  }
  x->timed_out = 0;
  x->deadline_at = -1;
  return passed;
}

static int has_hooks(const mf_run *run, unsigned point) {
  return run->extra && (run->extra->hooks & point);
}

/* The run holds its slots: a new attempt begins (its on_running hooks
 * first). */
static void begin_attempt(mf_run *run) {
  if (run->attempt == 0)
    mf__progress_start(run);
  run->attempt++;
  run->body_started = 1;
  run->error_code = 0;
  run->outcome_decided = 0;
  mf__run_push_state(run, MF_RUNNING,
                     run->attempt == 1 ? MF_NAME_RUNNING : MF_NAME_RETRYING);
  if (has_hooks(run, MF_HOOK_RUNNING)) {
    run->phase = MF_PHASE_HOOKS;
    run->hook_point = MF_HOOK_RUNNING;
    step(run, MF_STEP_HOOKS);
    return;
  }
  run->phase = MF_PHASE_ATTEMPT;
  run->hook_point = 0;
  arm_deadline(run);
  step(run, MF_STEP_START);
}

/* The on_running hooks are done: the body's attempt. */
static void execute_attempt(mf_run *run) {
  if (run->cancel_requested) {
    attempt_over(run, MF_CANCELLED, MF_NAME_CANCELLED);
    return;
  }
  run->phase = MF_PHASE_ATTEMPT;
  run->hook_point = 0;
  arm_deadline(run);
  step(run, MF_STEP_START);
}

/* An attempt ended: settle its outcome, stop what it started when it did
 * not complete, and (for a flow) wait for its children before deciding. */
static void attempt_over(mf_run *run, mf_state_type type, mf_state_name name) {
  run->phase = MF_PHASE_NONE;
  run->body_active = 0;
  if (disarm_deadline(run) && type == MF_COMPLETED) {
    type = MF_FAILED; /* it completed after its deadline */
    name = MF_NAME_TIMED_OUT;
  }
  if (name == MF_NAME_TIMED_OUT && run->error_code == 0)
    run->error_code = MF_ETIMEDOUT;
  if (run->cancel_requested) {
    type = MF_CANCELLED;
    name = MF_NAME_CANCELLED;
  }
  run->outcome_type = (unsigned char)type;
  run->outcome_name = (unsigned char)name;
  run->outcome_decided = 1;
  if (type != MF_COMPLETED &&
      ((run->flags & MF_RUN_FLOW) || type == MF_CANCELLED ||
       name == MF_NAME_TIMED_OUT))
    mf_run_cancel_children(run);
  if ((run->flags & MF_RUN_FLOW) && run->live_children > 0) {
    mf__run_set_life(run, MF_LIFE_CLOSING);
    run->closing_step = MF_CLOSE_AFTER_ATTEMPT;
    return;
  }
  after_attempt(run);
}

/* The seconds before retry n (1 for the first), with jitter. */
static double retry_delay(mf_run *run, int n) {
  mf_run_extra *x = run->extra;
  if (x->retry_delay_count == 0)
    return 0;
  size_t i = (size_t)n <= x->retry_delay_count ? (size_t)n - 1
                                               : x->retry_delay_count - 1;
  double delay = x->retry_delays[i];
  if (x->retry_jitter > 0)
    delay *= 1 + x->retry_jitter * (2 * mf__random(run->engine) - 1);
  return delay > 0 ? clamp_seconds(delay) : 0;
}

static int may_retry(mf_run *run) {
  mf_run_extra *x = run->extra;
  if (!x || run->cancel_requested ||
      !is_failure_type((mf_state_type)run->outcome_type) ||
      run->attempt > x->retries || run->engine->force_cancel)
    return 0;
  if (!run->ops->retry)
    return 1;
  /* The condition may not drive the loop, and a cancel it makes is only
   * noted: the decision is being taken. */
  run->engine->depth++;
  run->deciding = 1;
  int again = run->ops->retry(run);
  run->deciding = 0;
  run->engine->depth--;
  return again && !run->cancel_requested;
}

/* AwaitingRetry: the slots go back for the delay. */
static void await_retry(mf_run *run) {
  mf__run_push_state(run, MF_SCHEDULED, MF_NAME_AWAITING_RETRY);
  mf__limits_release(run);
  double delay = retry_delay(run, run->attempt);
  mf_waiter *w = mf__run_waiter(run);
  mf__run_set_life(run, MF_LIFE_RETRY);
  if (!w || delay <= 0) {
    mf__sched_push(run->engine, run, MF_READY_SLOTS);
    return;
  }
  mf__waiter_clear(w);
  w->kind = MF_WAITER_SLEEP;
  mf__waiter_arm(w, MF_WAIT_ALL, delay);
  mf__sched_parked_add(run->engine, run);
}

static unsigned hook_point_of(mf_state_type type) {
  switch (type) {
  case MF_COMPLETED:
    return MF_HOOK_COMPLETED;
  case MF_CANCELLED:
    return MF_HOOK_CANCELLED;
  case MF_CRASHED:
    return MF_HOOK_CRASHED;
  default:
    return MF_HOOK_FAILED;
  }
}

/* The outcome of the attempt stands: retry, or the hooks and the end. */
static void after_attempt(mf_run *run) {
  if (may_retry(run)) {
    await_retry(run);
    return;
  }
  if (run->cancel_requested) {
    run->outcome_type = MF_CANCELLED;
    run->outcome_name = MF_NAME_CANCELLED;
  }
  unsigned point = hook_point_of((mf_state_type)run->outcome_type);
  if (!has_hooks(run, point) || run->engine->force_cancel) {
    conclude(run);
    return;
  }
  run->phase = MF_PHASE_HOOKS;
  run->hook_point = (unsigned char)point;
  mf__sched_push(run->engine, run, MF_READY_HOOKS);
}

/* The hooks are done (or there were none): the run ends, a flow once its
 * children are final. */
static void conclude(mf_run *run) {
  run->phase = MF_PHASE_NONE;
  run->hook_point = 0;
  if ((run->flags & MF_RUN_FLOW) && run->live_children > 0) {
    mf__run_set_life(run, MF_LIFE_CLOSING);
    run->closing_step = MF_CLOSE_FINALIZE;
    return;
  }
  mf__run_finalize(run, (mf_state_type)run->outcome_type,
                   (mf_state_name)run->outcome_name);
}

void mf_run_finish(mf_run *run, mf_state_type type, mf_state_name name) {
  switch (run->life) {
  case MF_LIFE_FINAL:
  case MF_LIFE_NEW:
    return;
  case MF_LIFE_EXTERNAL:
    mf__run_finalize(run, type, name);
    return;
  default:
    break;
  }
  if (!run->body_active)
    return; /* nothing was stepped: a stale call */
  run->body_active = 0;
  unpark(run);
  if (run->phase == MF_PHASE_HOOKS) {
    if (run->hook_point == MF_HOOK_RUNNING) {
      run->phase = MF_PHASE_NONE;
      mf__sched_push(run->engine, run, MF_READY_ATTEMPT);
      return;
    }
    conclude(run);
    return;
  }
  attempt_over(run, type, name);
}

unsigned mf_run_hook_point(const mf_run *run) {
  return run->phase == MF_PHASE_HOOKS ? run->hook_point : 0;
}

void mf_run_outcome(const mf_run *run, mf_state_type *type,
                    mf_state_name *name) {
  int decided = run->life != MF_LIFE_FINAL && run->outcome_decided;
  *type = (mf_state_type)(decided ? run->outcome_type : run->type);
  *name = (mf_state_name)(decided ? run->outcome_name : run->name);
}

int mf_run_timed_out(const mf_run *run) {
  const mf_run_extra *x = run->extra;
  if (!x || run->phase != MF_PHASE_ATTEMPT)
    return 0;
  return x->timed_out ||
         (x->deadline_at >= 0 && mf_engine_now(run->engine) >= x->deadline_at);
}

double mf_run_deadline(const mf_run *run) {
  const mf_run_extra *x = run->extra;
  return x && run->phase == MF_PHASE_ATTEMPT ? x->deadline_at : -1;
}

int mf_run_stop_deadline(mf_run *run) {
  mf_run_extra *x = run->extra;
  if (!x || run->phase != MF_PHASE_ATTEMPT)
    return 0;
  if (mf_run_timed_out(run)) {
    x->timed_out = 1; /* the verdict holds: attempt_over reads it */
    return 1;
  }
  if (x->deadline) {
    mf__waiter_clear(x->deadline);
    x->deadline->active = 0;
  }
  x->deadline_at = -1;
  return 0;
}

/* The deadline's timer fired: a parked or waiting body is stopped now; a
 * computing one checks mf_run_timed_out and stops itself. */
void mf__run_deadline_passed(mf_run *run) {
  run->extra->timed_out = 1;
  if (run->phase != MF_PHASE_ATTEMPT)
    return;
  if (run->life == MF_LIFE_PARKED ||
      (run->life == MF_LIFE_READY && run->ready_action == MF_READY_RESUME)) {
    run->error_code = MF_ETIMEDOUT; /* the body's abandon sees why */
    abandon_body(run);
    attempt_over(run, MF_FAILED, MF_NAME_TIMED_OUT);
  }
}

int mf_run_set_policy(mf_run *run, const mf_run_policy *p) {
  if (run->life != MF_LIFE_NEW)
    return MF_ESTATE;
  if (p->retries < 0 || !(p->retry_jitter >= 0 && p->retry_jitter <= 1) ||
      p->timeout != p->timeout || (p->retry_delay_count && !p->retry_delays))
    return MF_EINVAL;
  for (size_t i = 0; i < p->retry_delay_count; i++)
    if (!(p->retry_delays[i] >= 0))
      return MF_EINVAL;
  mf_run_extra *x = mf__run_extra(run);
  if (!x)
    return MF_ENOMEM;
  double *delays = NULL;
  if (p->retry_delay_count) {
    delays = malloc(p->retry_delay_count * sizeof *delays);
    if (!delays)
      return MF_ENOMEM;
    memcpy(delays, p->retry_delays, p->retry_delay_count * sizeof *delays);
  }
  free(x->retry_delays);
  x->retry_delays = delays;
  x->retry_delay_count = p->retry_delay_count;
  x->retries = p->retries;
  x->retry_jitter = p->retry_jitter;
  x->timeout = p->timeout;
  x->hooks = p->hooks;
  x->deadline_at = -1;
  return 0;
}

/* }====== */

/* {====== The scheduler's entry ====== */

/* Woken to take the slots of its limits (first start, or a retry). */
static void start_after_slots(mf_run *run) {
  if (run->waiter)
    mf__waiter_clear(run->waiter);
  if (mf__limits_acquire(run))
    begin_attempt(run);
}

static void resume(mf_run *run) {
  if (run->waiter)
    mf__waiter_clear(run->waiter);
  if (run->phase == MF_PHASE_ATTEMPT && mf_run_timed_out(run)) {
    run->error_code = MF_ETIMEDOUT; /* woken after its deadline: stopped */
    abandon_body(run);
    attempt_over(run, MF_FAILED, MF_NAME_TIMED_OUT);
    return;
  }
  step(run, MF_STEP_RESUME);
}

static void closed(mf_run *run) {
  if (run->closing_step == MF_CLOSE_AFTER_ATTEMPT)
    after_attempt(run);
  else
    mf__run_finalize(run, (mf_state_type)run->outcome_type,
                     (mf_state_name)run->outcome_name);
}

void mf__run_execute(mf_run *run) {
  switch (run->ready_action) {
  case MF_READY_INPUTS:
    start_after_inputs(run);
    break;
  case MF_READY_START:
    if (mf__limits_acquire(run))
      begin_attempt(run);
    break;
  case MF_READY_SLOTS:
    start_after_slots(run);
    break;
  case MF_READY_RESUME:
    resume(run);
    break;
  case MF_READY_ATTEMPT:
    execute_attempt(run);
    break;
  case MF_READY_HOOKS:
    step(run, MF_STEP_HOOKS);
    break;
  case MF_READY_CLOSE:
    closed(run);
    break;
  }
}

void mf__run_child_final(mf_run *parent) {
  if (parent->live_children > 0)
    return;
  if (parent->life == MF_LIFE_CLOSING)
    mf__sched_push(parent->engine, parent, MF_READY_CLOSE);
  else if (mf__run_waiting(parent) &&
           parent->waiter->kind == MF_WAITER_CHILDREN)
    mf__waiter_wake(parent->waiter, MF_WAKE_DONE);
}

/* }====== */

/* {====== Cancellation ====== */

/*
 * One run of a subtree being cancelled (its children came first).  A run
 * that never began ends at once; a body in an attempt is stopped and the
 * attempt ends CANCELLED (then its on_cancellation hooks, then the end); a
 * run running its hooks, or a flow closing on its children, goes on; the
 * executing run is stopped when its step returns.
 */
void mf__run_cancel_one(mf_run *run) {
  if (run->engine->force_cancel) {
    mf__run_force_final(run);
    return;
  }
  if (run->deciding)
    return; /* marked: the decision under way sees it */
  switch (run->life) {
  case MF_LIFE_FINAL:
  case MF_LIFE_ACTIVE:
  case MF_LIFE_CLOSING:
    return;
  case MF_LIFE_NEW:
  case MF_LIFE_INPUTS:
  case MF_LIFE_EXTERNAL:
    mf__run_finalize(run, MF_CANCELLED, MF_NAME_CANCELLED);
    return;
  case MF_LIFE_RETRY:
    unpark(run);
    after_attempt(run); /* cancelled: not retried */
    return;
  default:
    break;
  }
  if (run->phase == MF_PHASE_HOOKS ||
      (run->life == MF_LIFE_READY && run->ready_action == MF_READY_CLOSE))
    return; /* its hooks finish, or it closes, then it ends as decided */
  if (!run->body_started) {
    mf__run_finalize(run, MF_CANCELLED, MF_NAME_CANCELLED);
    return;
  }
  if (run->phase == MF_PHASE_NONE) {
    /* Between attempts (taking its slots again), or before the body of an
     * attempt whose on_running hooks ran. */
    unpark(run);
    if (run->life == MF_LIFE_READY && run->ready_action == MF_READY_ATTEMPT) {
      attempt_over(run, MF_CANCELLED, MF_NAME_CANCELLED);
      return;
    }
    after_attempt(run);
    return;
  }
  abandon_body(run);
  attempt_over(run, MF_CANCELLED, MF_NAME_CANCELLED);
}

void mf__run_force_final(mf_run *run) {
  if (run->life == MF_LIFE_FINAL)
    return;
  run->cancel_requested = 1;
  mf__run_finalize(run, MF_CANCELLED, MF_NAME_CANCELLED);
}

/* }====== */

/* {====== Finalization ====== */

static int is_failure(const mf_run *run) {
  return run->type == MF_FAILED || run->type == MF_CRASHED ||
         run->name == MF_NAME_NOT_READY;
}

/* Closes what the run attached, newest first. */
static void close_resources(mf_run *run) {
  while (run->extra && run->extra->resources) {
    mf_resource *res = run->extra->resources;
    mf_resource_detach(res);
    res->close(res);
  }
}

void mf__run_finalize(mf_run *run, mf_state_type type, mf_state_name name) {
  if (run->life == MF_LIFE_FINAL)
    return;
  mf_engine *e = run->engine;
  int submitted = run->life != MF_LIFE_NEW;
  unpark(run);
  disarm_deadline(run);
  mf__limits_release(run); /* every way out gives the slots back */
  if (run->waiter) {       /* inputs or park: drops their references */
    mf__waiter_free(run->waiter);
    mf__waiter_dealloc(e, run->waiter);
    run->waiter = NULL;
  }
  if (run->queued && !run->queue_hold) {
    run->queue_hold = 1; /* the queue still points at it: keep it alive */
    mf__run_hold(run);
  }
  run->phase = MF_PHASE_NONE;
  mf__run_set_life(run, MF_LIFE_FINAL);
  /* A body stopped mid-step, or one that never ran to its end, lets go of
   * what it holds (the run is final: all of it). */
  if (run->body_active || !run->body_started) {
    run->body_active = 0;
    if (run->ops && run->ops->abandon)
      run->ops->abandon(run);
  }
  mf__run_push_state(run, type, name);
  close_resources(run);
  int unhandled_failure = is_failure(run) && !run->handled;
  /* A run claimed before its end (a direct call, return_state) handles the
   * upstream failure that stopped it, as reading it afterwards would. */
  if (run->handled && run->cause)
    mf_run_mark_handled(run->cause);
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

/* }====== */
