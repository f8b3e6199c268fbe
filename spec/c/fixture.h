/*
 * fixture.h -- what the engine's C tests share: a body record that counts
 * what the engine did to it, a log of events to assert order with (never
 * time), a run's history as a string, and the plain C bodies most tests
 * need.  Every test makes its own engine and drives it on the engine's own
 * loop (mf_engine_wait, mf_engine_run, mf_engine_step).
 */
#ifndef MF_FIXTURE_H
#define MF_FIXTURE_H

#include "test.h"

/* A libuv timer may fire up to a millisecond early (the engine accepts
 * deadlines within half a millisecond, libuv counts whole milliseconds):
 * lower bounds on elapsed time allow that much. */
#define SLACK 0.002

/* {====== The log ====== */

static char test_log[16384];
static size_t test_log_len;

/* Appends one event ("a:start"), space-separated. */
__attribute__((format(printf, 1, 2))) MF_TEST_UNUSED static void
note(const char *fmt, ...) {
  if (test_log_len > 0 && test_log_len < sizeof test_log - 1)
    test_log[test_log_len++] = ' ';
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(test_log + test_log_len, sizeof test_log - test_log_len,
                    fmt, ap);
  va_end(ap);
  if (n > 0)
    test_log_len += (size_t)n;
  if (test_log_len >= sizeof test_log)
    test_log_len = sizeof test_log - 1;
}

MF_TEST_UNUSED static void log_reset(void) {
  test_log_len = 0;
  test_log[0] = '\0';
}

#define ASSERT_LOG(expected) ASSERT_STR_EQ(test_log, expected)

/* }====== */

/* {====== Runs ====== */

/* The body memory of every run the fixture makes. */
typedef struct body {
  const char *name; /* in the log; NULL: nothing logged */
  int steps, starts, resumes, hook_steps;
  int abandons, abandons_final; /* ...the latter saw the run final */
  int abandon_code;             /* mf_run_error_code seen by abandon */
  int frees;
  mf_wake_reason woke; /* the wake reason of the last resume */
  int rc;              /* what the last engine call in the body returned */
  unsigned ticket;     /* of the last mf_run_park */
  double started[16];  /* now() at each attempt's start */
  /* Parameters each test sets. */
  double seconds;
  int param;
  mf_run *target;
  void *arg;
} body;

MF_TEST_UNUSED static body *B(mf_run *run) { return mf_run_body(run); }

/* Monotonic seconds: the engine's clock (mf_engine_now). */
MF_TEST_UNUSED static double now(void) { return (double)uv_hrtime() / 1e9; }

MF_TEST_UNUSED static mf_engine *engine_new(void) {
  mf_engine *e = NULL;
  ASSERT_EQ(mf_engine_new(&e, NULL), 0);
  log_reset();
  return e;
}

/* Counts a step and logs it: "a:start1", "a:resume", "a:hooks<point>". */
MF_TEST_UNUSED static void count_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  b->steps++;
  switch (reason) {
  case MF_STEP_START:
    b->starts++;
    if (mf_run_attempt(run) >= 1 && mf_run_attempt(run) <= 16)
      b->started[mf_run_attempt(run) - 1] = now();
    if (b->name)
      note("%s:start%d", b->name, mf_run_attempt(run));
    break;
  case MF_STEP_RESUME:
    b->resumes++;
    b->woke = mf_run_wake_reason(run);
    if (b->name)
      note("%s:resume", b->name);
    break;
  case MF_STEP_HOOKS:
    b->hook_steps++;
    if (b->name)
      note("%s:hooks%u", b->name, mf_run_hook_point(run));
    break;
  }
}

MF_TEST_UNUSED static void count_abandon(mf_run *run) {
  body *b = B(run);
  b->abandons++;
  b->abandons_final += mf_run_is_final(run);
  b->abandon_code = mf_run_error_code(run);
  if (b->name)
    note("%s:abandon", b->name);
}

/* A run of body size, named name in the log, not submitted. */
MF_TEST_UNUSED static mf_run *run_new(mf_engine *e, const mf_run_ops *ops,
                                      const char *name) {
  mf_run *run = mf_run_new(e, ops, sizeof(body));
  ASSERT(run != NULL);
  B(run)->name = name;
  return run;
}

/* ... submitted at the top level (or as a child of the executing run). */
MF_TEST_UNUSED static mf_run *run_start(mf_engine *e, const mf_run_ops *ops,
                                        const char *name) {
  mf_run *run = run_new(e, ops, name);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

/* The run's history: "Pending Running Completed". */
MF_TEST_UNUSED static const char *history_of(const mf_run *run) {
  static char buf[1024];
  const mf_state *h;
  size_t n = mf_run_history(run, &h), len = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n && len < sizeof buf; i++)
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? " " : "",
                            mf_state_name_string(h[i].name));
  return buf;
}

#define ASSERT_HISTORY(run, expected) ASSERT_STR_EQ(history_of(run), expected)

/* The run's state, type and name: "FAILED/TimedOut". */
MF_TEST_UNUSED static const char *state_of(const mf_run *run) {
  static char buf[64];
  snprintf(buf, sizeof buf, "%s/%s",
           mf_state_type_string(mf_run_state_type(run)),
           mf_state_name_string(mf_run_state_name(run)));
  return buf;
}

#define ASSERT_STATE(run, expected) ASSERT_STR_EQ(state_of(run), expected)

/* Drives the engine until the run is final. */
MF_TEST_UNUSED static void wait_final(mf_engine *e, mf_run *run) {
  ASSERT_EQ(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1), 0);
  ASSERT(mf_run_is_final(run));
}

/* }====== */

/* {====== Plain bodies ====== */

/* Completes at once. */
MF_TEST_UNUSED static void complete_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

/* Fails at once. */
MF_TEST_UNUSED static void fail_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
}

/* Sleeps b->seconds, then completes. */
MF_TEST_UNUSED static void sleep_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    B(run)->rc = mf_run_sleep(run, B(run)->seconds);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

/* Parks on something outside the engine (no timeout) until unparked, then
 * completes. */
MF_TEST_UNUSED static void park_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

/* Waits for b->target, then completes (fails when the wait is refused). */
MF_TEST_UNUSED static void wait_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    B(run)->rc = mf_run_wait(run, &B(run)->target, 1, MF_WAIT_ALL, -1);
    if (B(run)->rc != 0)
      mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

MF_TEST_UNUSED static const mf_run_ops complete_ops = {
    .step = complete_step, .abandon = count_abandon};
MF_TEST_UNUSED static const mf_run_ops fail_ops = {.step = fail_step,
                                                   .abandon = count_abandon};
MF_TEST_UNUSED static const mf_run_ops sleep_ops = {.step = sleep_step,
                                                    .abandon = count_abandon};
MF_TEST_UNUSED static const mf_run_ops park_ops = {.step = park_step,
                                                   .abandon = count_abandon};
MF_TEST_UNUSED static const mf_run_ops wait_ops = {.step = wait_step,
                                                   .abandon = count_abandon};

/* }====== */

#endif
