/*
 * io_exec.c -- mf.exec(argv, opts?): run a program (no shell) and wait for
 * it: started by io_spawn.c (posix_spawn, reaped on SIGCHLD), its output
 * read through libuv pipes.
 *
 * The program runs in its own process group (a new session), so that a
 * timeout, a cancelled run or the state closing kills it and its children
 * at once (kill(-pid, SIGKILL)).  Its standard input is the
 * string opts.stdin, or /dev/null; its output is collected, or, with
 * opts.on_line, cut into lines that the waiting run is woken for and
 * passes to on_line itself (so on_line runs inside the run, may wait, and
 * output read meanwhile waits in a bounded buffer: reading stops above
 * HIGH_WATER bytes).  The call returns once the program exited and both
 * its output pipes reached their end.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

#define HIGH_WATER (1 << 20)
/* on_line: the longest piece of a line passed at once.  A longer line comes
 * in pieces of this size: whole, it could fill the buffer past HIGH_WATER
 * with nothing for the run to take, and reading would never resume (the
 * program blocked writing, the run waiting for a line: a hang). */
#define LINE_PIECE (HIGH_WATER / 2)

typedef struct out_buf {
  char *data;
  size_t len, cap;
} out_buf;

typedef struct exec_op {
  mfl_io_obj obj;
  mfl_io_wait wait;
  mfl_child child;
  uv_pipe_t in, out[2]; /* stdin; stdout, stderr */
  uv_write_t write_req;
  int handles; /* pipes not yet closed, and the child until reaped: the
                  reference of libuv's side */
  int exited;  /* the child was reaped */
  int in_open, out_open[2];
  int eof[2];
  int stopped[2]; /* reading stopped at the high-water mark */
  int read_error; /* the first error reading the output */
  int killed;     /* the group was killed (timeout, abandon, shutdown) */
  int on_line;    /* cut the output into lines */
  int parked;     /* the continuation follows a wait */
  char *stdin_data;
  size_t stdin_len;
  out_buf buf[2];           /* collected output, or the partial line of each */
  out_buf ready;            /* on_line: whole lines, as [stream][len][bytes] */
  size_t ready_pos;         /* lines of ready already handed out */
  struct exec_guard *guard; /* the waiter's hold (NULL once released) */
  double deadline;          /* on_line: when the timeout passes (< 0: none) */
  double timeout;
  char command[256];
} exec_op;

/* {====== Buffers ====== */

static int buf_add(out_buf *b, const char *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
      cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown)
      return UV_ENOMEM;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, n);
  b->len += n;
  return 0;
}

/* Queues one line of stream s (0 stdout, 1 stderr). */
static int ready_add(exec_op *op, int s, const char *line, size_t n) {
  unsigned char head[1 + sizeof(size_t)];
  head[0] = (unsigned char)s;
  memcpy(head + 1, &n, sizeof n);
  int rc = buf_add(&op->ready, (const char *)head, sizeof head);
  return rc ? rc : buf_add(&op->ready, line, n);
}

/* on_line: moves the whole lines of stream s to the ready queue, and the
 * pieces of LINE_PIECE bytes of a line longer than that (all of it, the
 * last piece too, at the end of the stream). */
static int cut_lines(exec_op *op, int s) {
  out_buf *b = &op->buf[s];
  size_t start = 0;
  int rc = 0;
  if (b->len == 0)
    return 0;
  for (;;) {
    size_t left = b->len - start;
    char *nl =
        memchr(b->data + start, '\n', left < LINE_PIECE ? left : LINE_PIECE);
    if (!nl) {
      if (left < LINE_PIECE)
        break;
      if ((rc = ready_add(op, s, b->data + start, LINE_PIECE)))
        return rc;
      start += LINE_PIECE;
      continue;
    }
    size_t n = (size_t)(nl - (b->data + start));
    if ((rc = ready_add(op, s, b->data + start, n)))
      return rc;
    start += n + 1;
  }
  if (op->eof[s] && start < b->len) {
    rc = ready_add(op, s, b->data + start, b->len - start);
    start = b->len;
  }
  memmove(b->data, b->data + start, b->len - start);
  b->len -= start;
  return rc;
}

