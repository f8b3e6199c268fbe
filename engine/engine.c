/*
 * engine.c -- creating, driving and closing an engine; its clock; error and
 * state strings.
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "engine.h"

/* {====== Strings ====== */

unsigned mf_version(void) { return MF_VERSION_HEX; }

const char *mf_version_string(void) { return MF_VERSION; }

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

double mf_engine_pass_started(const mf_engine *engine) {
  return engine->pass_started;
}

double mf_engine_pass_left(const mf_engine *engine) {
  if (engine->pass_started < 0)
    return engine->pass_budget;
  double left = engine->pass_started + engine->pass_budget -
                mf_engine_now((mf_engine *)engine);
  return left > 0 ? left : 0;
}

double mf_engine_longest_pass(mf_engine *engine, int reset) {
  double longest = engine->longest_pass;
  if (reset)
    engine->longest_pass = 0;
  return longest;
}

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

double mf__random(mf_engine *e) {
  uint64_t x = e->random_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  e->random_state = x;
  return (double)(x >> 11) / 9007199254740992.0; /* 53 bits: [0, 1) */
}

/* }====== */

/* {====== Life ====== */

static void on_post(uv_async_t *handle);
static int reserve_heap(mf_engine *e, size_t waiters);

static void default_on_error(mf_engine *e, const char *message, void *data) {
  (void)e;
  (void)data;
  fprintf(stderr, "moonflow: %s\n", message);
}

/* The fields of the first mf_config: what a size of 0 stands for. */
#define CONFIG_SIZE_0_1 (offsetof(mf_config, step_only) + 1)

/* Copies the host's config into *out (zeroed first): only the bytes its size
 * says it has, so that a host built against an older header, whose struct is
 * shorter, is read correctly.  Bytes past the fields this library knows
 * must be zero: they are settings it could not honour. */
static int read_config(mf_config *out, const mf_config *cfg) {
  memset(out, 0, sizeof *out);
  if (!cfg)
    return 0;
  size_t size = cfg->size ? cfg->size : CONFIG_SIZE_0_1;
  if (size < CONFIG_SIZE_0_1)
    return MF_EINVAL;
  if (size > sizeof *out) {
    const unsigned char *extra = (const unsigned char *)cfg + sizeof *out;
    for (size_t i = 0; i < size - sizeof *out; i++)
      if (extra[i])
        return MF_EINVAL;
    size = sizeof *out;
  }
  memcpy(out, cfg, size);
  out->size = sizeof *out;
  return 0;
}

static int records_open(mf_engine *e);

