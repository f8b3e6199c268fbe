/*
 * control.c -- what keeps runs under control from C: the instruction-count
 * hook that parks a run computing past its time slice and stops one past its
 * timeout, and the primitives the controlled body (lua/moonflow/control.lua)
 * uses for attempts, states and deadlines.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "binding.h"

#define MFL_DEFAULT_SLICE 0.010

static mfl_state *hook_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S && !S->closed ? S : NULL;
}

/*
 * Preemption without paying for it on every instruction: a count hook makes
 * Lua trace every VM instruction (running CPU-bound code twice as slowly),
 * so it is installed only on a run that has been executing for a while.  A
 * periodic timer signal, delivered to the loop thread every half slice,
 * notices a step that has not ended since the last tick and sets the hook
 * on its coroutine -- the technique of lua.c's Ctrl-C handler (lua_sethook
 * is the one Lua call meant for a signal handler).  The hook then stops a
 * run past its deadline, and parks one that computed for a whole slice.
 */

static mfl_state *tick_owner; /* the state whose runs the ticks watch */
static timer_t tick_timer;
static struct sigaction tick_previous;

static double monotonic_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * A run past its deadline gets TimedOut raised where it computes, again at
 * every check if it catches it.  A run that computed for a whole slice is
 * parked (a yield from the hook, which Lua allows for count hooks) unless
 * it is inside a C call that cannot yield; its timeout still stops it.
 */
static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mfl_state *S = hook_state(L);
  if (!S)
    return;
  mf_run *run = mf_engine_current(S->engine);
  if (!run)
    return;
  double now = mf_engine_now(S->engine);
  double deadline = mf_run_deadline(run);
  mfl_run *lr = mf_run_body(run);
  /* Each is raised once: the body's own clean-up (hooks, retries) runs
   * on this coroutine too and must not be interrupted again. */
  if (mf_run_cancel_requested(run) &&
      (mf_run_flags(run) & MF_RUN_CANCEL_IN_BODY) && lr->co == L &&
      !lr->cancel_raised) {
    lr->cancel_raised = 1;
    char name[256];
    mf_run_name(run, name, sizeof name);
    mfl_raise(L, "Cancelled", "run %s was cancelled", name);
    return;
  }
  if (mf_run_timed_out(run) || (deadline >= 0 && now >= deadline)) {
    if (!lr->timeout_raised) {
      lr->timeout_raised = 1;
      mfl_raise_timed_out(L, run);
      return;
    }
    /* Past its deadline by a whole slice more, it caught the error and
     * computes on: it is stopped for good (a yield it never comes back
     * from; the run ends TimedOut). */
    if (lr->co == L && deadline >= 0 && now >= deadline + S->slice &&
        lua_isyieldable(L)) {
      S->killed = 1;
      mf_engine_end_pass(S->engine);
      lua_yield(L, 0);
    }
    return;
  }
  if (lr->co != L || S->callback_depth > 0) {
    /* A coroutine of the user's: only its own resumer can park it.  With no
     * deadline to watch, the hook goes (it slows every instruction); the
     * next tick puts it back if need be. */
    if (deadline < 0 && S->hooked_co == L) {
      lua_sethook(L, NULL, 0, 0);
      S->tick_hooked = 0;
    }
    return;
  }
  /* tick_since is when a tick first saw the step: on average a quarter
   * slice after it began (ticks come every half slice). */
  if (now - S->tick_since >= 0.75 * S->slice && lua_isyieldable(L)) {
    mf_engine_end_pass(S->engine); /* let timers and I/O have their turn */
    S->preempted = 1;
    lua_yield(L, 0);
    return;
  }
}

static void on_tick(int sig) {
  (void)sig;
  mfl_state *S = tick_owner;
  if (!S)
    return;
  lua_State *co = S->running_co;
  unsigned long step = S->steps;
  if (!co)
    return;
  if (step != S->tick_step) { /* a new step: its clock starts now */
    S->tick_step = step;
    S->tick_since = monotonic_now();
    return;
  }
  if (!S->tick_hooked && monotonic_now() - S->tick_since >= S->slice / 2) {
    S->tick_hooked = 1;
    S->hooked_co = co;
    lua_sethook(co, hook, LUA_MASKCOUNT, 100);
  }
}

