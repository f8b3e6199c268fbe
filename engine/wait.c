/*
 * wait.c -- waiters and deadlock detection.
 *
 * A waiter is armed with a set of target runs and a mode; each target that
 * becomes final notifies it (mf__waiters_notify), and the waiter wakes its
 * owner through the ready queue, never by calling into the owner directly.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

void mf__waiter_init(mf_waiter *w, mf_engine *e, mf_run *owner) {
  memset(w, 0, sizeof *w);
  w->engine = e;
  w->owner = owner;
  w->nodes = &w->inline_node;
  w->capacity = 1;
  w->deadline = -1;
  w->heap_index = MF_NO_HEAP_INDEX;
}

int mf__waiter_add(mf_waiter *w, mf_run *target, int allow_fail) {
  if (w->count == w->capacity) {
    /* (from the inline node straight to 4: a fan-in has a few inputs) */
    size_t cap = w->capacity == 1 ? 4 : w->capacity * 2;
    mf_wait_node *nodes;
    if (w->nodes == &w->inline_node) {
      nodes = malloc(cap * sizeof *nodes);
      if (nodes)
        nodes[0] = w->inline_node;
    } else {
      nodes = realloc(w->nodes, cap * sizeof *nodes);
    }
    if (!nodes)
      return MF_ENOMEM;
    w->nodes = nodes;
    w->capacity = cap;
  }
  mf_wait_node *node = &w->nodes[w->count++];
  memset(node, 0, sizeof *node);
  node->waiter = w;
  node->target = target;
  node->allow_failure = (unsigned char)(allow_fail != 0);
  mf_run_ref(target);
  return 0;
}

static void node_link(mf_wait_node *node) {
  mf_run *t = node->target;
  node->prev = NULL;
  node->next = t->waiters;
  if (t->waiters)
    t->waiters->prev = node;
  t->waiters = node;
  node->linked = 1;
}

static void node_unlink(mf_wait_node *node) {
  if (!node->linked)
    return;
  if (node->prev)
    node->prev->next = node->next;
  else
    node->target->waiters = node->next;
  if (node->next)
    node->next->prev = node->prev;
  node->prev = node->next = NULL;
  node->linked = 0;
}

/* Whether the wait is over, given the node that just finished (or NULL). */
static int satisfied(const mf_waiter *w, const mf_wait_node *finished) {
  switch (w->kind) {
  case MF_WAITER_SLEEP:
  case MF_WAITER_DEADLINE:
  case MF_WAITER_EXTERNAL:
    return 0;
  case MF_WAITER_CHILDREN:
    return w->owner->live_children == 0;
  case MF_WAITER_TARGETS:
    break;
  }
  if (w->pending == 0)
    return 1;
  if (w->mode == MF_WAIT_ANY)
    return w->pending < w->count;
  if (w->mode == MF_WAIT_ALL_FAST && finished)
    return finished->target->type != MF_COMPLETED && !finished->allow_failure;
  return 0;
}

int mf__waiter_arm(mf_waiter *w, mf_wait_mode mode, double timeout) {
  mf_engine *e = w->engine;
  w->mode = mode;
  w->pending = 0;
  w->reason = MF_WAKE_NONE;
  for (size_t i = 0; i < w->count; i++) {
    mf_wait_node *node = &w->nodes[i];
    if (mf_run_is_final(node->target)) {
      /* (Not satisfied(): nothing is linked yet, pending is still 0.) */
      int failed = node->target->type != MF_COMPLETED && !node->allow_failure;
      if (w->mode == MF_WAIT_ANY || (w->mode == MF_WAIT_ALL_FAST && failed))
        goto already;
      continue;
    }
    node_link(node);
    w->pending++;
  }
  if (satisfied(w, NULL))
    goto already;
  w->active = 1;
  if (timeout >= 0) {
    if (timeout > MF_MAX_SECONDS)
      timeout = MF_MAX_SECONDS; /* never an overflowed timer */
    w->deadline = mf_engine_now(e) + timeout;
    mf__timers_add(e, w);
  }
  return 0;
already:
  for (size_t i = 0; i < w->count; i++)
    node_unlink(&w->nodes[i]);
  w->pending = 0;
  w->reason = MF_WAKE_DONE;
  return 1;
}

void mf__waiter_clear(mf_waiter *w) {
  for (size_t i = 0; i < w->count; i++) {
    node_unlink(&w->nodes[i]);
    mf_run_unref(w->nodes[i].target);
  }
  w->count = 0;
  w->pending = 0;
  w->active = 0;
  mf__timers_remove(w->engine, w);
  w->deadline = -1;
}

void mf__waiter_free(mf_waiter *w) {
  mf__waiter_clear(w);
  if (w->nodes != &w->inline_node)
    free(w->nodes);
  w->nodes = &w->inline_node;
  w->capacity = 1;
}

