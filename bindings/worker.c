/*
 * worker.c -- the worker side of a task runner that copies, whatever
 * carries its messages (a thread, a process): a Lua state with moonflow
 * open on its own engine and loop, where each job runs as a local run
 * (lua/moonflow/worker.lua), so that sleeps, waits and I/O interleave
 * inside the worker, time slices and timeouts apply as on the main loop,
 * and what a job submits runs on the worker's own coroutine runner.
 */
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "lua_heap.h"
#include "runners.h"

static const char key_host, key_jobs, key_contexts, key_task, key_logging_task,
    key_refuse, key_report, key_setup_failed, key_functions;

/* Functions made from messages the main side marked as always the same
 * (runners.c, fixed_function), by message: a run of a map does not load
 * its function again.  Emptied when it holds this many. */
#define MFLW_FUNCTIONS_MAX 256

/* Pushes the function of the next part: kept, or decoded (and kept when
 * fixed).  Returns the codec's result; an error is pushed instead. */
static int get_function(lua_State *L, mflr_parts *it, int fixed) {
  if (!fixed)
    return mflr_get_value(L, it);
  const char *part;
  size_t len;
  if (!mflr_parts_next(it, &part, &len)) {
    mfl_push_error(L, "DecodeError", "a message with a part missing");
    return MFL_CODEC_EINPUT;
  }
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_functions) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 8);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_functions);
  }
  lua_pushlstring(L, part, len);
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return MFL_CODEC_OK;
  }
  lua_pop(L, 1);
  int rc = mfl_decode(L, part, len, MFL_CODEC_FUNCTIONS | MFL_CODEC_REQUIRE);
  if (rc != MFL_CODEC_OK || lua_type(L, -1) != LUA_TFUNCTION) {
    lua_remove(L, -2);
    return rc;
  }
  lua_getfield(L, -2, "#"); /* the count */
  lua_Integer n = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  if (n > MFLW_FUNCTIONS_MAX) {
    lua_createtable(L, 0, 8);
    lua_replace(L, -3);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_functions);
    n = 1;
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -3, "#");
  lua_pushlstring(L, part, len);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
  return MFL_CODEC_OK;
}

lua_State *mflw_new_state(const char **err) {
  lua_State *L = mfl_heap_newstate(0);
  if (!L) {
    *err = "cannot create a Lua state";
    return NULL;
  }
  luaL_openlibs(L);
  lua_pushcfunction(L, luaopen_moonflow);
  lua_pushliteral(L, "moonflow");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    *err = "cannot open moonflow";
    mfl_heap_close(L);
    return NULL;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "moonflow");
  lua_pop(L, 2);
  return L;
}

/* Calls the worker module's function stored under key with the nargs
 * values on top; an error is logged. */
static void call_worker(lua_State *L, const char *key, int nargs) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_insert(L, -(nargs + 1));
  if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
    mfl_log_write(MFL_LOG_ERROR, "worker", mfl_describe(L, -1));
    lua_pop(L, 2);
  }
}

static void set_field(lua_State *L, const char *name, const char *key) {
  lua_getfield(L, -1, name);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

int mflw_start(lua_State *L, mflw_host *host, const char *config,
               size_t config_len, const char *setup, size_t setup_len) {
  lua_pushlightuserdata(L, host);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_jobs);
  lua_newtable(L); /* Future -> its context: weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_contexts);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.worker");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    return -1;
  set_field(L, "task", &key_task);
  set_field(L, "logging_task", &key_logging_task);
  set_field(L, "refuse", &key_refuse);
  set_field(L, "report_unhandled", &key_report);
  lua_getfield(L, -1, "start");
  lua_remove(L, -2);
  lua_pushlstring(L, config, config_len);
  if (setup_len)
    lua_pushlstring(L, setup, setup_len);
  if (lua_pcall(L, setup_len ? 2 : 1, 1, 0) != LUA_OK)
    return -1;
  lua_pushboolean(L, !lua_toboolean(L, -1)); /* start returns setup's ok */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_setup_failed);
  lua_pop(L, 1);
  return 0;
}

/* {====== Jobs ====== */

static mflw_host *host_of(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  mflw_host *host = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return host;
}

/* A job that cannot run: worker.refuse(id, err) answers it failed. */
static void refuse(lua_State *L, uint64_t id) {
  lua_pushinteger(L, (lua_Integer)id);
  lua_insert(L, -2);
  call_worker(L, &key_refuse, 2);
}

/* The context part: its name and flags (the rest is read when mf.context
 * asks, worker.lua). */
