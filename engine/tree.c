/*
 * tree.c -- the tree of runs: who started whom, cancellation of a subtree,
 * and the unhandled failures counted against each flow (or the root scope).
 *
 * Only live runs are in the tree.  A task that finishes while runs it started
 * are still going hands them to its own parent, so a live run's parent is
 * always live and a flow can count its whole subtree.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* {====== Links ====== */

static mf_run **children_head(mf_engine *e, mf_run *parent) {
  return parent ? &parent->first_child : &e->first_root;
}

void mf__tree_link(mf_engine *e, mf_run *run, mf_run *parent) {
  mf_run **head = children_head(e, parent);
  run->parent = parent;
  run->prev_sibling = NULL;
  run->next_sibling = *head;
  if (*head)
    (*head)->prev_sibling = run;
  *head = run;
  if (parent)
    parent->live_children++;
  else
    e->live_roots++;
}

void mf__tree_unlink(mf_engine *e, mf_run *run) {
  mf_run *parent = run->parent;
  if (run->prev_sibling)
    run->prev_sibling->next_sibling = run->next_sibling;
  else
    *children_head(e, parent) = run->next_sibling;
  if (run->next_sibling)
    run->next_sibling->prev_sibling = run->prev_sibling;
  run->prev_sibling = run->next_sibling = NULL;
  run->parent = NULL;
  if (parent) {
    parent->live_children--;
    mf__run_child_final(parent);
  } else {
    e->live_roots--;
  }
}

void mf__tree_adopt_children(mf_engine *e, mf_run *run) {
  while (run->first_child) {
    mf_run *child = run->first_child;
    run->first_child = child->next_sibling;
    if (run->first_child)
      run->first_child->prev_sibling = NULL;
    run->live_children--;
    mf__tree_link(e, child, run->parent);
  }
}

void mf_run_release_children(mf_run *run) {
  mf_run *parent = run->parent;
  run->parent = NULL; /* adopt into the top level, not run's parent */
  mf__tree_adopt_children(run->engine, run);
  run->parent = parent;
}

/* Cancels each top-level run once (one that runs its own clean-up stays
 * in the list until it is done). */
size_t mf_engine_cancel_all(mf_engine *e, void (*names)(mf_run *, void *),
                            void *data) {
  size_t count = 0;
  for (mf_run *run = e->first_root; run; run = run->next_sibling)
    count++;
  mf_run **roots = malloc((count ? count : 1) * sizeof *roots);
  if (!roots)
    return 0;
  size_t n = 0;
  for (mf_run *run = e->first_root; run; run = run->next_sibling) {
    mf_run_ref(run);
    roots[n++] = run;
  }
  for (size_t i = 0; i < n; i++) {
    mf_run *run = roots[i];
    if (!mf_run_is_final(run)) {
      if (names)
        names(run, data);
      mf_run_cancel(run); /* the executing run ends when its step returns */
    }
    mf_run_unref(run);
  }
  free(roots);
  return count;
}

/* }====== */

/* {====== Progress of top-level flows ====== */

void mf__progress_submit(mf_engine *e, mf_run *run) {
  mf_run *parent = run->parent;
  mf_run *top = NULL;
  if (parent)
    top = parent->top_flow                ? parent->top_flow
          : (parent->flags & MF_RUN_FLOW) ? parent
                                          : NULL;
  run->top_flow = top;
  if (top) {
    top->extra->stats.submitted++;
    top->extra->stats.waiting++;
    return;
  }
  if (!(run->flags & MF_RUN_FLOW) || !mf__run_extra(run))
    return;
  mf_run_extra *x = run->extra;
  memset(&x->stats, 0, sizeof x->stats);
  x->stats.started_at = mf_engine_now(e);
  x->top_prev = e->top_flows_last;
  x->top_next = NULL;
  if (e->top_flows_last)
    e->top_flows_last->extra->top_next = run;
  else
    e->top_flows = run;
  e->top_flows_last = run;
}

void mf__progress_start(mf_run *run) {
  if (run->top_flow) {
    run->top_flow->extra->stats.waiting--;
    run->top_flow->extra->stats.running++;
  }
}

