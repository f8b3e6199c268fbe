/*
 * test_limits.c -- concurrency and rate limits by tag: slots handed over
 * in FIFO order, capacity changes, slots given back on every way out, a
 * run with several tags, rate spacing (lower bounds only), invalid limits,
 * and a cancelled run leaving the queue.  Concurrency is counted by the
 * bodies, never inferred from time.
 */
#include <math.h>

#include "fixture.h"

/* {====== A limited body ====== */

static int active, max_active;

/* Counts itself active, parks until unparked, then completes. */
static void held_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    if (++active > max_active)
      max_active = active;
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  active--;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

static void held_abandon(mf_run *run) {
  if (B(run)->starts > 0)
    active--;
  count_abandon(run);
}
static const mf_run_ops held_ops = {.step = held_step, .abandon = held_abandon};

/* A run carrying one tag, submitted. */
static mf_run *tagged(mf_engine *e, const mf_run_ops *ops, const char *name,
                      const char *tag) {
  mf_run *run = run_new(e, ops, name);
  ASSERT_EQ(mf_run_set_tags(run, &tag, 1), 0); /* the array is copied */
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

static mf_limit_info limit_of(mf_engine *e, const char *tag) {
  mf_limit_info info[8];
  size_t n = mf_limit_each(e, info, 8);
  for (size_t i = 0; i < n && i < 8; i++)
    if (strcmp(info[i].tag, tag) == 0)
      return info[i];
  mf_test_fail(__FILE__, __LINE__, "no limit %s", tag);
  mf_test_stop();
}

static void reset_counts(void) { active = max_active = 0; }

/* Steps until the run started. */
static void until_started(mf_engine *e, mf_run *run) {
  while (B(run)->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
}

/* }====== */

/* {====== FIFO ====== */

/* Holds its slot; when unparked, submits another run with its tag before
 * it lets the slot go: the newcomer queues behind the others. */
static mf_run *late;
static void submitter_step(mf_run *run, mf_step_reason reason) {
  if (reason == MF_STEP_RESUME)
    late = tagged(B(run)->arg, &held_ops, "e", "t");
  held_step(run, reason);
}
static const mf_run_ops submitter_ops = {.step = submitter_step,
                                         .abandon = held_abandon};

TEST(fifo_hand_over) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "t", 1), 0);
  mf_run *runs[5];
  runs[0] = run_new(e, &submitter_ops, "a");
  B(runs[0])->arg = e;
  static const char *t = "t";
  ASSERT_EQ(mf_run_set_tags(runs[0], &t, 1), 0);
  ASSERT_EQ(mf_run_submit(runs[0], NULL), 0);
  runs[1] = tagged(e, &held_ops, "b", "t");
  runs[2] = tagged(e, &held_ops, "c", "t");
  runs[3] = tagged(e, &held_ops, "d", "t");
  until_started(e, runs[0]);
  ASSERT_EQ(mf_engine_step(e), 4);
  ASSERT_EQ(limit_of(e, "t").holders, 1);
  ASSERT_EQ(limit_of(e, "t").waiters, 3);
  for (int i = 0; i < 5; i++) {
    if (i == 4)
      runs[4] = late;
    until_started(e, runs[i]);
    ASSERT_EQ(active, 1);
    ASSERT_EQ(mf_run_unpark(runs[i], B(runs[i])->ticket), 0);
  }
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:resume b:start1 b:resume c:start1 c:resume "
             "d:start1 d:resume e:start1 e:resume");
  ASSERT_EQ(max_active, 1);
  for (int i = 0; i < 5; i++) {
    ASSERT_STATE(runs[i], "COMPLETED/Completed");
    mf_run_unref(runs[i]);
  }
  ASSERT_EQ(limit_of(e, "t").holders, 0);
  mf_engine_close(e);
}

/* Sleeps b->seconds, counted active meanwhile. */
static void busy_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    if (++active > max_active)
      max_active = active;
    B(run)->rc = mf_run_sleep(run, 0.005);
    return;
  }
  active--;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops busy_ops = {.step = busy_step};