static void arm_ticks(mfl_state *S) {
  double half = S->slice / 2;
  struct itimerspec spec;
  spec.it_interval.tv_sec = (time_t)half;
  spec.it_interval.tv_nsec = (long)((half - (double)(time_t)half) * 1e9);
  if (spec.it_interval.tv_sec == 0 && spec.it_interval.tv_nsec < 100000)
    spec.it_interval.tv_nsec = 100000;
  spec.it_value = spec.it_interval;
  timer_settime(tick_timer, 0, &spec, NULL);
}

/* The first state to open watches its runs; others run without
 * preemption (one timer signal per process). */
static void start_ticks(mfl_state *S) {
  if (tick_owner)
    return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_tick;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGVTALRM, &sa, &tick_previous) != 0)
    return;
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = SIGVTALRM;
  ev._sigev_un._tid = (pid_t)syscall(SYS_gettid); /* the loop thread */
  if (timer_create(CLOCK_MONOTONIC, &ev, &tick_timer) != 0) {
    sigaction(SIGVTALRM, &tick_previous, NULL);
    return;
  }
  tick_owner = S;
  arm_ticks(S);
}

void mfl_stop_ticks(mfl_state *S) {
  if (tick_owner != S)
    return;
  timer_delete(tick_timer);
  sigaction(SIGVTALRM, &tick_previous, NULL);
  tick_owner = NULL;
}

/* After a step: the hook goes, so the next run on this coroutine runs at
 * full speed. */
/* A preempted run that was cancelled meanwhile: its body learns it from the
 * hook, at once. */
void mfl_deliver_cancel(mfl_state *S, lua_State *co) {
  S->tick_hooked = 1;
  S->hooked_co = co;
  lua_sethook(co, hook, LUA_MASKCOUNT, 1);
}

void mfl_step_ended(mfl_state *S, lua_State *co) {
  (void)co;
  S->running_co = NULL;
  if (S->tick_hooked) {
    lua_sethook(S->hooked_co, NULL, 0, 0);
    S->tick_hooked = 0;
  }
}

/* {====== coroutine.resume and coroutine.wrap ======
 *
 * The user's own coroutines inside a run: the ticks must watch the one
 * executing, or a loop inside one could never be stopped.  These replace
 * the standard functions and behave as they do (lcorolib.c), noting which
 * coroutine runs while one is resumed inside a step. */

static int resume_tracked(lua_State *L, lua_State *co, int narg) {
  mfl_state *S = hook_state(L);
  lua_State *outer = S ? S->running_co : NULL;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  if (outer)
    S->running_co = co;
  int nres, status = lua_resume(co, L, narg, &nres);
  if (outer) {
    if (S->tick_hooked && S->hooked_co == co) {
      lua_sethook(co, NULL, 0, 0); /* the outer one gets it next tick */
      S->tick_hooked = 0;
    }
    S->running_co = outer;
  }
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1); /* the error */
  return -1;
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  int r = resume_tracked(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_wrapped(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = resume_tracked(L, co, lua_gettop(L));
  if (r >= 0)
    return r;
  int status = lua_status(co);
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_resetthread(co); /* close its variables, as lcorolib does */
    if (lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
  }
  return lua_error(L);
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_wrapped, 1);
  return 1;
}

static void replace_coroutine_functions(lua_State *L) {
  lua_getglobal(L, "coroutine");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushcfunction(L, co_resume);
  lua_setfield(L, -2, "resume");
  lua_pushcfunction(L, co_wrap);
  lua_setfield(L, -2, "wrap");
  lua_pop(L, 1);
}

/* }====== */

/* {====== Primitives for the controlled body ====== */

static mf_run *need_run(lua_State *L, mfl_state *S, const char *what) {
  mf_run *run = mfl_current_run(L, S);
  if (!run)
    mfl_raise(L, "UsageError", "%s can only be called inside a run", what);
  return run;
}

/* core.attempt() -> the current run's attempt number */
static int l_attempt(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_pushinteger(L, mf_run_attempt(need_run(L, S, "attempt")));
  return 1;
}

/* core.next_attempt(): Retrying, attempt + 1 */
static int l_next_attempt(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run_next_attempt(need_run(L, S, "next_attempt"));
  return 0;
}

/* core.awaiting_retry(): the AwaitingRetry state */
static int l_awaiting_retry(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run_set_state(need_run(L, S, "awaiting_retry"), MF_SCHEDULED,
                   MF_NAME_AWAITING_RETRY);
  return 0;
}

