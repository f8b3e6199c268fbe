/*
 * sched.c -- the scheduler: two FIFOs of ready runs (to start, woken) served
 * in turn, and a FIFO of final runs
 * whose done callbacks are due, drained from one C frame (so a long chain of
 * futures never nests resumes), and an idle handle that keeps a borrowed or
 * owned loop from blocking while either queue has entries.
 *
 * A run leaves the ready queue only when it is popped: one cancelled while
 * queued stays in it as a zombie (no longer READY) that the pop skips, so
 * cancelling a million queued runs is linear, not quadratic.
 */
#include <stdlib.h>

#include "engine.h"

static void on_idle(uv_idle_t *handle) {
  mf__sched_drain_from_loop(handle->data);
}

/* A loop callback's drain.  None once a top-level wait was satisfied: its
 * caller gets the loop back before any run takes another time slice. */
void mf__sched_drain_from_loop(mf_engine *e) {
  if (!e->step_only && !e->top_wait_over)
    mf__sched_drain(e);
}

static void want_drain(mf_engine *e) {
  if (!e->closing && !e->step_only && !uv_is_active((uv_handle_t *)&e->idle))
    uv_idle_start(&e->idle, on_idle);
}

/* Lets go of the reference a queued run's entry held, if it held one. */
static void release_queue_hold(mf_run *run) {
  if (run->queue_hold) {
    run->queue_hold = 0;
    mf__run_release(run);
  }
}

/* Appends the run to a queue (a zombie brought back keeps its place). */
static void enqueue(mf_engine *e, mf_run *run, mf_ready_action action,
                    int woken) {
  mf__run_set_life(run, MF_LIFE_READY);
  run->ready_action = (unsigned char)action;
  if (run->queued) {
    /* Still in the queue (a zombie brought back): it keeps its place. */
    release_queue_hold(run);
    want_drain(e);
    return;
  }
  mf_run **head = woken ? &e->woken_head : &e->ready_head;
  mf_run **tail = woken ? &e->woken_tail : &e->ready_tail;
  run->queued = 1;
  run->next_ready = NULL;
  if (*tail)
    (*tail)->next_ready = run;
  else
    *head = run;
  *tail = run;
  want_drain(e);
}

void mf__sched_push(mf_engine *e, mf_run *run, mf_ready_action action) {
  enqueue(e, run, action,
          action == MF_READY_RESUME || action == MF_READY_CLOSE);
}

void mf__sched_push_back(mf_engine *e, mf_run *run) {
  enqueue(e, run, MF_READY_RESUME, 0);
}

static void on_gate_timer(uv_timer_t *handle) {
  mf_engine *e = handle->data;
  e->starts_held = 0;
  if (e->ready_head)
    want_drain(e);
}

void mf_engine_set_start_gate(mf_engine *e, mf_start_gate_fn gate, void *data) {
  e->start_gate = gate;
  e->start_gate_data = data;
  if (!gate && e->starts_held) {
    e->starts_held = 0;
    uv_timer_stop(&e->gate_timer);
    if (e->ready_head)
      want_drain(e);
  }
}

int mf__sched_reopen_starts(mf_engine *e) {
  if (!e->starts_held)
    return 0;
  e->starts_held = 0;
  uv_timer_stop(&e->gate_timer);
  return 1;
}

/* Whether a run to start may start now: the gate is asked; while it holds,
 * the runs to start wait for the gate timer. */
static int starts_open(mf_engine *e) {
  if (e->starts_held)
    return 0;
  if (!e->start_gate || !e->start_gate(e, e->start_gate_data))
    return 1;
  e->starts_held = 1;
  if (!e->closing)
    uv_timer_start(&e->gate_timer, on_gate_timer, 1, 0);
  return 0;
}

/* Takes the next ready run, from the two queues in turn while both have
 * runs (the runs to start only while the gate lets them); returns NULL
 * when there is none.  Zombies are dropped on the way (their queue hold
 * released). */
/* Takes the head of one queue (woken or not) off it; NULL when empty. */
static mf_run *unlink_head(mf_engine *e, int woken) {
  mf_run **head = woken ? &e->woken_head : &e->ready_head;
  mf_run *run = *head;
  if (!run)
    return NULL;
  *head = run->next_ready;
  if (!*head)
    *(woken ? &e->woken_tail : &e->ready_tail) = NULL;
  run->next_ready = NULL;
  run->queued = 0;
  return run;
}

static mf_run *pop_ready(mf_engine *e) {
  for (;;) {
    int woken = e->woken_head && (!e->ready_head || !e->woken_last);
    if (!woken && e->ready_head && !starts_open(e)) {
      if (!e->woken_head)
        return NULL;
      woken = 1;
    }
    mf_run *run = unlink_head(e, woken);
    if (!run)
      return NULL;
    e->woken_last = (unsigned char)woken;
    if (run->life == MF_LIFE_READY)
      return run;
    release_queue_hold(run);
  }
}

