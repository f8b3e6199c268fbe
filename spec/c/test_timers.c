/*
 * test_timers.c -- the engine's timers (a heap of deadlines behind one
 * libuv timer): many sleeps wake in deadline order, cancelled ones leave
 * the heap in order, huge and infinite durations are clamped (never a
 * wrapped, past deadline; never an overflowed mf_engine_timeout), a NaN
 * or negative sleep yields once, the heap always has room (in debug
 * builds the engine asserts it), and a top-level wait gives the loop its
 * turn (timers) between two slices of a computing run.  Times: lower
 * bounds only.
 */
#include <float.h>
#include <math.h>

#include "fixture.h"

/* {====== Order ====== */

#define SLEEPERS 300

static double armed_before[SLEEPERS], armed_after[SLEEPERS], duration[SLEEPERS],
    woke_at[SLEEPERS];
static int wake_order[SLEEPERS], woken;

/* Sleeps duration[b->param], noting when it armed and when it woke. */
static void timed_sleep_step(mf_run *run, mf_step_reason reason) {
  int i = B(run)->param;
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    armed_before[i] = now();
    B(run)->rc = mf_run_sleep(run, duration[i]);
    armed_after[i] = now();
    return;
  }
  woke_at[i] = now();
  wake_order[woken++] = i;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops timed_sleep_ops = {.step = timed_sleep_step,
                                           .abandon = count_abandon};

static unsigned lcg(unsigned *state) {
  *state = *state * 1103515245u + 12345u;
  return (*state >> 8) & 0xffff;
}

/* The engine's deadline of sleeper i lies in [armed_before + d,
 * armed_after + d]; a wake before another whose deadline is surely earlier
 * is out of order.  (Deadlines within the engine's early-fire slack of a
 * millisecond may share a timer's batch.) */
static void check_wake_order(int expected) {
  ASSERT_EQ(woken, expected);
  for (int k = 1; k < woken; k++) {
    int i = wake_order[k - 1], j = wake_order[k];
    ASSERT_DBL(armed_before[i] + duration[i], <=,
               armed_after[j] + duration[j] + 0.001);
  }
  for (int k = 0; k < woken; k++) {
    int i = wake_order[k];
    ASSERT_DBL(woke_at[i] - armed_before[i], >=, duration[i] - SLACK);
  }
}

static mf_run *sleepers[SLEEPERS];

static void start_sleepers(mf_engine *e, unsigned seed) {
  woken = 0;
  for (int i = 0; i < SLEEPERS; i++) {
    /* 1 .. 60 ms, repeats too.  (A sleep of 0 is a yield, not a timer:
     * it may pass a timer whose deadline came during a scheduler pass.) */
    duration[i] = (lcg(&seed) % 60 + 1) / 1000.0;
    sleepers[i] = run_new(e, &timed_sleep_ops, NULL);
    B(sleepers[i])->param = i;
    ASSERT_EQ(mf_run_submit(sleepers[i], NULL), 0);
  }
}

TEST(sleeps_wake_in_deadline_order) {
  mf_engine *e = engine_new();
  start_sleepers(e, 7);
  ASSERT_EQ(mf_engine_run(e), 0);
  check_wake_order(SLEEPERS);
  for (int i = 0; i < SLEEPERS; i++) {
    ASSERT_STATE(sleepers[i], "COMPLETED/Completed");
    mf_run_unref(sleepers[i]);
  }
  mf_engine_close(e);
}

/* Half of them cancelled (taken out of the middle of the heap): the rest
 * still wake in order. */
