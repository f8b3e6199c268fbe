/*
 * limits.c -- concurrency and rate limits by tag.
 *
 * A run carrying tags takes a slot of each tag's limit once its inputs are
 * ready, before its body starts, and gives them back on every way out (and
 * while its body waits for a retry).  A run that finds a limit full waits in
 * that limit's FIFO; a slot given back goes straight to the oldest waiter,
 * so nobody jumps the queue.  A rate limit spaces the starts of runs
 * carrying its tag evenly.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct mf_limit {
  char *tag;
  size_t capacity;   /* (size_t)-1: no concurrency limit, only a rate */
  double interval;   /* seconds between starts; 0: no rate limit */
  double next_start; /* engine seconds: the earliest next start booked */
  double last_start; /* when the last run actually started */
  mf_run **holders;  /* runs holding a slot */
  size_t holder_count, holder_cap;
  mf_run *queue_head, *queue_tail; /* waiting runs (linked by extra) */
  size_t waiting;
  mf_limit *next;
};

/* {====== The table of limits ====== */

static mf_limit *find(const mf_engine *e, const char *tag) {
  for (mf_limit *l = e->limits; l; l = l->next)
    if (strcmp(l->tag, tag) == 0)
      return l;
  return NULL;
}

static mf_limit *find_or_add(mf_engine *e, const char *tag) {
  mf_limit *l = find(e, tag);
  if (l)
    return l;
  l = calloc(1, sizeof *l);
  if (!l || !(l->tag = strdup(tag))) {
    free(l);
    return NULL;
  }
  l->capacity = (size_t)-1;
  l->next = e->limits;
  e->limits = l;
  return l;
}

static void hand_over(mf_engine *e, mf_limit *l);

int mf_limit_set(mf_engine *e, const char *tag, size_t capacity) {
  if (capacity == 0)
    return MF_EINVAL; /* its runs could never start */
  mf_limit *l = find_or_add(e, tag);
  if (!l)
    return MF_ENOMEM;
  l->capacity = capacity;
  hand_over(e, l); /* a larger limit lets waiters in */
  return 0;
}

int mf_rate_limit_set(mf_engine *e, const char *tag, double per_second) {
  if (!(per_second > 0))
    return MF_EINVAL;
  mf_limit *l = find_or_add(e, tag);
  if (!l)
    return MF_ENOMEM;
  l->interval = 1.0 / per_second;
  return 0;
}

size_t mf_limit_each(const mf_engine *e, mf_limit_info *out, size_t max) {
  size_t n = 0;
  for (const mf_limit *l = e->limits; l; l = l->next, n++) {
    if (n >= max)
      continue;
    out[n].tag = l->tag;
    out[n].capacity = l->capacity == (size_t)-1 ? -1 : (long)l->capacity;
    out[n].holders = l->holder_count;
    out[n].waiters = l->waiting;
    out[n].per_second = l->interval > 0 ? 1.0 / l->interval : 0;
  }
  return n;
}

void mf__limits_free(mf_engine *e) {
  while (e->limits) {
    mf_limit *l = e->limits;
    e->limits = l->next;
    free(l->holders);
    free(l->tag);
    free(l);
  }
}

/* }====== */

/* {====== Holding ====== */

static int holds(const mf_limit *l, const mf_run *run) {
  for (size_t i = 0; i < l->holder_count; i++)
    if (l->holders[i] == run)
      return 1;
  return 0;
}

static int add_holder(mf_limit *l, mf_run *run) {
  if (l->holder_count == l->holder_cap) {
    size_t cap = l->holder_cap ? l->holder_cap * 2 : 8;
    mf_run **grown = realloc(l->holders, cap * sizeof *grown);
    if (!grown)
      return MF_ENOMEM;
    l->holders = grown;
    l->holder_cap = cap;
  }
  l->holders[l->holder_count++] = run;
  return 0;
}

static void remove_holder(mf_limit *l, mf_run *run) {
  for (size_t i = 0; i < l->holder_count; i++)
    if (l->holders[i] == run) {
      l->holders[i] = l->holders[--l->holder_count];
      return;
    }
}

static void enqueue(mf_limit *l, mf_run *run) {
  mf_run_extra *x = run->extra;
  x->limit_queued = l;
  x->limit_next = NULL;
  x->limit_prev = l->queue_tail;
  if (l->queue_tail)
    l->queue_tail->extra->limit_next = run;
  else
    l->queue_head = run;
  l->queue_tail = run;
  l->waiting++;
}

static void dequeue(mf_limit *l, mf_run *run) {
  mf_run_extra *x = run->extra;
  if (x->limit_queued != l)
    return;
  if (x->limit_prev)
    x->limit_prev->extra->limit_next = x->limit_next;
  else
    l->queue_head = x->limit_next;
  if (x->limit_next)
    x->limit_next->extra->limit_prev = x->limit_prev;
  else
    l->queue_tail = x->limit_prev;
  x->limit_prev = x->limit_next = NULL;
  x->limit_queued = NULL;
  l->waiting--;
}

