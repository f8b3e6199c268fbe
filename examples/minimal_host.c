/* minimal_host.c -- a host with its own libuv loop runs a Lua flow on it,
 * resolves a future from C, and reads the flow's result. */
#include "moonflow_lua.h"
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  mf_engine *engine;
  mf_config cfg = {.size = sizeof cfg, .loop = loop};
  if (mf_engine_new(&engine, &cfg) != 0)
    return 1;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  mf_lua_attach(L, engine);
  luaL_requiref(L, "moonflow", luaopen_moonflow, 1);
  lua_pop(L, 1);
  mf_run *answer = mf_lua_future_new(L, "db-reply"); /* a Future for Lua */
  lua_setglobal(L, "db");
  const char *code = "local mf = require 'moonflow'\n"
                     "local double = mf.task(function(x) return 2 * x end)\n"
                     "return double(db:result())\n";
  if (mf_lua_run_chunk(L, code, strlen(code), "=flow") != 0)
    return fprintf(stderr, "%s\n", lua_tostring(L, -1)), 1;
  lua_pushinteger(L, 21);
  mf_lua_future_resolve(L, answer, 1);      /* the reply arrives */
  while (mf_engine_live_runs(engine) > 0) { /* the host's loop */
    mf_engine_step(engine);                 /* runs what is ready */
    uv_run(loop, UV_RUN_ONCE);              /* waits for timers and I/O */
  }
  if (mf_lua_result(L, -1) == 1)
    printf("result: %lld\n", (long long)lua_tointeger(L, -1));
  mf_engine_close(engine);
  uv_run(loop, UV_RUN_DEFAULT); /* the engine's handles close */
  lua_close(L);
  return uv_loop_close(loop);
}