static int read_context(const char *p, size_t len, char *name, size_t size,
                        int *flags) {
  if (len < 17)
    return -1;
  *flags = (unsigned char)p[12];
  uint32_t nlen = 0;
  for (int i = 0; i < 4; i++)
    nlen |= (uint32_t)(unsigned char)p[13 + i] << (8 * i);
  if (len - 17 < nlen)
    return -1;
  size_t n = nlen < size - 1 ? nlen : size - 1;
  memcpy(name, p + 17, n);
  name[n] = 0;
  return 0;
}

static void answer_done(mf_run *run, void *data);

void mflw_job(lua_State *L, uint64_t id, double timeout, const char *bytes,
              size_t len) {
  mfl_state *S = mfl_state_get(L);
  int top = lua_gettop(L);
  lua_checkstack(L, 16);
  mflr_parts it;
  const char *ctx;
  size_t ctx_len;
  char name[256];
  int flags = 0;
  if (mflr_parts_open(&it, bytes, len) != 0 ||
      !mflr_parts_next(&it, &ctx, &ctx_len) ||
      read_context(ctx, ctx_len, name, sizeof name, &flags) != 0) {
    mfl_push_error(L, "DecodeError", "a job that is not a job's message");
    refuse(L, id);
    return;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_setup_failed);
  int setup_failed = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (setup_failed) { /* every job fails with the setup's error */
    lua_pushnil(L);
    refuse(L, id);
    return;
  }
  /* the function, the arguments, their Tasks */
  mflr_session_reset(L);
  if (get_function(L, &it, flags & 2) != MFL_CODEC_OK ||
      mflr_get_value(L, &it) != MFL_CODEC_OK || mflr_get_tasks(L, &it) != 0) {
    lua_copy(L, -1, top + 1); /* the error */
    lua_settop(L, top + 1);
    refuse(L, id);
    return;
  }
  int fn = top + 1, args = top + 2;
  lua_rawgetp(L, LUA_REGISTRYINDEX, flags & 1 ? &key_logging_task : &key_task);
  int task = lua_gettop(L);
  mfl_future *f = mfl_new_future(L, S, MFL_TASK, task, NULL);
  int box = lua_gettop(L);
  mf_run *run = f->run;
  mfl_run *lr = mf_run_body(run);
  mf_run_set_custom_name(run, name);
  lr->log_prints = (flags & 1) != 0;
  lr->quiet = 1;
  if (timeout > 0) { /* the rest of the attempt's time: stopped here too */
    mf_run_policy policy = {.timeout = timeout};
    mf_run_set_policy(run, &policy);
  }
  lua_createtable(L, 2, 1); /* the body's arguments: fn, args */
  lua_pushvalue(L, fn);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, args);
  lua_rawseti(L, -2, 2);
  lua_pushinteger(L, 2);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, box, MFL_UV_ARGS);
  lr->nargs = -1;
  if (mf_run_submit(run, NULL) != 0 ||
      mf_run_on_done(run, answer_done, (void *)(uintptr_t)id) != 0) {
    mf_run_cancel(run);
    lua_settop(L, top);
    mfl_push_error(L, "Crashed", "the worker could not start the job");
    refuse(L, id);
    return;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_jobs);
  lua_pushvalue(L, box);
  lua_rawseti(L, -2, (lua_Integer)id);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_contexts);
  lua_pushvalue(L, box);
  lua_pushlstring(L, ctx, ctx_len);
  lua_rawset(L, -3);
  lua_settop(L, top);
}