static size_t buffered(const exec_op *op) {
  return op->buf[0].len + op->buf[1].len + op->ready.len - op->ready_pos;
}

/* }====== */

/* {====== The process and its pipes ====== */

static int finished(const exec_op *op) {
  return op->exited && op->eof[0] && op->eof[1];
}

/* One of libuv's holds on the op is over (a pipe closed, the child
 * reaped); the last drops libuv's reference. */
static void handle_done(exec_op *op) {
  if (--op->handles == 0)
    mfl_io_obj_unref(&op->obj);
}

static void on_handle_closed(uv_handle_t *handle) { handle_done(handle->data); }

static void close_handle(exec_op *op, uv_handle_t *handle, int *open) {
  (void)op; /* handle->data is op */
  if (!*open)
    return;
  *open = 0;
  uv_close(handle, on_handle_closed);
}

/* Something changed: wake the waiter when it is done, or when lines are
 * there for on_line. */
static void progress(exec_op *op) {
  if (finished(op) || (op->on_line && op->ready.len > op->ready_pos))
    mfl_io_wake(&op->wait);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
  (void)suggested;
  static char slab[64 * 1024]; /* the loop thread's; copied at once */
  (void)handle;
  *out = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
  exec_op *op = stream->data;
  int s = stream == (uv_stream_t *)&op->out[1];
  if (nread > 0) {
    int rc = buf_add(&op->buf[s], b->base, (size_t)nread);
    if (rc == 0 && op->on_line)
      rc = cut_lines(op, s);
    if (rc && !op->read_error)
      op->read_error = rc;
    if (op->on_line && buffered(op) > HIGH_WATER) {
      uv_read_stop(stream); /* the run is slow with its lines */
      op->stopped[s] = 1;
    }
  } else if (nread < 0) {
    if (nread != UV_EOF && !op->read_error)
      op->read_error = (int)nread;
    op->eof[s] = 1;
    if (op->on_line)
      cut_lines(op, s);
    close_handle(op, (uv_handle_t *)&op->out[s], &op->out_open[s]);
  }
  progress(op);
}

static void on_exited(mfl_child *child) {
  exec_op *op = (exec_op *)((char *)child - offsetof(exec_op, child));
  op->exited = 1;
  progress(op);
  handle_done(op);
}

static void on_stdin_written(uv_write_t *req, int status) {
  (void)status; /* EPIPE: the program did not read it all, its business */
  exec_op *op = req->data;
  close_handle(op, (uv_handle_t *)&op->in, &op->in_open);
}

/* Kills the program's process group and stops reading: the waiter went
 * away, or the timeout passed.  The child stays listed until it is reaped
 * (no zombie left behind) unless the state closes. */
static void kill_group(exec_op *op, int closing) {
  /* The group outlives its leader while a child of it lives (and holds
   * the pipes): it is killed unless the whole run of it is over. */
  if (op->child.pid > 0 && !op->killed && !finished(op)) {
    op->killed = 1;
    kill(-op->child.pid, SIGKILL);
  }
  close_handle(op, (uv_handle_t *)&op->in, &op->in_open);
  for (int s = 0; s < 2; s++) {
    op->eof[s] = 1;
    close_handle(op, (uv_handle_t *)&op->out[s], &op->out_open[s]);
  }
  if (closing && op->child.reaper) {
    mfl_child_forget(&op->child);
    handle_done(op);
  }
}

static void exec_shutdown(mfl_io_obj *obj) { kill_group((exec_op *)obj, 1); }

static void exec_finalize(mfl_io_obj *obj) {
  exec_op *op = (exec_op *)obj;
  free(op->stdin_data);
  free(op->buf[0].data);
  free(op->buf[1].data);
  free(op->ready.data);
}

/* }====== */

/* {====== Arguments ====== */

