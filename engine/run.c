/*
 * run.c -- the run record: creation, references and engine holds, names,
 * queries, states and history, done callbacks.  Its life is in life.c.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* {====== Memory ====== */

/* A zeroed record with one reference and its inline history. */
static mf_run *new_record(mf_engine *engine, const mf_run_ops *ops,
                          size_t body_size) {
  mf_run *run = mf__run_alloc(engine, body_size);
  if (!run)
    return NULL;
  run->engine = engine;
  run->ops = ops;
  run->refs = 1;
  run->history = run->history_inline;
  run->history_cap = MF_HISTORY_INLINE;
  return run;
}

mf_run *mf_run_new(mf_engine *engine, const mf_run_ops *ops, size_t body_size) {
  mf_run *run = new_record(engine, ops, body_size);
  if (!run)
    return NULL;
  run->life = MF_LIFE_NEW;
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
  if (run->extra) {
    free(run->extra->tags);
    free(run->extra->retry_delays);
  }
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
  if (!run->extra) {
    run->extra = calloc(1, sizeof *run->extra);
    if (run->extra)
      run->extra->deadline_at = -1;
  }
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

/* Appends n bytes of s at buf[at], truncated to size - 1 and terminated,
 * as snprintf would. */
static void name_put(char *buf, size_t size, size_t at, const char *s,
                     size_t n) {
  if (at + 1 >= size || !size) {
    if (size && at < size)
      buf[at] = 0;
    return;
  }
  if (n > size - 1 - at)
    n = size - 1 - at;
  memcpy(buf + at, s, n);
  buf[at + n] = 0;
}

/* "prefix-number" without snprintf: the run store names every run it
 * records, and printf's machinery was most of what that cost. */
size_t mf_run_name(const mf_run *run, char *buf, size_t size) {
  const char *text = run->custom_name   ? run->custom_name
                     : run->name_prefix ? run->name_prefix
                                        : "run";
  size_t len = strlen(text);
  name_put(buf, size, 0, text, len);
  if (run->custom_name)
    return len;
  char digits[24];
  int n = (int)sizeof digits;
  uint64_t v = run->name_prefix ? run->number : run->id;
  do
    digits[--n] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  digits[--n] = '-';
  name_put(buf, size, len, digits + n, sizeof digits - (size_t)n);
  return len + sizeof digits - (size_t)n;
}

uint64_t mf_run_id(const mf_run *run) { return run->id; }
mf_run *mf_run_parent(const mf_run *run) { return run->parent; }
mf_state_type mf_run_state_type(const mf_run *run) { return run->type; }
mf_state_name mf_run_state_name(const mf_run *run) { return run->name; }
int mf_run_attempt(const mf_run *run) { return run->attempt; }
mf_run *mf_run_cause(const mf_run *run) { return run->cause; }
int mf_run_error_code(const mf_run *run) { return run->error_code; }
int mf_run_is_final(const mf_run *run) { return run->life == MF_LIFE_FINAL; }
size_t mf_run_live_children(const mf_run *run) { return run->live_children; }
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

/* Makes room for one more history entry; 0 when there is none (a history
 * that long keeps its first entries; out of memory loses only the entry). */
static int history_room(mf_run *run) {
  if (run->history_len < run->history_cap)
    return 1;
  size_t cap = (size_t)run->history_cap * 2;
  if (cap > USHRT_MAX)
    cap = USHRT_MAX;
  if (cap == run->history_cap)
    return 0;
  mf_state *history;
  if (run->history == run->history_inline) {
    history = malloc(cap * sizeof *history);
    if (history)
      memcpy(history, run->history_inline, sizeof run->history_inline);
  } else {
    history = realloc(run->history, cap * sizeof *history);
  }
  if (!history)
    return 0;
  run->history = history;
  run->history_cap = cap;
  return 1;
}

void mf__run_push_state(mf_run *run, mf_state_type type, mf_state_name name) {
  mf_engine *e = run->engine;
  run->type = type;
  run->name = name;
  /* Pending is stamped from the cached clock (a map stamps a million of
   * them); the states that order runs (Running, final) read the clock. */
  mf_state entry = {type, name,
                    type == MF_PENDING && name == MF_NAME_PENDING
                        ? mf__wall_now(e)
                        : mf_engine_now(e) + e->wall_offset};
  if (history_room(run))
    run->history[run->history_len++] = entry;
  if (__builtin_expect(e->observe != NULL, 0) && run->id)
    e->observe(run, &entry, e->observe_data); /* submitted runs only */
}

/* }====== */

/* {====== Summaries ====== */

static const struct {
  mf_state_type type;
  mf_state_name name;
} summary_states[3] = {{MF_PENDING, MF_NAME_PENDING},
                       {MF_RUNNING, MF_NAME_RUNNING},
                       {MF_COMPLETED, MF_NAME_COMPLETED}};

int mf_run_summarize(const mf_run *run, mf_run_summary *out) {
  if (run->life != MF_LIFE_FINAL || run->refs != 1 || run->holds != 0 ||
      run->attempt != 1 || run->history_len != 3 || run->custom_name ||
      run->extra || run->cause || run->done_callbacks || run->waiters ||
      (run->waiter && (run->waiter->active || run->waiter->count)) ||
      run->error_code || run->in_unhandled)
    return 0;
  for (int i = 0; i < 3; i++)
    if (run->history[i].type != summary_states[i].type ||
        run->history[i].name != summary_states[i].name)
      return 0;
  out->id = run->id;
  out->number = run->number;
  out->name_prefix = run->name_prefix;
  for (int i = 0; i < 3; i++)
    out->timestamps[i] = run->history[i].timestamp;
  return 1;
}

mf_run *mf_run_from_summary(mf_engine *engine, const mf_run_ops *ops,
                            size_t body_size, unsigned flags,
                            const mf_run_summary *summary) {
  mf_run *run = new_record(engine, ops, body_size);
  if (!run)
    return NULL;
  run->id = summary->id;
  run->number = summary->number;
  run->name_prefix = summary->name_prefix;
  run->flags = (unsigned char)flags;
  run->history_len = 3;
  for (int i = 0; i < 3; i++)
    run->history[i] = (mf_state){summary_states[i].type, summary_states[i].name,
                                 summary->timestamps[i]};
  run->type = run->outcome_type = MF_COMPLETED;
  run->name = run->outcome_name = MF_NAME_COMPLETED;
  run->attempt = 1;
  run->handled = 1;
  run->body_started = 1;
  run->outcome_decided = 1;
  run->life = MF_LIFE_FINAL; /* born final: no transition to check */
  return run;
}

/* }====== */

/* {====== Done callbacks ====== */

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
