/*
 * park.c -- how a run parks (waits for runs, sleeps, waits for its children)
 * and how code outside any run waits, by driving the loop itself.
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
  run->life = MF_LIFE_PARKED;
  mf__sched_parked_add(e, run);
  return 0;
}

static int check_active(const mf_run *run) {
  if (run->life != MF_LIFE_ACTIVE || run->engine->current != run)
    return MF_ESTATE;
  return 0;
}

int mf_run_wait(mf_run *run, mf_run *const *targets, size_t count,
                mf_wait_mode mode, double timeout) {
  int rc = check_active(run);
  if (rc)
    return rc;
  /* A wait with a timeout always ends, so it is never a deadlock. */
  if (timeout < 0)
    for (size_t i = 0; i < count; i++)
      if (!mf_run_is_final(targets[i]) &&
          (mf__deadlock_check(run->engine, run, targets[i]) ||
           mf__limits_deadlock(run, targets[i])))
        return MF_EDEADLK;
  mf_waiter *w = mf__run_waiter(run);
  if (!w)
    return MF_ENOMEM;
  mf__waiter_clear(w);
  w->kind = MF_WAITER_TARGETS;
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
  int rc = check_active(run);
  if (rc)
    return rc;
  mf_waiter *w = mf__run_waiter(run);
  if (!w)
    return MF_ENOMEM;
  mf__waiter_clear(w);
  if (seconds <= 0) {
    w->reason = MF_WAKE_DONE;
    mf__sched_push(run->engine, run, MF_READY_RESUME);
    return 0;
  }
  w->kind = MF_WAITER_SLEEP;
  return park(run, MF_WAIT_ALL, seconds);
}

int mf_run_wait_children(mf_run *run) {
  int rc = check_active(run);
  if (rc)
    return rc;
  mf_waiter *w = mf__run_waiter(run);
  if (!w)
    return MF_ENOMEM;
  mf__waiter_clear(w);
  w->kind = MF_WAITER_CHILDREN;
  return park(run, MF_WAIT_ALL, -1);
}

int mf_engine_wait(mf_engine *e, mf_run *const *targets, size_t count,
                   mf_wait_mode mode, double timeout) {
  if (e->depth > 0 || e->current || e->closing)
    return MF_EBUSY;
  mf_waiter w;
  mf__waiter_init(&w, e, NULL);
  w.kind = count == 0 && timeout >= 0 ? MF_WAITER_SLEEP : MF_WAITER_TARGETS;
  int rc = 0;
  for (size_t i = 0; i < count && rc == 0; i++)
    rc = mf__waiter_add(&w, targets[i], 0);
  if (rc == 0 && !mf__waiter_arm(&w, mode, timeout)) {
    e->interrupted = 0;
    while (w.active) {
      if (mf__sched_has_work(e)) {
        mf__sched_drain(e);
        if (w.active && mf__sched_has_work(e))
          uv_run(e->loop, UV_RUN_NOWAIT); /* the pass used its slice */
        continue;
      }
      if (e->interrupted) {
        rc = MF_EINTR;
        break;
      }
      if (!uv_loop_alive(e->loop)) {
        if (mf__sched_break_deadlocks(e) > 0)
          continue;
        rc = MF_EDEADLK;
        break;
      }
      uv_run(e->loop, UV_RUN_ONCE);
    }
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
