/*
 * repl.c -- the interactive loop of the moonflow program.
 *
 * Input is read while the event loop runs: on a terminal through GNU
 * readline's callback interface, fed from a uv_poll_t on standard input; from
 * a pipe through the same poll handle, a line at a time; from a regular file
 * all at once.  Each complete chunk is handed to lua/moonflow/repl.lua, which
 * runs it as a run of its own and calls back when it is final, so the prompt
 * comes back only then while everything submitted before keeps going.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "binding.h"
#include "progress.h"
#include "repl.h"

#define HISTORY_LINES 1000

typedef struct mf_repl {
  lua_State *L;
  mfl_state *S;
  uv_poll_t poll;       /* standard input is readable */
  uv_check_t check;     /* after each loop turn: failures of background runs */
  uv_prepare_t prepare; /* and before the loop blocks: reported at once */
  int can_poll;         /* stdin is a terminal or a pipe */
  int polling;
  int tty;
  int busy;      /* a chunk's run is going: no input is taken */
  int eof;       /* no more input */
  int finished;  /* the handles are closed */
  int prompting; /* readline shows a prompt */
  int accepting; /* in readline's line handler: the line is accepted */
  char *source;  /* the chunk typed so far */
  size_t source_len;
  char *input; /* from a pipe or file: bytes not yet split into lines */
  size_t input_len, input_cap;
  char history[PATH_MAX];
} mf_repl;

/* readline's callbacks carry no user data: the one REPL of the process. */
static mf_repl *the_repl;

static void start_input(mf_repl *r);
static void process_lines(mf_repl *r);

/* {====== Output ====== */

/* Writes text without breaking the line being edited: the prompt and the
 * text typed so far are taken off the screen and put back after it. */
static void write_text(mf_repl *r, const char *text) {
  if (!(r->tty && r->prompting) || r->accepting) {
    fputs(text, stdout);
    fflush(stdout);
    return;
  }
  char *saved = rl_copy_text(0, rl_end);
  int point = rl_point;
  rl_save_prompt();
  rl_replace_line("", 0);
  rl_redisplay();
  fputs(text, stdout);
  fflush(stdout);
  rl_restore_prompt();
  rl_replace_line(saved, 0);
  rl_point = point;
  rl_redisplay();
  free(saved);
}

static int l_write(lua_State *L) {
  write_text(lua_touserdata(L, lua_upvalueindex(1)), luaL_checkstring(L, 1));
  return 0;
}

/* }====== */

/* {====== Chunks ====== */

static void push_repl_function(lua_State *L, const char *name) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

static int l_ready(lua_State *L);

static void reset_source(mf_repl *r) {
  r->source_len = 0;
  if (r->source)
    r->source[0] = '\0';
}

/* Hands the chunk typed so far to repl.feed; returns its verdict. */
static const char *feed(mf_repl *r, const char *line) {
  size_t len = strlen(line);
  char *grown = realloc(r->source, r->source_len + len + 2);
  if (!grown)
    return "error";
  r->source = grown;
  memcpy(r->source + r->source_len, line, len);
  r->source_len += len;
  r->source[r->source_len++] = '\n';
  r->source[r->source_len] = '\0';
  lua_State *L = r->L;
  int top = lua_gettop(L);
  push_repl_function(L, "feed");
  lua_pushlstring(L, r->source, r->source_len);
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, l_write, 1);
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, l_ready, 1);
  const char *verdict = "error";
  if (lua_pcall(L, 3, 1, 0) != LUA_OK)
    write_text(r, luaL_tolstring(L, -1, NULL));
  else if (lua_tostring(L, -1))
    verdict = lua_tostring(L, -1)[0] == 'i'   ? "incomplete"
              : lua_tostring(L, -1)[0] == 's' ? "started"
                                              : "error";
  lua_settop(L, top);
  if (verdict[0] != 'i')
    reset_source(r);
  if (verdict[0] == 's')
    r->busy = 1;
  return verdict;
}

static void stop_input(mf_repl *r);

/* Ctrl-D while runs are still going: the REPL waits for them, and says
 * so, and how not to. */
static void say_what_is_waited_for(mf_repl *r) {
  lua_State *L = r->L;
  size_t n = mf_progress_push_live(L, 8);
  if (n > 0)
    printf("waiting for %zu run%s still going: %s (Ctrl-C cancels %s)\n", n,
           n == 1 ? "" : "s", lua_tostring(L, -1), n == 1 ? "it" : "them");
  fflush(stdout);
  lua_pop(L, 1);
}

