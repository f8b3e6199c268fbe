/*
 * test_retry.c -- retries as the engine runs them from the policy: the
 * history and attempt numbers, delays used in turn (the last repeating)
 * and never shortened, jitter within its bounds, the retry condition,
 * which outcomes are retried, and the slots a run gives back while it
 * waits to retry.  Times are lower bounds only; the upper side of a delay
 * is read from mf_engine_timeout (what the engine armed), never from a
 * clock.
 */
#include <math.h>

#include "fixture.h"

/* {====== Bodies ====== */

/* Attempt n fails while n <= b->param, then completes. */
static void flaky_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (mf_run_attempt(run) <= B(run)->param)
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
  else
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

/* The retry condition: counts its calls, records what it sees, and says
 * yes until b->rc calls were made (0: always). */
static int retry_calls;
static int retry_condition(mf_run *run) {
  retry_calls++;
  mf_state_type type;
  mf_state_name name;
  mf_run_outcome(run, &type, &name);
  note("retry?%d=%s/%s sleep=%s wait=%s", mf_run_attempt(run),
       mf_state_type_string(type), mf_state_name_string(name),
       mf_err_name(mf_run_sleep(run, 0)),
       mf_err_name(mf_engine_wait(B(run)->arg, NULL, 0, MF_WAIT_ANY, 0)));
  return B(run)->rc == 0 || retry_calls < B(run)->rc;
}

static const mf_run_ops flaky_ops = {.step = flaky_step,
                                     .abandon = count_abandon};
static const mf_run_ops flaky_cond_ops = {
    .step = flaky_step, .abandon = count_abandon, .retry = retry_condition};

static mf_run *policy_run(mf_engine *e, const mf_run_ops *ops, const char *name,
                          const mf_run_policy *policy) {
  mf_run *run = run_new(e, ops, name);
  B(run)->arg = e;
  ASSERT_EQ(mf_run_set_policy(run, policy), 0);
  return run;
}

/* }====== */

