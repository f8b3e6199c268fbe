/*
 * test.h -- the harness every C test uses.
 *
 *   TEST(name) { ... }   defines a test (registered before main runs)
 *   ASSERT(cond)         stops the test when cond is false
 *   ASSERT_EQ(a, b)      ... and ASSERT_NE/LT/LE/GT/GE: integers, both
 *                        values printed (and, for MF_E* codes, their names)
 *   ASSERT_DBL(a, op, b) doubles, both values printed
 *   ASSERT_STR_EQ(a, b)  strings; ASSERT_PTR_EQ(a, b) pointers
 *   CHECK(cond)          records the failure and goes on (to clean up)
 *   TEST_MAIN("suite")   the main function
 *
 * Every failure prints file:line, the expression and the values.  ASSERT
 * leaves the test with a longjmp, so helpers of any type may use it; only
 * on the test's own thread (other threads count, and the test checks).
 *
 * Each test runs in a child process of its own, with an alarm: a crash or a
 * hang fails that test only, and under the sanitizers each child's leak
 * check is its own.  The runner prints "ok" or "FAIL" per test.
 *   test_x                runs every test, in the order of the file
 *   test_x NAME...        runs those tests only
 *   test_x --list         prints the names
 *   MF_TEST_NOFORK=1      runs them in this process (for a debugger)
 *   MF_TEST_TIMEOUT=secs  a child's time limit (default 300)
 */
#ifndef MF_TEST_H
#define MF_TEST_H

#include "moonflow.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MF_TEST_UNUSED __attribute__((unused))
#define MF_TEST_MAX 256

typedef struct mf_test_case {
  const char *name;
  void (*fn)(void);
  int line;
} mf_test_case;

static mf_test_case mf_test_cases[MF_TEST_MAX];
static int mf_test_count;
static int mf_test_failures; /* failures of the test running now */
static jmp_buf mf_test_jump;

MF_TEST_UNUSED static void mf_test_register(const char *name, void (*fn)(void),
                                            int line) {
  if (mf_test_count == MF_TEST_MAX) {
    fprintf(stderr, "test.h: more than %d tests\n", MF_TEST_MAX);
    exit(2);
  }
  mf_test_cases[mf_test_count++] = (mf_test_case){name, fn, line};
}

#define TEST(name)                                                             \
  static void test_##name(void);                                               \
  __attribute__((constructor)) static void mf_test_register_##name(void) {     \
    mf_test_register(#name, test_##name, __LINE__);                            \
  }                                                                            \
  static void test_##name(void)

/* {====== Failures ====== */

__attribute__((format(printf, 3, 4))) MF_TEST_UNUSED static void
mf_test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  mf_test_failures++;
}

__attribute__((noreturn)) MF_TEST_UNUSED static void mf_test_stop(void) {
  longjmp(mf_test_jump, 1);
}

/* An MF_E* code's name, for values that may be one. */
MF_TEST_UNUSED static const char *mf_test_code(long long v) {
  return v < 0 && v >= -8 ? mf_err_name((int)v) : NULL;
}

MF_TEST_UNUSED static void mf_test_fail_int(const char *file, int line,
                                            const char *what, long long a,
                                            long long b) {
  const char *ca = mf_test_code(a), *cb = mf_test_code(b);
  if (ca && cb)
    mf_test_fail(file, line, "%s: %lld (%s) vs %lld (%s)", what, a, ca, b, cb);
  else
    mf_test_fail(file, line, "%s: %lld vs %lld", what, a, b);
}

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      mf_test_fail(__FILE__, __LINE__, "check failed: %s", #cond);             \
  } while (0)

#define ASSERT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      mf_test_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);         \
      mf_test_stop();                                                          \
    }                                                                          \
  } while (0)

#define ASSERT_CMP(a, op, b)                                                   \
  do {                                                                         \
    long long mf_a_ = (long long)(a), mf_b_ = (long long)(b);                  \
    if (!(mf_a_ op mf_b_)) {                                                   \
      mf_test_fail_int(__FILE__, __LINE__, "ASSERT(" #a " " #op " " #b ")",    \
                       mf_a_, mf_b_);                                          \
      mf_test_stop();                                                          \
    }                                                                          \
  } while (0)
#define ASSERT_EQ(a, b) ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP(a, >=, b)