TEST(cancelled_sleeps_leave_the_heap_in_order) {
  mf_engine *e = engine_new();
  start_sleepers(e, 11);
  for (int i = 0; i < SLEEPERS; i++)
    duration[i] += 0.2; /* armed before any wakes, but for a slow machine */
  while (B(sleepers[SLEEPERS - 1])->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  int before = woken, cancelled = 0;
  for (int i = 0; i < SLEEPERS; i += 2)
    cancelled += !mf_run_is_final(sleepers[i]) && mf_run_cancel(sleepers[i]);
  ASSERT_GT(cancelled, 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  check_wake_order(SLEEPERS - cancelled);
  for (int k = before; k < woken; k++) /* none after its cancel */
    ASSERT_EQ(wake_order[k] % 2, 1);
  for (int i = 0; i < SLEEPERS; i++)
    mf_run_unref(sleepers[i]);
  mf_engine_close(e);
}

/* }====== */

/* {====== Huge, infinite, NaN ====== */

/* Parks in the way b->param says, with b->seconds. */
enum { SLEEP, PARK, WAIT, TIMEOUT };

static void long_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason != MF_STEP_START) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  switch (b->param) {
  case SLEEP:
    b->rc = mf_run_sleep(run, b->seconds);
    break;
  case PARK:
    b->rc = mf_run_park(run, b->seconds, &b->ticket);
    break;
  case WAIT:
    b->rc = mf_run_wait(run, &b->target, 1, MF_WAIT_ALL, b->seconds);
    break;
  case TIMEOUT: /* the attempt's timeout is b->seconds */
    b->rc = mf_run_park(run, -1, &b->ticket);
    break;
  }
}
static const mf_run_ops long_ops = {.step = long_step,
                                    .abandon = count_abandon};

TEST(huge_and_infinite_durations_clamped) {
  mf_engine *e = engine_new();
  mf_run *never = mf_run_new(e, NULL, 0);
  ASSERT_EQ(mf_run_submit(never, NULL), 0);
  const double huge[] = {1e300, INFINITY, DBL_MAX, 1e10};
  mf_run *runs[4 * 4 + 1];
  int n = 0;
  for (int how = SLEEP; how <= TIMEOUT; how++)
    for (int h = 0; h < 4; h++) {
      mf_run *run = run_new(e, &long_ops, NULL);
      B(run)->param = how;
      B(run)->seconds = huge[h];
      B(run)->target = never;
      if (how == TIMEOUT) {
        mf_run_policy policy = {.timeout = huge[h]};
        ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
      }
      ASSERT_EQ(mf_run_submit(run, NULL), 0);
      runs[n++] = run;
    }
  /* A retry delay that long too. */
  const double forever = INFINITY;
  mf_run_policy retry = {
      .retries = 1, .retry_delays = &forever, .retry_delay_count = 1};
  mf_run *retrying = run_new(e, &fail_ops, NULL);
  ASSERT_EQ(mf_run_set_policy(retrying, &retry), 0);
  ASSERT_EQ(mf_run_submit(retrying, NULL), 0);
  runs[n++] = retrying;
  ASSERT_EQ(mf_engine_step(e), n + 1);
  for (int i = 0; i < n - 1; i++)
    ASSERT_EQ(B(runs[i])->rc, 0);
  ASSERT_STATE(retrying, "SCHEDULED/AwaitingRetry");
  /* Far away, and said so: never a negative or wrapped timeout. */
  int ms = mf_engine_timeout(e);
  ASSERT_GT(ms, 1000 * 1000);
  for (int i = 3 * 4; i < 4 * 4; i++) { /* the attempts' deadlines */
    double deadline = mf_run_deadline(runs[i]);
    ASSERT_DBL(deadline, >, now() + 1e6);
    ASSERT(isfinite(deadline));
  }
  /* Nothing fires now (a wrapped deadline would be in the past). */
  ASSERT_EQ(mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, 0.05), 0);
  for (int i = 0; i < n; i++) {
    ASSERT_EQ(B(runs[i])->resumes, 0);
    ASSERT(!mf_run_is_final(runs[i]));
  }
  ASSERT_EQ(mf_engine_cancel_all(e, NULL, NULL), n + 1);
  ASSERT_EQ(mf_engine_timeout(e), -1);
  for (int i = 0; i < n; i++)
    mf_run_unref(runs[i]);
  mf_run_unref(never);
  mf_engine_close(e);
}

