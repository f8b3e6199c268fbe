/*
 * test_post_tsan.c -- mf_engine_post from several threads, built with
 * ThreadSanitizer (run with TSAN_OPTIONS=halt_on_error=1).  The engine
 * alone, with C runs: no Lua.
 *
 * 1. A busy loop: C runs yield to each other while four threads post
 *    250,000 items each; some post callbacks submit runs.
 * 2. An idle loop: the loop thread sleeps in the poll of a host's loop
 *    and is woken by the posts alone.
 * Every item arrives once, and each thread's items arrive in order.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define THREADS 4
#define SEQ_BITS 24 /* an item is (thread << SEQ_BITS) | seq, seq from 1 */

/* {====== Counting on the loop thread ====== */

static struct {
  uint64_t count, sum[THREADS];
  uint32_t last[THREADS]; /* the last seq each thread's items reached */
  unsigned out_of_order, bad, submitted;
  uint64_t expected;     /* items in this phase */
  uv_timer_t *keepalive; /* phase 2: stopped at the last item */
} got;

static atomic_int posters_done;
static atomic_int post_errors;

/* A run a post callback submits: completes at once. */
static int quick_runs;
static void quick_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  quick_runs++;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops quick_ops = {.step = quick_step};

static void on_item(mf_engine *e, void *data) {
  uintptr_t item = (uintptr_t)data;
  unsigned t = (unsigned)(item >> SEQ_BITS);
  uint32_t seq = (uint32_t)(item & ((1u << SEQ_BITS) - 1));
  if (t >= THREADS || seq == 0) {
    got.bad++;
    return;
  }
  got.count++;
  got.sum[t] += seq;
  if (seq != got.last[t] + 1)
    got.out_of_order++; /* lost, twice, or out of order */
  got.last[t] = seq;
  if (seq % 25000 == 0) { /* engine calls from a post callback */
    mf_run *run = mf_run_new(e, &quick_ops, 0);
    if (mf_run_submit(run, NULL) == 0)
      got.submitted++;
    mf_run_unref(run);
  }
  if (got.keepalive && got.count == got.expected)
    uv_timer_stop(got.keepalive); /* phase 2: the loop may end */
}

/* }====== */

/* {====== Posting threads ====== */

typedef struct poster_arg {
  mf_engine *e;
  unsigned index;
  uint32_t items;
} poster_arg;

static void *poster(void *p) {
  poster_arg *a = p;
  for (uint32_t seq = 1; seq <= a->items; seq++) {
    uintptr_t item = ((uintptr_t)a->index << SEQ_BITS) | seq;
    if (mf_engine_post(a->e, on_item, (void *)item) != 0)
      atomic_fetch_add(&post_errors, 1);
  }
  atomic_fetch_add(&posters_done, 1);
  return NULL;
}

static int start_posters(pthread_t *threads, poster_arg *args, mf_engine *e,
                         uint32_t per_thread) {
  atomic_store(&posters_done, 0);
  atomic_store(&post_errors, 0);
  for (unsigned i = 0; i < THREADS; i++) {
    args[i] = (poster_arg){e, i, per_thread};
    if (pthread_create(&threads[i], NULL, poster, &args[i]) != 0)
      return -1;
  }
  return 0;
}

static void check_counts(uint32_t per_thread) {
  uint64_t sum = (uint64_t)per_thread * (per_thread + 1) / 2;
  ASSERT(atomic_load(&post_errors) == 0);
  ASSERT(got.bad == 0);
  ASSERT(got.out_of_order == 0);
  ASSERT(got.count == (uint64_t)THREADS * per_thread);
  for (unsigned t = 0; t < THREADS; t++) {
    ASSERT(got.last[t] == per_thread);
    ASSERT(got.sum[t] == sum);
  }
}

/* }====== */

/* {====== 1. Busy loop ====== */

/* Yields until every item arrived (or long after the posters stopped,
 * should one be lost). */
typedef struct busy_body {
  unsigned steps, after;
} busy_body;

static void busy_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  busy_body *b = mf_run_body(run);
  b->steps++;
  if (atomic_load(&posters_done) == THREADS)
    b->after++;
  if (got.count < got.expected && b->after < 10000) {
    mf_run_sleep(run, 0);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops busy_ops = {.step = busy_step};

TEST(busy_loop) {
  const uint32_t per_thread = 250000;
  mf_engine *e;
  ASSERT(mf_engine_new(&e, NULL) == 0);
  memset(&got, 0, sizeof got);
  got.expected = (uint64_t)THREADS * per_thread;
  quick_runs = 0;
  mf_run *busy[8];
  for (int i = 0; i < 8; i++) {
    busy[i] = mf_run_new(e, &busy_ops, sizeof(busy_body));
    ASSERT(mf_run_submit(busy[i], NULL) == 0);
  }
  mf_engine_step(e);
  pthread_t threads[THREADS];
  poster_arg args[THREADS];
  ASSERT(start_posters(threads, args, e, per_thread) == 0);
  ASSERT(mf_engine_run(e) == 0);
  for (unsigned i = 0; i < THREADS; i++)
    pthread_join(threads[i], NULL);
  ASSERT(mf_engine_run(e) == 0); /* what the last posts submitted */
  check_counts(per_thread);
  ASSERT(got.submitted == THREADS * (per_thread / 25000));
  ASSERT(quick_runs == (int)got.submitted);
  for (int i = 0; i < 8; i++) {
    ASSERT(mf_run_state_type(busy[i]) == MF_COMPLETED);
    ASSERT(((busy_body *)mf_run_body(busy[i]))->steps > 1);
    mf_run_unref(busy[i]);
  }
  mf_engine_close(e);
}

/* }====== */

/* {====== 2. Idle loop woken by posts ====== */

static void on_give_up(uv_timer_t *t) {
  fprintf(stderr, "idle loop: gave up waiting for the posts\n");
  uv_timer_stop(t);
}

TEST(idle_loop) {
  const uint32_t per_thread = 100000;
  uv_loop_t loop;
  ASSERT(uv_loop_init(&loop) == 0);
  mf_engine *e;
  mf_config cfg = {.loop = &loop};
  ASSERT(mf_engine_new(&e, &cfg) == 0);
  memset(&got, 0, sizeof got);
  got.expected = (uint64_t)THREADS * per_thread;
  quick_runs = 0;
  uv_timer_t keepalive; /* the host's: keeps uv_run in its poll */
  uv_timer_init(&loop, &keepalive);
  uv_timer_start(&keepalive, on_give_up, 120000, 0);
  got.keepalive = &keepalive;
  pthread_t threads[THREADS];
  poster_arg args[THREADS];
  ASSERT(start_posters(threads, args, e, per_thread) == 0);
  /* A host's loop: the engine never runs it; runs submitted by posts are
   * stepped by the host. */
  while (uv_run(&loop, UV_RUN_ONCE) != 0 || mf_engine_timeout(e) == 0)
    mf_engine_step(e);
  mf_engine_step(e);
  for (unsigned i = 0; i < THREADS; i++)
    pthread_join(threads[i], NULL);
  check_counts(per_thread);
  ASSERT(quick_runs == (int)got.submitted);
  ASSERT(mf_engine_live_runs(e) == 0);
  got.keepalive = NULL;
  uv_close((uv_handle_t *)&keepalive, NULL);
  mf_engine_close(e);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT(uv_loop_close(&loop) == 0);
}

/* }====== */

TEST_MAIN("post_tsan")