#define ASSERT_DBL(a, op, b)                                                   \
  do {                                                                         \
    double mf_a_ = (double)(a), mf_b_ = (double)(b);                           \
    if (!(mf_a_ op mf_b_)) {                                                   \
      mf_test_fail(__FILE__, __LINE__,                                         \
                   "ASSERT(" #a " " #op " " #b "): %.6g vs %.6g", mf_a_,       \
                   mf_b_);                                                     \
      mf_test_stop();                                                          \
    }                                                                          \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                    \
  do {                                                                         \
    const char *mf_a_ = (a), *mf_b_ = (b);                                     \
    if (!mf_a_ || !mf_b_ || strcmp(mf_a_, mf_b_) != 0) {                       \
      mf_test_fail(__FILE__, __LINE__,                                         \
                   "ASSERT_STR_EQ(" #a ", " #b "):\n  got:      \"%s\"\n"      \
                   "  expected: \"%s\"",                                       \
                   mf_a_ ? mf_a_ : "(null)", mf_b_ ? mf_b_ : "(null)");        \
      mf_test_stop();                                                          \
    }                                                                          \
  } while (0)

#define ASSERT_PTR_EQ(a, b)                                                    \
  do {                                                                         \
    const void *mf_a_ = (a), *mf_b_ = (b);                                     \
    if (mf_a_ != mf_b_) {                                                      \
      mf_test_fail(__FILE__, __LINE__,                                         \
                   "ASSERT_PTR_EQ(" #a ", " #b "): %p vs %p", mf_a_, mf_b_);   \
      mf_test_stop();                                                          \
    }                                                                          \
  } while (0)

/* }====== */

/* {====== Runner ====== */

/* Runs the test here; returns its failure count. */
MF_TEST_UNUSED static int mf_test_run_here(const mf_test_case *t) {
  mf_test_failures = 0;
  if (setjmp(mf_test_jump) == 0)
    t->fn();
  return mf_test_failures;
}

/* Runs the test in a child process; returns 0 when it passed. */
MF_TEST_UNUSED static int mf_test_run_forked(const mf_test_case *t,
                                             unsigned timeout) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    alarm(timeout);
    int failed = mf_test_run_here(t);
    fflush(NULL);
    if (failed)
      _exit(1); /* no leak report for a test stopped half-way */
    exit(0);    /* the sanitizers' exit checks run */
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    perror("waitpid");
    return 1;
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    if (sig == SIGALRM)
      fprintf(stderr, "%s: still running after %u s (MF_TEST_TIMEOUT)\n",
              t->name, timeout);
    else
      fprintf(stderr, "%s: killed by signal %d (%s)\n", t->name, sig,
              strsignal(sig));
    return 1;
  }
  if (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 1)
    fprintf(stderr, "%s: exit status %d\n", t->name, WEXITSTATUS(status));
  return WEXITSTATUS(status) != 0;
}

static int mf_test_by_line(const void *a, const void *b) {
  return ((const mf_test_case *)a)->line - ((const mf_test_case *)b)->line;
}

MF_TEST_UNUSED static int mf_test_main(const char *suite, int argc,
                                       char **argv) {
  /* Constructors may run in any order: the file's order is the lines'. */
  qsort(mf_test_cases, (size_t)mf_test_count, sizeof *mf_test_cases,
        mf_test_by_line);
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (int i = 0; i < mf_test_count; i++)
      printf("%s\n", mf_test_cases[i].name);
    return 0;
  }
  for (int a = 1; a < argc; a++) {
    int known = 0;
    for (int i = 0; i < mf_test_count; i++)
      known |= strcmp(argv[a], mf_test_cases[i].name) == 0;
    if (!known) {
      fprintf(stderr, "%s: no test named %s (--list lists them)\n", suite,
              argv[a]);
      return 2;
    }
  }
  const char *nofork = getenv("MF_TEST_NOFORK");
  const char *limit = getenv("MF_TEST_TIMEOUT");
  int in_process = nofork && *nofork && strcmp(nofork, "0") != 0;
  unsigned timeout = limit && atoi(limit) > 0 ? (unsigned)atoi(limit) : 300;
  int failed = 0, ran = 0;
  for (int i = 0; i < mf_test_count; i++) {
    const mf_test_case *t = &mf_test_cases[i];
    int wanted = argc < 2;
    for (int a = 1; a < argc; a++)
      wanted |= strcmp(argv[a], t->name) == 0;
    if (!wanted)
      continue;
    ran++;
    int bad =
        in_process ? mf_test_run_here(t) != 0 : mf_test_run_forked(t, timeout);
    printf("%s %s\n", bad ? "FAIL" : "ok  ", t->name);
    fflush(stdout);
    failed += bad;
  }
  if (failed)
    printf("%s: %d of %d tests failed\n", suite, failed, ran);
  else
    printf("%s: all %d tests passed\n", suite, ran);
  return failed ? 1 : 0;
}

#define TEST_MAIN(suite)                                                       \
  int main(int argc, char **argv) { return mf_test_main(suite, argc, argv); }

/* }====== */

#endif