void mf__sched_drop_zombies(mf_engine *e) {
  for (int woken = 0; woken <= 1; woken++) {
    mf_run *head = woken ? e->woken_head : e->ready_head;
    while (head && head->life != MF_LIFE_READY) {
      release_queue_hold(unlink_head(e, woken));
      head = woken ? e->woken_head : e->ready_head;
    }
  }
}

/* Empties the ready queue (engine close: every run is final by then). */
MF_INTERNAL void mf__sched_drop_ready(mf_engine *e) {
  while (pop_ready(e))
    ;
}

void mf_engine_end_pass(mf_engine *e) { e->end_pass = 1; }

int mf__sched_push_done(mf_engine *e, mf_run *run) {
  if (e->done_count == e->done_cap) {
    size_t cap = e->done_cap ? e->done_cap * 2 : 64;
    mf_run **ring = malloc(cap * sizeof *ring);
    if (!ring)
      return MF_ENOMEM;
    for (size_t i = 0; i < e->done_count; i++)
      ring[i] = e->done[(e->done_first + i) % e->done_cap];
    free(e->done);
    e->done = ring;
    e->done_cap = cap;
    e->done_first = 0;
  }
  mf__run_hold(run);
  e->done[(e->done_first + e->done_count++) % e->done_cap] = run;
  want_drain(e);
  return 0;
}

mf_run *mf__sched_pop_done(mf_engine *e) {
  if (e->done_count == 0)
    return NULL;
  mf_run *run = e->done[e->done_first];
  e->done_first = (e->done_first + 1) % e->done_cap;
  e->done_count--;
  return run;
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
  double started = e->clock_cache, last_look = started;
  e->woken_last = 0; /* each pass begins with what the loop's turn woke */
  e->pass_started = started;
  double longest_block = 0;
  unsigned steps = 0, next_look = 2, since_look = 0;
  e->pass_cut = 0;
  /* Done callbacks go first: they run right after the step that made
   * their run final, before any other run sees it final. */
  for (;;) {
    mf_run *run = mf__sched_pop_done(e);
    if (run) {
      fire_done_callbacks(run);
      mf__run_release(run);
      continue;
    }
    if (!e->woken_head && (!e->ready_head || e->starts_held))
      break;
    /* A pass lasts its budget at most (mf_config.step_budget, 10 ms by
     * default), then the loop gets a turn (timers, I/O, a host's frame);
     * the idle handle brings the scheduler back.  The clock is read after
     * the first step, then after blocks of steps that double up to 16
     * (fast steps cost a reading per 16), and each look expects the next
     * block to take as long per step as the last: the pass ends before the
     * block that would take it past its budget, not after.  (Read only
     * every 16 steps, a pass of runs computing 2 ms each went 30 ms.) */
    ++steps;
    if (e->end_pass || (e->max_steps && steps > e->max_steps)) {
      e->pass_cut = 1;
      break;
    }
    if (steps == next_look) {
      double now = mf_engine_now(e);
      double per_step = (now - last_look) / (steps - 1 - since_look);
      unsigned block = steps - 1 < 16 ? steps - 1 : 16;
      if (per_step * 16 > e->pass_budget / 10)
        block = 1; /* slow steps: a look at each */
      if (now - last_look > longest_block)
        longest_block = now - last_look;
      /* (and no less than the pass's longest block so far: a block of
       * short steps takes several times as long now and then, when one of
       * them meets fresh pages or the thread loses its CPU, and passes
       * went 0.05 ms over) */
      double next = per_step * block;
      if (next < longest_block)
        next = longest_block;
      if (now - started + next > e->pass_budget) {
        mf__sched_drop_zombies(e);
        e->pass_cut = mf__sched_has_work(e);
        break;
      }
      since_look = steps - 1;
      last_look = now;
      next_look = steps + block;
    }
    run = pop_ready(e);
    if (!run)
      break; /* (the gate holds the runs to start) */
    mf__run_execute(run);
  }
  double ended = mf_engine_now(e);
  if (ended - started > e->longest_pass)
    e->longest_pass = ended - started;
  e->end_pass = 0;
  e->pass_started = -1;
  if (!mf__sched_has_work(e))
    uv_idle_stop(&e->idle);
  e->depth--;
  e->draining = 0;
}

int mf__sched_has_work(const mf_engine *e) {
  return (e->ready_head != NULL && !e->starts_held) || e->woken_head != NULL ||
         e->done_count > 0;
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