TEST(history_and_attempt_numbers) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 2};
  mf_run *run = policy_run(e, &flaky_ops, "a", &policy);
  B(run)->param = 99;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/Failed");
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Retrying AwaitingRetry "
                      "Retrying Failed");
  const mf_state *h;
  ASSERT_EQ(mf_run_history(run, &h), 7);
  static const mf_state_type types[] = {MF_PENDING, MF_RUNNING,   MF_SCHEDULED,
                                        MF_RUNNING, MF_SCHEDULED, MF_RUNNING,
                                        MF_FAILED};
  for (int i = 0; i < 7; i++)
    ASSERT_EQ(h[i].type, types[i]);
  ASSERT_LOG("a:start1 a:start2 a:start3");
  ASSERT_EQ(mf_run_attempt(run), 3);
  ASSERT_EQ(B(run)->abandons, 0);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(completes_on_a_retry) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 5};
  mf_run *run = policy_run(e, &flaky_ops, "a", &policy);
  B(run)->param = 1;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Retrying Completed");
  ASSERT_EQ(mf_run_attempt(run), 2);
  ASSERT_EQ(mf_run_unhandled(e, NULL, NULL), 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(no_retries_no_retry) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {
      .retries = 0, .retry_delays = (double[]){5}, .retry_delay_count = 1};
  mf_run *run = policy_run(e, &flaky_cond_ops, "a", &policy);
  B(run)->param = 1;
  retry_calls = 0;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_HISTORY(run, "Pending Running Failed");
  ASSERT_EQ(retry_calls, 0);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Delays {d1, d2}: retry 1 waits d1, retries 2 and 3 wait d2. */
TEST(delays_in_turn_the_last_repeating) {
  mf_engine *e = engine_new();
  const double delays[] = {0.03, 0.06};
  mf_run_policy policy = {
      .retries = 3, .retry_delays = delays, .retry_delay_count = 2};
  mf_run *run = policy_run(e, &flaky_ops, "a", &policy);
  B(run)->param = 99;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  int armed_ms[4] = {0};
  for (int attempt = 1; attempt <= 3; attempt++) {
    while (mf_run_attempt(run) < attempt ||
           mf_run_state_name(run) != MF_NAME_AWAITING_RETRY)
      ASSERT_GE(mf_engine_step(e), 0);
    armed_ms[attempt] = mf_engine_timeout(e); /* what is left of the delay */
    ASSERT_EQ(mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, 0.001), 0);
  }
  wait_final(e, run);
  ASSERT_EQ(mf_run_attempt(run), 4);
  const double expected[] = {0.03, 0.06, 0.06};
  for (int i = 0; i < 3; i++) {
    ASSERT_DBL(B(run)->started[i + 1] - B(run)->started[i], >=,
               expected[i] - SLACK);
    ASSERT_GE(armed_ms[i + 1], 0); /* -1 would be nothing armed */
    ASSERT_LE(armed_ms[i + 1], expected[i] * 1000 + 1);
  }
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Jittered delays: never shorter than delay * (1 - jitter) (measured),
 * never longer than delay * (1 + jitter) (what the engine armed). */
TEST(jitter_within_bounds) {
  mf_engine *e = engine_new();
  const double delay = 0.04, jitter = 0.5;
  mf_run_policy policy = {.retries = 6,
                          .retry_delays = &delay,
                          .retry_delay_count = 1,
                          .retry_jitter = jitter};
  mf_run *run = policy_run(e, &flaky_ops, "a", &policy);
  B(run)->param = 99;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  for (int attempt = 1; attempt <= 6; attempt++) {
    while (mf_run_attempt(run) < attempt ||
           mf_run_state_name(run) != MF_NAME_AWAITING_RETRY)
      ASSERT_GE(mf_engine_step(e), 0);
    int ms = mf_engine_timeout(e);
    ASSERT_GE(ms, 0);
    ASSERT_LE(ms, delay * (1 + jitter) * 1000 + 1);
    ASSERT_EQ(mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, 0.001), 0);
  }
  wait_final(e, run);
  for (int i = 0; i < 6; i++)
    ASSERT_DBL(B(run)->started[i + 1] - B(run)->started[i], >=,
               delay * (1 - jitter) - SLACK);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Each delay is drawn anew: over 30 draws of 1 s +- 50%, some are longer
 * than 1 s (a chance of 2^-30 to see none) and none longer than 1.5 s. */
TEST(jitter_drawn_for_each_delay) {
  mf_engine *e = engine_new();
  const double delay = 1.0;
  mf_run_policy policy = {.retries = 1,
                          .retry_delays = &delay,
                          .retry_delay_count = 1,
                          .retry_jitter = 0.5};
  int longer = 0, shorter = 0;
  for (int i = 0; i < 30; i++) {
    mf_run *run = policy_run(e, &flaky_ops, NULL, &policy);
    B(run)->param = 99;
    ASSERT_EQ(mf_run_submit(run, NULL), 0);
    while (mf_run_state_name(run) != MF_NAME_AWAITING_RETRY)
      ASSERT_GE(mf_engine_step(e), 0);
    int ms = mf_engine_timeout(e);
    ASSERT_GE(ms, 0);
    ASSERT_LE(ms, 1501);
    longer += ms > 1001;
    shorter += ms < 999;
    ASSERT_EQ(mf_run_cancel(run), 1);
    ASSERT_STATE(run, "CANCELLED/Cancelled");
    mf_run_unref(run);
  }
  ASSERT_GT(longer, 0);
  ASSERT_GT(shorter, 0);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* The condition is asked after each failed attempt the policy would
 * retry, sees the outcome, may not wait, and stops the retries. */
TEST(retry_condition_stops_retries) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 5};
  mf_run *run = policy_run(e, &flaky_cond_ops, "a", &policy);
  B(run)->param = 99;
  B(run)->rc = 2; /* no at the second question */
  retry_calls = 0;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/Failed");
  ASSERT_EQ(retry_calls, 2);
  ASSERT_EQ(mf_run_attempt(run), 2);
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Retrying Failed");
  ASSERT_LOG("a:start1 retry?1=FAILED/Failed sleep=ESTATE wait=EBUSY "
             "a:start2 retry?2=FAILED/Failed sleep=ESTATE wait=EBUSY");
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Not asked once the retries are used up, nor for a completed attempt. */
TEST(retry_condition_asked_only_when_a_retry_is_possible) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 2};
  mf_run *failing = policy_run(e, &flaky_cond_ops, "a", &policy);
  B(failing)->param = 99;
  retry_calls = 0;
  ASSERT_EQ(mf_run_submit(failing, NULL), 0);
  wait_final(e, failing);
  ASSERT_EQ(mf_run_attempt(failing), 3);
  ASSERT_EQ(retry_calls, 2);
  mf_run *completing = policy_run(e, &flaky_cond_ops, "b", &policy);
  retry_calls = 0;
  ASSERT_EQ(mf_run_submit(completing, NULL), 0);
  wait_final(e, completing);
  ASSERT_STATE(completing, "COMPLETED/Completed");
  ASSERT_EQ(retry_calls, 0);
  mf_run_unref(failing);
  mf_run_unref(completing);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* {====== Which outcomes are retried ====== */

/* Ends attempt n with the state b->arg's array says (index n - 1); a
 * negative type: returns without finishing (a broken contract). */
typedef struct ending {
  int type;
  mf_state_name name;
} ending;

static void ending_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  const ending *end = (const ending *)B(run)->arg + mf_run_attempt(run) - 1;
  if (end->type >= 0)
    mf_run_finish(run, (mf_state_type)end->type, end->name);
}
static const mf_run_ops ending_ops = {.step = ending_step,
                                      .abandon = count_abandon};