void mf__waiter_wake(mf_waiter *w, mf_wake_reason reason) {
  if (!w->active)
    return;
  w->active = 0;
  if (w->kind == MF_WAITER_SLEEP && reason == MF_WAKE_TIMEOUT)
    reason = MF_WAKE_DONE; /* a sleep's deadline is its goal */
  w->reason = reason;
  for (size_t i = 0; i < w->count; i++)
    node_unlink(&w->nodes[i]);
  w->pending = 0;
  mf__timers_remove(w->engine, w);
  w->deadline = -1;
  mf_run *owner = w->owner;
  if (!owner) {
    w->engine->top_wait_over = 1; /* no more drains: the loop returns */
    /* Woken before the poll of mf_engine_wait's uv_run(UV_RUN_ONCE) (by a
     * timer): the poll must not block on handles that may never fire (a
     * connection nobody writes to).  Outside that uv_run nothing is to
     * stop (a stop flag left set would end the next uv_run, a host's too,
     * before it did anything). */
    if (w->engine->running_loop)
      uv_stop(w->engine->loop);
    return; /* its drive loop sees w->active == 0 */
  }
  if (w->kind == MF_WAITER_DEADLINE) {
    mf__run_deadline_passed(owner);
    return;
  }
  mf__sched_parked_remove(w->engine, owner);
  if (owner->life == MF_LIFE_INPUTS)
    mf__sched_push(w->engine, owner, MF_READY_INPUTS);
  else if (owner->life == MF_LIFE_SLOT || owner->life == MF_LIFE_RETRY)
    mf__sched_push(w->engine, owner, MF_READY_SLOTS);
  else
    mf__sched_push(w->engine, owner, MF_READY_RESUME);
}

/*
 * The target's waiters are first taken off it, oldest first (they are
 * linked at the head), then told one by one: waking one unlinks its other
 * nodes, which must not disturb the walk.  Oldest first means runs waiting
 * on the same future start in the order they were submitted.
 */
void mf__waiters_notify(mf_run *target) {
  mf_wait_node *chain = NULL;
  mf_wait_node *node = target->waiters;
  target->waiters = NULL;
  while (node) {
    mf_wait_node *next = node->next;
    node->linked = 0;
    node->prev = NULL;
    node->next = chain;
    chain = node;
    node = next;
  }
  while (chain) {
    node = chain;
    chain = node->next;
    node->next = NULL;
    mf_waiter *w = node->waiter;
    w->pending--;
    if (w->active && satisfied(w, node))
      mf__waiter_wake(w, MF_WAKE_DONE);
  }
}

/* {====== Deadlock detection ====== */

/* A growable stack of runs for the iterative searches. */
typedef struct run_stack {
  mf_run **items;
  size_t len, cap;
} run_stack;

static int stack_push(run_stack *s, mf_run *run) {
  if (s->len == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 32;
    mf_run **items = realloc(s->items, cap * sizeof *items);
    if (!items)
      return MF_ENOMEM;
    s->items = items;
    s->cap = cap;
  }
  s->items[s->len++] = run;
  return 0;
}

static void visit(run_stack *s, mf_run *run, unsigned epoch) {
  if (run->visit_epoch == epoch || mf_run_is_final(run))
    return;
  run->visit_epoch = epoch;
  stack_push(s, run);
}

/* A run's completion depends on the targets it waits for and, for a flow,
 * on every live run inside it (a flow waits for its whole tree, so the
 * children of a task are searched when the task's nearest flow was). */
static void push_edges(run_stack *s, mf_run *run, unsigned epoch,
                       int every_wait) {
  const mf_waiter *w = run->waiter;
  /* A wait with a deadline always ends; a wait for any of several ends
   * when one does: neither makes the run depend on a given target, unless
   * the loop is stuck (every_wait), when each such wait is an edge too. */
  if (w && w->active && w->kind == MF_WAITER_TARGETS &&
      (every_wait ||
       (w->deadline < 0 && (w->mode != MF_WAIT_ANY || w->pending <= 1)))) {
    for (size_t i = 0; i < w->count; i++)
      if (w->nodes[i].linked)
        visit(s, w->nodes[i].target, epoch);
  }
  if (!run->first_child)
    return;
  int inside_visited_flow = (run->flags & MF_RUN_FLOW) != 0;
  for (mf_run *p = run->parent; p && !inside_visited_flow; p = p->parent) {
    if (p->flags & MF_RUN_FLOW) {
      inside_visited_flow = p->visit_epoch == epoch;
      break;
    }
  }
  if (inside_visited_flow)
    for (mf_run *c = run->first_child; c; c = c->next_sibling)
      visit(s, c, epoch);
}

static int search(mf_engine *e, mf_run *waiter_run, mf_run *target,
                  int every_wait);

int mf__deadlock_check(mf_engine *e, mf_run *waiter_run, mf_run *target) {
  return search(e, waiter_run, target, 0);
}

int mf__deadlock_in_cycle(mf_engine *e, mf_run *run) {
  const mf_waiter *w = run->waiter;
  if (!w || !w->active || w->kind != MF_WAITER_TARGETS)
    return 0;
  for (size_t i = 0; i < w->count; i++)
    if (w->nodes[i].linked && search(e, run, w->nodes[i].target, 1))
      return 1;
  return 0;
}

/* The search reaches a run only through a wait on it or on one of its
 * ancestors (a flow waits for its tree), or from the target itself: with
 * none of those (a top-level chain, a DAG's root), there is no cycle, and
 * no graph to walk. */
static int reachable(const mf_run *waiter_run, const mf_run *target) {
  for (const mf_run *p = waiter_run; p; p = p->parent)
    if (p == target || p->waiters)
      return 1;
  return 0;
}

static int search(mf_engine *e, mf_run *waiter_run, mf_run *target,
                  int every_wait) {
  if (target == waiter_run)
    return 1;
  if (!reachable(waiter_run, target))
    return 0;
  run_stack stack = {0};
  unsigned epoch = ++e->epoch;
  int found = 0;
  visit(&stack, target, epoch);
  while (stack.len > 0) {
    mf_run *run = stack.items[--stack.len];
    if (run == waiter_run) {
      found = 1;
      break;
    }
    push_edges(&stack, run, epoch, every_wait);
  }
  free(stack.items);
  return found;
}

/* }====== */
