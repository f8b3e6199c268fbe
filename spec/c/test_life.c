/*
 * test_life.c -- the life of a run as the engine owns it, with C bodies:
 * its states and history, the step contract, the hooks' points and their
 * order, the outcome the hooks see, flows that end after their children,
 * NotReady cascades, and external runs completed from outside.
 */
#include "fixture.h"

/* {====== States and history ====== */

/* What the body saw while it executed. */
static char seen[256];

static void observe_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  mf_state_type type;
  mf_state_name name;
  mf_run_outcome(run, &type, &name);
  snprintf(seen, sizeof seen, "%s attempt=%d hook=%u outcome=%s", state_of(run),
           mf_run_attempt(run), mf_run_hook_point(run),
           mf_state_name_string(name));
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops observe_ops = {.step = observe_step,
                                       .abandon = count_abandon};

TEST(states_and_history) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &observe_ops, "a");
  ASSERT_STATE(run, "PENDING/Pending");
  ASSERT_EQ(mf_run_attempt(run), 0);
  ASSERT(!mf_run_is_final(run));
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_STATE(run, "PENDING/Pending"); /* queued, not started */
  ASSERT_EQ(mf_engine_live_runs(e), 1);
  wait_final(e, run);
  ASSERT_STR_EQ(seen, "RUNNING/Running attempt=1 hook=0 outcome=Running");
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_HISTORY(run, "Pending Running Completed");
  const mf_state *h;
  ASSERT_EQ(mf_run_history(run, &h), 3);
  ASSERT_EQ(h[0].type, MF_PENDING);
  ASSERT_EQ(h[1].type, MF_RUNNING);
  ASSERT_EQ(h[2].type, MF_COMPLETED);
  /* Pending is stamped from a cached clock; Running and the end read it. */
  ASSERT_DBL(h[1].timestamp, <=, h[2].timestamp);
  ASSERT_DBL(h[0].timestamp, <=, h[2].timestamp);
  ASSERT_EQ(mf_run_attempt(run), 1);
  ASSERT_EQ(mf_run_error_code(run), 0);
  ASSERT_EQ(B(run)->steps, 1);
  ASSERT_EQ(B(run)->abandons, 0);
  ASSERT_PTR_EQ(mf_engine_current(e), NULL);
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  mf_state_type type;
  mf_state_name name;
  mf_run_outcome(run, &type, &name); /* once final: the final state */
  ASSERT_EQ(type, MF_COMPLETED);
  ASSERT_EQ(name, MF_NAME_COMPLETED);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* The executing run is the current one, and only while it executes. */
static mf_run *current_seen;
static void current_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  current_seen = mf_engine_current(B(run)->arg);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops current_ops = {.step = current_step};

TEST(current_run) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &current_ops, NULL);
  B(run)->arg = e;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_PTR_EQ(current_seen, run);
  ASSERT_PTR_EQ(mf_engine_current(e), NULL);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(parked_run_is_running) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &park_ops, "a");
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 1);
  ASSERT_EQ(B(run)->starts, 1);
  ASSERT_STATE(run, "RUNNING/Running");
  ASSERT(!mf_run_is_final(run));
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  wait_final(e, run);
  /* Parking adds no state. */
  ASSERT_HISTORY(run, "Pending Running Completed");
  ASSERT_EQ(B(run)->woke, MF_WAKE_DONE);
  ASSERT_LOG("a:start1 a:resume");
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(submit_once_and_settings_before_it) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &complete_ops, NULL);
  mf_run *other = run_new(e, &complete_ops, NULL);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), MF_ESTATE);
  mf_run_policy policy = {.retries = 1};
  ASSERT_EQ(mf_run_set_policy(run, &policy), MF_ESTATE);
  ASSERT_EQ(mf_run_add_input(run, other, 0), MF_ESTATE);
  const char *tag = "t";
  ASSERT_EQ(mf_run_set_tags(run, &tag, 1), MF_ESTATE);
  wait_final(e, run);
  ASSERT_EQ(mf_run_submit(run, NULL), MF_ESTATE); /* nor once final */
  ASSERT_EQ(B(run)->steps, 1);
  mf_run_unref(run);
  mf_run_unref(other); /* never submitted */
  mf_engine_close(e);
}