static mf_run *ending_run(mf_engine *e, const ending *ends, int retries) {
  mf_run *run = run_new(e, &ending_ops, "a");
  B(run)->arg = (void *)ends;
  mf_run_policy policy = {.retries = retries};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

TEST(cancelled_attempt_never_retried) {
  mf_engine *e = engine_new();
  static const ending ends[] = {{MF_CANCELLED, MF_NAME_CANCELLED},
                                {MF_COMPLETED, MF_NAME_COMPLETED}};
  mf_run *run = ending_run(e, ends, 3);
  wait_final(e, run);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_HISTORY(run, "Pending Running Cancelled");
  ASSERT_EQ(mf_run_attempt(run), 1);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(crashed_attempts_retried) {
  mf_engine *e = engine_new();
  static const ending ends[] = {{MF_CRASHED, MF_NAME_CRASHED},
                                {-1, 0}, /* breaks the contract */
                                {MF_COMPLETED, MF_NAME_COMPLETED}};
  mf_run *run = ending_run(e, ends, 3);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Retrying AwaitingRetry "
                      "Retrying Completed");
  ASSERT_EQ(mf_run_error_code(run), 0); /* the crash's code was per attempt */
  ASSERT_EQ(mf_run_attempt(run), 3);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(crashed_last_attempt_ends_crashed) {
  mf_engine *e = engine_new();
  static const ending ends[] = {{MF_FAILED, MF_NAME_FAILED}, {-1, 0}};
  mf_run *run = ending_run(e, ends, 1);
  wait_final(e, run);
  ASSERT_STATE(run, "CRASHED/Crashed");
  ASSERT_EQ(mf_run_error_code(run), MF_ESTATE);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Parks in attempt 1 (past its deadline), completes attempt 2. */
static void park_once_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START && mf_run_attempt(run) == 1) {
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops park_once_ops = {
    .step = park_once_step, .abandon = count_abandon, .retry = retry_condition};

TEST(timed_out_attempt_retried) {
  mf_engine *e = engine_new();
  /* Long enough for attempt 2 to complete in time on a busy machine. */
  mf_run_policy policy = {.retries = 1, .timeout = 0.2};
  mf_run *run = policy_run(e, &park_once_ops, "a", &policy);
  retry_calls = 0;
  double submitted = now(); /* attempt 1's deadline is armed later */
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Retrying Completed");
  ASSERT_LOG("a:start1 a:abandon retry?1=FAILED/TimedOut sleep=ESTATE "
             "wait=EBUSY a:start2");
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT_EQ(B(run)->abandon_code, MF_ETIMEDOUT);
  ASSERT_EQ(mf_run_error_code(run), 0);
  ASSERT_DBL(B(run)->started[1] - submitted, >=, 0.2 - SLACK);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Slots during the delay ====== */

/* Records the state of b->target when it starts, then parks. */
static void observer_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    note("saw=%s", state_of(B(run)->target));
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops observer_ops = {.step = observer_step};

static void limit_counts(mf_engine *e, size_t *holders, size_t *waiters) {
  mf_limit_info info;
  ASSERT_EQ(mf_limit_each(e, &info, 1), 1);
  *holders = info.holders;
  *waiters = info.waiters;
}

TEST(slots_given_back_during_the_delay_and_taken_again) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_limit_set(e, "db", 1), 0);
  const char *tag = "db";
  const double delay = 0.03;
  mf_run_policy policy = {
      .retries = 1, .retry_delays = &delay, .retry_delay_count = 1};
  mf_run *a = policy_run(e, &flaky_ops, "a", &policy);
  B(a)->param = 1;
  ASSERT_EQ(mf_run_set_tags(a, &tag, 1), 0);
  ASSERT_EQ(mf_run_submit(a, NULL), 0);
  mf_run *b = run_new(e, &observer_ops, "b");
  B(b)->target = a;
  ASSERT_EQ(mf_run_set_tags(b, &tag, 1), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  /* a fails, gives its slot back for the delay: b takes it. */
  while (B(b)->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_LOG("a:start1 b:start1 saw=SCHEDULED/AwaitingRetry");
  size_t holders, waiters;
  limit_counts(e, &holders, &waiters);
  ASSERT_EQ(holders, 1);
  ASSERT_EQ(waiters, 0);
  /* The delay over, a waits for the slot b holds, still AwaitingRetry. */
  while (limit_counts(e, &holders, &waiters), waiters == 0)
    ASSERT_EQ(mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, 0.005), 0);
  ASSERT_STATE(a, "SCHEDULED/AwaitingRetry");
  ASSERT_EQ(mf_run_attempt(a), 1);
  ASSERT_EQ(mf_run_unpark(b, B(b)->ticket), 0);
  wait_final(e, a);
  ASSERT_LOG("a:start1 b:start1 saw=SCHEDULED/AwaitingRetry b:resume "
             "a:start2");
  ASSERT_STATE(a, "COMPLETED/Completed");
  ASSERT_HISTORY(a, "Pending Running AwaitingRetry Retrying Completed");
  ASSERT(mf_run_is_final(b));
  limit_counts(e, &holders, &waiters);
  ASSERT_EQ(holders + waiters, 0);
  mf_run_unref(a);
  mf_run_unref(b);
  mf_engine_close(e);
}

/* }====== */

/* {====== Flows ====== */

/* A flow whose first attempt starts a child that parks, and fails: the
 * child is cancelled and the retry begins once it is final. */
static void flow_attempt_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (mf_run_attempt(run) == 1) {
    mf_run *child = run_new(B(run)->arg, &park_ops, "c");
    ASSERT_EQ(mf_run_submit(child, NULL), 0);
    B(run)->target = child;
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops flow_attempt_ops = {.step = flow_attempt_step};

TEST(flow_retried_after_its_children_ended) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 1};
  mf_run *flow = policy_run(e, &flow_attempt_ops, "f", &policy);
  mf_run_set_flags(flow, MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  wait_final(e, flow);
  ASSERT_STATE(flow, "COMPLETED/Completed");
  ASSERT_LOG("f:start1 c:abandon f:start2");
  ASSERT_STATE(B(flow)->target, "CANCELLED/Cancelled");
  mf_run_unref(B(flow)->target);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* }====== */

/* {====== The policy ====== */

TEST(policy_validation) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &flaky_ops, NULL);
  double bad_delay = -1, nan_delay = NAN;
  const mf_run_policy bad[] = {
      {.retries = -1},
      {.retry_jitter = -0.1},
      {.retry_jitter = 1.5},
      {.retry_jitter = NAN},
      {.timeout = NAN},
      {.retry_delays = &bad_delay, .retry_delay_count = 1},
      {.retry_delays = &nan_delay, .retry_delay_count = 1},
      {.retry_delays = NULL, .retry_delay_count = 2},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    ASSERT_EQ(mf_run_set_policy(run, &bad[i]), MF_EINVAL);
  /* The delays are copied: changing the caller's array changes nothing. */
  double delays[] = {0.02};
  mf_run_policy policy = {
      .retries = 1, .retry_delays = delays, .retry_delay_count = 1};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  delays[0] = 100;
  B(run)->param = 99;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  while (mf_run_state_name(run) != MF_NAME_AWAITING_RETRY)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_GE(mf_engine_timeout(e), 0);
  ASSERT_LE(mf_engine_timeout(e), 21);
  wait_final(e, run);
  ASSERT_EQ(mf_run_attempt(run), 2);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* }====== */

TEST_MAIN("retry")
