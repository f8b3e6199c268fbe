/*
 * test_timeout.c -- the timeout of an attempt (mf_run_policy.timeout): a
 * body parked past its deadline is abandoned and the attempt ends
 * FAILED/TimedOut (MF_ETIMEDOUT), what it started is cancelled, a body that
 * completes late or parks late is timed out all the same, and the time
 * counts from the body's start -- not from submission, inputs, slots,
 * on_running hooks or retry delays.  Elapsed times are lower bounds only.
 */
#include "fixture.h"

/* When the last timed run was made: before its deadline was armed.  (Not
 * the body's first line: the deadline is armed before the step begins,
 * and a busy machine may pause between the two.) */
static double created_at;

static mf_run *timed_run(mf_engine *e, const mf_run_ops *ops, const char *name,
                         double timeout) {
  created_at = now();
  mf_run *run = run_new(e, ops, name);
  B(run)->arg = e;
  mf_run_policy policy = {.timeout = timeout};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  return run;
}

/* {====== Parked past the deadline ====== */

/* Parks as b->param says, forever (or for b->seconds). */
enum { PARK, SLEEP, WAIT_RUN, WAIT_CHILDREN, YIELD };

static void parker_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_RESUME && b->param != YIELD) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  switch (b->param) {
  case PARK:
    b->rc = mf_run_park(run, -1, &b->ticket);
    break;
  case SLEEP:
    b->rc = mf_run_sleep(run, b->seconds);
    break;
  case WAIT_RUN:
    b->rc = mf_run_wait(run, &b->target, 1, MF_WAIT_ALL, -1);
    break;
  case WAIT_CHILDREN: {
    mf_run *child = run_new(b->arg, &park_ops, "child");
    ASSERT_EQ(mf_run_submit(child, NULL), 0);
    b->target = child;
    b->rc = mf_run_wait_children(run);
    break;
  }
  case YIELD: /* yields forever: sleep 0 at every step */
    b->rc = mf_run_sleep(run, 0);
    break;
  }
}
static const mf_run_ops parker_ops = {.step = parker_step,
                                      .abandon = count_abandon};

static void check_timed_out(mf_engine *e, mf_run *run, double timeout) {
  wait_final(e, run);
  double ended = now();
  ASSERT_STATE(run, "FAILED/TimedOut");
  ASSERT_EQ(mf_run_error_code(run), MF_ETIMEDOUT);
  ASSERT_HISTORY(run, "Pending Running TimedOut");
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT_EQ(B(run)->abandon_code, MF_ETIMEDOUT); /* set before abandon */
  ASSERT_EQ(B(run)->abandons_final, 0);          /* the attempt, not the run */
  ASSERT_DBL(ended - created_at, >=, timeout - SLACK);
}

