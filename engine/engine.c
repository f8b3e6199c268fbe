/*
 * engine.c -- creating, driving and closing an engine; its clock; error and
 * state strings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "engine.h"

/* {====== Strings ====== */

const char *mf_strerror(int code) {
  switch (code) {
#define XX(name, value, text)                                                  \
  case MF_##name:                                                              \
    return text;
    MF_ERRNO_MAP(XX)
#undef XX
  case 0:
    return "success";
  }
  return "unknown error";
}

const char *mf_err_name(int code) {
  switch (code) {
#define XX(name, value, text)                                                  \
  case MF_##name:                                                              \
    return #name;
    MF_ERRNO_MAP(XX)
#undef XX
  case 0:
    return "OK";
  }
  return "EUNKNOWN";
}

const char *mf_state_type_string(mf_state_type type) {
  static const char *const names[] = {"PENDING",   "SCHEDULED", "RUNNING",
                                      "COMPLETED", "FAILED",    "CRASHED",
                                      "CANCELLED"};
  return (unsigned)type < sizeof names / sizeof *names ? names[type] : "?";
}

const char *mf_state_name_string(mf_state_name name) {
  static const char *const names[] = {"Pending",       "Scheduled", "Running",
                                      "Completed",     "Failed",    "Retrying",
                                      "AwaitingRetry", "NotReady",  "TimedOut",
                                      "Cached",        "Cancelled", "Crashed"};
  return (unsigned)name < sizeof names / sizeof *names ? names[name] : "?";
}

/* }====== */

/* {====== Clock ====== */

double mf_engine_now(const mf_engine *engine) {
  (void)engine;
  return (double)uv_hrtime() / 1e9;
}

void mf__clock_refresh(mf_engine *e) {
  e->clock_cache = mf_engine_now(e);
  e->clock_uses = 1;
}

double mf__wall_now(mf_engine *e) {
  if ((e->clock_uses++ & 31) == 0)
    e->clock_cache = mf_engine_now(e);
  return e->clock_cache + e->wall_offset;
}

static double wall_offset(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6 -
         (double)uv_hrtime() / 1e9;
}

/* }====== */

/* {====== Life ====== */

static void default_on_error(mf_engine *e, const char *message, void *data) {
  (void)e;
  (void)data;
  fprintf(stderr, "moonflow: %s\n", message);
}

int mf_engine_new(mf_engine **out, const mf_config *cfg) {
  mf_engine *e = calloc(1, sizeof *e);
  if (!e)
    return MF_ENOMEM;
  if (cfg && cfg->loop) {
    e->loop = cfg->loop;
  } else {
    if (uv_loop_init(&e->own_loop) != 0) {
      free(e);
      return MF_ENOMEM;
    }
    e->loop = &e->own_loop;
    e->owns_loop = 1;
  }
  e->on_error = cfg && cfg->on_error ? cfg->on_error : default_on_error;
  e->error_data = cfg ? cfg->error_data : NULL;
  uv_idle_init(e->loop, &e->idle);
  e->idle.data = e;
  uv_timer_init(e->loop, &e->timer);
  e->timer.data = e;
  e->timer_due = -1;
  e->wall_offset = wall_offset();
  *out = e;
  return 0;
}

/* {====== Memory ====== */

#ifndef MF_FREE_LIST_MAX
#define MF_FREE_LIST_MAX 4096 /* 0 under the sanitizers: reuse hides misuse */
#endif
static const size_t free_list_max = MF_FREE_LIST_MAX;

mf_run *mf__run_alloc(mf_engine *e, size_t body_size) {
  size_t size = sizeof(mf_run) + body_size;
  mf_run *run = NULL;
  if (e->free_runs && body_size == e->free_run_body) {
    run = e->free_runs;
    e->free_runs = run->next_ready;
    e->free_run_count--;
  } else {
    run = malloc(size);
    if (!run)
      return NULL;
  }
  memset(run, 0, size);
  run->body_size = (unsigned)body_size;
  e->runs_alive++;
  return run;
}

static void engine_release(mf_engine *e);

