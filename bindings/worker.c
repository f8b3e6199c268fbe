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

#include "runners.h"

static const char key_host, key_job, key_cancel;

lua_State *mflw_new_state(const char **err) {
  lua_State *L = luaL_newstate();
  if (!L) {
    *err = "cannot create a Lua state";
    return NULL;
  }
  luaL_openlibs(L);
  lua_pushcfunction(L, luaopen_moonflow);
  lua_pushliteral(L, "moonflow");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    *err = "cannot open moonflow";
    lua_close(L);
    return NULL;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "moonflow");
  lua_pop(L, 2);
  return L;
}

/* Calls the worker module's function stored under key with the nargs
 * values on top; an error is logged (the module catches the user's). */
static void call_worker(lua_State *L, const char *key, int nargs) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_insert(L, -(nargs + 1));
  if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
    mfl_log_write(MFL_LOG_ERROR, "worker", mfl_describe(L, -1));
    lua_pop(L, 2);
  }
}

int mflw_start(lua_State *L, mflw_host *host, const char *config,
               size_t config_len, const char *setup, size_t setup_len) {
  lua_pushlightuserdata(L, host);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_host);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.worker");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    return -1;
  lua_getfield(L, -1, "job");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_job);
  lua_getfield(L, -1, "cancel");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_cancel);
  lua_getfield(L, -1, "start");
  lua_remove(L, -2);
  lua_pushlstring(L, config, config_len);
  int n = setup_len ? mflr_parts_push(L, setup, setup_len) : 0;
  if (n < 0)
    n = 0;
  if (lua_pcall(L, 1 + n, 0, 0) != LUA_OK)
    return -1;
  return 0;
}

void mflw_job(lua_State *L, uint64_t id, double timeout, const char *parts,
              size_t len) {
  lua_pushinteger(L, (lua_Integer)id);
  if (timeout > 0)
    lua_pushnumber(L, timeout);
  else
    lua_pushnil(L);
  int n = mflr_parts_push(L, parts, len);
  if (n < 0) {
    lua_pop(L, 2);
    mfl_log_write(MFL_LOG_ERROR, "worker", "a job that is not parts");
    return;
  }
  call_worker(L, &key_job, 2 + n);
}

void mflw_cancel(lua_State *L, uint64_t id) {
  lua_pushinteger(L, (lua_Integer)id);
  call_worker(L, &key_cancel, 1);
}

void mflw_stop(lua_State *L) {
  mf_engine *engine = mf_lua_engine(L);
  if (engine)
    mf_engine_cancel_all(engine, NULL, NULL);
}

/* core.worker_answer(id, status, parts...): what worker.lua answers. */
static int l_worker_answer(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  mflw_host *host = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!host)
    return luaL_error(L, "worker_answer: not a worker");
  mfl_buffer parts = {0};
  int fail = mflr_parts_begin(&parts);
  for (int i = 3; !fail && i <= lua_gettop(L); i++) {
    size_t len;
    const char *part = luaL_checklstring(L, i, &len);
    fail = mflr_parts_add(&parts, part, len);
  }
  if (fail) {
    mfl_buffer_free(&parts);
    return luaL_error(L, "moonflow: out of memory");
  }
  host->answer(host, (uint64_t)id, status, &parts);
  mfl_buffer_free(&parts);
  return 0;
}

/* core.is_worker() -> whether this state is a runner's worker */
static int l_is_worker(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_host);
  lua_pushboolean(L, lua_touserdata(L, -1) != NULL);
  return 1;
}

static const luaL_Reg worker_functions[] = {{"worker_answer", l_worker_answer},
                                            {"is_worker", l_is_worker},
                                            {NULL, NULL}};

void mflw_open(lua_State *L) { mfl_setfuncs(L, worker_functions); }