TEST(never_more_than_capacity) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "two", 2), 0);
  mf_run *runs[20];
  for (int i = 0; i < 20; i++)
    runs[i] = tagged(e, &busy_ops, NULL, "two");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(max_active, 2);
  for (int i = 0; i < 20; i++) {
    ASSERT_STATE(runs[i], "COMPLETED/Completed");
    mf_run_unref(runs[i]);
  }
  mf_engine_close(e);
}

/* }====== */

/* {====== Capacity changes ====== */

TEST(capacity_changes) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "t", 1), 0);
  mf_run *runs[4];
  for (int i = 0; i < 4; i++)
    runs[i] = tagged(e, &held_ops, NULL, "t");
  ASSERT_EQ(mf_engine_step(e), 4);
  ASSERT_EQ(active, 1);
  /* Raised: waiters come in at once, oldest first. */
  ASSERT_EQ(mf_limit_set(e, "t", 3), 0);
  ASSERT_EQ(limit_of(e, "t").capacity, 3);
  ASSERT_EQ(limit_of(e, "t").holders, 3);
  ASSERT_EQ(mf_engine_step(e), 4);
  ASSERT_EQ(active, 3);
  ASSERT_EQ(B(runs[3])->starts, 0);
  /* Lowered: nobody is stopped; the last waits until holders < 1. */
  ASSERT_EQ(mf_limit_set(e, "t", 1), 0);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(B(runs[3])->starts, 0);
    ASSERT_EQ(mf_run_unpark(runs[i], B(runs[i])->ticket), 0);
    ASSERT_EQ(mf_engine_step(e), 3 - i);
  }
  until_started(e, runs[3]);
  ASSERT_EQ(active, 1);
  ASSERT_EQ(max_active, 3);
  ASSERT_EQ(mf_run_unpark(runs[3], B(runs[3])->ticket), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  for (int i = 0; i < 4; i++)
    mf_run_unref(runs[i]);
  mf_engine_close(e);
}

TEST(limit_of_zero_is_invalid) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_limit_set(e, "t", 0), MF_EINVAL);
  ASSERT_EQ(mf_limit_each(e, NULL, 0), 0); /* nothing was made */
  ASSERT_EQ(mf_limit_set(e, "t", 2), 0);
  ASSERT_EQ(mf_limit_set(e, "t", 0), MF_EINVAL);
  ASSERT_EQ(limit_of(e, "t").capacity, 2); /* unchanged */
  ASSERT_EQ(mf_rate_limit_set(e, "r", 0), MF_EINVAL);
  ASSERT_EQ(mf_rate_limit_set(e, "r", -1), MF_EINVAL);
  ASSERT_EQ(mf_rate_limit_set(e, "r", NAN), MF_EINVAL);
  ASSERT_EQ(mf_limit_each(e, NULL, 0), 1);
  mf_engine_close(e);
}

/* A tag without a limit limits nothing (and makes no limit). */
TEST(tag_without_limit) {
  mf_engine *e = engine_new();
  reset_counts();
  mf_run *runs[3];
  for (int i = 0; i < 3; i++)
    runs[i] = tagged(e, &held_ops, NULL, "free");
  ASSERT_EQ(mf_engine_step(e), 3);
  ASSERT_EQ(active, 3);
  ASSERT_EQ(mf_limit_each(e, NULL, 0), 0);
  ASSERT_EQ(mf_engine_cancel_all(e, NULL, NULL), 3);
  for (int i = 0; i < 3; i++)
    mf_run_unref(runs[i]);
  mf_engine_close(e);
}

/* }====== */

/* {====== Slots given back ====== */

