/*
 * test_engine.c -- tests of the engine in C, with tasks written in C.
 * Each test gets a fresh engine (the harness: test.h).
 */
#include "test.h"

/* {====== C bodies ====== */

/* A body that finishes at once with a value in its body memory. */
typedef struct value_body {
  int value;
  int steps;
  int abandoned;
} value_body;

static void complete_step(mf_run *run, mf_step_reason reason) {
  value_body *b = mf_run_body(run);
  (void)reason;
  b->steps++;
  b->value *= 2;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

static void fail_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
}

static void count_abandon(mf_run *run) {
  value_body *b = mf_run_body(run);
  b->abandoned++;
}

/* Sleeps once for b->value milliseconds, then completes. */
static void sleep_step(mf_run *run, mf_step_reason reason) {
  value_body *b = mf_run_body(run);
  b->steps++;
  if (reason == MF_STEP_START) {
    mf_run_sleep(run, b->value / 1000.0);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

static const mf_run_ops complete_ops = {.step = complete_step,
                                        .abandon = count_abandon};
static const mf_run_ops fail_ops = {.step = fail_step,
                                    .abandon = count_abandon};
static const mf_run_ops sleep_ops = {.step = sleep_step,
                                     .abandon = count_abandon};

/* Waits for the run in its body data, then completes. */
typedef struct waiter_body {
  mf_run *target;
  int rc;
  mf_wake_reason woke;
  int steps;
} waiter_body;

static void waiter_step(mf_run *run, mf_step_reason reason) {
  waiter_body *b = mf_run_body(run);
  b->steps++;
  if (reason == MF_STEP_START) {
    b->rc = mf_run_wait(run, &b->target, 1, MF_WAIT_ALL, -1);
    if (b->rc == 0)
      return;
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  b->woke = mf_run_wake_reason(run);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops waiter_ops = {.step = waiter_step};

/* }====== */

static mf_engine *new_engine(void) {
  mf_engine *e = NULL;
  ASSERT(mf_engine_new(&e, NULL) == 0);
  return e;
}

static mf_run *submit(mf_engine *e, const mf_run_ops *ops, size_t size,
                      int value) {
  mf_run *run = mf_run_new(e, ops, size);
  if (size >= sizeof(int))
    ((value_body *)mf_run_body(run))->value = value;
  mf_run_submit(run, NULL);
  return run;
}

TEST(complete) {
  mf_engine *e = new_engine();
  mf_run *run = submit(e, &complete_ops, sizeof(value_body), 21);
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(mf_run_state_type(run) == MF_COMPLETED);
  ASSERT(((value_body *)mf_run_body(run))->value == 42);
  const mf_state *history;
  size_t n = mf_run_history(run, &history);
  ASSERT(n == 3);
  ASSERT(history[0].name == MF_NAME_PENDING);
  ASSERT(history[1].name == MF_NAME_RUNNING);
  ASSERT(history[2].name == MF_NAME_COMPLETED);
  ASSERT(history[0].timestamp <= history[2].timestamp);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(chain_not_ready) {
  /* A failed input makes every downstream run NotReady, iteratively. */
  mf_engine *e = new_engine();
  mf_run *first = submit(e, &fail_ops, sizeof(value_body), 0);
  mf_run *prev = first;
  mf_run *runs[1000];
  for (int i = 0; i < 1000; i++) {
    mf_run *run = mf_run_new(e, &complete_ops, sizeof(value_body));
    mf_run_add_input(run, prev, 0);
    ASSERT(mf_run_submit(run, NULL) == 0);
    runs[i] = run;
    prev = run;
  }
  ASSERT(mf_engine_wait(e, &prev, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(mf_run_state_name(prev) == MF_NAME_NOT_READY);
  ASSERT(mf_run_cause(prev) == runs[998]);
  ASSERT(((value_body *)mf_run_body(prev))->abandoned == 1);
  ASSERT(mf_run_unhandled(e, NULL, NULL) == 1001);
  for (int i = 0; i < 1000; i++)
    mf_run_unref(runs[i]);
  mf_run_unref(first);
  mf_engine_close(e);
}

TEST(sleep_and_timeout) {
  mf_engine *e = new_engine();
  /* A wait that times out, on a run only the test completes (a run sleeping
   * 30 ms could end in the same turn of a stalled loop as a 5 ms wait). */
  mf_run *external = mf_run_new(e, NULL, 0);
  mf_run_submit(external, NULL);
  double t0 = mf_engine_now(e);
  ASSERT(mf_engine_wait(e, &external, 1, MF_WAIT_ALL, 0.005) == MF_ETIMEDOUT);
  ASSERT(mf_engine_now(e) - t0 >= 0.004);
  ASSERT(!mf_run_is_final(external));
  mf_run_finish(external, MF_COMPLETED, MF_NAME_COMPLETED);
  ASSERT(mf_engine_wait(e, &external, 1, MF_WAIT_ALL, 0.005) == 0);
  mf_run_unref(external);
  /* A sleep lasts its time. */
  mf_run *run = submit(e, &sleep_ops, sizeof(value_body), 30);
  t0 = mf_engine_now(e);
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(mf_engine_now(e) - t0 >= 0.029);
  ASSERT(((value_body *)mf_run_body(run))->steps == 2);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(self_wait_deadlock) {
  mf_engine *e = new_engine();
  mf_run *run = mf_run_new(e, &waiter_ops, sizeof(waiter_body));
  ((waiter_body *)mf_run_body(run))->target = run;
  mf_run_submit(run, NULL);
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(((waiter_body *)mf_run_body(run))->rc == MF_EDEADLK);
  ASSERT(mf_run_state_type(run) == MF_FAILED);
  mf_run_mark_handled(run);
  ASSERT(mf_run_unhandled(e, NULL, NULL) == 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(external_future_deadlock) {
  /* A run waiting on a future nothing will complete is woken with
   * MF_WAKE_DEADLOCK once the loop has nothing left. */
  mf_engine *e = new_engine();
  mf_run *external = mf_run_new(e, NULL, 0);
  mf_run_submit(external, NULL);
  mf_run *run = mf_run_new(e, &waiter_ops, sizeof(waiter_body));
  ((waiter_body *)mf_run_body(run))->target = external;
  mf_run_submit(run, NULL);
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(((waiter_body *)mf_run_body(run))->woke == MF_WAKE_DEADLOCK);
  ASSERT(mf_engine_wait(e, &external, 1, MF_WAIT_ALL, -1) == MF_EDEADLK);
  mf_run_finish(external, MF_COMPLETED, MF_NAME_COMPLETED);
  ASSERT(mf_run_state_type(external) == MF_COMPLETED);
  mf_run_unref(run);
  mf_run_unref(external);
  mf_engine_close(e);
}

TEST(cancel_tree) {
  mf_engine *e = new_engine();
  mf_run *flow = mf_run_new(e, &sleep_ops, sizeof(value_body));
  ((value_body *)mf_run_body(flow))->value = 1000;
  mf_run_set_flags(flow, MF_RUN_FLOW);
  mf_run_submit(flow, NULL);
  mf_run *child = mf_run_new(e, &sleep_ops, sizeof(value_body));
  ((value_body *)mf_run_body(child))->value = 1000;
  mf_run_submit(child, flow);
  ASSERT(mf_engine_step(e) == 2);
  ASSERT(mf_run_cancel(flow) == 1);
  ASSERT(mf_run_state_type(flow) == MF_CANCELLED);
  ASSERT(mf_run_state_type(child) == MF_CANCELLED);
  ASSERT(((value_body *)mf_run_body(child))->abandoned == 1);
  ASSERT(mf_run_cancel(flow) == 0);
  ASSERT(mf_engine_live_runs(e) == 0);
  mf_run_unref(child);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* Computes 2 ms, then records what mf_engine_pass_left says. */
static mf_engine *pass_left_engine;
static double pass_left_seen = -1;
static void pass_left_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  double began = mf_engine_now(pass_left_engine);
  while (mf_engine_now(pass_left_engine) < began + 0.002)
    ;
  pass_left_seen = mf_engine_pass_left(pass_left_engine);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops pass_left_ops = {.step = pass_left_step};

TEST(pass_left) {
  /* The whole budget outside a pass; inside, what is left of it. */
  mf_engine *e = NULL;
  mf_config config = {.size = sizeof config, .step_budget = 0.5};
  ASSERT(mf_engine_new(&e, &config) == 0);
  pass_left_engine = e;
  ASSERT(mf_engine_pass_left(e) == 0.5);
  mf_run *run = submit(e, &pass_left_ops, 0, 0);
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(pass_left_seen >= 0 && pass_left_seen <= 0.498);
  ASSERT(mf_engine_pass_left(e) == 0.5);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(records_on_the_engine_heap) {
  /* Run records come from the engine's heap (malloc's under ASan): held
   * while referenced, given back when the last reference goes. */
  mf_engine *e = new_engine();
  mf_heap_stats before, held, after;
  mf_engine_heap_stats(e, &before);
  mf_run *runs[1000];
  for (int i = 0; i < 1000; i++)
    runs[i] = submit(e, &complete_ops, sizeof(value_body), i);
  ASSERT(mf_engine_wait(e, runs, 1000, MF_WAIT_ALL, -1) == 0);
  mf_engine_heap_stats(e, &held);
  for (int i = 0; i < 1000; i++)
    mf_run_unref(runs[i]);
  mf_engine_step(e); /* the engine lets go of the final runs it held */
  mf_engine_heap_stats(e, &after);
#if defined(__SANITIZE_ADDRESS__)
  ASSERT(held.small_blocks == 0 && held.pages == 0);
#else
  ASSERT(held.small_blocks >= before.small_blocks + 1000);
  ASSERT(held.small_bytes >= before.small_bytes + 1000 * sizeof(value_body));
  ASSERT(held.regions >= 1);
  ASSERT(after.small_blocks == before.small_blocks);
#endif
  mf_engine_close(e);
}

TEST(close_with_runs_in_flight) {
  mf_engine *e = new_engine();
  mf_run *run = submit(e, &sleep_ops, sizeof(value_body), 1000);
  mf_engine_step(e);
  mf_engine_close(e); /* cancels it; the run stays readable */
  ASSERT(mf_run_state_type(run) == MF_CANCELLED);
  mf_run_unref(run);
}

TEST(inputs_first_final_others_pending) {
  /* Regression: a run whose first input was final and the others not
   * started at once, before its inputs. */
  mf_engine *e = new_engine();
  mf_run *done = submit(e, &complete_ops, sizeof(value_body), 1);
  ASSERT(mf_engine_wait(e, &done, 1, MF_WAIT_ALL, -1) == 0);
  mf_run *slow = submit(e, &sleep_ops, sizeof(value_body), 20);
  mf_run *run = mf_run_new(e, &complete_ops, sizeof(value_body));
  mf_run_add_input(run, done, 0);
  mf_run_add_input(run, slow, 0);
  ASSERT(mf_run_submit(run, NULL) == 0);
  mf_engine_step(e);
  ASSERT(!mf_run_is_final(run));
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(mf_run_is_final(slow));
  ASSERT(mf_run_state_type(run) == MF_COMPLETED);
  mf_run_unref(run);
  mf_run_unref(slow);
  mf_run_unref(done);
  mf_engine_close(e);
}

/* The observer sees a run's submit (its Pending state, id set) and every
 * state after it, the final one included, in order; a run never submitted
 * is not seen; removing the observer stops the calls. */
typedef struct observed {
  mf_run *run;
  uint64_t id, parent_id;
  mf_state_name names[8];
  int count, inconsistent;
} observed;

static void observe(mf_run *run, const mf_state *state, void *data) {
  observed *o = data;
  if (run != o->run)
    return;
  if (o->count == 0) {
    o->id = mf_run_id(run);
    o->parent_id = mf_run_parent(run) ? mf_run_id(mf_run_parent(run)) : 0;
  }
  if (o->count < 8)
    o->names[o->count] = state->name;
  o->count++;
  /* The state is the run's current one, last in its history. */
  const mf_state *history;
  size_t n = mf_run_history(run, &history);
  if (mf_run_state_name(run) != state->name || n == 0 ||
      history[n - 1].name != state->name ||
      history[n - 1].timestamp != state->timestamp)
    o->inconsistent++;
}

static int all_seen;
static void count_all(mf_run *run, const mf_state *state, void *data) {
  (void)run, (void)state, (void)data;
  all_seen++;
}

TEST(observer) {
  mf_engine *e = new_engine();
  observed o = {0};
  mf_engine_observe(e, observe, &o);
  mf_run *never = mf_run_new(e, &complete_ops, sizeof(value_body));
  mf_run *run = mf_run_new(e, &fail_ops, sizeof(value_body));
  o.run = run;
  mf_run_policy policy = {.retries = 1};
  ASSERT(mf_run_set_policy(run, &policy) == 0);
  ASSERT(o.count == 0);
  ASSERT(mf_run_submit(run, NULL) == 0);
  ASSERT(o.count == 1 && o.names[0] == MF_NAME_PENDING);
  ASSERT(o.id == mf_run_id(run) && o.id != 0 && o.parent_id == 0);
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  /* Pending, Running, AwaitingRetry, Retrying, Failed */
  ASSERT(o.count == 5);
  ASSERT(o.names[1] == MF_NAME_RUNNING);
  ASSERT(o.names[2] == MF_NAME_AWAITING_RETRY);
  ASSERT(o.names[3] == MF_NAME_RETRYING);
  ASSERT(o.names[4] == MF_NAME_FAILED);
  ASSERT(o.inconsistent == 0);
  /* What the observer saw is the history. */
  const mf_state *history;
  ASSERT(mf_run_history(run, &history) == 5);
  mf_engine_observe(e, count_all, NULL);
  mf_run_unref(never); /* never submitted: never seen */
  ASSERT(all_seen == 0);
  mf_engine_observe(e, NULL, NULL);
  mf_run *unseen = submit(e, &complete_ops, sizeof(value_body), 1);
  ASSERT(mf_engine_wait(e, &unseen, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(all_seen == 0);
  mf_run_unref(unseen);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* A finished run given back for its summary, and made again from it. */
TEST(summary) {
  mf_engine *e = new_engine();
  mf_run *run = submit(e, &complete_ops, sizeof(value_body), 1);
  mf_run_set_name(run, "double", 7);
  mf_run_summary summary;
  ASSERT(mf_run_summarize(run, &summary) == 0); /* not final yet */
  mf_run *other = run;
  mf_run_ref(other); /* a second reference: not yet either */
  ASSERT(mf_engine_wait(e, &run, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(mf_run_summarize(run, &summary) == 0);
  mf_run_unref(other);
  const mf_state *history;
  ASSERT(mf_run_history(run, &history) == 3);
  mf_state was[3] = {history[0], history[1], history[2]};
  uint64_t id = mf_run_id(run);
  ASSERT(mf_run_summarize(run, &summary) == 1);
  mf_run_unref(run);

  mf_run *again = mf_run_from_summary(e, &complete_ops, sizeof(value_body),
                                      MF_RUN_ROOT, &summary);
  ASSERT(again != NULL);
  ASSERT(mf_run_id(again) == id);
  char name[32];
  mf_run_name(again, name, sizeof name);
  ASSERT_STR_EQ(name, "double-7");
  ASSERT(mf_run_is_final(again));
  ASSERT(mf_run_state_type(again) == MF_COMPLETED);
  ASSERT(mf_run_state_name(again) == MF_NAME_COMPLETED);
  ASSERT(mf_run_attempt(again) == 1);
  ASSERT(mf_run_flags(again) == MF_RUN_ROOT);
  ASSERT(mf_run_parent(again) == NULL);
  ASSERT(((value_body *)mf_run_body(again))->value == 0); /* zeroed */
  ASSERT(mf_run_history(again, &history) == 3);
  for (int i = 0; i < 3; i++) {
    ASSERT(history[i].type == was[i].type);
    ASSERT(history[i].name == was[i].name);
    ASSERT(history[i].timestamp == was[i].timestamp);
  }
  /* It behaves as a finished run: waits end at once, cancel changes
   * nothing, and it can be summarized again. */
  ASSERT(mf_engine_wait(e, &again, 1, MF_WAIT_ALL, -1) == 0);
  mf_run_cancel(again);
  ASSERT(mf_run_state_type(again) == MF_COMPLETED);
  mf_run_summary twice;
  ASSERT(mf_run_summarize(again, &twice) == 1);
  ASSERT(twice.id == id && twice.number == 7);
  mf_run_unref(again);

  /* A failed run, or one that retried, keeps its record. */
  mf_run *failed = submit(e, &fail_ops, sizeof(value_body), 0);
  ASSERT(mf_engine_wait(e, &failed, 1, MF_WAIT_ALL, -1) == 0);
  ASSERT(mf_run_summarize(failed, &summary) == 0);
  mf_run_unref(failed);
  mf_engine_close(e);
}

/* The start gate: while it holds, runs to start wait; woken runs go on;
 * it is asked again (the gate timer) until it opens. */
typedef struct gate_state {
  int asks;
  int hold_for; /* asks answered "hold"; < 0: every one */
} gate_state;

static int test_gate(mf_engine *e, void *data) {
  gate_state *g = data;
  (void)e;
  g->asks++;
  if (g->hold_for < 0)
    return 1;
  if (g->hold_for == 0)
    return 0;
  g->hold_for--;
  return 1;
}

TEST(start_gate) {
  mf_engine *e = new_engine();
  /* A run parked on a timer before the gate closes. */
  mf_run *sleeper = submit(e, &sleep_ops, sizeof(value_body), 20);
  mf_engine_step(e);
  ASSERT_EQ(((value_body *)mf_run_body(sleeper))->steps, 1);
  gate_state g = {0, -1};
  mf_engine_set_start_gate(e, test_gate, &g);
  mf_run *held = submit(e, &complete_ops, sizeof(value_body), 1);
  /* The timer wakes the sleeper, which ends; the new run never starts. */
  ASSERT_EQ(mf_engine_wait(e, &sleeper, 1, MF_WAIT_ALL, -1), 0);
  ASSERT(mf_run_state_type(sleeper) == MF_COMPLETED);
  ASSERT_EQ(((value_body *)mf_run_body(held))->steps, 0);
  ASSERT(!mf_run_is_final(held));
  ASSERT_GE(g.asks, 1);
  /* A wait on the held run does not end as a deadlock: the gate is asked
   * again each millisecond, and opens after three more holds. */
  g.hold_for = 3;
  int asks = g.asks;
  ASSERT_EQ(mf_engine_wait(e, &held, 1, MF_WAIT_ALL, -1), 0);
  ASSERT(mf_run_state_type(held) == MF_COMPLETED);
  ASSERT_GE(g.asks, asks + 4);
  /* mf_engine_run too returns only once the held runs have run. */
  g.hold_for = 2;
  mf_run *later = submit(e, &complete_ops, sizeof(value_body), 1);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT(mf_run_state_type(later) == MF_COMPLETED);
  /* Removing the gate while it holds opens the runs to start at once. */
  g.hold_for = -1;
  mf_run *last = submit(e, &complete_ops, sizeof(value_body), 1);
  mf_engine_step(e);
  ASSERT(!mf_run_is_final(last));
  mf_engine_set_start_gate(e, NULL, NULL);
  asks = g.asks;
  ASSERT_EQ(mf_engine_wait(e, &last, 1, MF_WAIT_ALL, -1), 0);
  ASSERT(mf_run_state_type(last) == MF_COMPLETED);
  ASSERT_EQ(g.asks, asks);
  mf_run_unref(sleeper);
  mf_run_unref(held);
  mf_run_unref(later);
  mf_run_unref(last);
  mf_engine_close(e);
}

TEST_MAIN("engine")
