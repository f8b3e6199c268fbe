/*
 * control.c -- the Lua side of control: mf.configure, concurrency and rate
 * limits, and logging.  Retries, timeouts and hooks are the engine's (a
 * run's policy, set at submit in task.c); time slices are in preempt.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "binding.h"

/* {====== Configuration and limits ====== */

/* core.configure{ slice = seconds, preempt = boolean } */
static int l_configure(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (!lua_istable(L, 1))
    return mfl_raise(L, "UsageError", "mf.configure expects a table, got %s",
                     luaL_typename(L, 1));
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    const char *key =
        lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(key, "slice") == 0) {
      if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0) ||
          lua_tonumber(L, -1) > 3600)
        return mfl_raise(L, "UsageError",
                         "configure option 'slice' must be "
                         "a number of seconds > 0 (at most "
                         "3600)");
      S->slice = lua_tonumber(L, -1);
      mfl_preempt_configure(S);
    } else if (strcmp(key, "preempt") == 0) {
      if (!lua_isboolean(L, -1))
        return mfl_raise(L, "UsageError",
                         "configure option 'preempt' must be a boolean");
      if (lua_toboolean(L, -1))
        mfl_preempt_start(S);
      else
        mfl_preempt_stop(S);
    } else if (strcmp(key, "store") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING &&
          !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)))
        return mfl_raise(L, "UsageError",
                         "configure option 'store' must be a path, "
                         "\":memory:\", \"off\" or false");
      if (mfl_store_configure(L, S, lua_tostring(L, -1)) != 0)
        return mfl_raise(L, "StoreError", "%s", lua_tostring(L, -1));
    } else {
      return mfl_raise(L, "UsageError",
                       "unknown configure option '%s' (known: slice, "
                       "preempt, store, task_runner)",
                       key);
    }
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
  if (!lua_isinteger(L, 2) || lua_tointeger(L, 2) < 1)
    return mfl_raise(L, "UsageError",
                     "mf.limit: the limit of '%s' must be an integer >= 1 "
                     "(with 0 its runs could never start)",
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

/* core.preempt_signals() -> the signals the watchdog sent this state's loop
 * thread so far (tests). */
static int l_preempt_signals(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mfl_preempt_signals(mfl_state_get(L)));
  return 1;
}

static const luaL_Reg control_functions[] = {
    {"limit", l_limit},           {"preempt_signals", l_preempt_signals},
    {"rate_limit", l_rate_limit}, {"limits", l_limits},
    {"configure", l_configure},   {NULL, NULL}};

void mfl_open_control(lua_State *L) {
  mfl_preempt_start(mfl_state_get(L));
  mfl_open_preempt(L);
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
  static int warned; /* once per process, not once per Lua state */
  if (env && *env && !warned) {
    warned = 1;
    fprintf(stderr,
            "moonflow: MOONFLOW_LOG_LEVEL=%s is not a level (DEBUG, INFO, "
            "WARNING, ERROR or OFF): using WARNING\n",
            env);
    fflush(stderr);
  }
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

/* core.log(level, message, shown?): from mf.log.*, prefixed with the
 * run's name; shown: written whatever the threshold (print in a log_prints
 * run while MOONFLOW_LOG_LEVEL is unset, as Prefect shows it). */
static int l_log(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  int level = (int)luaL_checkinteger(L, 1);
  if (level < S->log_level && !lua_toboolean(L, 3))
    return 0;
  const char *message = luaL_checkstring(L, 2);
  mf_run *run = mf_engine_current(S->engine);
  char who[256] = "moonflow";
  if (run)
    mf_run_name(run, who, sizeof who);
  mfl_log_write(level, who, message);
  mfl_store_log_line(S, run, level, message);
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
