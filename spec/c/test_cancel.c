/*
 * test_cancel.c -- cancellation in every place a run can be: pending,
 * waiting on its inputs, parked, woken but not resumed, awaiting a retry,
 * in its hooks (which go on), executing (cancelling itself), deciding a
 * retry; a flow's tree (children first); mf_engine_cancel_all over 100,000
 * queued runs; and mf_engine_close with runs in every state, while the
 * engine's own allocations fail.  ops->abandon is called exactly once per
 * stopped step and once for a run that never started.
 *
 * The engine's malloc, calloc and realloc are wrapped (-Wl,--wrap, see
 * tests.cmake): alloc_fail makes them fail.
 */
#include "fixture.h"

/* {====== Failing allocations ====== */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);

static int alloc_fail;
static size_t alloc_refused;

void *__wrap_malloc(size_t size) {
  if (alloc_fail)
    return alloc_refused++, NULL;
  return __real_malloc(size);
}
void *__wrap_calloc(size_t n, size_t size) {
  if (alloc_fail)
    return alloc_refused++, NULL;
  return __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t size) {
  if (alloc_fail)
    return alloc_refused++, NULL;
  return __real_realloc(p, size);
}

/* }====== */

/* {====== Bodies ====== */

/* Parks in its attempt and, with hooks, in its hooks too (b->param: the
 * hook points that park). */
