/*
 * test_store_host.c -- a C host turns the run store on (mf_lua_store) for
 * the module on its own engine and loop: a file that is not a store is
 * MF_EINVAL with the message pushed and is left untouched; a flow run from
 * C is recorded with its task runs, and what was queued is in the file once
 * the host has closed the engine and the lua_State (in that order, as
 * moonflow_lua.h asks).
 */
#include "moonflow_lua.h"

#include <lauxlib.h>
#include <lualib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define ASSERT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      failures++;                                                              \
      goto done;                                                               \
    }                                                                          \
  } while (0)

static long long count(const char *path, const char *sql) {
  sqlite3 *db;
  sqlite3_stmt *stmt;
  long long n = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK) {
    if (sqlite3_step(stmt) == SQLITE_ROW)
      n = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return n;
}

int main(void) {
  char dir[] = "/tmp/mf-store-host.XXXXXX", path[128], foreign[128];
  if (!mkdtemp(dir))
    return 2;
  snprintf(path, sizeof path, "%s/store.db", dir);
  snprintf(foreign, sizeof foreign, "%s/notes.txt", dir);
  const char *notes = "not a database, someone's notes\n";
  FILE *f = fopen(foreign, "w");
  fputs(notes, f);
  fclose(f);

  uv_loop_t loop;
  uv_loop_init(&loop);
  mf_config cfg = {.size = sizeof cfg, .loop = &loop};
  mf_engine *e;
  lua_State *L = NULL;
  if (mf_engine_new(&e, &cfg) != 0)
    return 2;
  L = luaL_newstate();
  luaL_openlibs(L);
  ASSERT(mf_lua_store(L, path) == MF_ESTATE); /* the module is not open */
  ASSERT(mf_lua_attach(L, e) == 0);
  luaL_requiref(L, "moonflow", luaopen_moonflow, 1);
  lua_setglobal(L, "mf");

  int top = lua_gettop(L);
  ASSERT(mf_lua_store(L, foreign) == MF_EINVAL);
  ASSERT(lua_gettop(L) == top + 1 && strstr(lua_tostring(L, -1), "notes.txt"));
  lua_settop(L, top);
  char buf[128] = {0};
  f = fopen(foreign, "r");
  ASSERT(f && fread(buf, 1, sizeof buf - 1, f) == strlen(notes));
  fclose(f);
  ASSERT(strcmp(buf, notes) == 0);

  ASSERT(mf_lua_store(L, path) == 0);
  const char *code = "local t = mf.task({name = 'double'}, function(x)\n"
                     "  return 2 * x end)\n"
                     "local s = 0\n"
                     "for _, v in ipairs(t:map({1, 2, 3}):result()) do\n"
                     "  s = s + v end\n"
                     "return s\n";
  ASSERT(mf_lua_run_chunk(L, code, strlen(code), "host-flow") == 0);
  int rc;
  while ((rc = mf_lua_result(L, -1)) == MF_ESTATE) {
    mf_engine_step(e);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  ASSERT(rc == 1 && lua_tointeger(L, -1) == 12);

done:
  mf_engine_close(e);
  uv_run(&loop, UV_RUN_DEFAULT); /* the engine's handles close */
  if (L)
    lua_close(L); /* the store is flushed and closed here */
  uv_loop_close(&loop);
  if (!failures) {
    long long flows = count(path, "SELECT count(*) FROM runs WHERE kind = 1 "
                                  "AND task = 'host-flow' AND state_type = 3");
    long long tasks =
        count(path, "SELECT count(*) FROM runs WHERE task = 'double' AND "
                    "state_type = 3 AND flow = (SELECT id FROM runs WHERE "
                    "task = 'host-flow')");
    if (flows != 1 || tasks != 3) {
      fprintf(stderr, "recorded: %lld flow(s), %lld task run(s)\n", flows,
              tasks);
      failures++;
    }
  }
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir);
  printf(failures ? "store host test failed\n" : "store host test passed\n");
  return failures ? 1 : 0;
}
