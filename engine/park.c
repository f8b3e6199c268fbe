/*
 * park.c -- how a run parks (waits for runs, sleeps, waits for its children
 * or for something outside the engine), the resources a run holds, and how
 * code outside any run waits, by driving the loop itself.
 */
#include "engine.h"

/* Parks the executing run on its armed waiter, or re-queues it at once
 * when there is nothing to wait for. */
static int park(mf_run *run, mf_wait_mode mode, double timeout) {
  mf_engine *e = run->engine;
  if (mf__waiter_arm(run->waiter, mode, timeout)) {
    mf__sched_push(e, run, MF_READY_RESUME);
    return 0;
  }
  mf__run_set_life(run, MF_LIFE_PARKED);
  mf__sched_parked_add(e, run);
  return 0;
}

/* Whether the run may park now: it is executing a step that has not ended
 * what it was stepped for (after mf_run_finish, the retry condition asked
 * inside that step may not wait). */
static int may_park(const mf_run *run) {
  return run->life == MF_LIFE_ACTIVE && run->engine->current == run &&
         run->body_active;
}

/* The executing run's waiter, emptied and of that kind; NULL with *rc set
 * when the run is not executing or memory is short. */
static mf_waiter *fresh_waiter(mf_run *run, mf_waiter_kind kind, int *rc) {
  *rc = 0;
  if (!may_park(run)) {
    *rc = MF_ESTATE;
    return NULL;
  }
  mf_waiter *w = mf__run_waiter(run);
  if (!w) {
    *rc = MF_ENOMEM;
    return NULL;
  }
  mf__waiter_clear(w);
  w->kind = kind;
  return w;
}

int mf_run_wait(mf_run *run, mf_run *const *targets, size_t count,
                mf_wait_mode mode, double timeout) {
  if (!may_park(run))
    return MF_ESTATE;
  /* A timeout past the clamp (math.huge, 1e9 s) is none: such a wait
   * has no end to count on, and a cycle through it is a deadlock. */
  if (timeout >= MF_MAX_SECONDS)
    timeout = -1;
  /* A wait with a timeout always ends, so it is never a deadlock. */
  if (timeout < 0)
    for (size_t i = 0; i < count; i++)
      if (!mf_run_is_final(targets[i]) &&
          (mf__deadlock_check(run->engine, run, targets[i]) ||
           mf__limits_deadlock(run, targets[i])))
        return MF_EDEADLK;
  int rc;
  mf_waiter *w = fresh_waiter(run, MF_WAITER_TARGETS, &rc);
  if (!w)
    return rc;
  for (size_t i = 0; i < count; i++) {
    rc = mf__waiter_add(w, targets[i], 0);
    if (rc) {
      mf__waiter_clear(w);
      return rc;
    }
  }
  return park(run, mode, timeout);
}

int mf_run_sleep(mf_run *run, double seconds) {
  int rc;
  mf_waiter *w = fresh_waiter(run, MF_WAITER_SLEEP, &rc);
  if (!w)
    return rc;
  if (!(seconds > 0)) { /* 0 (or NaN): yields once, behind the ready */
    w->reason = MF_WAKE_DONE;
    mf__sched_push_back(run->engine, run);
    return 0;
  }
  return park(run, MF_WAIT_ALL, seconds);
}

int mf_run_wait_children(mf_run *run) {
  if (!may_park(run))
    return MF_ESTATE;
  /* A run inside it that waits (through inputs or waits) for the run
   * itself can never end before it: a cycle no wake would break. */
  for (mf_run *child = run->first_child; child; child = child->next_sibling)
    if (!mf_run_is_final(child) && mf__deadlock_check(run->engine, run, child))
      return MF_EDEADLK;
  int rc;
  if (!fresh_waiter(run, MF_WAITER_CHILDREN, &rc))
    return rc;
  return park(run, MF_WAIT_ALL, -1);
}

