/*
 * test_deadlock.c -- deadlock detection: a wait the engine can see will
 * never end is refused with MF_EDEADLK (waiting on itself, a cycle, a flow
 * containing the waiter, a full limit whose holders all wait); a wait
 * nothing can end once the loop is idle is woken with MF_WAKE_DEADLOCK by
 * mf_engine_run (waits in bodies first, then structural ones: inputs,
 * children); a wait with a timeout is never a deadlock.
 */
#include <math.h>

#include "fixture.h"

/* {====== A waiting body ====== */

/* Waits for b->target (and b->arg, a second run, if set) in mode b->param
 * with timeout b->seconds (< 0: none); logs what the wait returned and why
 * it woke; ends FAILED when refused or woken by a deadlock. */
static mf_run *complete_on_deadlock; /* completed by a woken body */

static void waiter_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    mf_run *targets[2] = {b->target, b->arg};
    b->rc = mf_run_wait(run, targets, b->arg ? 2 : 1, (mf_wait_mode)b->param,
                        b->seconds);
    note("%s:rc=%s", b->name, mf_err_name(b->rc));
    if (b->rc != 0)
      mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  static const char *why[] = {"none", "done", "timeout", "deadlock"};
  note("%s:woke=%s", b->name, why[b->woke]);
  if (b->woke == MF_WAKE_DEADLOCK && complete_on_deadlock) {
    mf_run_finish(complete_on_deadlock, MF_COMPLETED, MF_NAME_COMPLETED);
    complete_on_deadlock = NULL;
  }
  mf_run_finish(run, b->woke == MF_WAKE_DEADLOCK ? MF_FAILED : MF_COMPLETED,
                b->woke == MF_WAKE_DEADLOCK ? MF_NAME_FAILED
                                            : MF_NAME_COMPLETED);
}
static const mf_run_ops waiter_ops = {.step = waiter_step,
                                      .abandon = count_abandon};

static mf_run *waiter(mf_engine *e, const char *name, mf_run *target) {
  mf_run *run = run_new(e, &waiter_ops, name);
  B(run)->target = target;
  B(run)->param = MF_WAIT_ALL;
  B(run)->seconds = -1;
  return run;
}