void mf__progress_final(mf_engine *e, mf_run *run, int started) {
  mf_run *top = run->top_flow;
  run->top_flow = NULL;
  if (top) {
    mf_flow_stats *s = &top->extra->stats;
    if (started)
      s->running--;
    else
      s->waiting--;
    if (run->type == MF_COMPLETED)
      s->completed++;
    else if (run->type == MF_CANCELLED)
      s->cancelled++;
    else
      s->failed++;
    return;
  }
  mf_run_extra *x = run->extra;
  if (!(run->flags & MF_RUN_FLOW) || !x ||
      (e->top_flows != run && !x->top_prev))
    return; /* not in the list of top-level flows */
  if (x->top_prev)
    x->top_prev->extra->top_next = x->top_next;
  else
    e->top_flows = x->top_next;
  if (x->top_next)
    x->top_next->extra->top_prev = x->top_prev;
  else
    e->top_flows_last = x->top_prev;
  x->top_prev = x->top_next = NULL;
}

int mf_run_flow_stats(const mf_run *flow, mf_flow_stats *out) {
  if (!(flow->flags & MF_RUN_FLOW) || !flow->extra || flow->top_flow)
    return MF_EINVAL;
  *out = flow->extra->stats;
  return 0;
}

size_t mf_engine_top_flows(const mf_engine *e, mf_run **out, size_t max) {
  size_t n = 0;
  for (mf_run *r = e->top_flows; r; r = r->extra->top_next, n++)
    if (n < max)
      out[n] = r;
  return n;
}

/* }====== */

/* {====== Cancellation ====== */

/* Collects the live subtree of root (root first, parents before children),
 * iteratively: a 10,000-deep tree must not recurse.  NULL when out of
 * memory. */
static mf_run **collect_subtree(mf_run *root, int include_root, size_t *len) {
  size_t cap = 16, n = 0;
  mf_run **list = malloc(cap * sizeof *list);
  if (!list)
    return NULL;
  list[n++] = root;
  for (size_t i = 0; i < n; i++)
    for (mf_run *c = list[i]->first_child; c; c = c->next_sibling) {
      if (n == cap) {
        mf_run **grown = realloc(list, (cap *= 2) * sizeof *list);
        if (!grown)
          return free(list), NULL;
        list = grown;
      }
      list[n++] = c;
    }
  if (!include_root)
    memmove(list, list + 1, --n * sizeof *list);
  *len = n;
  return list;
}

/* Out of memory: marks the subtree, allocating nothing (a pre-order walk
 * by the tree's own links); each marked run stops at its next step. */
static void mark_subtree(mf_run *root) {
  mf_run *run = root;
  for (;;) {
    run->cancel_requested = 1;
    if (run->first_child) {
      run = run->first_child;
      continue;
    }
    while (run != root && !run->next_sibling)
      run = run->parent;
    if (run == root)
      return;
    run = run->next_sibling;
  }
}

static void cancel_tree(mf_engine *e, mf_run *root, int include_root) {
  size_t n = 0;
  mf_run **list = collect_subtree(root, include_root, &n);
  if (!list) {
    unsigned char root_marked = root->cancel_requested;
    mark_subtree(root);
    if (include_root)
      mf__run_cancel_one(root);
    else
      root->cancel_requested = root_marked;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    list[i]->cancel_requested = 1;
    mf_run_ref(list[i]);
  }
  /* Children before parents, so a flow finds its children final.  (The
   * engine outlives every run, so e is safe to use after the unrefs.) */
  for (size_t i = n; i-- > 0;) {
    mf__run_cancel_one(list[i]);
    mf_run_unref(list[i]);
  }
  free(list);
  (void)e;
}

/* Abandon callbacks run inside: the engine counts as busy (re-entering
 * it from there returns MF_EBUSY). */
int mf_run_cancel(mf_run *run) {
  if (mf_run_is_final(run))
    return 0;
  mf_engine *e = run->engine; /* run may be freed by the cancel */
  e->depth++;
  cancel_tree(e, run, 1);
  e->depth--;
  return 1;
}

void mf_run_cancel_children(mf_run *run) {
  if (!run->first_child)
    return;
  mf_engine *e = run->engine;
  e->depth++;
  cancel_tree(e, run, 0);
  e->depth--;
}