int mf_engine_new(mf_engine **out, const mf_config *host_cfg) {
  mf_config config;
  int rc = read_config(&config, host_cfg);
  if (rc != 0)
    return rc;
  const mf_config *cfg = &config;
  mf_engine *e = calloc(1, sizeof *e);
  if (!e)
    return MF_ENOMEM;
  if (records_open(e) != 0) {
    free(e);
    return MF_ENOMEM;
  }
  if (cfg && cfg->loop) {
    e->loop = cfg->loop;
  } else {
    if (uv_loop_init(&e->own_loop) != 0) {
      mf_heap_delete(e->records);
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
  if (!e->owns_loop && !(cfg && cfg->keep_loop_alive))
    uv_unref((uv_handle_t *)&e->idle); /* never keeps a host's loop alive */
  e->max_steps = cfg ? cfg->max_steps : 0;
  e->pass_budget = cfg && cfg->step_budget > 0 ? cfg->step_budget : 0.01;
  e->pass_started = -1;
  e->step_only = cfg ? cfg->step_only : 0;
  e->no_preemption = cfg ? cfg->no_preemption : 0;
  if (uv_mutex_init(&e->post_lock) != 0 ||
      uv_async_init(e->loop, &e->post_async, on_post) != 0) {
    /* cannot fail on Linux but for resource exhaustion */
    uv_close((uv_handle_t *)&e->idle, NULL);
    if (e->owns_loop) {
      uv_run(e->loop, UV_RUN_NOWAIT);
      uv_loop_close(e->loop);
    }
    mf_heap_delete(e->records);
    free(e);
    return MF_ENOMEM;
  }
  e->post_async.data = e;
  uv_unref((uv_handle_t *)&e->post_async);
  uv_timer_init(e->loop, &e->timer);
  e->timer.data = e;
  e->timer_due = -1;
  uv_timer_init(e->loop, &e->gate_timer);
  e->gate_timer.data = e;
  if (!e->owns_loop && !(cfg && cfg->keep_loop_alive))
    uv_unref((uv_handle_t *)&e->gate_timer);
  if (reserve_heap(e, 0) != 0) {
    mf_engine_close(e); /* nothing ran yet: closes the handles */
    return MF_ENOMEM;
  }
  e->wall_offset = wall_offset();
  e->random_state = uv_hrtime() ^ (uint64_t)(uintptr_t)e ^ 0x9e3779b97f4a7c15u;
  *out = e;
  return 0;
}

/* {====== Memory ======
 * Run records and waiters come from the engine's heap (engine/heap.c),
 * whose regions are backed by huge pages when they can be had without a
 * stall: its first, and those made ahead on libuv's thread pool.  A first
 * touch of a 4 KiB page costs ~11 us on this project's virtual machines: a
 * map of 1,000 made 82 such faults for its run records (328 bytes each,
 * malloc's), 0.9 of its 1 ms.  Under AddressSanitizer they are malloc's,
 * whose quarantine catches a use after free that a block reused at once
 * would hide. */

#if defined(__SANITIZE_ADDRESS__)
#define RECORDS_ON_HEAP 0
#else
#define RECORDS_ON_HEAP 1
#endif

static void *record_alloc(mf_engine *e, size_t size) {
  return e->records ? mf_heap_realloc(e->records, NULL, 0, size) : malloc(size);
}

static void record_free(mf_engine *e, void *record, size_t size) {
  if (e->records)
    mf_heap_realloc(e->records, record, size, 0);
  else
    free(record);
}

static int records_open(mf_engine *e) {
  if (!RECORDS_ON_HEAP)
    return 0;
  if (!(e->records = mf_heap_new()))
    return MF_ENOMEM;
  /* The first region huge, then those made ahead off the loop thread
   * (maybe_prefault), else 4 KiB pages: a big map's records grow the heap
   * inside a run, where a huge page's fault (up to 4 ms here) made
   * scheduler passes 3-4 ms longer than their budget (bench/compare.lua
   * --stall). */
  mf_heap_huge_regions(e->records, 1, UINT_MAX);
  return 0;
}

static void prefault_work(uv_work_t *req) {
  struct mf_prefault *p = req->data;
  p->region = mf__heap_region_new();
}

static void engine_release(mf_engine *e);

static void prefault_done(uv_work_t *req, int status) {
  struct mf_prefault *p = req->data;
  mf_engine *e = p->engine;
  (void)status; /* (UV_ECANCELED: nothing was made) */
  if (e->closing || (p->heap != e->records && p->heap != e->tended))
    mf__heap_region_free(p->region); /* (its heap is no longer tended) */
  else
    mf__heap_region_give(p->heap, p->region);
  p->heap = NULL;
  p->region = NULL;
  e->prefaulting--;
  engine_release(e);
}

static int prefaults_for(const mf_engine *e, const mf_heap *heap) {
  int n = 0;
  for (int i = 0; i < 2 * MF__HEAP_SPARES_MAX; i++)
    n += e->prefaults[i].heap == heap;
  return n;
}

/* A heap's next regions are made off the loop thread while its current one
 * fills (heap.c, "Regions made ahead"): the records' heap's and a tended
 * one's. */
static void prefault(mf_engine *e, mf_heap *heap) {
  int wanted = mf__heap_regions_wanted(heap);
  if (wanted <= 0 || (wanted -= prefaults_for(e, heap)) <= 0)
    return;
  for (int i = 0; wanted > 0 && i < 2 * MF__HEAP_SPARES_MAX; i++) {
    struct mf_prefault *p = &e->prefaults[i];
    if (p->heap)
      continue;
    p->req.data = p;
    p->engine = e;
    p->region = NULL;
    if (uv_queue_work(e->loop, &p->req, prefault_work, prefault_done) != 0)
      return;
    p->heap = heap;
    e->prefaulting++;
    wanted--;
  }
}

static void maybe_prefault(mf_engine *e) {
  if (e->closing)
    return;
  prefault(e, e->records);
  if (e->tended)
    prefault(e, e->tended);
}

void mf_engine_tend_heap(mf_engine *e, mf_heap *heap) {
  e->tended = heap;
  if (heap && !e->closing)
    prefault(e, heap);
}

mf_run *mf__run_alloc(mf_engine *e, size_t body_size) {
  size_t size = sizeof(mf_run) + body_size;
  mf_run *run = record_alloc(e, size);
  if (!run)
    return NULL;
  /* A region holds thousands of records: a look every 64 is soon enough
   * (a look at every one: a chained run took 43 instructions more of its
   * 7,200, callgrind, bench/workloads.lua chain). */
  if (e->records && ++e->allocs_unlooked >= 64) {
    e->allocs_unlooked = 0;
    maybe_prefault(e);
  }
  memset(run, 0, size);
  run->body_size = (unsigned)body_size;
  e->runs_alive++;
  return run;
}

void mf__run_dealloc(mf_engine *e, mf_run *run) {
  record_free(e, run, sizeof(mf_run) + run->body_size);
  e->runs_alive--;
  engine_release(e);
}

/* The timer heap keeps room for every waiter handed out (plus one for a
 * top-level wait), so that arming a deadline can never fail for memory. */
static int reserve_heap(mf_engine *e, size_t waiters) {
  if (e->heap_cap >= waiters + 1)
    return 0;
  size_t cap = e->heap_cap ? e->heap_cap : 64;
  while (cap < waiters + 1)
    cap *= 2;
  mf_waiter **heap = realloc(e->heap, cap * sizeof *heap);
  if (!heap)
    return MF_ENOMEM;
  e->heap = heap;
  e->heap_cap = cap;
  return 0;
}

mf_waiter *mf__waiter_alloc(mf_engine *e) {
  if (reserve_heap(e, e->waiters_out + 1) != 0)
    return NULL;
  mf_waiter *w = record_alloc(e, sizeof *w);
  if (w)
    e->waiters_out++;
  return w;
}

void mf__waiter_dealloc(mf_engine *e, mf_waiter *w) {
  e->waiters_out--;
  record_free(e, w, sizeof *w);
  engine_release(e);
}

/* Frees a closed engine once its handles are closed and no run is left. */
static void engine_release(mf_engine *e) {
  if (e->closing && e->handles_closed && e->runs_alive == 0 &&
      e->waiters_out == 0 && !e->prefaulting) {
    mf_heap_delete(e->records);
    free(e);
  }
}

/* }====== */

/* {====== Posts from other threads ====== */

typedef struct mf_post {
  mf_post_fn fn;
  void *data;
  struct mf_post *next;
} mf_post;

int mf_engine_post(mf_engine *e, mf_post_fn fn, void *data) {
  mf_post *post = malloc(sizeof *post);
  if (!post)
    return MF_ENOMEM;
  post->fn = fn;
  post->data = data;
  post->next = NULL;
  uv_mutex_lock(&e->post_lock);
  if (e->closing) {
    uv_mutex_unlock(&e->post_lock);
    free(post);
    return MF_ESTATE;
  }
  if (e->post_tail)
    e->post_tail->next = post;
  else
    e->post_head = post;
  e->post_tail = post;
  uv_mutex_unlock(&e->post_lock);
  atomic_store(&e->posts_waiting, 1);
  uv_async_send(&e->post_async); /* sends coalesce: on_post drains all */
  return 0;
}

/* Takes the whole queue at once, then calls each post in order. */
static void run_posts(mf_engine *e) {
  atomic_store(&e->posts_waiting, 0);
  uv_mutex_lock(&e->post_lock);
  mf_post *post = e->post_head;
  e->post_head = e->post_tail = NULL;
  uv_mutex_unlock(&e->post_lock);
  while (post) {
    mf_post *next = post->next;
    if (!e->closing)
      post->fn(e, post->data);
    free(post);
    post = next;
  }
}

static void on_post(uv_async_t *handle) {
  mf_engine *e = handle->data;
  e->depth++; /* a post may not drive the loop */
  run_posts(e);
  e->depth--;
  mf__sched_drain_from_loop(e);
}

/* }====== */

/* Releases what the engine still holds for runs that were final. */
static void drop_queues(mf_engine *e) {
  mf_run *run;
  while ((run = mf__sched_pop_done(e)))
    mf__run_release(run);
  free(e->done);
  e->done = NULL;
  e->done_cap = e->done_count = e->done_first = 0;
  mf__sched_drop_ready(e);
  mf__unhandled_release_scope(e, NULL);
}

/* Close callbacks come in no promised order: the engine's memory goes
 * when the last of its handles has closed (and its last run is freed). */
static void on_handle_closed(uv_handle_t *handle) {
  mf_engine *e = handle->data;
  if (--e->handles_closing == 0 && !e->owns_loop) {
    e->handles_closed = 1;
    engine_release(e);
  }
}

static void close_handle(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

/* The loop is the engine's: every handle still on it is closed (luv's
 * loop_gc), a host's too (one left open when the engine closes), and the
 * loop runs until they are -- a bounded number of times, never forever. */
static void close_own_loop(mf_engine *e) {
  uv_run(e->loop, UV_RUN_NOWAIT); /* the engine's own close callbacks */
  for (int round = 0; round < 16; round++) {
    if (uv_loop_close(e->loop) != UV_EBUSY)
      return;
    uv_walk(e->loop, close_handle, NULL);
    uv_run(e->loop, UV_RUN_DEFAULT);
  }
}

void mf_engine_close(mf_engine *e) {
  if (!e)
    return;
  e->depth++; /* the close hook and abandon callbacks cannot re-enter */
  if (e->close_fn)
    e->close_fn(e, e->close_data);
  e->close_fn = NULL;
  e->force_cancel = 1;  /* every body is dropped: none runs clean-up now */
  e->start_gate = NULL; /* the queues are emptied whatever a gate says */
  e->starts_held = 0;
  while (e->first_root)
    mf__tree_force_final(e, e->first_root);
  drop_queues(e);
  e->depth--;
  uv_mutex_lock(&e->post_lock);
  e->closing = 1; /* posts from now on are refused */
  uv_mutex_unlock(&e->post_lock);
  run_posts(e); /* those already queued are freed, not called */
  uv_mutex_destroy(&e->post_lock);
  e->handles_closing = 4;
  uv_close((uv_handle_t *)&e->post_async, on_handle_closed);
  mf__limits_free(e);
  for (int i = 0; i < 2 * MF__HEAP_SPARES_MAX; i++)
    if (e->prefaults[i].heap) /* (not begun: dropped; else waited for) */
      uv_cancel((uv_req_t *)&e->prefaults[i].req);
  mf__timers_close(e);
  uv_close((uv_handle_t *)&e->idle, on_handle_closed);
  uv_close((uv_handle_t *)&e->timer, on_handle_closed);
  uv_close((uv_handle_t *)&e->gate_timer, on_handle_closed);
  if (!e->owns_loop)
    return; /* freed by on_handle_closed when the host's loop runs */
  close_own_loop(e);
  e->handles_closed = 1;
  engine_release(e);
}

uv_loop_t *mf_engine_loop(const mf_engine *engine) { return engine->loop; }

int mf_engine_preemption_off(const mf_engine *engine) {
  return engine->no_preemption;
}

int mf_engine_backend_fd(const mf_engine *e) { return uv_backend_fd(e->loop); }

int mf_engine_timeout(const mf_engine *e) {
  if (mf__sched_has_work(e))
    return 0;
  if (e->starts_held &&
      (e->heap_len == 0 || e->heap[0]->deadline - mf_engine_now(e) > 0.001))
    return 1; /* the gate is asked again then */
  if (e->heap_len == 0)
    return -1;
  double ms = (e->heap[0]->deadline - mf_engine_now(e)) * 1000.0;
  if (ms >= INT_MAX - 1)
    return INT_MAX; /* a clamped deadline is years away: no overflow */
  return ms <= 0 ? 0 : (int)ms + 1;
}

void mf_engine_report(mf_engine *e, const char *message) {
  e->on_error(e, message, e->error_data);
}

void mf_engine_on_close(mf_engine *e, void (*fn)(mf_engine *, void *),
                        void *data) {
  e->close_fn = fn;
  e->close_data = data;
}
void mf_engine_observe(mf_engine *e, mf_observe_fn fn, void *data) {
  e->observe = fn;
  e->observe_data = data;
}
mf_run *mf_engine_current(const mf_engine *e) { return e->current; }
size_t mf_engine_live_runs(const mf_engine *e) { return e->live; }

void mf_engine_heap_stats(const mf_engine *e, mf_heap_stats *stats) {
  if (e->records)
    mf_heap_get_stats(e->records, stats);
  else
    memset(stats, 0, sizeof *stats);
}
void mf_engine_set_data(mf_engine *e, void *data) { e->data = data; }
void *mf_engine_data(const mf_engine *e) { return e->data; }

/* }====== */

/* {====== Driving ====== */

int mf_engine_run(mf_engine *e) {
  if (e->depth > 0 || e->current || e->closing || e->running_loop)
    return MF_EBUSY;
  e->interrupted = 0;
  for (;;) {
    if (mf__sched_has_work(e))
      mf__sched_drain(e);
    if (e->interrupted)
      return MF_EINTR;
    if (uv_loop_alive(e->loop)) {
      e->running_loop = 1;
      uv_run(e->loop, UV_RUN_DEFAULT);
      e->running_loop = 0;
      continue;
    }
    if (mf__sched_has_work(e) || mf__sched_reopen_starts(e))
      continue;
    if (mf__sched_break_deadlocks(e) == 0)
      return 0;
  }
}

int mf_engine_step(mf_engine *e) {
  if (e->depth > 0 || e->current || e->closing || e->running_loop)
    return MF_EBUSY;
  if (e->owns_loop) { /* a host's loop is the host's to run */
    e->running_loop = 1;
    uv_run(e->loop, UV_RUN_NOWAIT);
    e->running_loop = 0;
  } else if (atomic_load(&e->posts_waiting)) {
    /* A host's loop with nothing of its own alive is never polled: the
     * step takes the posts itself. */
    e->depth++;
    run_posts(e);
    e->depth--;
  }
  mf__sched_drain(e);
  return (int)e->live;
}

/* }====== */