/* The run of job id is final: its answer goes back. */
static void answer_done(mf_run *run, void *data) {
  uint64_t id = (uint64_t)(uintptr_t)data;
  mfl_run *lr = mf_run_body(run);
  mfl_state *S = lr->S;
  if (S->closed || S->closing)
    return;
  lua_State *L = S->L;
  mflw_host *host = host_of(L);
  int top = lua_gettop(L);
  lua_checkstack(L, 16);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_jobs);
  lua_rawgeti(L, -1, (lua_Integer)id);
  int box = lua_gettop(L);
  lua_pushnil(L);
  lua_rawseti(L, -3, (lua_Integer)id);
  if (!mfl_to_future(L, box) || !host) {
    lua_settop(L, top);
    return;
  }
  S->callback_depth++; /* codecs' functions run as plain callbacks */
  mf_state_type type = mf_run_state_type(run);
  int status = type == MF_COMPLETED   ? MFLR_COMPLETED
               : type == MF_CANCELLED ? MFLR_CANCELLED
               : type == MF_CRASHED   ? MFLR_CRASHED
                                      : MFLR_FAILED;
  mfl_buffer parts = {0};
  int ok = mflr_parts_begin(&parts) == 0;
  if (ok && status == MFLR_COMPLETED) {
    int before = lua_gettop(L);
    int n = mfl_push_results(L, box, 0, 0);
    lua_createtable(L, n, 1);
    lua_insert(L, before + 1);
    for (int i = n; i >= 1; i--)
      lua_rawseti(L, before + 1, i);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    mflr_session_reset(L);
    if (mflr_put_value(L, -1, &parts, "result") != MFL_CODEC_OK ||
        mflr_put_tasks(L, &parts) != 0) {
      /* results that cannot be copied: the run fails with that error */
      parts.len = 0;
      mflr_parts_begin(&parts);
      lua_createtable(L, 0, 1);
      lua_insert(L, -2);
      lua_setfield(L, -2, "err");
      status = MFLR_FAILED;
    } else {
      lua_settop(L, box);
    }
  } else if (ok && status != MFLR_CANCELLED) {
    mfl_push_results(L, box, 0, 0); /* the error value */
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "err");
    mfl_push_full_traceback(L, box); /* with where its error came from */
    lua_setfield(L, -2, "traceback");
  }
  if (ok && status != MFLR_COMPLETED && status != MFLR_CANCELLED) {
    /* { err, traceback } on top */
    mflr_session_reset(L);
    if (mflr_put_value(L, -1, &parts, "error") != MFL_CODEC_OK ||
        mflr_put_tasks(L, &parts) != 0) {
      lua_pop(L, 1); /* an error that cannot be copied: its text */
      parts.len = 0;
      mflr_parts_begin(&parts);
      lua_getfield(L, -1, "err");
      mfl_describe(L, -1);
      lua_setfield(L, -3, "err");
      lua_pop(L, 1);
      mflr_session_reset(L);
      ok = mflr_put_value(L, -1, &parts, "error") == MFL_CODEC_OK;
    }
  }
  if (ok)
    host->answer(host, id, status, &parts);
  mfl_buffer_free(&parts);
  lua_settop(L, top);
  if (mf_run_unhandled(S->engine, NULL, NULL) > 0)
    call_worker(L, &key_report, 0);
  S->callback_depth--;
}

void mflw_cancel(lua_State *L, uint64_t id) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_jobs);
  lua_rawgeti(L, -1, (lua_Integer)id);
  mfl_future *f = mfl_to_future(L, -1);
  if (f && !mf_run_is_final(f->run))
    mf_run_cancel(f->run);
  lua_pop(L, 2);
}

void mflw_stop(lua_State *L) {
  mf_engine *engine = mf_lua_engine(L);
  if (engine)
    mf_engine_cancel_all(engine, NULL, NULL);
}

/* core.job_context(future) -> the context part of its job, or nil */
static int l_job_context(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_contexts);
  if (lua_isnil(L, -1))
    return 1;
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  return 1;
}

/* }====== */

/* core.worker_answer(id, status, message?): what worker.lua answers for
 * a job it refuses (message: core.pack's). */
static int l_worker_answer(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  size_t len = 0;
  const char *message = luaL_optlstring(L, 3, NULL, &len);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  mflw_host *host = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!host)
    return luaL_error(L, "worker_answer: not a worker");
  mflr_parts it;
  if (message && mflr_parts_open(&it, message, len) != 0)
    return luaL_error(L, "worker_answer: not a message of parts");
  mfl_buffer parts = {0};
  if (mfl_buffer_reserve(&parts, len) != 0)
    return luaL_error(L, "moonflow: out of memory");
  if (len)
    memcpy(parts.data, message, len);
  parts.len = len;
  host->answer(host, (uint64_t)id, status, &parts);
  mfl_buffer_free(&parts);
  return 0;
}

/* core.has_children() -> whether the current run has runs not final */
static int l_has_children(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mfl_current_run(L, S);
  lua_pushboolean(L, run && mf_run_live_children(run) > 0);
  return 1;
}

/* core.is_worker() -> whether this state is a runner's worker */
static int l_is_worker(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  lua_pushboolean(L, lua_touserdata(L, -1) != NULL);
  return 1;
}

static const luaL_Reg worker_functions[] = {{"worker_answer", l_worker_answer},
                                            {"is_worker", l_is_worker},
                                            {"job_context", l_job_context},
                                            {"has_children", l_has_children},
                                            {NULL, NULL}};

void mflw_open(lua_State *L) { mfl_setfuncs(L, worker_functions); }
