/*
 * test_park.c -- parks on something outside the engine (mf_run_park and
 * mf_run_unpark with tickets: a stale ticket is refused with MF_ESTATE, so
 * a late completion never wakes the wrong wait), park timeouts, unparks
 * from loop callbacks and from other threads (through mf_engine_post), and
 * the resources a run attaches: closed once when the run ends, however it
 * ends, newest first; detached ones not.
 */
#include <math.h>
#include <pthread.h>

#include "fixture.h"

/* {====== Tickets ====== */

/* Parks b->param times (timeout b->seconds, < 0: none), then completes;
 * logs each wake. */
static void parks_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_RESUME) {
    static const char *why[] = {"none", "done", "timeout", "deadlock"};
    note("%s:woke=%s", b->name, why[b->woke]);
  }
  if (b->resumes < b->param) {
    b->rc = mf_run_park(run, b->seconds, &b->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops parks_ops = {.step = parks_step,
                                     .abandon = count_abandon};

static mf_run *parker(mf_engine *e, const char *name, int parks,
                      double timeout) {
  mf_run *run = run_new(e, &parks_ops, name);
  B(run)->param = parks;
  B(run)->seconds = timeout;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

TEST(park_and_unpark) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 1, -1);
  ASSERT_EQ(mf_run_unpark(run, 1), MF_ESTATE); /* not parked yet */
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(B(run)->rc, 0);
  ASSERT_EQ(mf_engine_timeout(e), -1); /* no deadline */
  unsigned ticket = B(run)->ticket;
  ASSERT_EQ(mf_run_unpark(run, ticket + 1), MF_ESTATE);
  ASSERT_EQ(mf_run_unpark(run, ticket), 0);
  ASSERT_EQ(mf_run_unpark(run, ticket), MF_ESTATE); /* that park is over */
  wait_final(e, run);
  ASSERT_LOG("a:start1 a:resume a:woke=done");
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_EQ(mf_run_unpark(run, ticket), MF_ESTATE);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* A ticket of an earlier park never ends a later one. */
TEST(stale_ticket_refused) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 2, -1);
  ASSERT_EQ(mf_engine_step(e), 1);
  unsigned first = B(run)->ticket;
  ASSERT_EQ(mf_run_unpark(run, first), 0);
  ASSERT_EQ(mf_engine_step(e), 1); /* resumed, parked again */
  unsigned second = B(run)->ticket;
  ASSERT_NE(first, second);
  ASSERT_EQ(mf_run_unpark(run, first), MF_ESTATE);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(B(run)->resumes, 1); /* still parked */
  ASSERT_EQ(mf_run_unpark(run, second), 0);
  wait_final(e, run);
  ASSERT_LOG("a:start1 a:resume a:woke=done a:resume a:woke=done");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Only a park: a sleep or a wait is not ended by mf_run_unpark. */
TEST(unpark_ends_only_parks) {
  mf_engine *e = engine_new();
  mf_run *sleeper = run_start(e, &sleep_ops, "s");
  B(sleeper)->seconds = 100;
  mf_run *x = mf_run_new(e, NULL, 0);
  ASSERT_EQ(mf_run_submit(x, NULL), 0);
  mf_run *waiter = run_new(e, &wait_ops, "w");
  B(waiter)->target = x;
  ASSERT_EQ(mf_run_submit(waiter, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 3);
  for (unsigned t = 0; t < 4; t++) {
    ASSERT_EQ(mf_run_unpark(sleeper, t), MF_ESTATE);
    ASSERT_EQ(mf_run_unpark(waiter, t), MF_ESTATE);
    ASSERT_EQ(mf_run_unpark(x, t), MF_ESTATE);
  }
  ASSERT_EQ(mf_engine_cancel_all(e, NULL, NULL), 3);
  mf_run_unref(sleeper);
  mf_run_unref(waiter);
  mf_run_unref(x);
  mf_engine_close(e);
}

TEST(park_timeout) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 1, 0.05);
  ASSERT_EQ(mf_engine_step(e), 1);
  unsigned ticket = B(run)->ticket;
  ASSERT_GE(mf_engine_timeout(e), 0); /* armed (-1: nothing due) */
  wait_final(e, run);
  ASSERT_LOG("a:start1 a:resume a:woke=timeout");
  ASSERT_DBL(now() - B(run)->started[0], >=, 0.05 - SLACK);
  ASSERT_EQ(mf_run_unpark(run, ticket), MF_ESTATE); /* too late */
  mf_run_unref(run);
  mf_engine_close(e);
}