/* A top-level wait with an infinite timeout ends when its target does. */
TEST(top_level_wait_with_infinite_timeout) {
  mf_engine *e = engine_new();
  mf_run *run = run_start(e, &sleep_ops, "a");
  B(run)->seconds = 0.01;
  ASSERT_EQ(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, INFINITY), 0);
  ASSERT_STATE(run, "COMPLETED/Completed");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* A NaN, negative or zero sleep yields once: the others run first. */
TEST(nan_sleep_yields_once) {
  const double yields[] = {NAN, -1, 0, -INFINITY};
  for (int i = 0; i < 4; i++) {
    mf_engine *e = engine_new();
    mf_run *a = run_start(e, &sleep_ops, "a");
    B(a)->seconds = yields[i];
    mf_run *b = run_start(e, &complete_ops, "b");
    ASSERT_EQ(mf_engine_run(e), 0);
    ASSERT_LOG("a:start1 b:start1 a:resume");
    ASSERT_EQ(B(a)->rc, 0);
    ASSERT_EQ(B(a)->woke, MF_WAKE_DONE);
    ASSERT_STATE(a, "COMPLETED/Completed");
    mf_run_unref(a);
    mf_run_unref(b);
    mf_engine_close(e);
  }
}

/* mf_engine_timeout: 0 with runs ready, -1 with nothing due, else the
 * milliseconds left of the earliest deadline (never more). */
TEST(engine_timeout) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_engine_timeout(e), -1);
  mf_run *run = run_start(e, &sleep_ops, "a");
  B(run)->seconds = 2;
  ASSERT_EQ(mf_engine_timeout(e), 0);
  ASSERT_EQ(mf_engine_step(e), 1);
  int ms = mf_engine_timeout(e);
  ASSERT_GT(ms, 0);
  ASSERT_LE(ms, 2001);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_EQ(mf_engine_timeout(e), -1);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== The heap always has room ====== */

#define MANY 5000

/* Sleeps, with an attempt timeout armed too: two deadlines per run. */
TEST(heap_never_fails_to_grow) {
  mf_engine *e = engine_new();
  unsigned seed = 3;
  mf_run *runs[MANY];
  mf_run_policy policy = {.timeout = 1000};
  for (int i = 0; i < MANY; i++) {
    runs[i] = run_new(e, &sleep_ops, NULL);
    B(runs[i])->seconds = lcg(&seed) % 20 / 1000.0;
    ASSERT_EQ(mf_run_set_policy(runs[i], &policy), 0);
    ASSERT_EQ(mf_run_submit(runs[i], NULL), 0);
  }
  /* A top-level wait with its own deadline on top. */
  int rc;
  while ((rc = mf_engine_wait(e, runs, MANY, MF_WAIT_ALL, 0.005)) ==
         MF_ETIMEDOUT)
    ;
  ASSERT_EQ(rc, 0);
  for (int i = 0; i < MANY; i++) {
    ASSERT_STATE(runs[i], "COMPLETED/Completed");
    ASSERT_EQ(B(runs[i])->resumes, 1);
    mf_run_unref(runs[i]);
  }
  ASSERT_EQ(mf_engine_timeout(e), -1);
  mf_engine_close(e);
}

/* }====== */

/* {====== The loop's turn between slices ====== */

/* A run that computes in slices (it ends each pass: mf_engine_end_pass,
 * then yields) beside a run that sleeps 1 ms over and over.  Each slice
 * computes until the sleeper's timer is surely due, so the loop's turn
 * after a slice wakes the sleeper before the computer's next slice: a
 * top-level wait (mf_engine_wait) must not run two slices back to back. */
#define SLICES 6