static void parking_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  int park = reason == MF_STEP_START ||
             (reason == MF_STEP_HOOKS &&
              (mf_run_hook_point(run) & (unsigned)b->param));
  if (park) {
    b->rc = mf_run_park(run, -1, &b->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops parking_ops = {.step = parking_step,
                                       .abandon = count_abandon};

static mf_run *with_policy(mf_engine *e, const mf_run_ops *ops,
                           const char *name, const mf_run_policy *policy) {
  mf_run *run = run_new(e, ops, name);
  B(run)->arg = e;
  ASSERT_EQ(mf_run_set_policy(run, policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

static void until_started(mf_engine *e, mf_run *run) {
  while (B(run)->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
}

static int done_calls;
static void count_done(mf_run *run, void *data) {
  (void)run;
  (void)data;
  done_calls++;
}

/* }====== */

/* {====== Where the run is ====== */

TEST(pending) {
  mf_engine *e = engine_new();
  done_calls = 0;
  mf_run *run = run_start(e, &complete_ops, "a");
  ASSERT_EQ(mf_run_on_done(run, count_done, NULL), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_HISTORY(run, "Pending Cancelled");
  ASSERT_EQ(mf_run_cancel(run), 0);
  ASSERT_EQ(mf_run_cancel_requested(run), 1);
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT_EQ(B(run)->abandons_final, 1);
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  ASSERT_EQ(done_calls, 0); /* from the scheduler, not inside cancel */
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(done_calls, 1);
  ASSERT_EQ(B(run)->steps, 0);
  ASSERT_EQ(mf_run_unhandled(e, NULL, NULL), 0); /* not a failure */
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(waiting_on_inputs) {
  mf_engine *e = engine_new();
  mf_run *input = mf_run_new(e, NULL, 0);
  ASSERT_EQ(mf_run_submit(input, NULL), 0);
  mf_run *run = run_new(e, &complete_ops, "a");
  ASSERT_EQ(mf_run_add_input(run, input, 0), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  ASSERT_EQ(mf_engine_step(e), 2);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_HISTORY(run, "Pending Cancelled");
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT(!mf_run_is_final(input)); /* its inputs are not its to cancel */
  mf_run_finish(input, MF_COMPLETED, MF_NAME_COMPLETED);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_EQ(B(run)->steps, 0);
  mf_run_unref(input);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(parked) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 3}; /* a cancelled run is not retried */
  mf_run *run = with_policy(e, &parking_ops, "a", &policy);
  until_started(e, run);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_STATE(run, "CANCELLED/Cancelled"); /* at once */
  ASSERT_HISTORY(run, "Pending Running Cancelled");
  ASSERT_EQ(B(run)->abandons, 1);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), MF_ESTATE);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(B(run)->resumes, 0);
  ASSERT_EQ(mf_run_attempt(run), 1);
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(sleeping) {
  mf_engine *e = engine_new();
  mf_run *run = run_start(e, &sleep_ops, "a");
  B(run)->seconds = 100;
  until_started(e, run);
  ASSERT_GT(mf_engine_timeout(e), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_EQ(mf_engine_timeout(e), -1); /* its timer is gone */
  ASSERT_EQ(mf_engine_run(e), 0);      /* returns: nothing is left */
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_EQ(B(run)->abandons, 1);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Woken (its park over) but not resumed yet: stopped all the same. */
TEST(woken_not_resumed) {
  mf_engine *e = engine_new();
  mf_run *run = run_start(e, &parking_ops, "a");
  until_started(e, run);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(B(run)->resumes, 0);
  ASSERT_EQ(B(run)->abandons, 1);
  mf_run_unref(run);
  mf_engine_close(e);
}

TEST(awaiting_retry) {
  mf_engine *e = engine_new();
  const double delay = 100;
  mf_run_policy policy = {.retries = 3,
                          .retry_delays = &delay,
                          .retry_delay_count = 1,
                          .hooks = MF_HOOK_CANCELLED | MF_HOOK_FAILED};
  mf_run *run = with_policy(e, &fail_ops, "a", &policy);
  while (mf_run_state_name(run) != MF_NAME_AWAITING_RETRY)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT(!mf_run_is_final(run)); /* its cancellation hooks come first */
  wait_final(e, run);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_HISTORY(run, "Pending Running AwaitingRetry Cancelled");
  ASSERT_LOG("a:start1 a:hooks8");
  ASSERT_EQ(B(run)->abandons, 0); /* no step was under way */
  ASSERT_EQ(mf_run_attempt(run), 1);
  ASSERT_EQ(mf_engine_timeout(e), -1);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Cancelled in its completion hooks: they go on, the outcome stands. */
TEST(in_final_hooks_goes_on) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.hooks = MF_HOOK_COMPLETED | MF_HOOK_CANCELLED};
  mf_run *run = run_new(e, &parking_ops, "a");
  B(run)->param = MF_HOOK_COMPLETED;
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  until_started(e, run);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  while (B(run)->hook_steps == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT(!mf_run_is_final(run));
  ASSERT_EQ(mf_run_cancel_requested(run), 1);
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0); /* its park stands */
  wait_final(e, run);
  ASSERT_STATE(run, "COMPLETED/Completed");
  ASSERT_LOG("a:start1 a:resume a:hooks2 a:resume");
  ASSERT_EQ(B(run)->abandons, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Cancelled in its on_running hooks: they go on, then the attempt ends
 * CANCELLED without the body starting. */
TEST(in_running_hooks_goes_on_then_no_attempt) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.hooks = MF_HOOK_RUNNING | MF_HOOK_CANCELLED};
  mf_run *run = run_new(e, &parking_ops, "a");
  B(run)->param = MF_HOOK_RUNNING;
  ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  while (B(run)->hook_steps == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT(!mf_run_is_final(run));
  ASSERT_EQ(mf_run_unpark(run, B(run)->ticket), 0);
  wait_final(e, run);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_LOG("a:hooks1 a:resume a:hooks8");
  ASSERT_EQ(B(run)->starts, 0);
  ASSERT_EQ(B(run)->abandons, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* Between its on_running hooks and its body (one step per
 * mf_engine_step: step_only, max_steps 1). */
TEST(between_hooks_and_attempt) {
  mf_engine *e;
  mf_config cfg = {.size = sizeof cfg, .max_steps = 1, .step_only = 1};
  ASSERT_EQ(mf_engine_new(&e, &cfg), 0);
  log_reset();
  mf_run_policy policy = {.hooks = MF_HOOK_RUNNING};
  mf_run *run = with_policy(e, &complete_ops, "a", &policy);
  ASSERT_EQ(mf_engine_step(e), 1); /* the hooks, finished */
  ASSERT_LOG("a:hooks1");
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:hooks1");
  ASSERT_EQ(B(run)->abandons, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Cancelled from inside ====== */

/* Cancels itself, then finishes (b->param 0) or sleeps (1). */
static void self_cancel_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason != MF_STEP_START) {
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
    return;
  }
  int cancelled = mf_run_cancel(run);
  note("cancel=%d final=%d requested=%d", cancelled, mf_run_is_final(run),
       mf_run_cancel_requested(run));
  if (b->param == 0)
    mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
  else
    b->rc = mf_run_sleep(run, 100);
}
static const mf_run_ops self_cancel_ops = {.step = self_cancel_step,
                                           .abandon = count_abandon};

TEST(executing_run_cancels_itself) {
  for (int how = 0; how < 2; how++) {
    mf_engine *e = engine_new();
    mf_run_policy policy = {.retries = 2};
    mf_run *run = run_new(e, &self_cancel_ops, "a");
    B(run)->param = how;
    ASSERT_EQ(mf_run_set_policy(run, &policy), 0);
    ASSERT_EQ(mf_run_submit(run, NULL), 0);
    wait_final(e, run);
    ASSERT_STATE(run, "CANCELLED/Cancelled");
    ASSERT_EQ(mf_run_attempt(run), 1);
    ASSERT_EQ(B(run)->steps, 1);
    ASSERT_EQ(B(run)->abandons, how); /* a parked step is stopped */
    ASSERT_LOG(how ? "a:start1 cancel=1 final=0 requested=1 a:abandon"
                   : "a:start1 cancel=1 final=0 requested=1");
    ASSERT_EQ(mf_engine_timeout(e), -1);
    mf_run_unref(run);
    mf_engine_close(e);
  }
}

/* A child cancels its flow (and so itself); a sibling goes too. */
static mf_run *family[2]; /* the sibling, the child */

static void flow_step(mf_run *run, mf_step_reason reason);
static void cancel_parent_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  note("cancel=%d", mf_run_cancel(mf_run_parent(run)));
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops flow_ops = {.step = flow_step,
                                    .abandon = count_abandon};
static const mf_run_ops cancel_parent_ops = {.step = cancel_parent_step,
                                             .abandon = count_abandon};

static void flow_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    family[0] = run_new(B(run)->arg, &parking_ops, "s");
    ASSERT_EQ(mf_run_submit(family[0], NULL), 0);
    family[1] = run_new(B(run)->arg, &cancel_parent_ops, "c");
    ASSERT_EQ(mf_run_submit(family[1], NULL), 0);
    B(run)->rc = mf_run_wait_children(run);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

TEST(child_cancels_its_flow) {
  mf_engine *e = engine_new();
  mf_run *flow = run_new(e, &flow_ops, "f");
  B(flow)->arg = e;
  mf_run_set_flags(flow, MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  wait_final(e, flow);
  ASSERT_STATE(flow, "CANCELLED/Cancelled");
  ASSERT_STATE(family[0], "CANCELLED/Cancelled");
  ASSERT_STATE(family[1], "CANCELLED/Cancelled"); /* finished, cancelled */
  ASSERT_LOG("f:start1 s:start1 c:start1 s:abandon f:abandon cancel=1");
  ASSERT_EQ(B(family[1])->abandons, 0); /* its step ended by itself */
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  mf_run_unref(family[0]);
  mf_run_unref(family[1]);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* The retry condition cancels the run: the decision sees it. */
static int cancelling_condition(mf_run *run) {
  note("cancel=%d", mf_run_cancel(run));
  return 1;
}
static const mf_run_ops cancelled_deciding_ops = {
    .step = fail_step, .abandon = count_abandon, .retry = cancelling_condition};

TEST(cancelled_by_its_retry_condition) {
  mf_engine *e = engine_new();
  mf_run_policy policy = {.retries = 3, .hooks = MF_HOOK_CANCELLED};
  mf_run *run = with_policy(e, &cancelled_deciding_ops, "a", &policy);
  wait_final(e, run);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_HISTORY(run, "Pending Running Cancelled");
  ASSERT_LOG("a:start1 cancel=1 a:hooks8");
  ASSERT_EQ(B(run)->abandons, 0);
  mf_run_unref(run);
  mf_engine_close(e);
}

/* }====== */

/* {====== Trees ====== */

/* Starts a child one level down (b->param levels left), then parks. */
static mf_run *tree[3];
static void spawn_step(mf_run *run, mf_step_reason reason);
static const mf_run_ops spawn_ops = {.step = spawn_step,
                                     .abandon = count_abandon};
static void spawn_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START && b->param > 0) {
    static const char *names[] = {"g", "t", "f"};
    mf_run *child = run_new(b->arg, &spawn_ops, names[b->param - 1]);
    B(child)->arg = b->arg;
    B(child)->param = b->param - 1;
    tree[b->param - 1] = child;
    ASSERT_EQ(mf_run_submit(child, NULL), 0);
  }
  if (reason == MF_STEP_START) {
    b->rc = mf_run_park(run, -1, &b->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

/* A flow f, its task t, t's child g: all started and parked. */
static void grow_tree(mf_engine *e) {
  tree[0] = tree[1] = NULL;
  tree[2] = run_new(e, &spawn_ops, "f");
  B(tree[2])->arg = e;
  B(tree[2])->param = 2;
  mf_run_set_flags(tree[2], MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(tree[2], NULL), 0);
  while (!tree[0] || B(tree[0])->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_PTR_EQ(mf_run_parent(tree[0]), tree[1]);
  ASSERT_PTR_EQ(mf_run_parent(tree[1]), tree[2]);
}

static void note_final(mf_run *run, void *data) {
  (void)data;
  note("%s:final", B(run)->name);
}

TEST(tree_children_first) {
  mf_engine *e = engine_new();
  grow_tree(e);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(mf_run_on_done(tree[i], note_final, NULL), 0);
  ASSERT_EQ(mf_run_cancel(tree[2]), 1);
  for (int i = 0; i < 3; i++)
    ASSERT_STATE(tree[i], "CANCELLED/Cancelled");
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("f:start1 t:start1 g:start1 g:abandon t:abandon f:abandon "
             "g:final t:final f:final");
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  for (int i = 0; i < 3; i++)
    mf_run_unref(tree[i]);
  mf_engine_close(e);
}

TEST(cancel_children_only) {
  mf_engine *e = engine_new();
  grow_tree(e);
  mf_run_cancel_children(tree[2]);
  ASSERT_STATE(tree[0], "CANCELLED/Cancelled");
  ASSERT_STATE(tree[1], "CANCELLED/Cancelled");
  ASSERT_STATE(tree[2], "RUNNING/Running");
  ASSERT_EQ(mf_run_cancel_requested(tree[2]), 0);
  ASSERT_EQ(mf_run_unpark(tree[2], B(tree[2])->ticket), 0);
  wait_final(e, tree[2]);
  ASSERT_STATE(tree[2], "COMPLETED/Completed");
  ASSERT_LOG("f:start1 t:start1 g:start1 g:abandon t:abandon f:resume");
  for (int i = 0; i < 3; i++)
    mf_run_unref(tree[i]);
  mf_engine_close(e);
}

TEST(released_children_outlive_the_cancel) {
  mf_engine *e = engine_new();
  grow_tree(e);
  mf_run_release_children(tree[2]);
  ASSERT_PTR_EQ(mf_run_parent(tree[1]), NULL);
  ASSERT_EQ(mf_run_cancel(tree[2]), 1);
  ASSERT_STATE(tree[2], "CANCELLED/Cancelled");
  ASSERT(!mf_run_is_final(tree[1]) && !mf_run_is_final(tree[0]));
  ASSERT_EQ(mf_run_unpark(tree[0], B(tree[0])->ticket), 0);
  ASSERT_EQ(mf_run_unpark(tree[1], B(tree[1])->ticket), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_STATE(tree[0], "COMPLETED/Completed");
  ASSERT_STATE(tree[1], "COMPLETED/Completed");
  for (int i = 0; i < 3; i++)
    mf_run_unref(tree[i]);
  mf_engine_close(e);
}

/* }====== */

/* {====== Many runs ====== */

#define MANY 100000
static int many_steps, many_abandons;
static void many_step(mf_run *run, mf_step_reason reason) {
  (void)reason;
  many_steps++;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static void many_abandon(mf_run *run) {
  (void)run;
  many_abandons++;
}
static const mf_run_ops many_ops = {.step = many_step, .abandon = many_abandon};

static void count_name(mf_run *run, void *data) {
  (void)run;
  ++*(int *)data;
}

/* Linear in the runs (quadratic would not finish in the time limit);
 * no bound on time is asserted. */
TEST(cancel_all_100000_queued) {
  mf_engine *e = engine_new();
  many_steps = many_abandons = 0;
  for (int i = 0; i < MANY; i++) {
    mf_run *run = mf_run_new(e, &many_ops, 0);
    ASSERT(run != NULL);
    ASSERT_EQ(mf_run_submit(run, NULL), 0);
    mf_run_unref(run); /* the engine holds it */
  }
  ASSERT_EQ(mf_engine_live_runs(e), MANY);
  int names = 0;
  ASSERT_EQ(mf_engine_cancel_all(e, count_name, &names), MANY);
  ASSERT_EQ(names, MANY);
  ASSERT_EQ(many_abandons, MANY);
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  ASSERT_EQ(mf_engine_run(e), 0); /* the queue's zombies are dropped */
  ASSERT_EQ(many_steps, 0);
  ASSERT_EQ(mf_engine_cancel_all(e, NULL, NULL), 0);
  mf_engine_close(e);
}

TEST(cancel_all_100000_queued_on_a_limit) {
  mf_engine *e = engine_new();
  many_steps = many_abandons = 0;
  ASSERT_EQ(mf_limit_set(e, "one", 1), 0);
  const char *tag = "one";
  mf_run *holder = run_new(e, &parking_ops, "holder");
  ASSERT_EQ(mf_run_set_tags(holder, &tag, 1), 0);
  ASSERT_EQ(mf_run_submit(holder, NULL), 0);
  for (int i = 0; i < MANY; i++) {
    mf_run *run = mf_run_new(e, &many_ops, 0);
    ASSERT_EQ(mf_run_set_tags(run, &tag, 1), 0);
    ASSERT_EQ(mf_run_submit(run, NULL), 0);
    mf_run_unref(run);
  }
  mf_limit_info info;
  do {
    ASSERT_EQ(mf_engine_step(e), MANY + 1);
    mf_limit_each(e, &info, 1);
  } while (info.waiters < MANY);
  ASSERT_EQ(mf_engine_cancel_all(e, NULL, NULL), MANY + 1);
  mf_limit_each(e, &info, 1);
  ASSERT_EQ(info.waiters, 0);
  ASSERT_EQ(info.holders, 0);
  ASSERT_EQ(many_abandons, MANY);
  ASSERT_EQ(many_steps, 0);
  ASSERT_STATE(holder, "CANCELLED/Cancelled");
  ASSERT_EQ(mf_engine_live_runs(e), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  mf_run_unref(holder);
  mf_engine_close(e);
}

/* }====== */

/* {====== Abandon: once per stopped step ====== */

/* Fails its first attempt, parks in the others. */
static void fail_then_park_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (mf_run_attempt(run) == 1)
    mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
  else
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
}
static const mf_run_ops fail_then_park_ops = {.step = fail_then_park_step,
                                              .abandon = count_abandon};

TEST(abandon_once_per_stopped_step) {
  mf_engine *e = engine_new();
  /* Three attempts, each stopped at its deadline. */
  mf_run_policy timed = {.retries = 2, .timeout = 0.01};
  mf_run *run = with_policy(e, &parking_ops, "a", &timed);
  wait_final(e, run);
  ASSERT_STATE(run, "FAILED/TimedOut");
  ASSERT_EQ(mf_run_attempt(run), 3);
  ASSERT_EQ(B(run)->abandons, 3);
  ASSERT_EQ(B(run)->abandons_final, 0); /* each was a step, not the run */
  mf_run_unref(run);
  /* An attempt that failed by itself, then one stopped by a cancel. */
  mf_run_policy retry = {.retries = 1};
  run = with_policy(e, &fail_then_park_ops, "b", &retry);
  while (B(run)->starts < 2)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(B(run)->abandons, 0);
  ASSERT_EQ(mf_run_cancel(run), 1);
  ASSERT_EQ(mf_run_cancel(run), 0);
  ASSERT_STATE(run, "CANCELLED/Cancelled");
  ASSERT_EQ(B(run)->abandons, 1);
  /* A completed run is never abandoned, a cancel after the end neither. */
  mf_run *done = run_start(e, &complete_ops, "b");
  wait_final(e, done);
  ASSERT_EQ(mf_run_cancel(done), 0);
  ASSERT_EQ(B(done)->abandons, 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_EQ(B(run)->abandons, 1);
  mf_run_unref(run);
  mf_run_unref(done);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* }====== */

/* {====== Closing the engine ====== */

/* One run in each place; the numbers of abandons close must cause. */
enum {
  R_INPUTS,
  R_EXTERNAL,
  R_READY,
  R_HOLDER,
  R_SLOT,
  R_RATE_FIRST,
  R_RATE,
  R_PARKED,
  R_SLEEPING,
  R_WAITING,
  R_RETRY,
  R_CLOSING,
  R_CLOSING_CHILD,
  R_HOOKS,
  R_RUNNING_HOOKS,
  R_DONE,
  R_COUNT
};

static void closing_flow_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  mf_run *child = run_new(B(run)->arg, &parking_ops, "cc");
  ASSERT_EQ(mf_run_submit(child, NULL), 0);
  B(run)->target = child;
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops closing_flow_ops = {.step = closing_flow_step,
                                            .abandon = count_abandon};
static const mf_run_ops external_ops = {.abandon = count_abandon};

TEST(close_with_runs_in_every_state) {
  mf_engine *e = engine_new();
  done_calls = 0;
  static const char *one = "one", *rate = "rate";
  ASSERT_EQ(mf_limit_set(e, one, 1), 0);
  ASSERT_EQ(mf_rate_limit_set(e, rate, 0.001), 0);
  mf_run *r[R_COUNT];
  mf_run *unsubmitted = run_new(e, &complete_ops, "new");
  r[R_EXTERNAL] = run_start(e, &external_ops, "ext");
  r[R_INPUTS] = run_new(e, &complete_ops, "in");
  ASSERT_EQ(mf_run_add_input(r[R_INPUTS], r[R_EXTERNAL], 0), 0);
  ASSERT_EQ(mf_run_submit(r[R_INPUTS], NULL), 0);
  r[R_HOLDER] = run_new(e, &parking_ops, "holder");
  ASSERT_EQ(mf_run_set_tags(r[R_HOLDER], &one, 1), 0);
  ASSERT_EQ(mf_run_submit(r[R_HOLDER], NULL), 0);
  r[R_SLOT] = run_new(e, &complete_ops, "slot");
  ASSERT_EQ(mf_run_set_tags(r[R_SLOT], &one, 1), 0);
  ASSERT_EQ(mf_run_submit(r[R_SLOT], NULL), 0);
  for (int i = R_RATE_FIRST; i <= R_RATE; i++) {
    r[i] = run_new(e, &complete_ops, "rate");
    ASSERT_EQ(mf_run_set_tags(r[i], &rate, 1), 0);
    ASSERT_EQ(mf_run_submit(r[i], NULL), 0);
  }
  r[R_PARKED] = run_start(e, &parking_ops, "parked");
  r[R_SLEEPING] = run_start(e, &sleep_ops, "sleeping");
  B(r[R_SLEEPING])->seconds = 1000;
  r[R_WAITING] = run_new(e, &wait_ops, "waiting");
  B(r[R_WAITING])->target = r[R_EXTERNAL];
  ASSERT_EQ(mf_run_submit(r[R_WAITING], NULL), 0);
  const double delay = 1000;
  mf_run_policy retry = {
      .retries = 1, .retry_delays = &delay, .retry_delay_count = 1};
  r[R_RETRY] = with_policy(e, &fail_ops, "retry", &retry);
  r[R_CLOSING] = run_new(e, &closing_flow_ops, "closing");
  B(r[R_CLOSING])->arg = e;
  mf_run_set_flags(r[R_CLOSING], MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(r[R_CLOSING], NULL), 0);
  mf_run_policy hooks = {.hooks = MF_HOOK_COMPLETED};
  r[R_HOOKS] = run_new(e, &parking_ops, "hooks");
  B(r[R_HOOKS])->param = MF_HOOK_COMPLETED;
  ASSERT_EQ(mf_run_set_policy(r[R_HOOKS], &hooks), 0);
  ASSERT_EQ(mf_run_submit(r[R_HOOKS], NULL), 0);
  mf_run_policy running = {.hooks = MF_HOOK_RUNNING};
  r[R_RUNNING_HOOKS] = run_new(e, &parking_ops, "running");
  B(r[R_RUNNING_HOOKS])->param = MF_HOOK_RUNNING;
  ASSERT_EQ(mf_run_set_policy(r[R_RUNNING_HOOKS], &running), 0);
  ASSERT_EQ(mf_run_submit(r[R_RUNNING_HOOKS], NULL), 0);
  r[R_DONE] = run_start(e, &complete_ops, "done");
  /* Drive them to where they wait. */
  while (B(r[R_PARKED])->starts == 0 || !B(r[R_CLOSING])->target ||
         B(B(r[R_CLOSING])->target)->starts == 0 ||
         mf_run_state_name(r[R_RETRY]) != MF_NAME_AWAITING_RETRY ||
         B(r[R_RUNNING_HOOKS])->hook_steps == 0 || !mf_run_is_final(r[R_DONE]))
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(mf_run_unpark(r[R_HOOKS], B(r[R_HOOKS])->ticket), 0);
  while (B(r[R_HOOKS])->hook_steps == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  r[R_CLOSING_CHILD] = B(r[R_CLOSING])->target;
  r[R_READY] = run_start(e, &complete_ops, "ready"); /* never stepped */
  ASSERT_EQ(B(r[R_RATE_FIRST])->starts, 1);
  ASSERT_EQ(B(r[R_RATE])->starts, 0);
  ASSERT_EQ(B(r[R_SLOT])->starts, 0);
  ASSERT_STATE(r[R_CLOSING], "RUNNING/Running");
  for (int i = 0; i < R_COUNT; i++)
    ASSERT_EQ(mf_run_on_done(r[i], count_done, NULL), 0);
  int steps[R_COUNT];
  for (int i = 0; i < R_COUNT; i++)
    steps[i] = B(r[i])->steps;
  /* Close while every allocation of the engine fails (closing needs none:
   * only the Cancelled entry of a history longer than its inline three,
   * retry's, asks for memory, and is dropped when refused). */
  alloc_refused = 0;
  alloc_fail = 1;
  mf_engine_close(e);
  alloc_fail = 0;
  static const int abandons[R_COUNT] = {
      [R_INPUTS] = 1,    [R_EXTERNAL] = 1,      [R_READY] = 1,
      [R_HOLDER] = 1,    [R_SLOT] = 1,          [R_RATE] = 1,
      [R_PARKED] = 1,    [R_SLEEPING] = 1,      [R_WAITING] = 1,
      [R_RETRY] = 0,     [R_CLOSING] = 0,       [R_CLOSING_CHILD] = 1,
      [R_HOOKS] = 1,     [R_RUNNING_HOOKS] = 1, [R_DONE] = 0,
      [R_RATE_FIRST] = 0};
  for (int i = 0; i < R_COUNT; i++) {
    note("%s", B(r[i])->name); /* names the run, should one fail */
    ASSERT(mf_run_is_final(r[i]));
    if (i == R_DONE || i == R_RATE_FIRST)
      ASSERT_STATE(r[i], "COMPLETED/Completed");
    else
      ASSERT_STATE(r[i], "CANCELLED/Cancelled");
    ASSERT_EQ(B(r[i])->abandons, abandons[i]);
    ASSERT_EQ(B(r[i])->steps, steps[i]); /* no step while closing */
  }
  ASSERT_STATE(unsubmitted, "PENDING/Pending");
  ASSERT_EQ(done_calls, 0); /* no callback once closed */
  /* The runs stay readable; the engine's memory goes with the last. */
  for (int i = 0; i < R_COUNT; i++)
    mf_run_unref(r[i]);
  ASSERT_EQ(done_calls, 0);
  mf_run_unref(unsubmitted);
}

/* }====== */

TEST_MAIN("cancel")