/* core.set_deadline(seconds), core.clear_deadline() */
static int l_set_deadline(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = need_run(L, S, "set_deadline");
  ((mfl_run *)mf_run_body(run))->timeout_raised = 0;
  if (mf_run_set_deadline(run, luaL_checknumber(L, 1)) != 0)
    return luaL_error(L, "moonflow: out of memory");
  return 0;
}

static int l_clear_deadline(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run_clear_deadline(need_run(L, S, "clear_deadline"));
  return 0;
}

/* core.timed_out() -> whether the current run's deadline passed */
static int l_timed_out(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = need_run(L, S, "timed_out");
  double deadline = mf_run_deadline(run);
  lua_pushboolean(L,
                  mf_run_timed_out(run) ||
                      (deadline >= 0 && mf_engine_now(S->engine) >= deadline));
  return 1;
}

/* core.configure{ slice = seconds } */
static int l_configure(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (!lua_istable(L, 1))
    return mfl_raise(L, "UsageError", "mf.configure expects a table, got %s",
                     luaL_typename(L, 1));
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    const char *key =
        lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(key, "slice") != 0)
      return mfl_raise(L, "UsageError", "unknown configure option '%s'", key);
    if (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) > 0))
      return mfl_raise(L, "UsageError",
                       "configure option 'slice' must be a number > 0");
    S->slice = lua_tonumber(L, -1);
    if (tick_owner == S)
      arm_ticks(S);
    lua_pop(L, 1);
  }
  return 0;
}

/* core.limit(tag, n) */
static const char *check_tag(lua_State *L, const char *what) {
  if (lua_type(L, 1) != LUA_TSTRING)
    mfl_raise(L, "UsageError", "%s: the tag must be a string, got %s", what,
              luaL_typename(L, 1));
  return lua_tostring(L, 1);
}

static int l_limit(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *tag = check_tag(L, "mf.limit");
  if (!lua_isinteger(L, 2) || lua_tointeger(L, 2) < 0)
    return mfl_raise(L, "UsageError",
                     "mf.limit: the limit of '%s' must be an integer >= 0",
                     tag);
  if (mf_limit_set(S->engine, tag, (size_t)lua_tointeger(L, 2)) != 0)
    return luaL_error(L, "moonflow: out of memory");
  return 0;
}

/* core.rate_limit(tag, per_second) */
static int l_rate_limit(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *tag = check_tag(L, "mf.rate_limit");
  double rate = lua_isnumber(L, 2) ? lua_tonumber(L, 2) : -1;
  if (!(rate > 0))
    return mfl_raise(L, "UsageError",
                     "mf.rate_limit: the rate of '%s' must be a number > 0",
                     tag);
  if (mf_rate_limit_set(S->engine, tag, rate) != 0)
    return luaL_error(L, "moonflow: out of memory");
  return 0;
}

/* core.limits() -> { [tag] = { capacity, holders, waiters, per_second } } */
static int l_limits(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  size_t n = mf_limit_each(S->engine, NULL, 0);
  mf_limit_info *info = lua_newuserdatauv(L, (n ? n : 1) * sizeof *info, 0);
  mf_limit_each(S->engine, info, n);
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 4);
    if (info[i].capacity >= 0) {
      lua_pushinteger(L, info[i].capacity);
      lua_setfield(L, -2, "capacity");
    }
    lua_pushinteger(L, (lua_Integer)info[i].holders);
    lua_setfield(L, -2, "holders");
    lua_pushinteger(L, (lua_Integer)info[i].waiters);
    lua_setfield(L, -2, "waiters");
    if (info[i].per_second > 0) {
      lua_pushnumber(L, info[i].per_second);
      lua_setfield(L, -2, "per_second");
    }
    lua_setfield(L, -2, info[i].tag);
  }
  return 1;
}

/* core.release_slots(); core.acquire_slots() parks until it holds them */
static int l_release_slots(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run_release_slots(need_run(L, S, "release_slots"));
  return 0;
}

static int acquire_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  mfl_wait_outcome(L);
  return 0;
}

static int l_acquire_slots(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = need_run(L, S, "acquire_slots");
  if (mf_run_acquire_slots(run))
    return 0;
  ((mfl_run *)mf_run_body(run))->parked = 1;
  return lua_yieldk(L, 0, 0, acquire_k);
}

static const luaL_Reg control_functions[] = {
    {"limit", l_limit},
    {"rate_limit", l_rate_limit},
    {"limits", l_limits},
    {"release_slots", l_release_slots},
    {"acquire_slots", l_acquire_slots},
    {"attempt", l_attempt},
    {"next_attempt", l_next_attempt},
    {"awaiting_retry", l_awaiting_retry},
    {"set_deadline", l_set_deadline},
    {"clear_deadline", l_clear_deadline},
    {"timed_out", l_timed_out},
    {"configure", l_configure},
    {NULL, NULL}};

