/*
 * timers.c -- deadlines of parked waits: a binary min-heap of waiters behind
 * one libuv timer, so ten thousand sleeping runs cost one handle.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "engine.h"

static int earlier(const mf_waiter *a, const mf_waiter *b) {
  return a->deadline < b->deadline;
}

static void heap_set(mf_engine *e, size_t i, mf_waiter *w) {
  e->heap[i] = w;
  w->heap_index = i;
}

static void sift_up(mf_engine *e, size_t i) {
  mf_waiter *w = e->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(w, e->heap[parent]))
      break;
    heap_set(e, i, e->heap[parent]);
    i = parent;
  }
  heap_set(e, i, w);
}

static void sift_down(mf_engine *e, size_t i) {
  mf_waiter *w = e->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= e->heap_len)
      break;
    if (child + 1 < e->heap_len && earlier(e->heap[child + 1], e->heap[child]))
      child++;
    if (!earlier(e->heap[child], w))
      break;
    heap_set(e, i, e->heap[child]);
    i = child;
  }
  heap_set(e, i, w);
}

static void on_timer(uv_timer_t *handle);

/* Points the uv timer at the earliest deadline, or stops it. */
static void rearm(mf_engine *e) {
  if (e->closing || e->timers_firing)
    return;
  if (e->heap_len == 0) {
    if (e->timer_due >= 0)
      uv_timer_stop(&e->timer);
    e->timer_due = -1;
    return;
  }
  double due = e->heap[0]->deadline;
  if (due == e->timer_due)
    return;
  double delay = due - mf_engine_now(e);
  /* Never 0: libuv 1.44 runs a timer started with 0 from a timer callback
   * again in the same pass, and a body that takes over a millisecond would
   * keep the loop from ever polling. */
  uint64_t ms = delay <= 0.001 ? 1 : (uint64_t)ceil(delay * 1000.0);
  e->timer_due = due;
  uv_timer_start(&e->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *handle) {
  mf_engine *e = handle->data;
  e->timer_due = -1;
  double now = mf_engine_now(e);
  /* A libuv timer may fire up to a millisecond early (it counts whole ms of
   * a cached clock); accept deadlines within that slack. */
  e->timers_firing = 1; /* one rearm for the batch, not one per wake */
  while (e->heap_len > 0 && e->heap[0]->deadline <= now + 0.0005)
    mf__waiter_wake(e->heap[0], MF_WAKE_TIMEOUT);
  e->timers_firing = 0;
  rearm(e);
  /* The woken runs are ready: the idle handle drains them in this same
   * turn of the loop (a drain here as well would make two passes a turn,
   * and a run woken by the next timer would wait for both). */
}

/* The heap has room: mf__waiter_alloc reserves it for every waiter. */
void mf__timers_add(mf_engine *e, mf_waiter *w) {
  assert(e->heap_len < e->heap_cap);
  heap_set(e, e->heap_len++, w);
  sift_up(e, w->heap_index);
  rearm(e);
}

void mf__timers_remove(mf_engine *e, mf_waiter *w) {
  size_t i = w->heap_index;
  if (i == MF_NO_HEAP_INDEX)
    return;
  w->heap_index = MF_NO_HEAP_INDEX;
  mf_waiter *last = e->heap[--e->heap_len];
  if (i < e->heap_len) {
    heap_set(e, i, last);
    sift_up(e, i);
    sift_down(e, last->heap_index);
  }
  rearm(e);
}

void mf__timers_close(mf_engine *e) {
  free(e->heap);
  e->heap = NULL;
  e->heap_len = e->heap_cap = 0;
}