/* readline hands over a complete line (NULL at end of input). */
static void on_line(char *line) {
  mf_repl *r = the_repl;
  if (!line) {
    r->eof = 1;
    fputs("\n", stdout);
    say_what_is_waited_for(r);
    stop_input(r);
    return;
  }
  if (*line)
    add_history(line);
  /* The line is accepted (readline moved to the next line): what feed
   * writes goes below it, and readline shows the next prompt after. */
  r->accepting = 1;
  const char *verdict = feed(r, line);
  r->accepting = 0;
  free(line);
  if (verdict[0] == 's')
    stop_input(r);
  else
    rl_set_prompt(verdict[0] == 'i' ? ">> " : "> ");
}

/* The chunk's run is final and its result printed: take input again. */
static int l_ready(lua_State *L) {
  mf_repl *r = lua_touserdata(L, lua_upvalueindex(1));
  r->busy = 0;
  if (!r->finished)
    start_input(r);
  return 0;
}

/* }====== */

/* {====== Input ====== */

static void on_readable(uv_poll_t *handle, int status, int events);

static void close_handles(mf_repl *r) {
  if (r->finished)
    return;
  r->finished = 1;
  if (r->can_poll)
    uv_close((uv_handle_t *)&r->poll, NULL);
  uv_close((uv_handle_t *)&r->check, NULL);
  uv_close((uv_handle_t *)&r->prepare, NULL);
}

static void stop_input(mf_repl *r) {
  if (r->tty && r->prompting) {
    rl_callback_handler_remove();
    r->prompting = 0;
  }
  if (r->polling) {
    uv_poll_stop(&r->poll);
    r->polling = 0;
  }
  if (r->eof && !r->busy)
    close_handles(r);
}

static void start_input(mf_repl *r) {
  if (r->eof) {
    if (!r->tty)
      process_lines(r);
    if (!r->busy)
      close_handles(r);
    return;
  }
  if (r->tty && !r->prompting) {
    rl_callback_handler_install("> ", on_line);
    r->prompting = 1;
  }
  if (!r->tty)
    process_lines(r);
  if (!r->busy && !r->eof && r->can_poll && !r->polling) {
    uv_poll_start(&r->poll, UV_READABLE, on_readable);
    r->polling = 1;
  }
}

/* Feeds the complete lines read from a pipe or file, one chunk at a time. */
static void process_lines(mf_repl *r) {
  while (!r->busy && r->input_len > 0) {
    char *nl = memchr(r->input, '\n', r->input_len);
    if (!nl && !r->eof)
      return; /* a partial line: wait for the rest */
    size_t len = nl ? (size_t)(nl - r->input) : r->input_len;
    char *line = malloc(len + 1);
    if (!line)
      return;
    memcpy(line, r->input, len);
    line[len] = '\0';
    size_t used = nl ? len + 1 : len;
    memmove(r->input, r->input + used, r->input_len - used);
    r->input_len -= used;
    const char *verdict = feed(r, line);
    free(line);
    if (verdict[0] == 's' && r->polling) {
      uv_poll_stop(&r->poll);
      r->polling = 0;
    }
  }
  if (r->eof && !r->busy && r->source_len > 0) {
    /* Input ended inside a chunk: say so, as lua5.4 does. */
    char *rest = strdup(r->source);
    reset_source(r);
    if (rest) {
      lua_State *L = r->L;
      if (luaL_loadbuffer(L, rest, strlen(rest), "=stdin") != LUA_OK) {
        write_text(r, lua_tostring(L, -1));
        write_text(r, "\n");
      }
      lua_pop(L, 1);
      free(rest);
    }
  }
}

static int append_input(mf_repl *r, const char *bytes, size_t n) {
  if (r->input_len + n > r->input_cap) {
    size_t cap = (r->input_len + n) * 2 + 256;
    char *grown = realloc(r->input, cap);
    if (!grown)
      return -1;
    r->input = grown;
    r->input_cap = cap;
  }
  memcpy(r->input + r->input_len, bytes, n);
  r->input_len += n;
  return 0;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  mf_repl *r = handle->data;
  (void)events;
  if (r->tty) {
    rl_callback_read_char();
    return;
  }
  char buf[4096];
  ssize_t n = status < 0 ? 0 : read(0, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    r->eof = 1;
    uv_poll_stop(&r->poll);
    r->polling = 0;
  } else if (append_input(r, buf, (size_t)n) != 0) {
    r->eof = 1;
  }
  process_lines(r);
  if (r->eof && !r->busy)
    close_handles(r);
}