/* mf_run_finish outside a step of the run is a stale call: ignored. */
TEST(finish_outside_a_step_ignored) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &complete_ops, NULL);
  mf_run_finish(run, MF_FAILED, MF_NAME_FAILED); /* not submitted */
  ASSERT_STATE(run, "PENDING/Pending");
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  mf_run_finish(run, MF_FAILED, MF_NAME_FAILED); /* queued, not stepped */
  ASSERT_STATE(run, "PENDING/Pending");
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  mf_run_finish(run, MF_FAILED, MF_NAME_FAILED); /* final */
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_HISTORY(run, "Pending Running Completed");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== The step contract ====== */

/* Returns without finishing or parking. */
static void stall_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
}
static const mf_run_ops stall_ops = {.step = stall_step,
                                     .abandon = count_abandon};

TEST(body_neither_finishing_nor_parking_crashes) {
  mf_engine *e = engine_new();
  mf_run *run = run_start(e, &stall_ops, "a");
  wait_final(e, run);
  ASSERT_STATE(run, "CRASHED/Crashed");
  ASSERT_EQ(mf_run_error_code(run), MF_ESTATE);
  ASSERT_HISTORY(run, "Pending Running Crashed");
  ASSERT_EQ(B(run)->steps, 1);
  ASSERT_EQ(B(run)->abandons, 0); /* its step ended: nothing was stopped */
  ASSERT_EQ(mf_run_unhandled(e, NULL, NULL), 1);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Hooks that neither finish nor park: before an attempt, the attempt
 * crashes (no outcome exists yet); after it, the outcome stands. */
TEST(running_hooks_breaking_the_contract_crash_the_attempt) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &stall_ops, "a");
  mf_run_policy policy = {.hooks = MF_HOOK_RUNNING | MF_HOOK_CRASHED};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "CRASHED/Crashed");
  ASSERT_EQ(mf_run_error_code(run), MF_ESTATE);
  ASSERT_HISTORY(run, "Pending Running Crashed");
  /* The crashed hooks broke it too: the outcome stands. */
  ASSERT_LOG("a:hooks1 a:hooks16");
  ASSERT_EQ(B(run)->starts, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Completes its attempt; its hooks return without finishing. */
static void complete_then_stall_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START)
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops complete_then_stall_ops = {
    .step = complete_then_stall_step, .abandon = count_abandon};

TEST(final_hooks_breaking_the_contract_keep_the_outcome) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &complete_then_stall_ops, "a");
  mf_run_policy policy = {.hooks = MF_HOOK_COMPLETED};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_EQ(mf_run_error_code(run), MF_ESTATE);
  ASSERT_LOG("a:start1 a:hooks2");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Hooks ====== */

/* Attempt n fails while n <= b->param, else completes; in its hooks it
 * records what it sees, sleeps once (b->seconds > 0), and finishes with a
 * state the engine must ignore. */
static void hooked_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    if (mf_run_attempt(run) <= b->param)
      mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    else
      mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  if (reason == MF_STEP_HOOKS) {
    mf_state_type type;
    mf_state_name name;
    mf_run_outcome(run, &type, &name);
    note("outcome=%s/%s", mf_state_type_string(type),
         mf_state_name_string(name));
    note("state=%s attempt=%d final=%d deadline=%g", state_of(run),
         mf_run_attempt(run), mf_run_is_final(run), mf_run_deadline(run));
    if (b->seconds > 0) {
      b->rc = mf_run_sleep(run, b->seconds);
      return;
    }
  }
  mf_run_finish(run, MF_CRASHED, MF_NAME_CRASHED); /* ignored in hooks */
}
static const mf_run_ops hooked_ops = {.step = hooked_step,
                                      .abandon = count_abandon};