void mf__run_dealloc(mf_engine *e, mf_run *run) {
  if (!e->closing && e->free_run_count < free_list_max &&
      (e->free_run_count == 0 || run->body_size == e->free_run_body)) {
    e->free_run_body = run->body_size;
    run->next_ready = e->free_runs;
    e->free_runs = run;
    e->free_run_count++;
  } else {
    free(run);
  }
  e->runs_alive--;
  engine_release(e);
}

mf_waiter *mf__waiter_alloc(mf_engine *e) {
  mf_waiter *w = e->free_waiters;
  if (w) {
    e->free_waiters = (mf_waiter *)w->parked_next;
    e->free_waiter_count--;
    return w;
  }
  return malloc(sizeof *w);
}

void mf__waiter_dealloc(mf_engine *e, mf_waiter *w) {
  if (e->closing || e->free_waiter_count >= free_list_max) {
    free(w);
    return;
  }
  w->parked_next = (mf_run *)e->free_waiters;
  e->free_waiters = w;
  e->free_waiter_count++;
}

static void drop_free_lists(mf_engine *e) {
  while (e->free_runs) {
    mf_run *run = e->free_runs;
    e->free_runs = run->next_ready;
    free(run);
  }
  while (e->free_waiters) {
    mf_waiter *w = e->free_waiters;
    e->free_waiters = (mf_waiter *)w->parked_next;
    free(w);
  }
  e->free_run_count = e->free_waiter_count = 0;
}

/* Frees a closed engine once its handles are closed and no run is left. */
static void engine_release(mf_engine *e) {
  if (e->closing && e->handles_closed && e->runs_alive == 0)
    free(e);
}

/* }====== */

/* Releases what the engine still holds for runs that were final. */
static void drop_queues(mf_engine *e) {
  while (e->done_head) {
    mf_run *run = e->done_head;
    e->done_head = run->next_ready;
    run->next_ready = NULL;
    mf__run_release(run);
  }
  e->done_tail = NULL;
  mf__unhandled_release_scope(e, NULL);
}

static void on_handle_closed(uv_handle_t *handle) {
  mf_engine *e = handle->data;
  /* The timer is closed last: once it is, the engine memory can go. */
  if (handle == (uv_handle_t *)&e->timer && !e->owns_loop) {
    e->handles_closed = 1;
    engine_release(e);
  }
}

void mf_engine_close(mf_engine *e) {
  if (!e)
    return;
  while (e->first_root)
    mf_run_cancel(e->first_root);
  drop_queues(e);
  e->closing = 1;
  drop_free_lists(e);
  mf__limits_free(e);
  mf__timers_close(e);
  uv_close((uv_handle_t *)&e->idle, on_handle_closed);
  uv_close((uv_handle_t *)&e->timer, on_handle_closed);
  if (!e->owns_loop)
    return; /* freed by on_handle_closed when the host's loop runs */
  while (uv_loop_close(e->loop) == UV_EBUSY)
    uv_run(e->loop, UV_RUN_DEFAULT);
  e->handles_closed = 1;
  engine_release(e);
}

uv_loop_t *mf_engine_loop(const mf_engine *engine) { return engine->loop; }
mf_run *mf_engine_current(const mf_engine *e) { return e->current; }
size_t mf_engine_live_runs(const mf_engine *e) { return e->live; }
void mf_engine_set_data(mf_engine *e, void *data) { e->data = data; }
void *mf_engine_data(const mf_engine *e) { return e->data; }

/* }====== */

/* {====== Driving ====== */

int mf_engine_run(mf_engine *e) {
  if (e->depth > 0 || e->current || e->closing)
    return MF_EBUSY;
  e->interrupted = 0;
  for (;;) {
    if (mf__sched_has_work(e))
      mf__sched_drain(e);
    if (e->interrupted)
      return MF_EINTR;
    if (uv_loop_alive(e->loop)) {
      uv_run(e->loop, UV_RUN_DEFAULT);
      continue;
    }
    if (mf__sched_has_work(e))
      continue;
    if (mf__sched_break_deadlocks(e) == 0)
      return 0;
  }
}

int mf_engine_step(mf_engine *e) {
  if (e->depth > 0 || e->current || e->closing)
    return MF_EBUSY;
  uv_run(e->loop, UV_RUN_NOWAIT);
  mf__sched_drain(e);
  return (int)e->live;
}

/* }====== */
