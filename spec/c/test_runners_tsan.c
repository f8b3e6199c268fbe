/*
 * test_runners_tsan.c -- the threads runner under ThreadSanitizer (run with
 * TSAN_OPTIONS=halt_on_error=1): the engine and the bindings compiled with
 * -fsanitize=thread, a Lua state that maps tasks on worker threads (each
 * with its own state and loop), cancels and times some out, then shuts the
 * runner down with runs in flight, and closes the state with more in
 * flight.  Lua's own library is not instrumented: each Lua state stays on
 * one thread, which is what is checked.  ThreadSanitizer holds a signal
 * back until the thread calls an intercepted function, and uninstrumented
 * Lua code calls none: the runs that compute for ever here allocate (a
 * table per turn), so that preemption's signal gets through.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "moonflow_lua.h"

static const char script[] =
    "local mf = require 'moonflow'\n"
    "local r = mf.runners.threads { workers = 3, setup = function()\n"
    "  FACTOR = 3 end }\n"
    "local cpu = mf.task({ runner = r }, function(n)\n"
    "  local x = 0\n"
    "  for i = 1, n do x = x + i % 7 end\n"
    "  return x * FACTOR\n"
    "end)\n"
    "local sleepy = mf.task({ runner = r }, function(i)\n"
    "  mf.sleep(0.01 * (i % 3)) return { i = i, s = ('x'):rep(i) } end)\n"
    "local xs = {}\n"
    "for i = 1, 200 do xs[i] = i end\n"
    "for _ = 1, 3 do\n"
    "  local got = sleepy:map(xs):result()\n"
    "  for i = 1, 200 do assert(got[i].i == i and #got[i].s == i) end\n"
    "  assert(cpu(100000) == cpu:map({ 100000 }):result()[1])\n"
    "end\n"
    "-- Timeouts and cancellation on workers.\n"
    "local spin = mf.task({ runner = r, timeout = 0.05 }, function()\n"
    "  while true do local _ = {} end end)\n"
    "local f = spin:submit()\n"
    "f:wait()\n"
    "assert(f:state().name == 'TimedOut', f:state().name)\n"
    "local long = mf.task({ runner = r }, function() mf.sleep(30) end)\n"
    "local l = long:submit()\n"
    "mf.sleep(0.05)\n"
    "l:cancel()\n"
    "assert(l:state().type == 'CANCELLED')\n"
    "-- Shut down with runs in flight, computing and sleeping.\n"
    "local list = mf.task({ runner = r }, function(i)\n"
    "  if i % 2 == 0 then while true do local _ = {} end end\n"
    "  mf.sleep(30) end):map({ 1, 2, 3, 4, 5, 6 })\n"
    "while list[6]:state().type ~= 'RUNNING' do mf.sleep(0.01) end\n"
    "r:_shutdown()\n"
    "list:wait()\n"
    "for i = 1, 6 do assert(list[i]:state().type == 'CRASHED') end\n"
    "-- A new runner left with runs in flight when the state closes.\n"
    "local r2 = mf.runners.threads { workers = 2 }\n"
    "LEFT = mf.task({ runner = r2 }, function() mf.sleep(30) end)\n"
    "  :map({ 1, 2, 3 })\n"
    "while LEFT[3]:state().type ~= 'RUNNING' do mf.sleep(0.01) end\n"
    "return 'ok'\n";

int main(void) {
  lua_State *L = luaL_newstate();
  if (!L)
    return 1;
  luaL_openlibs(L);
  luaL_requiref(L, "moonflow", luaopen_moonflow, 0);
  lua_pop(L, 1);
  int status = luaL_loadstring(L, script);
  if (status == LUA_OK)
    status = lua_pcall(L, 0, 1, 0);
  int ok = status == LUA_OK && lua_isstring(L, -1) &&
           strcmp(lua_tostring(L, -1), "ok") == 0;
  if (!ok)
    fprintf(stderr, "test_runners_tsan: %s\n",
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no message)");
  lua_close(L); /* with runs in flight on r2's workers */
  if (ok)
    printf("test_runners_tsan: ok\n");
  return ok ? 0 : 1;
}