/* "prog arg ..." for messages, cut to the buffer. */
static void describe_argv(lua_State *L, int argv, char *out, size_t size) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer n = (lua_Integer)lua_rawlen(L, argv);
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addchar(&b, ' ');
    lua_rawgeti(L, argv, i);
    const char *arg = lua_tostring(L, -1);
    int quote = strpbrk(arg, " \t\"'") != NULL || !*arg;
    lua_pop(L, 1);
    if (quote)
      luaL_addchar(&b, '\'');
    luaL_addstring(&b, arg);
    if (quote)
      luaL_addchar(&b, '\'');
  }
  luaL_pushresult(&b);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  if (len >= size) {
    memcpy(out, text, size - 4);
    memcpy(out + size - 4, "...", 4);
  } else {
    memcpy(out, text, len + 1);
  }
  lua_pop(L, 1);
}

/* A NULL-terminated array of the strings in the list at idx, in a
 * userdata pushed on L (the strings stay on the Lua side, anchored by the
 * caller's arguments until the program started). */
static char **check_argv(lua_State *L, int idx) {
  if (!lua_istable(L, idx))
    mfl_raise(L, "UsageError",
              "mf.exec: argv must be a list of strings, got %s",
              luaL_typename(L, idx));
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n < 1)
    mfl_raise(L, "UsageError", "mf.exec: argv is empty: it needs a program");
  if (n > 100000)
    mfl_raise(L, "UsageError", "mf.exec: argv is too long (%I)", n);
  char **args = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *args, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, idx, i);
    size_t len;
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      mfl_raise(L, "UsageError", "mf.exec: argv[%I] must be a string, got %s",
                i, luaL_typename(L, -1));
    if (t == LUA_TNUMBER) { /* a copy that stays: in argv itself */
      lua_tostring(L, -1);
      lua_pushvalue(L, -1);
      lua_rawseti(L, idx, i);
    }
    args[i - 1] = (char *)lua_tolstring(L, -1, &len);
    if (strlen(args[i - 1]) != len)
      mfl_raise(L, "UsageError", "mf.exec: argv[%I] holds a zero byte", i);
    lua_pop(L, 1);
  }
  args[n] = NULL;
  return args;
}

/* The "KEY=value" strings of the env table at idx, in a userdata (with
 * their strings anchored in a table below it). */
static char **check_env(lua_State *L, int idx) {
  if (!lua_istable(L, idx))
    mfl_raise(L, "UsageError", "mf.exec: env must be a table, got %s",
              luaL_typename(L, idx));
  lua_newtable(L); /* anchors */
  int anchors = lua_gettop(L);
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING ||
        (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
      mfl_raise(L, "UsageError",
                "mf.exec: env must map names to strings (%s = %s)",
                luaL_typename(L, -2), luaL_typename(L, -1));
    lua_pushfstring(L, "%s=%s", lua_tostring(L, -2),
                    lua_tostring(L, -1)); /* a copy: the number stays */
    lua_rawseti(L, anchors, ++n);
    lua_pop(L, 1);
  }
  char **env = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *env, 1);
  lua_pushvalue(L, anchors);
  lua_setiuservalue(L, -2, 1);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, anchors, i + 1);
    env[i] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  env[n] = NULL;
  lua_remove(L, anchors);
  return env;
}

/* }====== */

/* {====== The call ====== */

/* The waiter's hold on the op, as a to-be-closed value on the call's stack:
 * whatever ends the call -- its result, an error (on_line raised), the
 * run's coroutine dropped -- releases it once, killing the program if it
 * still runs.  The engine abandoning a parked run releases it too. */
typedef struct exec_guard {
  exec_op *op;
} exec_guard;

static void release(exec_op *op) {
  if (!op->guard)
    return;
  op->guard->op = NULL;
  op->guard = NULL;
  kill_group(op, 0);
  mfl_io_obj_unref(&op->obj);
}

static int guard_close(lua_State *L) {
  exec_guard *g = lua_touserdata(L, 1);
  if (g && g->op)
    release(g->op);
  return 0;
}

static void exec_abandon(mfl_io_wait *w) {
  release((exec_op *)((char *)w - offsetof(exec_op, wait)));
}