/* A NaN or negative timeout is none. */
TEST(park_nan_timeout_is_none) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 1, NAN);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(B(run)->rc, 0);
  ASSERT_EQ(mf_engine_timeout(e), -1);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  wait_final(e, run);
  ASSERT_EQ(B(run)->woke, MF_WAKE_DONE);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* A park with no timeout that nothing alive on the loop can end: once the
 * loop is idle, it is woken as a deadlock; its ticket is then stale. */
TEST(park_nothing_can_end_is_a_deadlock) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 1, -1);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:resume a:woke=deadlock");
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), MF_ESTATE);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Cancelled while parked: the ticket is stale. */
TEST(cancelled_park) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 1, -1);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), MF_ESTATE);
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT_EQ(B(run)->resumes, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Parks of a run that is not executing are refused. */
static void park_other_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  mf_run *other = B(run)->target;
  unsigned ticket;
  note("park=%s sleep=%s wait=%s children=%s",
       mf_err_name(mf_run_park(other, -1, &ticket)),
       mf_err_name(mf_run_sleep(other, 1)),
       mf_err_name(mf_run_wait(other, &run, 1, MF_WAIT_ALL, -1)),
       mf_err_name(mf_run_wait_children(other)));
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops park_other_ops = {.step = park_other_step};

TEST(park_outside_its_step_refused) {
  mf_engine *e = engine_new();
  mf_run *pending = run_start(e, &complete_ops, "p");
  unsigned ticket;
  ASSERT_EQ(mf_run_park(pending, -1, &ticket), MF_ESTATE);
  ASSERT_EQ(mf_run_sleep(pending, 0), MF_ESTATE);
  ASSERT_EQ(mf_run_wait_children(pending), MF_ESTATE);
  mf_run *run = run_new(e, &park_other_ops, "a");
  B(run)->target = pending;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("p:start1 a:start1 park=ESTATE sleep=ESTATE wait=ESTATE "
             "children=ESTATE");
  ASSERT_STATE(pending, "COMPLETED/Completed");
  mf_run_unref(pending);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Unparked from callbacks ====== */

static void unpark_later(uv_timer_t *timer) {
  mf_run *run = timer->data;
  note("timer=%s", mf_err_name(mf_run_unpark(run, B(run)->ticket)));
  uv_close((uv_handle_t *)timer, NULL);
}

/* The usual host: a loop callback (I/O done) unparks the run. */
TEST(unparked_from_a_loop_callback) {
  mf_engine *e = engine_new();
  mf_run *run = parker(e, "a", 1, -1);
  ASSERT_EQ(mf_engine_step(e), 1);
  uv_timer_t timer;
  uv_timer_init(mf_engine_loop(e), &timer);
  timer.data = run;
  uv_timer_start(&timer, unpark_later, 5, 0);
  wait_final(e, run);
  ASSERT_LOG("a:start1 timer=OK a:resume a:woke=done");
  mf_run_unref(run);
  mf_engine_close(e);
}

#define PARKED_RUNS 200
#define THREADS 4

typedef struct unpark_job {
  mf_run *run;
  unsigned ticket;
} unpark_job;

static unpark_job jobs[PARKED_RUNS];
static int unparked, refused;

static void unpark_posted(mf_engine *e, void *data) {
  (void)e;
  unpark_job *job = data;
  int rc = mf_run_unpark(job->run, job->ticket);
  unparked += rc == 0;
  refused += rc == MF_ESTATE;
}

typedef struct poster_arg {
  mf_engine *e;
  int first, count;
} poster_arg;

/* Posts each unpark twice: the second comes after the first ended the
 * park, and is refused. */
static void *poster(void *p) {
  poster_arg *a = p;
  for (int round = 0; round < 2; round++)
    for (int i = a->first; i < a->first + a->count; i++)
      if (mf_engine_post(a->e, unpark_posted, &jobs[i]) != 0)
        return p;
  return NULL;
}

/* Other threads complete the I/O: they post the unparks to the loop. */
TEST(unparked_from_other_threads) {
  mf_engine *e = engine_new();
  unparked = refused = 0;
  mf_run *runs[PARKED_RUNS];
  for (int i = 0; i < PARKED_RUNS; i++)
    runs[i] = parker(e, NULL, 1, -1);
  ASSERT_EQ(mf_engine_step(e), PARKED_RUNS);
  for (int i = 0; i < PARKED_RUNS; i++) {
    ASSERT_EQ(B(runs[i])->starts, 1);
    jobs[i] = (unpark_job){runs[i], B(runs[i])->ticket};
  }
  pthread_t threads[THREADS];
  poster_arg args[THREADS];
  for (int t = 0; t < THREADS; t++) {
    int per = PARKED_RUNS / THREADS;
    args[t] = (poster_arg){e, t * per, per};
    ASSERT_EQ(pthread_create(&threads[t], NULL, poster, &args[t]), 0);
  }
  /* Timed waits keep the loop alive (parks alone would be a deadlock
   * once the loop is idle). */
  int rc;
  while ((rc = mf_engine_wait(e, runs, PARKED_RUNS, MF_WAIT_ALL, 0.01)) ==
         MF_ETIMEDOUT)
    ;
  ASSERT_EQ(rc, 0);
  for (int t = 0; t < THREADS; t++) {
    void *failed;
    pthread_join(threads[t], &failed);
    ASSERT_PTR_EQ(failed, NULL);
  }
  while (unparked + refused < 2 * PARKED_RUNS) /* the last posts */
    ASSERT_EQ(mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, 0.001), 0);
  ASSERT_EQ(unparked, PARKED_RUNS);
  ASSERT_EQ(refused, PARKED_RUNS);
  for (int i = 0; i < PARKED_RUNS; i++) {
    ASSERT_STATE(runs[i], "COMPLETED/Completed");
    ASSERT_EQ(B(runs[i])->woke, MF_WAKE_DONE);
    ASSERT_EQ(B(runs[i])->resumes, 1);
    mf_run_unref(runs[i]);
  }
  mf_engine_close(e);
}

/* }====== */

/* {====== Resources ====== */

typedef struct res {
  mf_resource r; /* first: the engine hands back &r */
  int id;
  int closes;
  mf_run *owner;
  struct res *detach_on_close; /* its owner closes that one too */
} res;

static res resources[4];

static void res_close(mf_resource *r) {
  res *x = (res *)r;
  x->closes++;
  note("close%d final=%d", x->id, mf_run_is_final(x->owner));
  if (x->detach_on_close)
    mf_resource_detach(&x->detach_on_close->r);
}

static void res_init(mf_run *owner) {
  memset(resources, 0, sizeof resources);
  for (int i = 0; i < 4; i++) {
    resources[i].r.close = res_close;
    resources[i].id = i + 1;
    resources[i].owner = owner;
  }
}

/* Attaches resources 1..3 in its first attempt, then ends as b->param
 * says: 0 completes, 1 fails, 2 parks, 3 crashes (returns). */
static void holder_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START && mf_run_attempt(run) == 1)
    for (int i = 0; i < 3; i++)
      ASSERT_EQ(mf_run_attach(run, &resources[i].r), 0);
  if (reason != MF_STEP_START || mf_run_attempt(run) > 1) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  switch (b->param) {
  case 0:
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    break;
  case 1:
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    break;
  case 2:
    b->rc = mf_run_park(run, -1, &b->ticket);
    break;
  case 3:
    break;
  }
}
static const mf_run_ops holder_ops = {.step = holder_step,
                                      .abandon = count_abandon};