/* A regular file cannot be polled: it is read at once. */
static void read_all(mf_repl *r) {
  char buf[4096];
  ssize_t n;
  while ((n = read(0, buf, sizeof buf)) > 0)
    if (append_input(r, buf, (size_t)n) != 0)
      break;
  r->eof = 1;
}

/* }====== */

/* {====== Background failures ====== */

static void report_background(mf_repl *r) {
  if (r->S->closed || mf_run_unhandled(r->S->engine, NULL, NULL) == 0)
    return;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  push_repl_function(L, "report_background");
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, l_write, 1);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    write_text(r, luaL_tolstring(L, -1, NULL));
  lua_settop(L, top);
}

/* A run can fail in any phase of a loop turn (a timer, a step after the
 * poll): the check handle looks after each turn, the prepare handle before
 * the loop blocks in the poll for input, so a failure is on the screen
 * when it happens, not at the next Enter. */
static void on_check(uv_check_t *handle) { report_background(handle->data); }
static void on_prepare(uv_prepare_t *handle) {
  report_background(handle->data);
}

/* }====== */

static void history_path(mf_repl *r) {
  const char *path = getenv("MOONFLOW_HISTORY");
  const char *home = getenv("HOME");
  if (path && *path)
    snprintf(r->history, sizeof r->history, "%s", path);
  else if (home && *home)
    snprintf(r->history, sizeof r->history, "%s/.moonflow_history", home);
  else
    r->history[0] = '\0';
}

/* Makes print() safe for the prompt line, and `mf` a global. */
static void prepare_globals(mf_repl *r) {
  lua_State *L = r->L;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK)
    lua_setglobal(L, "mf");
  else
    lua_pop(L, 1);
  if (!r->tty)
    return;
  static const char print_source[] =
      "local write = ...\n"
      "return function(...)\n"
      "  local n, parts = select('#', ...), {}\n"
      "  for i = 1, n do parts[i] = tostring((select(i, ...))) end\n"
      "  write(table.concat(parts, '\\t') .. '\\n')\n"
      "end\n";
  if (luaL_loadbuffer(L, print_source, sizeof print_source - 1, "=print") !=
      LUA_OK) {
    lua_pop(L, 1);
    return;
  }
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, l_write, 1);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK)
    lua_setglobal(L, "print");
  else
    lua_pop(L, 1);
}

int mf_repl_interrupt(void) {
  mf_repl *r = the_repl;
  if (!r || r->finished)
    return 0;
  if (r->busy) {
    lua_State *L = r->L;
    int top = lua_gettop(L);
    push_repl_function(L, "interrupt");
    lua_pcall(L, 0, 0, 0);
    lua_settop(L, top);
    return 1;
  }
  if (r->tty && r->prompting) {
    /* At the prompt: drop what was typed, as Python does. */
    reset_source(r);
    rl_replace_line("", 0);
    rl_crlf();
    rl_set_prompt("> ");
    rl_on_new_line();
    rl_redisplay();
  }
  return 1;
}

int mf_repl_run(lua_State *L) {
  mf_repl r;
  memset(&r, 0, sizeof r);
  r.L = L;
  r.S = mfl_state_get(L);
  r.tty = isatty(0) && isatty(1);
  the_repl = &r;
  uv_loop_t *loop = mf_engine_loop(r.S->engine);
  r.poll.data = r.check.data = &r;
  r.can_poll = uv_poll_init(loop, &r.poll, 0) == 0;
  if (!r.can_poll)
    read_all(&r);
  uv_check_init(loop, &r.check);
  uv_check_start(&r.check, on_check);
  uv_unref((uv_handle_t *)&r.check);
  r.prepare.data = &r;
  uv_prepare_init(loop, &r.prepare);
  uv_prepare_start(&r.prepare, on_prepare);
  uv_unref((uv_handle_t *)&r.prepare);
  prepare_globals(&r);
  if (r.tty) {
    history_path(&r);
    rl_readline_name = "moonflow";
    if (r.history[0])
      read_history(r.history);
    printf("moonflow %s (%s) -- Ctrl-D to leave, Ctrl-C stops a wait\n",
           MF_VERSION, LUA_RELEASE);
  }
  start_input(&r);
  int rc = mf_engine_run(r.S->engine);
  while (rc == MF_EINTR && !r.finished)
    rc = mf_engine_run(r.S->engine);
  stop_input(&r);
  close_handles(&r);
  uv_run(loop, UV_RUN_NOWAIT); /* let the close callbacks run */
  if (r.tty && r.history[0]) {
    write_history(r.history);
    history_truncate_file(r.history, HISTORY_LINES);
  }
  free(r.source);
  free(r.input);
  the_repl = NULL;
  return 0;
}