static const char *signal_name(int sig) {
  switch (sig) {
  case SIGKILL:
    return "SIGKILL";
  case SIGTERM:
    return "SIGTERM";
  case SIGINT:
    return "SIGINT";
  case SIGSEGV:
    return "SIGSEGV";
  case SIGABRT:
    return "SIGABRT";
  case SIGHUP:
    return "SIGHUP";
  case SIGPIPE:
    return "SIGPIPE";
  default:
    return "signal";
  }
}

/* Pushes {code, signal, stdout, stderr}. */
static void push_result(lua_State *L, exec_op *op) {
  lua_createtable(L, 0, 4);
  int sig = op->child.term_signal;
  lua_pushinteger(L, sig ? 128 + sig : op->child.exit_status);
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, sig);
  lua_setfield(L, -2, "signal");
  if (!op->on_line) {
    lua_pushlstring(L, op->buf[0].data ? op->buf[0].data : "", op->buf[0].len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, op->buf[1].data ? op->buf[1].data : "", op->buf[1].len);
    lua_setfield(L, -2, "stderr");
  }
}

/* Stack of the call: argv opts on_line guard */

/* The end: the result, or the error check asks for. */
static int exec_end(lua_State *L, exec_op *op) {
  int check = lua_getfield(L, 2, "check") != LUA_TNIL && lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_pushstring(L, op->command);
  int command = lua_gettop(L);
  int read_error = op->read_error;
  push_result(L, op);
  int result = lua_gettop(L);
  char detail[96];
  int sig = op->child.term_signal;
  if (sig)
    snprintf(detail, sizeof detail, "killed by signal %d (%s)", sig,
             signal_name(sig));
  else
    snprintf(detail, sizeof detail, "exited with code %d",
             (int)op->child.exit_status);
  int failed = sig || op->child.exit_status != 0;
  release(op);
  if (read_error)
    return mfl_io_raise_detail(L, read_error, NULL, "exec",
                               lua_tostring(L, command), "reading its output");
  if (check && failed) {
    mfl_io_push_error(L, 0, "EXIT", "exec", lua_tostring(L, command), detail);
    lua_pushvalue(L, result);
    lua_setfield(L, -2, "result");
    return lua_error(L);
  }
  return 1;
}

/* Pops the next ready line: pushes on_line, the line and its stream. */
static int next_line(lua_State *L, exec_op *op) {
  if (op->ready_pos >= op->ready.len)
    return 0;
  const char *p = op->ready.data + op->ready_pos;
  size_t n;
  memcpy(&n, p + 1, sizeof n);
  lua_pushvalue(L, 3);
  lua_pushlstring(L, p + 1 + sizeof n, n);
  lua_pushstring(L, p[0] ? "stderr" : "stdout");
  op->ready_pos += 1 + sizeof n + n;
  if (op->ready_pos == op->ready.len)
    op->ready.len = op->ready_pos = 0;
  return 1;
}

/* Reading stopped at the high-water mark goes on once the run caught up. */
static void resume_reading(exec_op *op) {
  for (int s = 0; s < 2; s++)
    if (op->stopped[s] && buffered(op) < HIGH_WATER / 2) {
      op->stopped[s] = 0;
      if (op->out_open[s])
        uv_read_start((uv_stream_t *)&op->out[s], alloc_cb, on_read);
    }
}

static int timed_out(lua_State *L, exec_op *op) {
  lua_pushstring(L, op->command);
  char detail[64];
  snprintf(detail, sizeof detail, "timed out after %g s", op->timeout);
  mfl_io_push_error(L, UV_ETIMEDOUT, NULL, "exec", lua_tostring(L, -1), detail);
  release(op); /* kills the group */
  return lua_error(L);
}

/* The time left before the timeout (< 0: none). */
static double time_left(mfl_state *S, exec_op *op) {
  if (op->deadline < 0)
    return -1;
  double left = op->deadline - mf_engine_now(S->engine);
  return left > 0 ? left : 0;
}

static int exec_k(lua_State *L, int status, lua_KContext ctx);