void mf__tree_force_final(mf_engine *e, mf_run *root) {
  (void)e;
  mf_run *run = root;
  for (;;) {
    while (run->first_child)
      run = run->first_child;
    mf_run *parent = run->parent;
    int last = run == root;
    mf__run_force_final(run); /* unlinks it from the tree */
    if (last)
      return;
    run = parent;
  }
}

/* }====== */

/* {====== Unhandled failures ====== */

typedef struct scope_list {
  mf_run **first, **last;
} scope_list;

/* The list of a scope; a flow without one yet gets it when create is set.
 * Returns 0 when there is none (or no memory for one). */
static int scope_of(mf_engine *e, mf_run *flow, scope_list *list, int create) {
  if (!flow) {
    *list = (scope_list){&e->unhandled_first, &e->unhandled_last};
    return 1;
  }
  if (!flow->extra && (!create || !mf__run_extra(flow)))
    return 0;
  *list = (scope_list){&flow->extra->scope_first, &flow->extra->scope_last};
  return 1;
}

static mf_run *next_unhandled(const mf_run *run) {
  return run->extra->unhandled_next;
}

mf_run *mf__nearest_flow(const mf_run *run) {
  for (mf_run *p = run->parent; p; p = p->parent)
    if (p->flags & MF_RUN_FLOW)
      return p;
  return NULL;
}

void mf__unhandled_add(mf_engine *e, mf_run *run, mf_run *scope) {
  scope_list list;
  mf_run_extra *x = mf__run_extra(run);
  if (!x || !scope_of(e, scope, &list, 1))
    return; /* out of memory: the failure is not counted */
  x->unhandled_scope = scope;
  mf__run_hold(run);
  run->in_unhandled = 1;
  x->unhandled_prev = *list.last;
  x->unhandled_next = NULL;
  if (*list.last)
    (*list.last)->extra->unhandled_next = run;
  else
    *list.first = run;
  *list.last = run;
}

static void unhandled_remove(mf_engine *e, mf_run *run) {
  mf_run_extra *x = run->extra;
  scope_list list;
  if (!scope_of(e, x->unhandled_scope, &list, 0))
    return; /* cannot happen: the scope has the run in its list */
  if (x->unhandled_prev)
    x->unhandled_prev->extra->unhandled_next = x->unhandled_next;
  else
    *list.first = x->unhandled_next;
  if (x->unhandled_next)
    x->unhandled_next->extra->unhandled_prev = x->unhandled_prev;
  else
    *list.last = x->unhandled_prev;
  x->unhandled_prev = x->unhandled_next = NULL;
  x->unhandled_scope = NULL;
  run->in_unhandled = 0;
  mf__run_release(run);
}

void mf_run_mark_handled(mf_run *run) {
  /* Handling a NotReady run handles the upstream failure behind it. */
  while (run && !run->handled) {
    run->handled = 1;
    if (run->in_unhandled) {
      mf_run *cause = run->cause;
      mf_run_ref(run);
      unhandled_remove(run->engine, run);
      mf_run_unref(run);
      run = cause;
    } else {
      run = run->cause;
    }
  }
}

void mf__unhandled_release_scope(mf_engine *e, mf_run *flow) {
  scope_list list;
  if (!scope_of(e, flow, &list, 0))
    return;
  while (*list.first)
    unhandled_remove(e, *list.first);
}

size_t mf_run_unhandled(mf_engine *engine, mf_run *flow, mf_run **first) {
  scope_list list;
  if (first)
    *first = NULL;
  if (!scope_of(engine, flow, &list, 0))
    return 0;
  size_t n = 0;
  for (mf_run *r = *list.first; r; r = next_unhandled(r))
    n++;
  if (first)
    *first = *list.first;
  return n;
}

void mf_run_each_unhandled(mf_engine *engine, mf_run *flow,
                           void (*fn)(mf_run *run, void *data), void *data) {
  scope_list list;
  if (!scope_of(engine, flow, &list, 0))
    return;
  for (mf_run *r = *list.first; r; r = next_unhandled(r))
    fn(r, data);
}

void mf_run_clear_unhandled(mf_engine *engine, mf_run *flow) {
  mf__unhandled_release_scope(engine, flow);
}

/* }====== */