TEST(parked_past_deadline) {
  mf_engine *e = engine_new();
  mf_run *run = timed_run(e, &parker_ops, "a", 0.02);
  B(run)->param = PARK;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  check_timed_out(e, run, 0.02);
  ASSERT_EQ(B(run)->rc, 0);
  ASSERT_EQ(B(run)->resumes, 0);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), MF_ESTATE); /* too late */
  ASSERT_EQ(mf_run_unhandled(e, NULL, NULL), 1);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(sleeping_past_deadline) {
  mf_engine *e = engine_new();
  mf_run *run = timed_run(e, &parker_ops, "a", 0.02);
  B(run)->param = SLEEP;
  B(run)->seconds = 100;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  check_timed_out(e, run, 0.02);
  ASSERT_EQ(B(run)->resumes, 0);
  ASSERT_EQ(mf_engine_timeout(e), -1); /* its sleep is disarmed */
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(waiting_past_deadline) {
  mf_engine *e = engine_new();
  mf_run *never = mf_run_new(e, NULL, 0); /* nobody completes it */
  ASSERT_EQ(mf_run_submit(never, NULL), 0);
  mf_run *run = timed_run(e, &parker_ops, "a", 0.02);
  B(run)->param = WAIT_RUN;
  B(run)->target = never;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  /* Not a deadlock: the deadline ends the wait. */
  check_timed_out(e, run, 0.02);
  ASSERT(!mf_run_is_final(never));
  ASSERT_EQ(mf_run_cancel(never), 1);
  mf_run_unref(never);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(yielding_past_deadline) {
  mf_engine *e = engine_new();
  mf_run *run = timed_run(e, &parker_ops, NULL, 0.02);
  B(run)->param = YIELD;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  check_timed_out(e, run, 0.02);
  ASSERT_GE(B(run)->resumes, 1);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* What the body started is cancelled with it. */
TEST(what_it_started_is_cancelled) {
  mf_engine *e = engine_new();
  mf_run *run = timed_run(e, &parker_ops, "a", 0.02);
  B(run)->param = WAIT_CHILDREN;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  check_timed_out(e, run, 0.02);
  mf_run *child = B(run)->target;
  ASSERT_STATE(child, "CANCELLED/Cancelled");
  ASSERT_EQ(B(child)->abandons, 1);
  /* (The child may not have started: the deadline may come first.) */
  ASSERT(strstr(test_log, "a:abandon child:abandon") != NULL);
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  mf_run_unref(child);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* A flow's children are cancelled, and the flow ends after them. */
static void note_final(mf_run *run, void *data) {
  (void)data;
  note("%s:final", B(run)->name);
}

TEST(timed_out_flow_ends_after_its_children) {
  mf_engine *e = engine_new();
  mf_run *flow = timed_run(e, &parker_ops, "f", 0.02);
  B(flow)->param = WAIT_CHILDREN;
  mf_run_set_flags(flow, MF_RUN_FLOW);
  ASSERT_EQ(mf_run_on_done(flow, note_final, NULL), 0);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  check_timed_out(e, flow, 0.02);
  ASSERT_STATE(B(flow)->target, "CANCELLED/Cancelled");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT(strstr(test_log, "f:abandon child:abandon f:final") != NULL);
  mf_run_unref(B(flow)->target);
  mf_run_unref(flow);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Woken after its deadline passed but before it was resumed: stopped. */
TEST(woken_after_deadline_not_resumed) {
  mf_engine *e = engine_new();
  mf_run *run = timed_run(e, &parker_ops, "a", 0.02);
  B(run)->param = PARK;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(B(run)->starts, 1);
  while (now() < mf_run_deadline(run) + 0.001) /* the loop does not turn */
    uv_sleep(5);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  check_timed_out(e, run, 0.02);
  ASSERT_EQ(B(run)->resumes, 0);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* }====== */

/* {====== Past the deadline without parking ====== */

/* Computes until its deadline passed, then does what b->param says:
 * complete, park, sleep, or sleep 0. */
static void late_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason != MF_STEP_START) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  double deadline = mf_run_deadline(run);
  ASSERT_DBL(deadline, >, 0);
  ASSERT_DBL(deadline, <=, b->started[0] + b->seconds); /* armed before */
  if (now() < deadline)
    ASSERT(!mf_run_timed_out(run));
  while (!mf_run_timed_out(run))
    ; /* computes: the engine cannot stop a C body */
  ASSERT_DBL(now(), >=, deadline);
  switch (b->param) {
  case 0:
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    break;
  case 1:
    b->rc = mf_run_park(run, -1, &b->ticket);
    break;
  case 2:
    b->rc = mf_run_sleep(run, 100);
    break;
  case 3:
    b->rc = mf_run_sleep(run, 0);
    break;
  }
}
static const mf_run_ops late_ops = {.step = late_step,
                                    .abandon = count_abandon};

TEST(completes_after_deadline) {
  mf_engine *e = engine_new();
  mf_run *run = timed_run(e, &late_ops, "a", 0.05);
  B(run)->seconds = 0.05;
  B(run)->param = 0;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/TimedOut");
  ASSERT_EQ(mf_run_error_code(run), MF_ETIMEDOUT);
  ASSERT_EQ(B(run)->abandons, 0); /* it ended its step itself */
  ASSERT_EQ(B(run)->steps, 1);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(parks_after_deadline) {
  for (int how = 1; how <= 3; how++) {
    mf_engine *e = engine_new();
    mf_run *run = timed_run(e, &late_ops, "a", 0.02);
    B(run)->seconds = 0.02;
    B(run)->param = how;
    ASSERT_EQ(mf_run_submit(run, NULL), 0);
    wait_final(e, run);
    ASSERT_EQ(B(run)->rc, 0);
    ASSERT_STATE(run, "FAILED/TimedOut");
    ASSERT_EQ(mf_run_error_code(run), MF_ETIMEDOUT);
    ASSERT_EQ(B(run)->steps, 1); /* never resumed */
    ASSERT_EQ(B(run)->abandons, 1);
    ASSERT_EQ(mf_engine_timeout(e), -1);
    mf_run_unref(run);
    mf_run_clear_unhandled(e, NULL);
    mf_engine_close(e);
  }
}

/* The body's last word on its deadline (mf_run_stop_deadline), then the
 * time a binding takes to store results, past the deadline, then
 * COMPLETED: taken in time (b->param 0), the completion stands; taken late
 * (1), it says so, stays said, and the attempt ends TimedOut. */
static void stop_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  double deadline = mf_run_deadline(run);
  ASSERT_DBL(deadline, >, 0);
  if (b->param == 1)
    while (!mf_run_timed_out(run))
      ;
  b->rc = mf_run_stop_deadline(run);
  ASSERT_EQ(mf_run_timed_out(run), b->param);
  while (now() < deadline)
    ; /* storing its results */
  ASSERT_EQ(mf_run_timed_out(run), b->param);
  ASSERT_EQ(mf_run_stop_deadline(run), b->param);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops stop_ops = {.step = stop_step,
                                    .abandon = count_abandon};

TEST(stops_its_deadline_before_it_ends) {
  for (int late = 0; late <= 1; late++) {
    mf_engine *e = engine_new();
    /* 0.4 s: far off when the step begins, even on a slow, busy machine */
    mf_run *run = timed_run(e, &stop_ops, "a", late ? 0.02 : 0.4);
    B(run)->param = late;
    ASSERT_EQ(mf_run_submit(run, NULL), 0);
    wait_final(e, run);
    ASSERT_EQ(B(run)->rc, late);
    ASSERT_STATE(run, late ? "FAILED/TimedOut" : "COMPLETED/Completed");
    ASSERT_EQ(mf_run_error_code(run), late ? MF_ETIMEDOUT : 0);
    ASSERT_EQ(B(run)->abandons, 0);
    ASSERT_EQ(mf_engine_timeout(e), -1);
    mf_run_unref(run);
    mf_run_clear_unhandled(e, NULL);
    mf_engine_close(e);
  }
}

/* }====== */

/* {====== From the body's start ====== */

/* The body completes at once, well within TIMEOUT of its start (even on
 * a slow, busy machine); what comes before it takes BEFORE > TIMEOUT: a
 * timeout counted from then would have passed. */
#define TIMEOUT 0.4
#define BEFORE 0.5

/* Records its deadline and completes at once. */
static void quick_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    B(run)->seconds = mf_run_deadline(run);
    B(run)->param = mf_run_timed_out(run);
  }
  if (reason == MF_STEP_HOOKS && mf_run_hook_point(run) == MF_HOOK_RUNNING) {
    if (B(run)->resumes == 0) { /* on_running hooks sleep first */
      B(run)->rc = mf_run_sleep(run, BEFORE);
      return;
    }
  }
  if (reason == MF_STEP_RESUME)
    B(run)->started[15] = now(); /* when the hooks' sleep ended */
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops quick_ops = {.step = quick_step,
                                     .abandon = count_abandon};

static void check_completed_in_time(mf_run *run, double since, double timeout) {
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_EQ(mf_run_error_code(run), 0);
  ASSERT_EQ(B(run)->param, 0);
  ASSERT_DBL(B(run)->seconds, >=, since + timeout); /* the deadline seen */
}

/* Done callbacks run before any other run sees their run final. */
static double input_done;
static void note_input_done(mf_run *run, void *data) {
  (void)run;
  (void)data;
  input_done = now();
}

TEST(not_from_inputs) {
  mf_engine *e = engine_new();
  mf_run *input = run_start(e, &sleep_ops, "in");
  B(input)->seconds = BEFORE;
  ASSERT_EQ(mf_run_on_done(input, note_input_done, NULL), 0);
  mf_run *run = timed_run(e, &quick_ops, "a", TIMEOUT);
  ASSERT_EQ(mf_run_add_input(run, input, 0), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_LOG("in:start1 in:resume a:start1");
  check_completed_in_time(run, input_done, TIMEOUT);
  mf_run_unref(input);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(not_from_slots) {
  mf_engine *e = engine_new();
  const char *tag = "one";
  ASSERT_EQ(mf_limit_set(e, tag, 1), 0);
  mf_run *holder = run_new(e, &park_ops, "holder");
  ASSERT_EQ(mf_run_set_tags(holder, &tag, 1), 0);
  ASSERT_EQ(mf_run_submit(holder, NULL), 0);
  mf_run *run = timed_run(e, &quick_ops, "a", TIMEOUT);
  ASSERT_EQ(mf_run_set_tags(run, &tag, 1), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 2);
  ASSERT_EQ(mf_engine_wait(e, NULL, 0, MF_WAIT_ANY, BEFORE), 0);
  ASSERT_EQ(B(run)->steps, 0); /* still waiting for the slot */
  double released = now();
  ASSERT_EQ(mf_run_unpark(holder, B(holder)->ticket), 0);
  wait_final(e, run);
  check_completed_in_time(run, released, TIMEOUT);
  mf_run_unref(holder);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(not_from_on_running_hooks) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &quick_ops, "a");
  mf_run_policy policy = {.timeout = TIMEOUT, .hooks = MF_HOOK_RUNNING};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_LOG("a:hooks1 a:resume a:start1");
  check_completed_in_time(run, B(run)->started[15], TIMEOUT);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Each attempt has its own deadline; the retry delay is not in it. */
static void fail_first_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (mf_run_attempt(run) == 1) {
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  B(run)->seconds = mf_run_deadline(run);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops fail_first_ops = {.step = fail_first_step,
                                          .abandon = count_abandon};

TEST(not_from_retry_delays) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &fail_first_ops, "a");
  const double delay = BEFORE;
  mf_run_policy policy = {.retries = 1,
                          .retry_delays = &delay,
                          .retry_delay_count = 1,
                          .timeout = TIMEOUT};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_DBL(B(run)->seconds, >=, B(run)->started[0] + delay + TIMEOUT - SLACK);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Deadlines seen from the body ====== */

/* A wait's own timeout shorter than the attempt's: the wait times out,
 * the attempt goes on. */
static void short_wait_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    B(run)->rc = mf_run_wait(run, &B(run)->target, 1, MF_WAIT_ALL, 0.01);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops short_wait_ops = {.step = short_wait_step,
                                          .abandon = count_abandon};

TEST(wait_timeout_inside_the_attempt) {
  mf_engine *e = engine_new();
  mf_run *never = mf_run_new(e, NULL, 0);
  ASSERT_EQ(mf_run_submit(never, NULL), 0);
  mf_run *run = timed_run(e, &short_wait_ops, "a", 10);
  B(run)->target = never;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_EQ(B(run)->woke, MF_WAKE_TIMEOUT);
  ASSERT_EQ(B(run)->abandons, 0);
  ASSERT_EQ(mf_run_cancel(never), 1);
  mf_run_unref(never);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Without a timeout there is no deadline; outside an attempt, neither. */
static void deadline_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  note("%s:deadline=%s timed_out=%d", B(run)->name,
       mf_run_deadline(run) < 0 ? "none" : "set", mf_run_timed_out(run));
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops deadline_ops = {.step = deadline_step};

TEST(deadline_only_in_a_timed_attempt) {
  mf_engine *e = engine_new();
  mf_run *plain = run_start(e, &deadline_ops, "plain");
  mf_run *timed = run_new(e, &deadline_ops, "timed");
  mf_run_policy policy = {.timeout = 10,
                          .hooks = MF_HOOK_RUNNING | MF_HOOK_COMPLETED};
  ASSERT_EQ(mf_run_set_policy(timed, &policy), 0);
  ASSERT_EQ(mf_run_submit(timed, NULL), 0);
  ASSERT_DBL(mf_run_deadline(timed), <, 0); /* not started */
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("plain:start1 plain:deadline=none timed_out=0 "
             "timed:hooks1 timed:deadline=none timed_out=0 "
             "timed:start1 timed:deadline=set timed_out=0 "
             "timed:hooks2 timed:deadline=none timed_out=0");
  ASSERT_DBL(mf_run_deadline(timed), <, 0);
  ASSERT_EQ(mf_run_timed_out(timed), 0);
  ASSERT_EQ(mf_engine_timeout(e), -1); /* its timer is gone */
  mf_run_unref(plain);
  mf_run_unref(timed);
  mf_engine_close(e);
}

/* }====== */

TEST_MAIN("timeout")