/* Returns without finishing or parking. */
static void stall_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
}
/* Completes; its completion hooks park until unparked. */
static void hooks_park_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_HOOKS) {
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops stall_ops = {.step = stall_step,
                                     .abandon = count_abandon};
static const mf_run_ops hooks_park_ops = {.step = hooks_park_step,
                                          .abandon = count_abandon};

enum {
  COMPLETE,
  FAIL,
  CRASH,
  CANCEL_PARKED,
  TIME_OUT,
  RETRIED,
  HOOKS,
  NOT_READY
};

/* A run holding (or queued for) the slot of "one" ends in way `how`; a
 * probe queued behind it must then get the slot. */
static void exit_way(int how) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "one", 1), 0);
  static const char *tag = "one";
  const mf_run_ops *ops = how == COMPLETE        ? &complete_ops
                          : how == FAIL          ? &fail_ops
                          : how == CRASH         ? &stall_ops
                          : how == CANCEL_PARKED ? &held_ops
                          : how == TIME_OUT      ? &held_ops
                          : how == RETRIED       ? &fail_ops
                          : how == HOOKS         ? &hooks_park_ops
                                                 : &complete_ops;
  mf_run *failed_input = NULL;
  mf_run *run = run_new(e, ops, "x");
  ASSERT_EQ(mf_run_set_tags(run, &tag, 1), 0);
  mf_run_policy policy = {.retries = how == RETRIED ? 2 : 0,
                          .timeout = how == TIME_OUT ? 0.01 : 0,
                          .hooks = how == HOOKS ? MF_HOOK_COMPLETED : 0};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  if (how == NOT_READY) {
    failed_input = run_start(e, &fail_ops, "in");
    ASSERT_EQ(mf_run_add_input(run, failed_input, 0), 0);
  }
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  mf_run *probe = tagged(e, &complete_ops, "probe", "one");
  if (how == CANCEL_PARKED) {
    until_started(e, run);
    ASSERT_EQ(limit_of(e, "one").holders, 1);
    ASSERT_EQ(mf_run_cancel(run), 1);
  }
  if (how == HOOKS) {
    while (B(run)->hook_steps == 0)
      ASSERT_GE(mf_engine_step(e), 0);
    ASSERT_EQ(B(probe)->starts, 0); /* held until the run is final */
    ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  }
  wait_final(e, run);
  wait_final(e, probe);
  ASSERT_STATE(probe, "COMPLETED/Completed");
  mf_limit_info info = limit_of(e, "one");
  ASSERT_EQ(info.holders, 0);
  ASSERT_EQ(info.waiters, 0);
  ASSERT(mf_run_is_final(run));
  if (failed_input)
    mf_run_unref(failed_input);
  mf_run_unref(run);
  mf_run_unref(probe);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(slots_back_completed) { exit_way(COMPLETE); }
TEST(slots_back_failed) { exit_way(FAIL); }
TEST(slots_back_crashed) { exit_way(CRASH); }
TEST(slots_back_cancelled_parked) { exit_way(CANCEL_PARKED); }
TEST(slots_back_timed_out) { exit_way(TIME_OUT); }
TEST(slots_back_retries_used_up) { exit_way(RETRIED); }
TEST(slots_held_through_hooks_then_back) { exit_way(HOOKS); }
TEST(no_slot_taken_when_not_ready) { exit_way(NOT_READY); }

/* }====== */

/* {====== Several tags ====== */