void mfl_open_control(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (S->slice <= 0)
    S->slice = MFL_DEFAULT_SLICE;
  start_ticks(S);
  replace_coroutine_functions(L);
  mfl_setfuncs(L, control_functions);
  mfl_open_log(L);
}

/* }====== */

/* {====== Logging ====== */

static const struct {
  const char *name;
  int level;
} levels[] = {{"DEBUG", MFL_LOG_DEBUG},     {"INFO", MFL_LOG_INFO},
              {"WARNING", MFL_LOG_WARNING}, {"ERROR", MFL_LOG_ERROR},
              {"OFF", MFL_LOG_OFF},         {NULL, 0}};

int mfl_log_level_from_env(void) {
  const char *env = getenv("MOONFLOW_LOG_LEVEL");
  if (env)
    for (int i = 0; levels[i].name; i++)
      if (strcasecmp(env, levels[i].name) == 0)
        return levels[i].level;
  return MFL_LOG_WARNING;
}

static const char *level_name(int level) {
  for (int i = 0; levels[i].name; i++)
    if (levels[i].level == level)
      return levels[i].name;
  return "?";
}

/* One line on stderr: time, level, who, message. */
void mfl_log_write(int level, const char *who, const char *message) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  localtime_r(&tv.tv_sec, &tm);
  fprintf(stderr, "%02d:%02d:%02d.%03d %-7s %s | %s\n", tm.tm_hour, tm.tm_min,
          tm.tm_sec, (int)(tv.tv_usec / 1000), level_name(level), who, message);
  fflush(stderr);
}

void mfl_log_run(mfl_state *S, int level, mf_run *run, const char *fmt, ...) {
  if (level < S->lifecycle_level)
    return;
  char who[256], message[512];
  mf_run_name(run, who, sizeof who);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  mfl_log_write(level, who, message);
}

/* core.log(level, message): from mf.log.*, prefixed with the run's name */
static int l_log(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  int level = (int)luaL_checkinteger(L, 1);
  if (level < S->log_level)
    return 0;
  const char *message = luaL_checkstring(L, 2);
  mf_run *run = mf_engine_current(S->engine);
  char who[256] = "moonflow";
  if (run)
    mf_run_name(run, who, sizeof who);
  mfl_log_write(level, who, message);
  return 0;
}

/* core.log_level() -> the threshold */
static int l_log_level(lua_State *L) {
  lua_pushinteger(L, mfl_state_get(L)->log_level);
  return 1;
}

/* core.call_callback(fn, ...): a plain callback, in which waits raise. */
static int l_call_callback(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  S->callback_depth++;
  int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  S->callback_depth--;
  if (status != LUA_OK)
    return lua_error(L);
  return lua_gettop(L);
}

/* core.cancelled() -> whether the current run was asked to cancel */
static int l_cancelled(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mfl_current_run(L, S);
  lua_pushboolean(L, run && mf_run_cancel_requested(run));
  return 1;
}

/* core.logs_prints() -> whether the current run's task has log_prints */
static int l_logs_prints(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mf_engine_current(S->engine);
  int yes = 0;
  if (run) {
    mfl_push_future_of(L, run);
    lua_getiuservalue(L, -1, MFL_UV_TASK);
    if (lua_type(L, -1) == LUA_TUSERDATA) {
      lua_getiuservalue(L, -1, MFL_TASK_UV_OPTS);
      lua_getfield(L, -1, "log_prints");
      yes = lua_toboolean(L, -1);
    }
  }
  lua_pushboolean(L, yes);
  return 1;
}

static const luaL_Reg log_functions[] = {{"log", l_log},
                                         {"log_level", l_log_level},
                                         {"call_callback", l_call_callback},
                                         {"cancelled", l_cancelled},
                                         {"logs_prints", l_logs_prints},
                                         {NULL, NULL}};

void mfl_open_log(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  S->log_level = mfl_log_level_from_env();
  /* Lifecycle lines only when asked for: by default the program reports
   * failures itself, and the REPL prints them where they are read. */
  S->lifecycle_level =
      getenv("MOONFLOW_LOG_LEVEL") ? S->log_level : MFL_LOG_OFF;
  mfl_setfuncs(L, log_functions);
}

/* }====== */