static int computer_done;
static double sleeper_armed_at;
static mf_engine *slicing_engine;

static void slicing_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (B(run)->resumes < SLICES) {
    while (now() < sleeper_armed_at + 0.005) /* well past its 1 ms */
      ;
    mf_engine_end_pass(slicing_engine);
    B(run)->rc = mf_run_sleep(run, 0); /* a yield */
    return;
  }
  computer_done = 1;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops slicing_ops = {.step = slicing_step,
                                       .abandon = count_abandon};

static void ticking_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (computer_done) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  sleeper_armed_at = now();
  B(run)->rc = mf_run_sleep(run, 0.001);
}
static const mf_run_ops ticking_ops = {.step = ticking_step,
                                       .abandon = count_abandon};

TEST(top_level_wait_gives_the_loop_its_turn_between_slices) {
  mf_engine *e = engine_new();
  slicing_engine = e;
  computer_done = 0;
  sleeper_armed_at = now();
  mf_run *ticker = run_start(e, &ticking_ops, "t");
  mf_run *computer = run_start(e, &slicing_ops, "c");
  wait_final(e, computer);
  wait_final(e, ticker);
  ASSERT_EQ(B(computer)->rc, 0);
  /* Every slice of the computer after the first follows a wake of the
   * ticker: never "c:resume c:resume". */
  ASSERT_LOG("t:start1 c:start1 t:resume c:resume t:resume c:resume "
             "t:resume c:resume t:resume c:resume t:resume c:resume "
             "t:resume c:resume t:resume");
  mf_run_unref(ticker);
  mf_run_unref(computer);
  mf_engine_close(e);
}

/* }====== */

/* {====== A pass ends within its budget ====== */

/* Computes b->seconds by the clock, then completes. */
static void computing_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  double until = now() + B(run)->seconds;
  while (now() < until)
    ;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops computing_ops = {.step = computing_step,
                                         .abandon = count_abandon};

TEST(a_pass_of_slow_steps_ends_within_its_budget) {
  /* Runs computing 2 ms each, a budget of 10 ms: a pass makes at most 5
   * steps, the last one expected to end by the budget (the clock read only
   * every 16 steps, a pass made 15, 30 ms).  A slower machine makes fewer:
   * each step computes 2 ms by the clock, whatever else runs. */
  enum { RUNS = 24 };
  mf_config cfg = {.size = sizeof cfg, .step_only = 1, .step_budget = 0.010};
  mf_engine *e = NULL;
  ASSERT_EQ(mf_engine_new(&e, &cfg), 0);
  mf_run *runs[RUNS];
  for (int i = 0; i < RUNS; i++) {
    runs[i] = run_new(e, &computing_ops, NULL);
    B(runs[i])->seconds = 0.002;
    ASSERT_EQ(mf_run_submit(runs[i], NULL), 0);
  }
  ASSERT_DBL(mf_engine_longest_pass(e, 1), ==, 0.0); /* no pass yet */
  int made = 0, passes = 0;
  while (made < RUNS) {
    ASSERT_GE(mf_engine_step(e), 0);
    int steps = 0;
    for (int i = 0; i < RUNS; i++)
      steps += B(runs[i])->steps;
    ASSERT(steps - made >= 1); /* each pass makes one at least */
    ASSERT(steps - made <= 5);
    made = steps;
    passes++;
  }
  ASSERT_GE(passes, RUNS / 5);
  /* Each pass computed 2 ms at least; the count starts again at a reset. */
  ASSERT_DBL(mf_engine_longest_pass(e, 1), >=, 0.002);
  ASSERT_DBL(mf_engine_longest_pass(e, 0), ==, 0.0);
  for (int i = 0; i < RUNS; i++) {
    ASSERT_STATE(runs[i], "COMPLETED/Completed");
    mf_run_unref(runs[i]);
  }
  mf_engine_close(e);
}

/* }====== */

TEST_MAIN("timers")