static mf_run *holder(mf_engine *e, int how, const mf_run_policy *policy) {
  mf_run *run = run_new(e, &holder_ops, NULL);
  B(run)->param = how;
  res_init(run);
  if (policy)
    ASSERT_EQ(mf_run_set_policy(run, policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

static void check_closed_once(void) {
  ASSERT_LOG("close3 final=1 close2 final=1 close1 final=1");
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(resources[i].closes, 1);
  ASSERT_EQ(resources[3].closes, 0);
}

TEST(resources_closed_once_newest_first) {
  mf_engine *e = engine_new();
  mf_run *run = holder(e, 0, NULL);
  wait_final(e, run);
  check_closed_once();
  ASSERT_EQ(mf_engine_run(e), 0);
  check_closed_once();
  mf_run_unref(run);
  mf_engine_close(e);
  check_closed_once();
}

TEST(resources_closed_when_failed) {
  mf_engine *e = engine_new();
  mf_run *run = holder(e, 1, NULL);
  wait_final(e, run);
  check_closed_once();
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(resources_closed_when_crashed) {
  mf_engine *e = engine_new();
  mf_run *run = holder(e, 3, NULL);
  wait_final(e, run);
  ASSERT_STATE(run, "CRASHED/Crashed");
  check_closed_once();
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(resources_closed_when_cancelled) {
  mf_engine *e = engine_new();
  mf_run *run = holder(e, 2, NULL);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_LOG("close3 final=1 close2 final=1 close1 final=1");
  mf_run_unref(run);
  mf_engine_close(e);
  check_closed_once();
}

TEST(resources_closed_when_timed_out) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.timeout = 0.01};
  mf_run *run = holder(e, 2, &policy);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/TimedOut");
  check_closed_once();
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(resources_closed_when_the_engine_closes) {
  mf_engine *e = engine_new();
  mf_run *run = holder(e, 2, NULL);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(resources[0].closes, 0);
  mf_engine_close(e);
  check_closed_once();
  mf_run_unref(run);
}

/* Kept across retries: closed once, when the run is final. */
TEST(resources_kept_across_retries) {
  mf_engine *e = engine_new();
  const double delay = 0.01;
  mf_run_policy policy = {
      .retries = 1, .retry_delays = &delay, .retry_delay_count = 1};
  mf_run *run = holder(e, 1, &policy);
  while (mf_run_state_name(run) != MF_NAME_AWAITING_RETRY)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(resources[0].closes, 0);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  check_closed_once();
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(detached_resources_not_closed) {
  mf_engine *e = engine_new();
  mf_run *run = run_start(e, &park_ops, NULL);
  res_init(run);
  for (int i = 0; i < 4; i++) /* attached from outside, before it starts */
    ASSERT_EQ(mf_run_attach(run, &resources[i].r), 0);
  mf_resource_detach(&resources[3].r); /* its owner closed it */
  mf_resource_detach(&resources[3].r); /* twice: nothing */
  ASSERT_PTR_EQ(resources[3].r.run, NULL);
  /* Closing 3 closes 2 as well: its owner detaches it. */
  resources[2].detach_on_close = &resources[1];
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  wait_final(e, run);
  ASSERT_LOG("close3 final=1 close1 final=1");
  ASSERT_EQ(resources[0].closes, 1);
  ASSERT_EQ(resources[1].closes, 0);
  ASSERT_EQ(resources[2].closes, 1);
  ASSERT_EQ(resources[3].closes, 0);
  /* A final run takes no resource. */
  ASSERT_EQ(mf_run_attach(run, &resources[3].r), MF_ESTATE);
  ASSERT_PTR_EQ(resources[3].r.run, NULL);
  mf_run_unref(run);
  mf_engine_close(e);
  ASSERT_EQ(resources[3].closes, 0);
}

/* }====== */

TEST_MAIN("park")