/* Slots freed: the oldest waiters get them, and go on to start. */
static void hand_over(mf_engine *e, mf_limit *l) {
  while (l->queue_head && l->holder_count < l->capacity) {
    mf_run *run = l->queue_head;
    dequeue(l, run);
    if (add_holder(l, run) != 0)
      break;
    if (run->life == MF_LIFE_SLOT)
      mf__sched_push(e, run, MF_READY_SLOTS);
  }
}

/*
 * Takes every slot the run needs, in tag order.  Returns 1 when it holds
 * them all (and its rate spacing allows it to start now), or 0 when it was
 * queued on a full limit or must wait for its rate: it is then woken
 * through the ready queue (MF_READY_SLOTS) to try again.
 */
int mf__limits_acquire(mf_run *run) {
  mf_engine *e = run->engine;
  mf_run_extra *x = run->extra;
  if (!x || x->tag_count == 0)
    return 1;
  double delay = 0;
  for (size_t i = 0; i < x->tag_count; i++) {
    mf_limit *l = find(e, x->tags[i]);
    if (!l || holds(l, run))
      continue;
    if (l->holder_count >= l->capacity) {
      if (!x->limit_queued)
        enqueue(l, run);
      mf__run_set_life(run, MF_LIFE_SLOT);
      return 0;
    }
    if (add_holder(l, run) != 0)
      return 1; /* out of memory: run without the slot rather than hang */
  }
  /* Every slot is held: now the rate spacing of each limit. */
  if (!x->rate_reserved) {
    double now = mf_engine_now(e);
    for (size_t i = 0; i < x->tag_count; i++) {
      mf_limit *l = find(e, x->tags[i]);
      if (!l || l->interval <= 0)
        continue;
      double start = l->next_start > now ? l->next_start : now;
      l->next_start = start + l->interval;
      if (start - now > delay)
        delay = start - now;
    }
    x->rate_reserved = 1;
  }
  /* A booked start can come late (a busy loop): the gap after the run
   * that actually started last is kept all the same. */
  double now = mf_engine_now(e);
  for (size_t i = 0; i < x->tag_count; i++) {
    mf_limit *l = find(e, x->tags[i]);
    if (l && l->interval > 0 && l->last_start > 0 &&
        l->last_start + l->interval - now > delay)
      delay = l->last_start + l->interval - now;
  }
  if (delay > 1e-6) {
    mf_waiter *w = mf__run_waiter(run);
    if (w) {
      mf__waiter_clear(w);
      w->kind = MF_WAITER_SLEEP;
      mf__run_set_life(run, MF_LIFE_SLOT);
      mf__waiter_arm(w, MF_WAIT_ALL, delay);
      mf__sched_parked_add(e, run);
      return 0;
    }
  }
  for (size_t i = 0; i < x->tag_count; i++) {
    mf_limit *l = find(e, x->tags[i]);
    if (l && l->interval > 0) {
      l->last_start = now;
      if (l->next_start < now + l->interval)
        l->next_start = now + l->interval; /* later bookings follow it */
    }
  }
  x->rate_reserved = 0;
  return 1;
}

void mf__limits_release(mf_run *run) {
  mf_engine *e = run->engine;
  mf_run_extra *x = run->extra;
  if (!x || x->tag_count == 0)
    return;
  if (x->limit_queued)
    dequeue(x->limit_queued, run);
  x->rate_reserved = 0;
  for (size_t i = 0; i < x->tag_count; i++) {
    mf_limit *l = find(e, x->tags[i]);
    if (l && holds(l, run)) {
      remove_holder(l, run);
      hand_over(e, l);
    }
  }
}

int mf_run_set_tags(mf_run *run, const char *const *tags, size_t count) {
  if (run->life != MF_LIFE_NEW)
    return MF_ESTATE;
  mf_run_extra *x = mf__run_extra(run);
  if (!x)
    return MF_ENOMEM;
  const char **copy = malloc(count * sizeof *copy);
  if (!copy && count)
    return MF_ENOMEM;
  memcpy(copy, tags, count * sizeof *copy);
  free(x->tags);
  x->tags = copy;
  x->tag_count = count;
  return 0;
}

/* A run holding a slot of a full limit waits in its body on a run that
 * needs that limit, while every other holder is parked too: no slot can
 * ever come free for the target. */
int mf__limits_deadlock(const mf_run *waiter, const mf_run *target) {
  const mf_run_extra *tx = target->extra;
  if (!tx || tx->tag_count == 0 || target->body_started)
    return 0;
  for (size_t i = 0; i < tx->tag_count; i++) {
    const mf_limit *l = find(waiter->engine, tx->tags[i]);
    if (!l || l->holder_count < l->capacity || !holds(l, waiter) ||
        holds(l, target))
      continue;
    int all_parked = 1;
    for (size_t h = 0; h < l->holder_count && all_parked; h++) {
      const mf_run *holder = l->holders[h];
      if (holder != waiter &&
          !(holder->life == MF_LIFE_PARKED && holder->waiter &&
            holder->waiter->deadline < 0 &&
            holder->waiter->kind == MF_WAITER_TARGETS))
        all_parked = 0;
    }
    if (all_parked)
      return 1;
  }
  return 0;
}

/* }====== */
