/*
 * main.c -- the `moonflow` program: Lua 5.4 with the moonflow module and
 * lua/ built in.  A script's main chunk runs as a run, so its top level may
 * wait; the program ends when every run has ended.  Without a script it is a
 * REPL (repl.c).
 *
 * Exit status: 0 success; 1 the script raised, left an unhandled failure or
 * could not be loaded; 2 usage error; 130 interrupted by Ctrl-C.
 *
 * Runs are recorded in the run store ($MOONFLOW_HOME/moonflow.db, or
 * MOONFLOW_STORE); `moonflow runs|show|logs` read it (store_cli.lua).
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "binding.h"
#include "lua_heap.h"
#include "progress.h"
#include "repl.h"
#include "runners.h"

static const char *program = "moonflow";

typedef struct options {
  const char *code;   /* -e CODE */
  const char *script; /* FILE, or "-" for stdin */
  int interactive;    /* -i, or no script */
  int quiet;
  int first_arg; /* argv index of the script's first argument */
  int script_index;
  int worker;          /* --worker: a task runner's worker process (internal) */
  const char *command; /* runs, show, logs: reading the run store */
} options;

/* Every option, environment variable and exit status: the man page
 * (docs/moonflow.1) says the same at more length. */
static void usage(FILE *out) {
  fprintf(
      out,
      "usage: %s [options] [script [args...]]\n"
      "       %s run script [args...]\n"
      "       %s runs [--name N] [--state S] [--since T] [--limit N] "
      "[--json]\n"
      "       %s show RUN [--limit N] [--offset N] [--json]\n"
      "       %s logs RUN [--json]\n"
      "Runs a Lua 5.4 flow script whose main chunk is a run (it may wait\n"
      "at top level); with no script, an interactive REPL (the module is\n"
      "the global mf there).\n"
      "\n"
      "Options:\n"
      "  -e CODE        run CODE as the script (arguments after it: ...;\n"
      "                 the module is the global mf)\n"
      "  -              read the script from standard input\n"
      "  -i             enter the REPL after running the script\n"
      "  -q, --quiet    no progress line on stderr\n"
      "  -v, --version  print the versions of moonflow, Lua and libuv\n"
      "  -h, --help     print this help\n"
      "  run SCRIPT     the same as SCRIPT (as the first argument only)\n"
      "  runs           the recent flow runs of the run store: name, state,\n"
      "                 start, duration, task runs by state (--name, --state\n"
      "                 and --since 1h/2d/ISO date filter; --json)\n"
      "  show RUN       a run's tree with states and durations, its failure\n"
      "                 and traceback (RUN: an id from `runs`, or a name)\n"
      "  logs RUN       the log lines of a run and the runs inside it\n"
      "The first argument that is not an option is the script; the ones\n"
      "after it are its arguments (arg and ...).\n"
      "\n"
      "Environment:\n"
      "  MOONFLOW_LOG_LEVEL  DEBUG, INFO, WARNING, ERROR or OFF (any case):\n"
      "                      the level of mf.log lines (WARNING if unset; any\n"
      "                      other value is warned about); when set, runs'\n"
      "                      lifecycle lines are logged too.  print in a\n"
      "                      log_prints run is shown unless it is set above\n"
      "                      INFO\n"
      "  MOONFLOW_HISTORY    the REPL's history file\n"
      "                      (default: $HOME/.moonflow_history; neither set:\n"
      "                      no history)\n"
      "  MOONFLOW_HOME       moonflow's directory (default: $HOME/.moonflow)\n"
      "  MOONFLOW_STORE      the run store: a file (default:\n"
      "                      $MOONFLOW_HOME/moonflow.db), :memory:, or off\n"
      "  MOONFLOW_STORE_KEEP how long runs are kept in the store: 7d (the\n"
      "                      default), 12h, 30m, 90s, or forever\n"
      "  MOONFLOW_STORE_CHECKPOINT  WAL pages from which a thread copies\n"
      "                      them into the store's file (default 4000)\n"
      "  MOONFLOW_STORE_MAX_PAGES  a cap on the store's size, in SQLite\n"
      "                      pages (past it, runs go on unrecorded)\n"
      "  MOONFLOW_STORE_RING the store's queue of events, a power of 2\n"
      "                      from 64 to 1048576 (default 32768)\n"
      "  MOONFLOW_PROGRAM    the program mf.runners.processes starts as its\n"
      "                      workers (default: this program)\n"
      "  MOONFLOW_LUA_ALLOC  heap (default: small Lua objects from pages of\n"
      "                      one size each) or malloc (every one malloc's,\n"
      "                      for valgrind's memcheck; the default in a build\n"
      "                      with AddressSanitizer)\n"
      "  MOONFLOW_LIBCURL    the libcurl the first HTTP request loads\n"
      "                      (default: libcurl.so.4, else\n"
      "                      libcurl-gnutls.so.4)\n"
      "\n"
      "Exit status:\n"
      "  0    success\n"
      "  1    the script raised, left a run failed and unhandled, or\n"
      "       could not be loaded (the report goes to stderr)\n"
      "  2    usage error: an unknown option, or one without its argument\n"
      "  130  interrupted by Ctrl-C (SIGINT): every run still going was\n"
      "       cancelled and named on stderr; a second Ctrl-C exits at once\n"
      "\n"
      "Documentation: man moonflow; docs/lua-api.md in the sources.\n",
      program, program, program, program, program);
}