static mf_run *hooked_run(mf_engine *e, int failures, int retries,
                          unsigned hooks) {
  mf_run *run = run_new(e, &hooked_ops, "a");
  B(run)->param = failures;
  mf_run_policy policy = {.retries = retries, .hooks = hooks};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

TEST(finish_in_hooks_ignores_its_state) {
  mf_engine *e = engine_new();
  mf_run *run = hooked_run(e, 0, 0, MF_HOOK_COMPLETED);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_HISTORY(run, "Pending Running Completed");
  ASSERT_LOG("a:start1 a:hooks2 outcome=COMPLETED/Completed "
             "state=RUNNING/Running attempt=1 final=0 deadline=-1");
  ASSERT_EQ(mf_run_error_code(run), 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(hooks_that_park_end_the_run_when_they_finish) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &hooked_ops, "a");
  B(run)->seconds = 0.01;
  mf_run_policy policy = {.hooks = MF_HOOK_COMPLETED};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  while (B(run)->hook_steps == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(B(run)->rc, 0);
  ASSERT(!mf_run_is_final(run)); /* parked in its hooks */
  ASSERT_EQ(mf_engine_live_runs(e), 1);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_EQ(B(run)->resumes, 1);
  ASSERT_EQ(B(run)->abandons, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* on_running before each attempt; the end's hooks once. */
TEST(hook_points_in_order_completed) {
  mf_engine *e = engine_new();
  unsigned all = MF_HOOK_RUNNING | MF_HOOK_COMPLETED | MF_HOOK_FAILED |
                 MF_HOOK_CANCELLED | MF_HOOK_CRASHED;
  mf_run *run = hooked_run(e, 2, 3, all);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_LOG("a:hooks1 outcome=RUNNING/Running state=RUNNING/Running "
             "attempt=1 final=0 deadline=-1 a:start1 "
             "a:hooks1 outcome=RUNNING/Retrying state=RUNNING/Retrying "
             "attempt=2 final=0 deadline=-1 a:start2 "
             "a:hooks1 outcome=RUNNING/Retrying state=RUNNING/Retrying "
             "attempt=3 final=0 deadline=-1 a:start3 "
             "a:hooks2 outcome=COMPLETED/Completed state=RUNNING/Retrying "
             "attempt=3 final=0 deadline=-1");
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Retrying AwaitingRetry "
                      "Retrying Completed");
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(hook_points_in_order_failed) {
  mf_engine *e = engine_new();
  mf_run *run = hooked_run(
      e, 99, 1, MF_HOOK_RUNNING | MF_HOOK_FAILED | MF_HOOK_COMPLETED);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/Failed");
  ASSERT_LOG("a:hooks1 outcome=RUNNING/Running state=RUNNING/Running "
             "attempt=1 final=0 deadline=-1 a:start1 "
             "a:hooks1 outcome=RUNNING/Retrying state=RUNNING/Retrying "
             "attempt=2 final=0 deadline=-1 a:start2 "
             "a:hooks4 outcome=FAILED/Failed state=RUNNING/Retrying "
             "attempt=2 final=0 deadline=-1");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Only the points in the mask are stepped. */
TEST(hooks_only_at_their_points) {
  mf_engine *e = engine_new();
  mf_run *run = hooked_run(e, 1, 1, MF_HOOK_FAILED | MF_HOOK_CRASHED);
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_LOG("a:start1 a:start2");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Crashes each attempt (a crash the body reports); logs its hooks. */
static void crash_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_HOOKS) {
    mf_state_type type;
    mf_state_name name;
    mf_run_outcome(run, &type, &name);
    note("outcome=%s", mf_state_name_string(name));
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  mf_run_finish(run, MF_CRASHED, MF_NAME_CRASHED);
}
static const mf_run_ops crash_ops = {.step = crash_step,
                                     .abandon = count_abandon};

TEST(hook_points_crashed) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &crash_ops, "a");
  mf_run_policy policy = {.retries = 1,
                          .hooks = MF_HOOK_CRASHED | MF_HOOK_FAILED};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "CRASHED/Crashed");
  ASSERT_LOG("a:start1 a:start2 a:hooks16 outcome=Crashed");
  ASSERT_EQ(mf_run_error_code(run), 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Parks in its attempt; finishes its hooks at once. */
static void park_hooks_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  if (reason == MF_STEP_HOOKS) {
    mf_state_type type;
    mf_state_name name;
    mf_run_outcome(run, &type, &name);
    note("outcome=%s", mf_state_name_string(name));
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops park_hooks_ops = {.step = park_hooks_step,
                                          .abandon = count_abandon};

TEST(hook_points_cancelled) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &park_hooks_ops, "a");
  mf_run_policy policy = {.retries = 3,
                          .hooks = MF_HOOK_RUNNING | MF_HOOK_CANCELLED |
                                   MF_HOOK_FAILED | MF_HOOK_COMPLETED};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  while (B(run)->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT(!mf_run_is_final(run)); /* its cancellation hooks are due */
  wait_final(e, run);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_LOG("a:hooks1 outcome=Running a:start1 a:abandon a:hooks8 "
             "outcome=Cancelled");
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT_HISTORY(run, "Pending Running Cancelled");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* The outcome of a timed-out attempt, as its failure hooks see it. */
TEST(outcome_timed_out_in_hooks) {
  mf_engine *e = engine_new();
  mf_run *run = run_new(e, &park_hooks_ops, "a");
  mf_run_policy policy = {.timeout = 0.01, .hooks = MF_HOOK_FAILED};
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/TimedOut");
  ASSERT_LOG("a:start1 a:abandon a:hooks4 outcome=TimedOut");
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Flows and their children ====== */

/* A flow (or task) that submits b->param children running child_ops
 * (children[] keeps the references), then finishes parent_finish. */
static const mf_run_ops *child_ops;
static mf_run *children[8];
static mf_state_type parent_finish;

static void parent_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    for (int i = 0; i < b->param; i++) {
      static const char *names[] = {"c0", "c1", "c2", "c3"};
      children[i] = run_new(b->arg, child_ops, names[i]);
      B(children[i])->seconds = b->seconds;
      ASSERT_EQ(mf_run_submit(children[i], NULL), 0);
      ASSERT_PTR_EQ(mf_run_parent(children[i]), run);
    }
  }
  mf_run_finish(run, parent_finish,
                parent_finish == MF_COMPLETED ? MF_NAME_COMPLETED
                                              : MF_NAME_FAILED);
}
static const mf_run_ops parent_ops = {.step = parent_step,
                                      .abandon = count_abandon};

static void note_done(mf_run *run, void *data) {
  (void)data;
  note("%s:final", B(run)->name);
}

static mf_run *parent_run(mf_engine *e, const char *name, unsigned flags,
                          int nchildren, const mf_run_ops *ops) {
  mf_run *run = run_new(e, &parent_ops, name);
  B(run)->arg = e;
  B(run)->param = nchildren;
  child_ops = ops;
  mf_run_set_flags(run, flags);
  ASSERT_EQ(mf_run_on_done(run, note_done, NULL), 0);
  return run;
}

TEST(flow_ends_after_its_children) {
  mf_engine *e = engine_new();
  parent_finish = MF_COMPLETED;
  mf_run *flow = parent_run(e, "f", MF_RUN_FLOW, 1, &park_ops);
  mf_run_policy policy = {.hooks = MF_HOOK_COMPLETED};
  ASSERT_EQ(mf_run_set_policy(flow, &policy), 0);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  children[0] = NULL;
  while (!children[0] || B(children[0])->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  mf_run *child = children[0];
  ASSERT_EQ(mf_run_on_done(child, note_done, NULL), 0);
  /* The flow's body finished; the flow waits for its child. */
  ASSERT_EQ(B(flow)->starts, 1);
  ASSERT(!mf_run_is_final(flow));
  ASSERT_STATE(flow, "RUNNING/Running");
  ASSERT_EQ(mf_engine_live_runs(e), 2);
  mf_flow_stats stats;
  ASSERT_EQ(mf_run_flow_stats(flow, &stats), 0);
  ASSERT_EQ(stats.submitted, 1);
  ASSERT_EQ(stats.running, 1);
  ASSERT_EQ(mf_run_unpark(child, B(child)->ticket), 0);
  wait_final(e, flow);
  ASSERT_STATE(flow, "COMPLETED/Completed");
  /* Its completion hooks ran after the child was final. */
  ASSERT_LOG("f:start1 c0:start1 c0:resume c0:final f:hooks2 f:final");
  ASSERT_EQ(mf_run_flow_stats(flow, &stats), 0);
  ASSERT_EQ(stats.completed, 1);
  mf_run_unref(child);
  mf_run_unref(flow);
  mf_engine_close(e);
}

TEST(failed_flow_cancels_its_children) {
  mf_engine *e = engine_new();
  parent_finish = MF_FAILED;
  mf_run *flow = parent_run(e, "f", MF_RUN_FLOW, 2, &park_ops);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  /* The children are cancelled before they ever start. */
  wait_final(e, flow);
  ASSERT_STATE(flow, "FAILED/Failed");
  for (int i = 0; i < 2; i++) {
    ASSERT_STATE(children[i], "CANCELLED/Cancelled");
    ASSERT_EQ(B(children[i])->abandons, 1);
    ASSERT_EQ(B(children[i])->steps, 0);
    mf_run_unref(children[i]);
  }
  mf_run_clear_unhandled(e, NULL);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* A task's children outlive it: they move to its parent, and its flow
 * still waits for them.  A task that fails does not cancel them. */
static void task_in_flow_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    mf_run *task = run_new(b->arg, &parent_ops, "t");
    B(task)->arg = b->arg;
    B(task)->param = 1;
    b->target = task;
    mf_run_ref(task);
    ASSERT_EQ(mf_run_submit(task, NULL), 0);
    mf_run_unref(task);
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops task_in_flow_ops = {.step = task_in_flow_step};

TEST(task_children_move_to_its_parent) {
  mf_engine *e = engine_new();
  parent_finish = MF_FAILED;
  child_ops = &park_ops;
  children[0] = NULL;
  mf_run *flow = run_new(e, &task_in_flow_ops, "f");
  B(flow)->arg = e;
  mf_run_set_flags(flow, MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  while (!children[0] || B(children[0])->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  mf_run *task = B(flow)->target, *child = children[0];
  ASSERT_STATE(task, "FAILED/Failed");
  ASSERT(!mf_run_is_final(child));
  ASSERT_PTR_EQ(mf_run_parent(child), flow);
  ASSERT(!mf_run_is_final(flow));
  ASSERT_EQ(mf_run_unpark(child, B(child)->ticket), 0);
  wait_final(e, flow);
  ASSERT_STATE(child, "COMPLETED/Completed");
  ASSERT_STATE(flow, "COMPLETED/Completed");
  ASSERT_EQ(mf_run_unhandled(e, flow, NULL), 0); /* released with the flow */
  mf_run_unref(task);
  mf_run_unref(child);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* }====== */

/* {====== NotReady ====== */

TEST(not_ready_cascades) {
  mf_engine *e = engine_new();
  mf_run *a = run_start(e, &fail_ops, "a");
  mf_run *b = run_new(e, &complete_ops, "b");
  ASSERT_EQ(mf_run_add_input(b, a, 0), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  mf_run *c = run_new(e, &complete_ops, "c");
  ASSERT_EQ(mf_run_add_input(c, b, 0), 0);
  ASSERT_EQ(mf_run_submit(c, NULL), 0);
  mf_run *d = run_new(e, &complete_ops, "d"); /* a's failure allowed */
  ASSERT_EQ(mf_run_add_input(d, a, 1), 0);
  ASSERT_EQ(mf_run_add_input(d, c, 1), 0);
  ASSERT_EQ(mf_run_submit(d, NULL), 0);
  ASSERT_STATE(b, "PENDING/Pending");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_STATE(a, "FAILED/Failed");
  ASSERT_STATE(b, "PENDING/NotReady");
  ASSERT_STATE(c, "PENDING/NotReady");
  ASSERT(mf_run_is_final(b) && mf_run_is_final(c));
  ASSERT_HISTORY(b, "Pending NotReady");
  ASSERT_PTR_EQ(mf_run_cause(b), a);
  ASSERT_PTR_EQ(mf_run_cause(c), b);
  ASSERT_EQ(B(b)->steps + B(c)->steps, 0);
  /* Never started: abandoned once each, final by then. */
  ASSERT_EQ(B(b)->abandons, 1);
  ASSERT_EQ(B(b)->abandons_final, 1);
  ASSERT_EQ(B(c)->abandons, 1);
  ASSERT_STATE(d, "COMPLETED/Completed");
  ASSERT_EQ(mf_run_attempt(b), 0);
  ASSERT_LOG("a:start1 b:abandon c:abandon d:start1");
  /* Three unhandled failures; handling c handles what caused it. */
  ASSERT_EQ(mf_run_unhandled(e, NULL, NULL), 3);
  mf_run_mark_handled(c);
  ASSERT_EQ(mf_run_unhandled(e, NULL, NULL), 0);
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_unref(c);
  mf_run_unref(d);
  mf_engine_close(e);
}

/* A failed input ends the wait for the others. */
TEST(not_ready_without_waiting_for_other_inputs) {
  mf_engine *e = engine_new();
  mf_run *slow = run_start(e, &park_ops, "slow");
  mf_run *failing = run_start(e, &fail_ops, "bad");
  mf_run *down = run_new(e, &complete_ops, "down");
  ASSERT_EQ(mf_run_add_input(down, slow, 0), 0);
  ASSERT_EQ(mf_run_add_input(down, failing, 0), 0);
  ASSERT_EQ(mf_run_submit(down, NULL), 0);
  wait_final(e, down);
  ASSERT_STATE(down, "PENDING/NotReady");
  ASSERT_PTR_EQ(mf_run_cause(down), failing);
  ASSERT(!mf_run_is_final(slow));
  ASSERT_EQ(mf_run_unpark(slow, B(slow)->ticket), 0);
  wait_final(e, slow);
  mf_run_mark_handled(down);
  mf_run_unref(slow);
  mf_run_unref(failing);
  mf_run_unref(down);
  mf_engine_close(e);
}

TEST(cancelled_input_makes_not_ready) {
  mf_engine *e = engine_new();
  mf_run *up = run_start(e, &park_ops, "up");
  mf_run *down = run_new(e, &complete_ops, "down");
  ASSERT_EQ(mf_run_add_input(down, up, 0), 0);
  ASSERT_EQ(mf_run_submit(down, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 2);
  ASSERT_EQ(mf_run_cancel(up), 1);
  wait_final(e, down);
  ASSERT_STATE(up, "CANCELLED/Cancelled");
  ASSERT_STATE(down, "PENDING/NotReady");
  ASSERT_PTR_EQ(mf_run_cause(down), up);
  mf_run_mark_handled(down);
  mf_run_unref(up);
  mf_run_unref(down);
  mf_engine_close(e);
}

/* }====== */

/* {====== External runs ====== */

static void finish_external(uv_timer_t *timer) {
  mf_run_finish(timer->data, MF_COMPLETED, MF_NAME_COMPLETED);
  uv_close((uv_handle_t *)timer, NULL);
}

TEST(external_runs) {
  mf_engine *e = engine_new();
  mf_run *x = mf_run_new(e, NULL, 0);
  ASSERT(x != NULL);
  mf_run_finish(x, MF_COMPLETED, MF_NAME_COMPLETED); /* not submitted */
  ASSERT_STATE(x, "PENDING/Pending");
  ASSERT_EQ(mf_run_submit(x, NULL), 0);
  mf_run *w = run_new(e, &wait_ops, "w");
  B(w)->target = x;
  ASSERT_EQ(mf_run_submit(w, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 2);
  ASSERT_EQ(mf_engine_step(e), 2); /* never stepped: nothing to step */
  ASSERT_STATE(x, "PENDING/Pending");
  ASSERT_EQ(B(w)->rc, 0);
  /* Completed from a loop callback: the top-level wait and w wake. */
  uv_timer_t timer;
  uv_timer_init(mf_engine_loop(e), &timer);
  timer.data = x;
  uv_timer_start(&timer, finish_external, 5, 0);
  ASSERT_EQ(mf_engine_wait(e, &x, 1, MF_WAIT_ALL, -1), 0);
  ASSERT_STATE(x, "COMPLETED/Completed");
  ASSERT_HISTORY(x, "Pending Completed");
  ASSERT_EQ(mf_run_attempt(x), 0);
  mf_run_finish(x, MF_FAILED, MF_NAME_FAILED); /* once only */
  ASSERT_STATE(x, "COMPLETED/Completed");
  wait_final(e, w);
  ASSERT_STATE(w, "COMPLETED/Completed");
  ASSERT_EQ(B(w)->woke, MF_WAKE_DONE);
  mf_run_unref(w);
  mf_run_unref(x);
  mf_engine_close(e);
}

/* ops without a step make an external run too; failed, it makes its
 * dependents NotReady; cancelled, it is abandoned once. */
static const mf_run_ops external_ops = {.abandon = count_abandon};

TEST(external_runs_failed_and_cancelled) {
  mf_engine *e = engine_new();
  mf_run *x = run_start(e, &external_ops, "x");
  mf_run *down = run_new(e, &complete_ops, "down");
  ASSERT_EQ(mf_run_add_input(down, x, 0), 0);
  ASSERT_EQ(mf_run_submit(down, NULL), 0);
  mf_run_finish(x, MF_FAILED, MF_NAME_FAILED);
  ASSERT_STATE(x, "FAILED/Failed");
  wait_final(e, down);
  ASSERT_STATE(down, "PENDING/NotReady");
  ASSERT_EQ(B(x)->abandons, 1); /* no body ever ran: abandoned once */
  mf_run *y = run_start(e, &external_ops, "y");
  ASSERT_EQ(mf_run_cancel(y), 1);
  ASSERT_STATE(y, "CANCELLED/Cancelled");
  ASSERT_EQ(B(y)->abandons, 1);
  ASSERT_EQ(mf_run_cancel(y), 0);
  mf_run_finish(y, MF_COMPLETED, MF_NAME_COMPLETED);
  ASSERT_STATE(y, "CANCELLED/Cancelled");
  mf_run_clear_unhandled(e, NULL);
  mf_run_unref(x);
  mf_run_unref(y);
  mf_run_unref(down);
  mf_engine_close(e);
}

/* }====== */

/* {====== Done callbacks ====== */

static int done_calls;
static void count_done(mf_run *run, void *data) {
  (void)data;
  done_calls++;
  ASSERT(mf_run_is_final(run));
}

TEST(done_callbacks_once_after_final) {
  mf_engine *e = engine_new();
  done_calls = 0;
  mf_run *run = run_new(e, &complete_ops, "a");
  ASSERT_EQ(mf_run_on_done(run, count_done, NULL), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(done_calls, 1);
  /* On a final run: called at the next pass, not from inside the call. */
  ASSERT_EQ(mf_run_on_done(run, count_done, NULL), 0);
  ASSERT_EQ(done_calls, 1);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(done_calls, 2);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

TEST_MAIN("life")
