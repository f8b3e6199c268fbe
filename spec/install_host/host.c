/*
 * host.c -- an outside C host of moonflow, built against an installed
 * prefix (or moonflow's source tree as a subdirectory) by
 * spec/install_test.sh: it checks that the library is the version of its
 * headers, runs a Lua flow on the host's own libuv loop, completes a future
 * from C and reads the flow's result.  Prints "host ok <version>" and exits
 * 0, or says what is wrong and exits 1.
 */
#include "moonflow_lua.h" /* first: it asks for what uv.h needs */

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what) {
  fprintf(stderr, "host: %s\n", what ? what : "(no message)");
  return 1;
}

int main(void) {
  if (mf_version() != MF_VERSION_HEX ||
      strcmp(mf_version_string(), MF_VERSION) != 0)
    return fail("the library is not the version of the headers");
  uv_loop_t loop;
  uv_loop_init(&loop);
  mf_engine *engine;
  mf_config cfg = {.size = sizeof cfg, .loop = &loop};
  if (mf_engine_new(&engine, &cfg) != 0)
    return fail("mf_engine_new failed");
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (mf_lua_attach(L, engine) != 0)
    return fail("mf_lua_attach failed");
  luaL_requiref(L, "moonflow", luaopen_moonflow, 0);
  lua_setglobal(L, "mf");
  if (mf_lua_engine(L) != engine)
    return fail("the module is not on the host's engine");
  mf_run *reply = mf_lua_future_new(L, "reply"); /* C completes it below */
  lua_setglobal(L, "reply");
  const char *code = "local double = mf.task({ name = 'double' }, "
                     "function(x) return 2 * x end)\n"
                     "local doubled = double:map({ reply:result(), 1 })\n"
                     "return mf._VERSION, doubled:result()[1]\n";
  if (mf_lua_run_chunk(L, code, strlen(code), "=host") != 0)
    return fail(lua_tostring(L, -1));
  lua_pushinteger(L, 21);
  if (mf_lua_future_resolve(L, reply, 1) != 0)
    return fail("mf_lua_future_resolve failed");
  while (mf_engine_live_runs(engine) > 0) { /* the host's own loop */
    mf_engine_step(engine);
    uv_run(&loop, UV_RUN_ONCE);
  }
  int n = mf_lua_result(L, -1);
  if (n != 2)
    return fail(n == MF_EFAILED ? lua_tostring(L, -1) : "no result");
  char expected[64];
  snprintf(expected, sizeof expected, "moonflow %s", MF_VERSION);
  if (strcmp(lua_tostring(L, -2), expected) != 0 || lua_tointeger(L, -1) != 42)
    return fail("the flow's result is wrong");
  printf("host ok %s\n", mf_version_string());
  mf_engine_close(engine);
  uv_run(&loop, UV_RUN_DEFAULT); /* the engine's handles close */
  lua_close(L);
  return uv_loop_close(&loop) == 0 ? 0 : fail("the loop did not close");
}