TEST(several_tags_all_held_before_start) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "p", 1), 0);
  ASSERT_EQ(mf_limit_set(e, "q", 1), 0);
  mf_run *hold_p = tagged(e, &held_ops, "hp", "p");
  mf_run *hold_q = tagged(e, &held_ops, "hq", "q");
  mf_run *both = run_new(e, &held_ops, "pq");
  static const char *pq[] = {"p", "q"};
  ASSERT_EQ(mf_run_set_tags(both, pq, 2), 0);
  ASSERT_EQ(mf_run_submit(both, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 3);
  ASSERT_EQ(B(both)->starts, 0);
  ASSERT_EQ(mf_run_unpark(hold_p, B(hold_p)->ticket), 0);
  ASSERT_EQ(mf_engine_step(e), 2);
  ASSERT_EQ(B(both)->starts, 0); /* holds p, waits for q */
  ASSERT_EQ(limit_of(e, "p").holders, 1);
  ASSERT_EQ(limit_of(e, "q").waiters, 1);
  ASSERT_EQ(mf_run_unpark(hold_q, B(hold_q)->ticket), 0);
  until_started(e, both);
  ASSERT_EQ(limit_of(e, "p").holders, 1);
  ASSERT_EQ(limit_of(e, "q").holders, 1);
  ASSERT_EQ(mf_run_unpark(both, B(both)->ticket), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(limit_of(e, "p").holders + limit_of(e, "q").holders, 0);
  ASSERT_LOG("hp:start1 hq:start1 hp:resume hq:resume pq:start1 pq:resume");
  mf_run_unref(hold_p);
  mf_run_unref(hold_q);
  mf_run_unref(both);
  mf_engine_close(e);
}

/* }====== */

/* {====== Cancelling a queued run ====== */

TEST(cancelled_queued_run_leaves_the_queue) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "t", 1), 0);
  mf_run *a = tagged(e, &held_ops, "a", "t");
  mf_run *b = tagged(e, &held_ops, "b", "t");
  mf_run *c = tagged(e, &held_ops, "c", "t");
  ASSERT_EQ(mf_engine_step(e), 3);
  ASSERT_EQ(limit_of(e, "t").waiters, 2);
  ASSERT_EQ(mf_run_cancel(b), 1);
  ASSERT_STATE(b, "CANCELLED/Cancelled");
  ASSERT_HISTORY(b, "Pending Cancelled");
  ASSERT_EQ(B(b)->abandons, 1); /* never started */
  ASSERT_EQ(limit_of(e, "t").waiters, 1);
  ASSERT_EQ(mf_run_unpark(a, B(a)->ticket), 0);
  until_started(e, c);
  ASSERT_EQ(mf_run_unpark(c, B(c)->ticket), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 b:abandon a:resume c:start1 c:resume");
  ASSERT_EQ(B(b)->steps, 0);
  mf_limit_info info = limit_of(e, "t");
  ASSERT_EQ(info.holders + info.waiters, 0);
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_unref(c);
  mf_engine_close(e);
}

/* }====== */

/* {====== Rate limits ====== */

TEST(rate_limit_spacing) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_rate_limit_set(e, "r", 20), 0); /* one start per 50 ms */
  mf_limit_info info = limit_of(e, "r");
  ASSERT_EQ(info.capacity, -1);
  ASSERT_DBL(info.per_second, ==, 20);
  /* Run k may not start before t0 + k * 50 ms.  (Measured from t0: a
   * body's first line may come late after its start was booked.) */
  mf_run *runs[5];
  double t0 = now();
  for (int i = 0; i < 5; i++)
    runs[i] = tagged(e, &complete_ops, NULL, "r");
  ASSERT_EQ(mf_engine_run(e), 0);
  for (int i = 1; i < 5; i++)
    ASSERT_DBL(B(runs[i])->started[0] - t0, >=, i * 0.05 - SLACK);
  for (int i = 0; i < 5; i++) {
    ASSERT_STATE(runs[i], "COMPLETED/Completed");
    mf_run_unref(runs[i]);
  }
  mf_engine_close(e);
}

/* A rate and a capacity on one tag: both hold. */
TEST(rate_and_capacity_together) {
  mf_engine *e = engine_new();
  reset_counts();
  ASSERT_EQ(mf_limit_set(e, "rc", 1), 0);
  ASSERT_EQ(mf_rate_limit_set(e, "rc", 50), 0); /* 20 ms apart */
  mf_run *runs[4];
  double t0 = now();
  for (int i = 0; i < 4; i++)
    runs[i] = tagged(e, &busy_ops, NULL, "rc");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(max_active, 1);
  for (int i = 1; i < 4; i++)
    ASSERT_DBL(B(runs[i])->started[0] - t0, >=, i * 0.02 - SLACK);
  for (int i = 0; i < 4; i++)
    mf_run_unref(runs[i]);
  mf_engine_close(e);
}

/* }====== */

TEST_MAIN("limits")
