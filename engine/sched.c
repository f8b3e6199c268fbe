/*
 * sched.c -- the scheduler: a FIFO of ready runs and a FIFO of final runs
 * whose done callbacks are due, drained from one C frame (so a long chain of
 * futures never nests resumes), and an idle handle that keeps a borrowed or
 * owned loop from blocking while either queue has entries.
 */
#include <stdlib.h>

#include "engine.h"

/* Seconds one scheduler pass may take before the loop gets a turn. */
#define MF_SCHED_SLICE 0.01

static void on_idle(uv_idle_t *handle) { mf__sched_drain(handle->data); }

static void want_drain(mf_engine *e) {
  if (!e->closing && !e->step_only && !uv_is_active((uv_handle_t *)&e->idle))
    uv_idle_start(&e->idle, on_idle);
}

void mf__sched_push(mf_engine *e, mf_run *run, mf_ready_action action) {
  run->life = MF_LIFE_READY;
  run->ready_action = action;
  run->next_ready = NULL;
  if (e->ready_tail)
    e->ready_tail->next_ready = run;
  else
    e->ready_head = run;
  e->ready_tail = run;
  want_drain(e);
}

/* Removes a run from the ready queue (cancellation of a ready run). */
void mf__sched_unlink(mf_engine *e, mf_run *run) {
  mf_run *prev = NULL;
  for (mf_run *r = e->ready_head; r; prev = r, r = r->next_ready) {
    if (r != run)
      continue;
    if (prev)
      prev->next_ready = r->next_ready;
    else
      e->ready_head = r->next_ready;
    if (e->ready_tail == r)
      e->ready_tail = prev;
    r->next_ready = NULL;
    return;
  }
}

void mf_engine_end_pass(mf_engine *e) { e->end_pass = 1; }

void mf__sched_push_done(mf_engine *e, mf_run *run) {
  mf__run_hold(run);
  run->next_ready = NULL;
  if (e->done_tail)
    e->done_tail->next_ready = run;
  else
    e->done_head = run;
  e->done_tail = run;
  want_drain(e);
}

static void fire_done_callbacks(mf_run *run) {
  mf_done_callback *cb = run->done_callbacks;
  run->done_callbacks = NULL;
  while (cb) {
    mf_done_callback *next = cb->next;
    cb->fn(run, cb->data);
    free(cb);
    cb = next;
  }
}

void mf__sched_drain(mf_engine *e) {
  if (e->draining || e->closing)
    return;
  e->draining = 1;
  e->depth++;
  mf__clock_refresh(e);
  double started = e->clock_cache, last_check = started;
  unsigned steps = 0;
  int slow_steps = 0;
  /* Done callbacks go first: they run right after the step that made
   * their run final, before any other run sees it final. */
  for (;;) {
    mf_run *run = e->done_head;
    if (run) {
      e->done_head = run->next_ready;
      if (!e->done_head)
        e->done_tail = NULL;
      run->next_ready = NULL;
      fire_done_callbacks(run);
      mf__run_release(run);
      continue;
    }
    run = e->ready_head;
    if (!run)
      break;
    /* A pass lasts a slice at most, then the loop gets a turn (timers,
     * I/O, a host's frame); the idle handle brings the scheduler back. */
    /* The clock is read every 16 steps; once steps prove slow (a block of
     * 16 took over a millisecond), at every step. */
    ++steps;
    if (e->end_pass || (e->max_steps && steps > e->max_steps))
      break;
    if (slow_steps || (steps & 15) == 0) {
      double now = mf_engine_now(e);
      if (now - started > MF_SCHED_SLICE)
        break;
      slow_steps = slow_steps || now - last_check > 0.001;
      last_check = now;
    }
    e->ready_head = run->next_ready;
    if (!e->ready_head)
      e->ready_tail = NULL;
    run->next_ready = NULL;
    mf__run_execute(run);
  }
  e->end_pass = 0;
  if (!mf__sched_has_work(e))
    uv_idle_stop(&e->idle);
  e->depth--;
  e->draining = 0;
}

int mf__sched_has_work(const mf_engine *e) {
  return e->ready_head != NULL || e->done_head != NULL;
}

void mf__sched_parked_add(mf_engine *e, mf_run *run) {
  mf_waiter *w = run->waiter;
  w->parked_prev = NULL;
  w->parked_next = e->parked;
  if (e->parked)
    e->parked->waiter->parked_prev = run;
  e->parked = run;
}

void mf__sched_parked_remove(mf_engine *e, mf_run *run) {
  mf_waiter *w = run->waiter;
  if (!w)
    return;
  if (w->parked_prev)
    w->parked_prev->waiter->parked_next = w->parked_next;
  else if (e->parked == run)
    e->parked = w->parked_next;
  else
    return; /* not in the list */
  if (w->parked_next)
    w->parked_next->waiter->parked_prev = w->parked_prev;
  w->parked_prev = w->parked_next = NULL;
}

/*
 * Called when the loop has nothing left that could wake anyone.  Waits in a
 * body (not a run's inputs, not a flow closing on its children) are woken
 * first: they raise Deadlock in the body, which may let the rest progress.
 * Only when none is left are the structural waits woken too.
 */
size_t mf__sched_break_deadlocks(mf_engine *e) {
  /* A run in a cycle of waits first, alone: its Deadlock may free the
   * others (a wait for any of several, a caller that handles it). */
  for (mf_run *run = e->parked; run; run = run->waiter->parked_next) {
    mf_waiter *w = run->waiter;
    if (w->active && w->deadline < 0 && run->life != MF_LIFE_INPUTS &&
        mf__deadlock_in_cycle(e, run)) {
      mf__waiter_wake(w, MF_WAKE_DEADLOCK);
      return 1;
    }
  }
  size_t woken = 0;
  for (int structural = 0; structural < 2 && woken == 0; structural++) {
    mf_run *run = e->parked;
    while (run) {
      mf_waiter *w = run->waiter;
      mf_run *next = w->parked_next;
      int is_structural =
          run->life == MF_LIFE_INPUTS || w->kind == MF_WAITER_CHILDREN;
      if (w->active && w->deadline < 0 && is_structural == structural) {
        mf__waiter_wake(w, MF_WAKE_DEADLOCK);
        woken++;
      }
      run = next;
    }
  }
  return woken;
}