int mf_run_park(mf_run *run, double timeout, unsigned *ticket) {
  int rc;
  mf_waiter *w = fresh_waiter(run, MF_WAITER_EXTERNAL, &rc);
  if (!w)
    return rc;
  w->ticket = ++run->park_ticket;
  if (ticket)
    *ticket = w->ticket;
  return park(run, MF_WAIT_ALL, timeout);
}

int mf_run_unpark(mf_run *run, unsigned ticket) {
  mf_waiter *w = run->waiter;
  if (!w || !w->active || w->kind != MF_WAITER_EXTERNAL || w->ticket != ticket)
    return MF_ESTATE;
  mf__waiter_wake(w, MF_WAKE_DONE);
  return 0;
}

int mf_run_attach(mf_run *run, mf_resource *res) {
  mf_run_extra *x = mf_run_is_final(run) ? NULL : mf__run_extra(run);
  if (!x)
    return mf_run_is_final(run) ? MF_ESTATE : MF_ENOMEM;
  res->run = run;
  res->prev = NULL;
  res->next = x->resources;
  if (x->resources)
    x->resources->prev = res;
  x->resources = res;
  return 0;
}

void mf_resource_detach(mf_resource *res) {
  mf_run *run = res->run;
  if (!run)
    return;
  if (res->prev)
    res->prev->next = res->next;
  else
    run->extra->resources = res->next;
  if (res->next)
    res->next->prev = res->prev;
  res->prev = res->next = NULL;
  res->run = NULL;
}

int mf_engine_wait(mf_engine *e, mf_run *const *targets, size_t count,
                   mf_wait_mode mode, double timeout) {
  if (e->depth > 0 || e->current || e->closing || e->running_loop)
    return MF_EBUSY;
  int sleep = count == 0 && mode == MF_WAIT_ANY && timeout >= 0;
  if (count == 0 && !sleep)
    return 0; /* nothing to wait for */
  if (!sleep && timeout >= MF_MAX_SECONDS)
    timeout = -1; /* past the clamp: none (as mf_run_wait) */
  mf_waiter w;
  mf__waiter_init(&w, e, NULL);
  w.kind = sleep ? MF_WAITER_SLEEP : MF_WAITER_TARGETS;
  int rc = 0;
  for (size_t i = 0; i < count && rc == 0; i++)
    rc = mf__waiter_add(&w, targets[i], 0);
  e->top_wait_over = 0;
  if (rc == 0 && !mf__waiter_arm(&w, mode, timeout)) {
    e->interrupted = 0;
    while (w.active) {
      if (mf__sched_has_work(e)) {
        /* After a pass that used its budget (here or in the loop's idle
         * callback) the loop's turn comes first: timers and I/O due since
         * then are seen before any run takes another slice. */
        if (!e->pass_cut)
          mf__sched_drain(e);
        if (w.active && mf__sched_has_work(e)) {
          e->pass_cut = 0; /* (now only the idle callback's pass may set it) */
          e->running_loop = 1;
          uv_run(e->loop, UV_RUN_NOWAIT); /* the pass used its slice */
          e->running_loop = 0;
        }
        continue;
      }
      if (e->interrupted) {
        rc = MF_EINTR;
        break;
      }
      if (!uv_loop_alive(e->loop)) {
        if (mf__sched_reopen_starts(e) || mf__sched_break_deadlocks(e) > 0)
          continue;
        rc = MF_EDEADLK;
        break;
      }
      e->running_loop = 1;
      uv_run(e->loop, UV_RUN_ONCE);
      e->running_loop = 0;
    }
    e->top_wait_over = 0;
    mf__sched_drop_zombies(e); /* (the target may have ended in a callback) */
    if (rc == 0 && w.reason == MF_WAKE_TIMEOUT)
      rc = MF_ETIMEDOUT;
    if (rc == 0 && w.reason == MF_WAKE_DEADLOCK)
      rc = MF_EDEADLK;
  }
  mf__waiter_free(&w);
  return rc;
}

void mf_engine_interrupt(mf_engine *e) {
  e->interrupted = 1;
  uv_stop(e->loop);
}