static mf_run *external(mf_engine *e) {
  mf_run *run = mf_run_new(e, NULL, 0);
  ASSERT(run != NULL);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

/* }====== */

/* {====== Refused at once ====== */

TEST(self_wait) {
  mf_engine *e = engine_new();
  mf_run *run = waiter(e, "a", NULL);
  B(run)->target = run;
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  wait_final(e, run);
  ASSERT_LOG("a:start1 a:rc=EDEADLK");
  ASSERT_STATE(run, "FAILED/Failed");
  ASSERT_EQ(B(run)->steps, 1);
  mf_run_unref(run);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(cycle_of_two) {
  mf_engine *e = engine_new();
  mf_run *a = waiter(e, "a", NULL), *b = waiter(e, "b", a);
  B(a)->target = b;
  ASSERT_EQ(mf_run_submit(a, NULL), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:rc=OK b:start1 b:rc=EDEADLK a:resume a:woke=done");
  ASSERT_STATE(a, "COMPLETED/Completed");
  ASSERT_STATE(b, "FAILED/Failed");
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(cycle_of_three) {
  mf_engine *e = engine_new();
  mf_run *a = waiter(e, "a", NULL), *b = waiter(e, "b", NULL),
         *c = waiter(e, "c", NULL);
  B(a)->target = b;
  B(b)->target = c;
  B(c)->target = a;
  ASSERT_EQ(mf_run_submit(a, NULL), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  ASSERT_EQ(mf_run_submit(c, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:rc=OK b:start1 b:rc=OK c:start1 c:rc=EDEADLK "
             "b:resume b:woke=done a:resume a:woke=done");
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_unref(c);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* A flow finishes after everything inside it: waiting on it from inside
 * can never end.  A task does not wait for its children: waiting on it
 * from its child is fine. */
static mf_run *inside[2]; /* the task, its child */
static void flow_body_step(mf_run *run, mf_step_reason reason);
static void task_body_step(mf_run *run, mf_step_reason reason);
static const mf_run_ops flow_body_ops = {.step = flow_body_step};
static const mf_run_ops task_body_ops = {.step = task_body_step};

static void flow_body_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  mf_engine *e = B(run)->arg;
  if (reason == MF_STEP_START) {
    mf_run *direct = waiter(e, "child", run);
    ASSERT_EQ(mf_run_submit(direct, NULL), 0);
    mf_run_unref(direct);
    inside[0] = run_new(e, &task_body_ops, "task");
    B(inside[0])->arg = run;
    ASSERT_EQ(mf_run_submit(inside[0], NULL), 0);
    B(run)->rc = mf_run_wait_children(run);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

/* Starts a grandchild of the flow waiting on the flow, and one waiting on
 * itself (the task), then parks until unparked. */
static void task_body_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    mf_engine *e = B(B(run)->arg)->arg;
    mf_run *grandchild = waiter(e, "grandchild", B(run)->arg);
    ASSERT_EQ(mf_run_submit(grandchild, NULL), 0);
    mf_run_unref(grandchild);
    inside[1] = waiter(e, "on_task", run);
    ASSERT_EQ(mf_run_submit(inside[1], NULL), 0);
    B(run)->rc = mf_run_park(run, -1, &B(run)->ticket);
    return;
  }
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}

TEST(flow_containing_the_waiter) {
  mf_engine *e = engine_new();
  mf_run *flow = run_new(e, &flow_body_ops, "flow");
  B(flow)->arg = e;
  mf_run_set_flags(flow, MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  while (!inside[1] || B(inside[1])->starts == 0)
    ASSERT_GE(mf_engine_step(e), 0);
  ASSERT_EQ(mf_run_unpark(inside[0], B(inside[0])->ticket), 0);
  wait_final(e, flow);
  ASSERT_LOG("flow:start1 child:start1 child:rc=EDEADLK task:start1 "
             "grandchild:start1 grandchild:rc=EDEADLK on_task:start1 "
             "on_task:rc=OK task:resume on_task:resume on_task:woke=done "
             "flow:resume");
  ASSERT_STATE(flow, "COMPLETED/Completed");
  ASSERT_STATE(inside[1], "COMPLETED/Completed");
  mf_run_unref(inside[0]);
  mf_run_unref(inside[1]);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* An input that is a flow containing the new run: refused at submit; the
 * run may be submitted at the top level instead. */
static mf_run *refused;
static void submit_inside_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  refused = run_new(B(run)->arg, &complete_ops, "late");
  ASSERT_EQ(mf_run_add_input(refused, run, 0), 0);
  B(run)->rc = mf_run_submit(refused, NULL);
  mf_run_set_flags(refused, MF_RUN_ROOT);
  ASSERT_EQ(mf_run_submit(refused, NULL), 0);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops submit_inside_ops = {.step = submit_inside_step};

TEST(input_is_a_flow_containing_the_run) {
  mf_engine *e = engine_new();
  mf_run *flow = run_new(e, &submit_inside_ops, "flow");
  B(flow)->arg = e;
  mf_run_set_flags(flow, MF_RUN_FLOW);
  ASSERT_EQ(mf_run_submit(flow, NULL), 0);
  refused = NULL;
  while (!refused)
    ASSERT_GE(mf_engine_step(e), 0);
  wait_final(e, refused);
  ASSERT_EQ(B(flow)->rc, MF_EDEADLK);
  ASSERT_PTR_EQ(mf_run_parent(refused), NULL);
  ASSERT_STATE(refused, "COMPLETED/Completed");
  ASSERT_LOG("flow:start1 late:start1");
  mf_run_unref(refused);
  mf_run_unref(flow);
  mf_engine_close(e);
}

/* A run holding a slot of a full limit waits on a run that needs it,
 * while every other holder waits too: refused. */
static void limited_step(mf_run *run, mf_step_reason reason) {
  body *b = B(run);
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    static const char *tag = "t";
    mf_run *inner = run_new(b->arg, &complete_ops, NULL);
    ASSERT_EQ(mf_run_set_tags(inner, &tag, 1), 0);
    ASSERT_EQ(mf_run_submit(inner, NULL), 0);
    b->target = inner;
    b->rc = mf_run_wait(run, &inner, 1, MF_WAIT_ALL, b->seconds);
    note("%s:rc=%s", b->name, mf_err_name(b->rc));
    if (b->rc != 0)
      mf_run_finish(run, MF_FAILED, MF_NAME_FAILED);
    return;
  }
  note("%s:woke=%d", b->name, b->woke);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops limited_ops = {.step = limited_step};

static mf_run *limited(mf_engine *e, const char *name, double timeout) {
  static const char *tag = "t";
  mf_run *run = run_new(e, &limited_ops, name);
  B(run)->arg = e;
  B(run)->seconds = timeout;
  ASSERT_EQ(mf_run_set_tags(run, &tag, 1), 0);
  ASSERT_EQ(mf_run_submit(run, NULL), 0);
  return run;
}

TEST(limit_deadlock) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_limit_set(e, "t", 1), 0);
  mf_run *a = limited(e, "a", -1);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:rc=EDEADLK");
  ASSERT_STATE(B(a)->target, "COMPLETED/Completed"); /* once a let go */
  mf_run_unref(B(a)->target);
  mf_run_unref(a);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(limit_deadlock_when_every_holder_waits) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_limit_set(e, "t", 2), 0);
  mf_run *a = limited(e, "a", -1), *b = limited(e, "b", -1);
  ASSERT_EQ(mf_engine_run(e), 0);
  /* a waits (b's slot could come free), b cannot: refused; then a's inner
   * run gets b's slot. */
  ASSERT_LOG("a:start1 a:rc=OK b:start1 b:rc=EDEADLK a:resume a:woke=1");
  ASSERT_STATE(a, "COMPLETED/Completed");
  ASSERT_STATE(b, "FAILED/Failed");
  mf_run_unref(B(a)->target);
  mf_run_unref(B(b)->target);
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* }====== */

/* {====== Woken when the loop is idle ====== */

TEST(external_future_nobody_completes) {
  mf_engine *e = engine_new();
  mf_run *x = external(e);
  mf_run *w = waiter(e, "w", x);
  ASSERT_EQ(mf_run_submit(w, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("w:start1 w:rc=OK w:resume w:woke=deadlock");
  ASSERT_STATE(w, "FAILED/Failed");
  ASSERT(!mf_run_is_final(x));
  ASSERT_EQ(mf_engine_run(e), 0); /* nothing parked: returns */
  ASSERT_EQ(mf_engine_wait(e, &x, 1, MF_WAIT_ALL, -1), MF_EDEADLK);
  ASSERT_EQ(mf_engine_wait(e, &x, 1, MF_WAIT_ALL, 0.01), MF_ETIMEDOUT);
  mf_run_finish(x, MF_COMPLETED, MF_NAME_COMPLETED);
  ASSERT_EQ(mf_engine_wait(e, &x, 1, MF_WAIT_ALL, -1), 0);
  mf_run_unref(w);
  mf_run_unref(x);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Bodies are woken first: one that completes the future lets a run
 * waiting on it as an input start normally. */
TEST(bodies_woken_before_inputs) {
  mf_engine *e = engine_new();
  mf_run *x = external(e);
  mf_run *w = waiter(e, "w", x);
  ASSERT_EQ(mf_run_submit(w, NULL), 0);
  mf_run *in = run_new(e, &complete_ops, "in");
  ASSERT_EQ(mf_run_add_input(in, x, 0), 0);
  ASSERT_EQ(mf_run_submit(in, NULL), 0);
  complete_on_deadlock = x;
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("w:start1 w:rc=OK w:resume w:woke=deadlock in:start1");
  ASSERT_STATE(in, "COMPLETED/Completed");
  ASSERT_EQ(mf_run_error_code(in), 0);
  mf_run_unref(w);
  mf_run_unref(in);
  mf_run_unref(x);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* Only structural waits left: the run's inputs can never finish. */
TEST(inputs_that_never_finish) {
  mf_engine *e = engine_new();
  mf_run *x = external(e);
  mf_run *in = run_new(e, &complete_ops, "in");
  ASSERT_EQ(mf_run_add_input(in, x, 0), 0);
  ASSERT_EQ(mf_run_submit(in, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_STATE(in, "FAILED/Failed");
  ASSERT_EQ(mf_run_error_code(in), MF_EDEADLK);
  ASSERT_HISTORY(in, "Pending Failed");
  ASSERT_EQ(B(in)->steps, 0);
  ASSERT_EQ(B(in)->abandons, 1);
  mf_run_unref(in);
  mf_run_unref(x);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* A task waiting for its children, one of which waits on a future no one
 * completes: the child's wait is woken, then the task's ends normally. */
static void parent_wait_step(mf_run *run, mf_step_reason reason) {
  count_step(run, reason);
  if (reason == MF_STEP_START) {
    mf_run *child = waiter(B(run)->arg, "child", B(run)->target);
    ASSERT_EQ(mf_run_submit(child, NULL), 0);
    mf_run_unref(child);
    B(run)->rc = mf_run_wait_children(run);
    return;
  }
  note("parent:woke=%d", B(run)->woke);
  mf_run_finish(run, MF_COMPLETED, MF_NAME_COMPLETED);
}
static const mf_run_ops parent_wait_ops = {.step = parent_wait_step};

TEST(children_wait_woken_after_the_bodies) {
  mf_engine *e = engine_new();
  mf_run *x = external(e);
  mf_run *parent = run_new(e, &parent_wait_ops, "parent");
  B(parent)->arg = e;
  B(parent)->target = x;
  ASSERT_EQ(mf_run_submit(parent, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("parent:start1 child:start1 child:rc=OK child:resume "
             "child:woke=deadlock parent:resume parent:woke=1");
  ASSERT_STATE(parent, "COMPLETED/Completed");
  mf_run_unref(parent);
  mf_run_unref(x);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* A cycle through a wait for any of several is not refused (the other
 * target could end it); once the loop is idle, one of the cycle is woken
 * and the other then ends normally. */
TEST(cycle_through_wait_any_woken) {
  mf_engine *e = engine_new();
  mf_run *x = external(e);
  mf_run *a = waiter(e, "a", NULL), *b = waiter(e, "b", a);
  B(a)->target = b;
  B(a)->arg = x;
  B(a)->param = MF_WAIT_ANY;
  ASSERT_EQ(mf_run_submit(a, NULL), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT(mf_run_is_final(a) && mf_run_is_final(b));
  int deadlocks =
          (B(a)->woke == MF_WAKE_DEADLOCK) + (B(b)->woke == MF_WAKE_DEADLOCK),
      done = (B(a)->woke == MF_WAKE_DONE) + (B(b)->woke == MF_WAKE_DONE);
  ASSERT_EQ(deadlocks, 1);
  ASSERT_EQ(done, 1);
  ASSERT(!mf_run_is_final(x));
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_unref(x);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

/* }====== */

/* {====== Waits with a timeout ====== */

TEST(wait_with_timeout_never_a_deadlock) {
  mf_engine *e = engine_new();
  mf_run *self = waiter(e, "self", NULL);
  B(self)->target = self;
  B(self)->seconds = 0.01;
  ASSERT_EQ(mf_run_submit(self, NULL), 0);
  mf_run *x = external(e);
  mf_run *on_x = waiter(e, "on_x", x);
  B(on_x)->seconds = 0.02;
  ASSERT_EQ(mf_run_submit(on_x, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("self:start1 self:rc=OK on_x:start1 on_x:rc=OK self:resume "
             "self:woke=timeout on_x:resume on_x:woke=timeout");
  ASSERT_STATE(self, "COMPLETED/Completed");
  ASSERT_STATE(on_x, "COMPLETED/Completed");
  mf_run_unref(self);
  mf_run_unref(on_x);
  mf_run_unref(x);
  mf_engine_close(e);
}

/* A cycle whose one edge has a timeout: the other wait is not refused,
 * the timed one ends it. */
TEST(cycle_with_a_timeout_not_refused) {
  mf_engine *e = engine_new();
  mf_run *a = waiter(e, "a", NULL), *b = waiter(e, "b", a);
  B(a)->target = b;
  B(a)->seconds = 0.01;
  ASSERT_EQ(mf_run_submit(a, NULL), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:rc=OK b:start1 b:rc=OK a:resume a:woke=timeout "
             "b:resume b:woke=done");
  mf_run_unref(a);
  mf_run_unref(b);
  mf_engine_close(e);
}

/* A timeout past the clamp (31 years: 1e9 s, math.huge) is none: the
 * wait is a dependency, and a cycle through it is refused. */
TEST(a_timeout_past_the_clamp_is_none) {
  mf_engine *e = engine_new();
  mf_run *self = waiter(e, "self", NULL);
  B(self)->target = self;
  B(self)->seconds = INFINITY;
  ASSERT_EQ(mf_run_submit(self, NULL), 0);
  wait_final(e, self);
  mf_run *a = waiter(e, "a", NULL), *b = waiter(e, "b", a);
  B(a)->target = b;
  B(a)->seconds = 1e9;
  ASSERT_EQ(mf_run_submit(a, NULL), 0);
  ASSERT_EQ(mf_run_submit(b, NULL), 0);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("self:start1 self:rc=EDEADLK a:start1 a:rc=OK b:start1 "
             "b:rc=EDEADLK a:resume a:woke=done");
  /* At top level too: a wait on a run nothing completes is a deadlock. */
  mf_run *x = external(e);
  ASSERT_EQ(mf_engine_wait(e, &x, 1, MF_WAIT_ALL, INFINITY), MF_EDEADLK);
  mf_run_finish(x, MF_COMPLETED, MF_NAME_COMPLETED);
  mf_run_unref(self);
  mf_run_unref(a);
  mf_run_unref(b);
  mf_run_unref(x);
  mf_run_clear_unhandled(e, NULL);
  mf_engine_close(e);
}

TEST(limit_wait_with_timeout_not_refused) {
  mf_engine *e = engine_new();
  ASSERT_EQ(mf_limit_set(e, "t", 1), 0);
  mf_run *a = limited(e, "a", 0.01);
  ASSERT_EQ(mf_engine_run(e), 0);
  ASSERT_LOG("a:start1 a:rc=OK a:resume a:woke=2");
  mf_run_unref(B(a)->target);
  mf_run_unref(a);
  mf_engine_close(e);
}

/* }====== */

TEST_MAIN("deadlock")