/* After an on_line call that yielded (it waited) or raised. */
static int line_k(lua_State *L, int status, lua_KContext ctx) {
  if (status != LUA_OK && status != LUA_YIELD) {
    release((exec_op *)ctx);
    return lua_error(L);
  }
  return exec_k(L, LUA_OK, ctx);
}

static int exec_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  exec_op *op = (exec_op *)ctx;
  mfl_state *S = mfl_state_get(L);
  for (;;) {
    if (op->parked) {
      op->parked = 0;
      if (mfl_io_resumed(L, &op->wait) == MF_WAKE_TIMEOUT && !finished(op))
        return timed_out(L, op);
    }
    /* on_line, for each line there: a call the run makes (it may wait;
     * line_k comes back here after it). */
    while (next_line(L, op)) {
      resume_reading(op);
      if (lua_pcallk(L, 2, 0, 0, ctx, line_k) != LUA_OK) {
        release(op);
        return lua_error(L);
      }
    }
    resume_reading(op);
    if (finished(op))
      return exec_end(L, op);
    mf_run *run = mfl_current_run(L, S);
    if (run) {
      op->parked = 1;
      return mfl_io_park(L, run, &op->wait, time_left(S, op), ctx, exec_k);
    }
    /* Top level: wait here, in a loop rather than nested calls. */
    if (mfl_io_drive(L, &op->wait, time_left(S, op)) == MF_WAKE_TIMEOUT &&
        !finished(op))
      return timed_out(L, op);
  }
}