/* {====== Ctrl-C ====== */

/* The signal handler only counts and wakes the loop; the loop's async
 * callback decides.  A second Ctrl-C while a script is being cancelled
 * leaves at once. */
static volatile sig_atomic_t interrupts;
static volatile sig_atomic_t in_repl;
static uv_async_t interrupt_async;
static lua_State *the_state;
static int interrupted_status;

static void on_sigint(int sig) {
  (void)sig;
  if (++interrupts >= 2 && !in_repl)
    _exit(130);
  uv_async_send(&interrupt_async);
}

/* Cancels every run, naming them (oldest first: the main chunk, the flows,
 * what they started). */
static void report_interrupt(void) {
  mfl_state *S = mfl_state_get(the_state);
  mf_progress_erase();
  size_t n = mf_progress_push_live(the_state, 12);
  if (n == 0)
    fprintf(stderr, "\n%s: interrupted; no run was going\n", program);
  else
    fprintf(stderr, "\n%s: interrupted; cancelled %zu run%s: %s\n", program, n,
            n == 1 ? "" : "s", lua_tostring(the_state, -1));
  lua_pop(the_state, 1);
  mf_engine_cancel_all(S->engine, NULL, NULL);
  interrupted_status = 130;
}

static void on_interrupt(uv_async_t *handle) {
  (void)handle;
  if (!interrupts)
    return;
  if (in_repl && mf_repl_interrupt()) {
    interrupts = 0;
    return;
  }
  report_interrupt();
}

