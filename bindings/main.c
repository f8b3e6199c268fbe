/*
 * main.c -- the `moonflow` program: Lua 5.4 with the moonflow module and
 * lua/ built in.  A script's main chunk runs as a run, so its top level may
 * wait; the program ends when every run has ended.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "moonflow.h"

int luaopen_moonflow(lua_State *L);

static const char *program = "moonflow";

static void usage(FILE *out) {
  fprintf(out,
          "usage: %s [options] [script [args...]]\n"
          "       %s run script [args...]\n"
          "Options:\n"
          "  -e CODE     run CODE as the script\n"
          "  -           read the script from standard input\n"
          "  --quiet     no progress line\n"
          "  --version   print the versions of moonflow, Lua and libuv\n"
          "  --help      print this help\n",
          program, program);
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: %s\n", program, msg ? msg : "(error object)");
    lua_pop(L, 1);
  }
  return status;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg)
    msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Sets the global arg as lua.c does: arg[0] the script, arg[1..] its
 * arguments, negative indices the program and its options. */
static void set_arg(lua_State *L, char **argv, int argc, int script) {
  lua_createtable(L, argc - script - 1, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Runs the chunk on top of the stack with the script's arguments. */
static int run_chunk(lua_State *L, char **argv, int argc, int first_arg) {
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.cli");
  if (report(L, lua_pcall(L, 1, 1, 0)) != LUA_OK)
    return 1;
  lua_getfield(L, -1, "run_script");
  lua_remove(L, -2);
  lua_pushvalue(L, -3); /* the chunk */
  int nargs = 0;
  for (int i = first_arg; i < argc; i++, nargs++)
    lua_pushstring(L, argv[i]);
  int handler = lua_gettop(L) - nargs - 2;
  if (report(L, lua_pcall(L, nargs + 1, 1, handler)) != LUA_OK)
    return 1;
  return (int)lua_tointeger(L, -1);
}

static int load_stdin(lua_State *L) {
  return luaL_loadfilex(L, NULL, NULL);
}

int main(int argc, char **argv) {
  const char *code = NULL, *script = NULL;
  int script_index = argc, from_stdin = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
      printf("moonflow %s, %s, libuv %s\n", MF_VERSION, LUA_RELEASE,
             uv_version_string());
      return 0;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      continue;
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: -e needs an argument\n", program);
        usage(stderr);
        return 2;
      }
      code = argv[++i];
      script_index = i;
      break;
    } else if (strcmp(a, "-") == 0) {
      from_stdin = 1;
      script_index = i;
      break;
    } else if (strcmp(a, "run") == 0 && !script && i + 1 < argc) {
      continue;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "%s: unknown option '%s'\n", program, a);
      usage(stderr);
      return 2;
    } else {
      script = a;
      script_index = i;
      break;
    }
  }
  if (!code && !script && !from_stdin) {
    fprintf(stderr, "%s: no script given (the REPL is not built yet)\n",
            program);
    usage(stderr);
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "%s: cannot create a Lua state\n", program);
    return 1;
  }
  luaL_openlibs(L);
  luaL_requiref(L, "moonflow", luaopen_moonflow, 0);
  lua_pop(L, 1);
  set_arg(L, argv, argc, script_index);
  int status;
  if (code)
    status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
  else if (from_stdin)
    status = load_stdin(L);
  else
    status = luaL_loadfile(L, script);
  int exit_status;
  if (report(L, status) != LUA_OK)
    exit_status = 1;
  else
    exit_status = run_chunk(L, argv, argc, script_index + 1);
  lua_close(L);
  return exit_status;
}