/* core.io.exec(argv, opts) -> {code, signal, stdout, stderr} */
static int l_exec(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    lua_newtable(L);
    lua_replace(L, 2);
  } else if (!lua_istable(L, 2)) {
    return mfl_raise(L, "UsageError",
                     "mf.exec: options must be a table, "
                     "got %s",
                     luaL_typename(L, 2));
  }
  lua_pushnil(L);                                             /* 3: on_line */
  exec_guard *guard = lua_newuserdatauv(L, sizeof *guard, 0); /* 4 */
  guard->op = NULL;
  luaL_setmetatable(L, "moonflow.exec");
  lua_toclose(L, 4);
  mfl_spawn_opts po;
  memset(&po, 0, sizeof po);
  po.argv = check_argv(L, 1);
  if (lua_getfield(L, 2, "env") != LUA_TNIL)
    po.env = check_env(L, lua_gettop(L));
  if (lua_getfield(L, 2, "cwd") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      return mfl_raise(L, "UsageError",
                       "mf.exec: cwd must be a string, "
                       "got %s",
                       luaL_typename(L, -1));
    po.cwd = lua_tostring(L, -1);
  }
  size_t stdin_len = 0;
  const char *stdin_data = NULL;
  if (lua_getfield(L, 2, "stdin") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      return mfl_raise(L, "UsageError",
                       "mf.exec: stdin must be a string, "
                       "got %s",
                       luaL_typename(L, -1));
    stdin_data = lua_tolstring(L, -1, &stdin_len);
  }
  double timeout = mfl_io_opt_timeout(L, 2, "mf.exec");
  int on_line = lua_getfield(L, 2, "on_line") != LUA_TNIL;
  if (on_line && !lua_isfunction(L, -1)) {
    if (!luaL_getmetafield(L, -1, "__call"))
      return mfl_raise(L, "UsageError",
                       "mf.exec: on_line must be a "
                       "function, got %s",
                       luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_replace(L, 3);
  if (lua_getfield(L, 2, "check") != LUA_TNIL && !lua_isboolean(L, -1))
    return mfl_raise(L, "UsageError",
                     "mf.exec: check must be a boolean, "
                     "got %s",
                     luaL_typename(L, -1));
  lua_pop(L, 1);

  mfl_io *io;
  mfl_io_begin(L, S, "mf.exec", &io); /* exec_k finds the run again */
  exec_op *op = mfl_io_obj_new(io, sizeof *op);
  if (!op)
    return luaL_error(L, "moonflow: out of memory");
  guard->op = op; /* from here, the guard releases it */
  op->guard = guard;
  op->obj.finalize = exec_finalize;
  op->obj.shutdown = exec_shutdown;
  op->wait.on_abandon = exec_abandon;
  op->on_line = on_line;
  op->timeout = timeout;
  op->deadline = timeout >= 0 ? mf_engine_now(S->engine) + timeout : -1;
  describe_argv(L, 1, op->command, sizeof op->command);
  if (stdin_data) {
    if (!(op->stdin_data = malloc(stdin_len + 1)))
      return luaL_error(L, "moonflow: out of memory");
    memcpy(op->stdin_data, stdin_data, stdin_len);
    op->stdin_len = stdin_len;
  }

  /* The pipes: the child's ends go to it, the parent's become libuv's. */
  int fds[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++)
    if ((i > 0 || stdin_data) && pipe2(fds[i], O_CLOEXEC) != 0)
      rc = -errno;
  if (rc == 0) {
    po.stdin_fd = fds[0][0];
    po.stdout_fd = fds[1][1];
    po.stderr_fd = fds[2][1];
    po.extra_fd = -1;
    po.new_session = 1;
    op->child.on_exit = on_exited;
    rc = mfl_spawn(io, &op->child, &po);
  }
  int child_ends[] = {fds[0][0], fds[1][1], fds[2][1]};
  int parent_ends[] = {fds[0][1], fds[1][0], fds[2][0]};
  for (int i = 0; i < 3; i++)
    if (child_ends[i] >= 0)
      close(child_ends[i]);
  if (rc < 0) {
    for (int i = 0; i < 3; i++)
      if (parent_ends[i] >= 0)
        close(parent_ends[i]);
    lua_pushstring(L, op->command);
    if (po.cwd)
      lua_pushfstring(L, "%s (in %s)", lua_tostring(L, -1), po.cwd);
    return mfl_io_raise(L, rc, "exec", lua_tostring(L, -1)); /* guard */
  }
  mfl_io_obj_ref(&op->obj); /* libuv's, until the last handle closed */
  op->handles = 1;          /* the child, until reaped */
  for (int s = 0; s < 2; s++) {
    uv_pipe_init(io->loop, &op->out[s], 0);
    op->out[s].data = op;
    op->out_open[s] = 1;
    op->handles++;
    if (uv_pipe_open(&op->out[s], fds[s + 1][0]) != 0) {
      close(fds[s + 1][0]);
      op->eof[s] = 1;
      close_handle(op, (uv_handle_t *)&op->out[s], &op->out_open[s]);
    }
  }
  if (stdin_data) {
    uv_pipe_init(io->loop, &op->in, 0);
    op->in.data = op;
    op->in_open = 1;
    op->handles++;
    if (uv_pipe_open(&op->in, fds[0][1]) != 0) {
      close(fds[0][1]);
      stdin_len = 0; /* closed below */
    }
  }
  for (int s = 0; s < 2; s++)
    if (op->out_open[s])
      uv_read_start((uv_stream_t *)&op->out[s], alloc_cb, on_read);
  if (stdin_data) {
    if (stdin_len == 0) {
      close_handle(op, (uv_handle_t *)&op->in, &op->in_open);
    } else {
      uv_buf_t b = uv_buf_init(op->stdin_data, (unsigned)stdin_len);
      op->write_req.data = op;
      if (uv_write(&op->write_req, (uv_stream_t *)&op->in, &b, 1,
                   on_stdin_written) < 0)
        close_handle(op, (uv_handle_t *)&op->in, &op->in_open);
    }
  }
  lua_settop(L, 4); /* argv opts on_line guard */
  return exec_k(L, LUA_OK, (lua_KContext)op);
}

/* }====== */

void mfl_open_io_exec(lua_State *L) {
  if (luaL_newmetatable(L, "moonflow.exec")) {
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__gc");
    mfl_protect_mt(L);
  }
  lua_pop(L, 1);
  mfl_pushcfunction(L, l_exec);
  lua_setfield(L, -2, "exec");
}