static void install_interrupts(lua_State *L) {
  the_state = L;
  mfl_state *S = mfl_state_get(L);
  uv_async_init(mf_engine_loop(S->engine), &interrupt_async, on_interrupt);
  uv_unref((uv_handle_t *)&interrupt_async);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

static void remove_interrupts(lua_State *L) {
  signal(SIGINT, SIG_DFL);
  mfl_state *S = mfl_state_get(L);
  uv_close((uv_handle_t *)&interrupt_async, NULL);
  uv_run(mf_engine_loop(S->engine), UV_RUN_NOWAIT);
}

/* }====== */

/* {====== The run store ====== */

/* The store's path from the environment into buf; 0 when it is off. */
static int store_path(char *buf, size_t size, int create_home) {
  const char *env = getenv("MOONFLOW_STORE");
  if (env && *env) {
    if (strcmp(env, "off") == 0)
      return 0;
    snprintf(buf, size, "%s", env);
    return 1;
  }
  char home[2048];
  const char *mf_home = getenv("MOONFLOW_HOME");
  if (mf_home && *mf_home)
    snprintf(home, sizeof home, "%s", mf_home);
  else if (getenv("HOME") && *getenv("HOME"))
    snprintf(home, sizeof home, "%s/.moonflow", getenv("HOME"));
  else
    return 0;
  if (create_home && mkdir(home, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "%s: cannot create %s: %s; runs are not recorded\n",
            program, home, strerror(errno));
    return 0;
  }
  snprintf(buf, size, "%s/moonflow.db", home);
  return 1;
}

/* Records the runs of this program, unless MOONFLOW_STORE=off; a store
 * that cannot open is reported and the script runs unrecorded. */
static void open_store(lua_State *L) {
  char path[4096];
  if (!store_path(path, sizeof path, 1))
    return;
  if (mfl_store_configure(L, mfl_state_get(L), path) != 0) {
    fprintf(stderr, "%s: %s; runs are not recorded\n", program,
            lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* }====== */

/* {====== Running ====== */

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

/* Calls require(module)[name](args on the stack...) and returns its
 * integer result, or 1 when it raised. */
static int call_cli_module(lua_State *L, const char *module, const char *name,
                           int nargs) {
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  int handler = lua_gettop(L) - 1;
  lua_rotate(L, handler - nargs, 2); /* handler fn args */
  handler -= nargs;
  int status = report(L, lua_pcall(L, nargs, 1, handler));
  int result = status == LUA_OK ? (int)lua_tointeger(L, -1) : 1;
  lua_settop(L, handler - 1);
  return result;
}

static int call_cli(lua_State *L, const char *name, int nargs) {
  return call_cli_module(L, "moonflow.cli", name, nargs);
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

static int load_chunk(lua_State *L, const options *o) {
  int status;
  if (o->code)
    status = luaL_loadbuffer(L, o->code, strlen(o->code), "=(command line)");
  else if (strcmp(o->script, "-") == 0)
    status = luaL_loadfilex(L, NULL, NULL);
  else
    status = luaL_loadfile(L, o->script);
  return report(L, status);
}

static int push_script_args(lua_State *L, char **argv, int argc, int first) {
  int n = 0;
  for (int i = first; i < argc; i++, n++)
    lua_pushstring(L, argv[i]);
  return n;
}

/* `mf`, the module, as a global: for -e CODE as in the REPL (one line of
 * code has no room for a require). */
static void set_mf_global(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "moonflow");
  lua_setglobal(L, "mf");
  lua_pop(L, 1);
}

static int run(lua_State *L, const options *o, char **argv, int argc) {
  int has_script = o->code || o->script;
  if (o->code)
    set_mf_global(L);
  if (has_script) {
    set_arg(L, argv, argc, o->script_index);
    if (load_chunk(L, o) != LUA_OK)
      return 1;
    int nargs = push_script_args(L, argv, argc, o->first_arg);
    if (!o->interactive) {
      if (!o->quiet && isatty(2))
        mf_progress_start(L);
      int status = call_cli(L, "run_script", nargs + 1);
      mf_progress_stop();
      return status;
    }
    call_cli(L, "run_before_repl", nargs + 1);
  }
  in_repl = 1;
  mf_repl_run(L);
  in_repl = 0;
  return call_cli(L, "finish", 0);
}

/* }====== */

/* The program runs Lua's collector in generational mode: a script's runs
 * make Futures that mostly die young, which that mode reclaims cheaply
 * (so the module need not pace the collector). */
static int open_moonflow(lua_State *L) {
  lua_gc(L, LUA_GCGEN, 0, 0);
  luaL_requiref(L, "moonflow", luaopen_moonflow, 0);
  mfl_gc_pacing(L, 0);
  return 0;
}

/* Returns -1 to go on, or an exit status. */
static int parse(options *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->first_arg = argc;
  o->script_index = 0;
  if (argc == 2 && strcmp(argv[1], "--worker") == 0) {
    o->worker = 1; /* spawned by mf.runners.processes: frames on fd 3 */
    return -1;
  }
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
      o->quiet = 1;
    } else if (strcmp(a, "-i") == 0) {
      o->interactive = 1;
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: -e needs an argument\n", program);
        usage(stderr);
        return 2;
      }
      o->code = argv[++i];
      o->script_index = 0; /* as lua5.4 -e: arg[0] is the program */
      o->first_arg = i + 1;
      return -1;
    } else if (i == 1 && (strcmp(a, "runs") == 0 || strcmp(a, "show") == 0 ||
                          strcmp(a, "logs") == 0)) {
      o->command = a;
      o->first_arg = i + 1;
      return -1;
    } else if (strcmp(a, "run") == 0 && i == 1) {
      if (i + 1 >= argc || argv[i + 1][0] == '-') {
        fprintf(stderr, "%s: run needs a script\n", program);
        usage(stderr);
        return 2;
      }
    } else if (strcmp(a, "-") == 0 || a[0] != '-') {
      o->script = a;
      o->script_index = i;
      o->first_arg = i + 1;
      return -1;
    } else {
      fprintf(stderr, "%s: unknown option '%s'\n", program, a);
      usage(stderr);
      return 2;
    }
  }
  if (!o->code && !o->script)
    o->interactive = 1;
  return -1;
}

int main(int argc, char **argv) {
  options o;
  int early = parse(&o, argc, argv);
  if (early >= 0)
    return early;
  const char *alloc = mfl_heap_unknown_choice();
  if (alloc)
    fprintf(stderr,
            "%s: MOONFLOW_LUA_ALLOC: '%s' is neither heap nor malloc; "
            "using the default\n",
            program, alloc);
  lua_State *L = mfl_heap_newstate(1);
  if (!L) {
    fprintf(stderr, "%s: cannot create a Lua state\n", program);
    return 1;
  }
  luaL_openlibs(L);
  mflw_is_program = 1; /* mf.runners.processes spawns this program */
  lua_pushcfunction(L, open_moonflow);
  if (report(L, lua_pcall(L, 0, 0, 0)) != LUA_OK) {
    mfl_heap_close(L);
    return 1;
  }
  if (o.worker) {
    int status = mflw_process_main(L, 3);
    mfl_heap_close(L);
    return status;
  }
  if (o.command) { /* reads the store: nothing runs */
    char path[4096];
    lua_pushstring(L, o.command);
    if (store_path(path, sizeof path, 0))
      lua_pushstring(L, path);
    else
      lua_pushnil(L);
    int n = push_script_args(L, argv, argc, o.first_arg);
    int status = call_cli_module(L, "moonflow.store_cli", "main", n + 2);
    mfl_heap_close(L);
    return status;
  }
  open_store(L);
  install_interrupts(L);
  int status = run(L, &o, argv, argc);
  if (interrupts && !interrupted_status && !in_repl)
    report_interrupt(); /* it came while the loop could not turn */
  if (interrupted_status)
    status = interrupted_status;
  remove_interrupts(L);
  mfl_heap_close(L);
  return status;
}
