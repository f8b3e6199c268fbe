/*
 * io.c -- the common core of I/O inside runs (io.h): the state's list of
 * I/O objects and their owners, how an I/O call waits (a park in a run, a
 * driven loop at top level), how an abandoned wait stops its I/O, IOError
 * tables, and closing everything when the Lua state closes.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

/* {====== Objects ====== */

static void io_unref(mfl_io *io) {
  if (--io->refs > 0)
    return;
  free(io);
}

void mfl_io_obj_init(mfl_io *io, mfl_io_obj *obj) {
  obj->io = io;
  obj->refs = 1;
  obj->prev = NULL;
  obj->next = io->first;
  if (io->first)
    io->first->prev = obj;
  io->first = obj;
  io->refs++;
}

void *mfl_io_obj_new(mfl_io *io, size_t size) {
  mfl_io_obj *obj = calloc(1, size);
  if (obj)
    mfl_io_obj_init(io, obj);
  return obj;
}

void mfl_io_obj_ref(mfl_io_obj *obj) { obj->refs++; }

void mfl_io_obj_unref(mfl_io_obj *obj) {
  if (--obj->refs > 0)
    return;
  mfl_io *io = obj->io;
  if (obj->prev)
    obj->prev->next = obj->next;
  else
    io->first = obj->next;
  if (obj->next)
    obj->next->prev = obj->prev;
  if (obj->finalize)
    obj->finalize(obj);
  free(obj);
  io_unref(io);
}

/* }====== */

/* {====== The state's I/O ====== */

/* Writing to a pipe or socket whose reader is gone must be an EPIPE error,
 * not a signal that kills the process (Node and luvit do the same).  A
 * host that installed its own handler keeps it. */
static void ignore_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
      !(old.sa_flags & SA_SIGINFO))
    signal(SIGPIPE, SIG_IGN);
}

mfl_io *mfl_io_get(lua_State *L, mfl_state *S) {
  if (S->io)
    return S->io;
  mfl_io *io = calloc(1, sizeof *io);
  if (!io)
    luaL_error(L, "moonflow: out of memory");
  io->S = S;
  io->loop = mf_engine_loop(S->engine);
  io->refs = 1; /* the state's */
  lua_newtable(L);
  io->servers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ignore_sigpipe();
  S->io = io;
  return io;
}

/* The Lua state closes: every object stops (handles closed, processes
 * killed, transfers removed) before the engine goes; callbacks due later
 * free their own memory and touch nothing else. */
void mfl_io_close_state(mfl_state *S) {
  mfl_io *io = S->io;
  if (!io)
    return;
  mfl_http_shutdown(io);
  /* The object held keeps its next pointer valid, whatever shutdown
   * frees: an unlinked neighbour is replaced in it. */
  for (mfl_io_obj *obj = io->first; obj;) {
    mfl_io_obj_ref(obj);
    if (obj->shutdown)
      obj->shutdown(obj);
    mfl_io_obj *next = obj->next;
    mfl_io_obj_unref(obj);
    obj = next;
  }
  io->S = NULL;
  S->io = NULL;
  io_unref(io);
}

/* }====== */

/* {====== Waiting ====== */

void mfl_io_abandon(mfl_run *lr) {
  mfl_io_wait *w = lr->io;
  if (!w)
    return;
  lr->io = NULL;
  w->run = NULL;
  w->state = MFL_IO_IDLE;
  w->on_abandon(w);
}

/* Outside any run: the wake finishes an external run the loop is driven
 * on (as any top-level wait).  Refused while luv's uv.run() runs the loop,
 * which would nest. */
static mf_wake_reason drive(lua_State *L, mfl_state *S, mfl_io_wait *w,
                            double timeout) {
  if (mfl_luv_running(L, S)) {
    w->on_abandon(w);
    mfl_raise(L, "UsageError",
              "cannot wait for I/O outside a run while uv.run() runs the "
              "loop: submit the code as a task or flow instead");
  }
  mf_run *ext = mf_run_new(S->engine, NULL, 0);
  if (ext) {
    mf_run_set_flags(ext, MF_RUN_ROOT);
    mf_run_set_custom_name(ext, "io");
    if (mf_run_submit(ext, NULL) != 0) {
      mf_run_unref(ext);
      ext = NULL;
    }
  }
  if (!ext) {
    w->on_abandon(w);
    luaL_error(L, "moonflow: out of memory");
  }
  w->ext = ext;
  w->state = MFL_IO_PARKED;
  int rc = mf_engine_wait(S->engine, &ext, 1, MF_WAIT_ALL, timeout);
  int woken = w->state == MFL_IO_WOKEN;
  w->ext = NULL;
  w->state = MFL_IO_IDLE;
  if (!mf_run_is_final(ext))
    mf_run_cancel(ext);
  mf_run_unref(ext);
  if (woken)
    return MF_WAKE_DONE;
  switch (rc) {
  case MF_ETIMEDOUT:
    return MF_WAKE_TIMEOUT;
  case MF_EDEADLK:
    return MF_WAKE_DEADLOCK;
  case MF_EINTR:
    w->on_abandon(w);
    mfl_raise(L, "Cancelled", "wait interrupted");
    break;
  default:
    w->on_abandon(w);
    mfl_raise(L, "UsageError",
              "cannot wait for I/O here: the event loop is already running "
              "this code (a callback)");
  }
  return MF_WAKE_NONE;
}

int mfl_io_park(lua_State *L, mf_run *run, mfl_io_wait *w, double timeout,
                lua_KContext ctx, lua_KFunction k) {
  if (run) {
    int rc = mf_run_park(run, timeout, &w->ticket);
    if (rc) {
      w->on_abandon(w);
      return mfl_raise(L, "UsageError", "cannot wait for I/O: %s",
                       mf_strerror(rc));
    }
    w->run = run;
    w->state = MFL_IO_PARKED;
    ((mfl_run *)mf_run_body(run))->io = w;
    return mfl_yield_parked(L, run, ctx, k);
  }
  mfl_state *S = mfl_state_get(L);
  mf_wake_reason reason = drive(L, S, w, timeout);
  w->reason = (unsigned char)reason;
  return k(L, LUA_YIELD, ctx);
}

mf_wake_reason mfl_io_drive(lua_State *L, mfl_io_wait *w, double timeout) {
  w->reason = (unsigned char)drive(L, mfl_state_get(L), w, timeout);
  return mfl_io_resumed(L, w);
}

void mfl_io_wake(mfl_io_wait *w) {
  if (w->state != MFL_IO_PARKED)
    return;
  w->state = MFL_IO_WOKEN;
  if (w->run)
    mf_run_unpark(w->run, w->ticket);
  else if (w->ext && !mf_run_is_final(w->ext))
    mf_run_finish(w->ext, MF_COMPLETED, MF_NAME_COMPLETED);
}

mf_wake_reason mfl_io_resumed(lua_State *L, mfl_io_wait *w) {
  mf_wake_reason reason;
  if (w->run) {
    reason = mf_run_wake_reason(w->run);
    ((mfl_run *)mf_run_body(w->run))->io = NULL;
    w->run = NULL;
  } else {
    reason = (mf_wake_reason)w->reason;
  }
  w->state = MFL_IO_IDLE;
  if (reason == MF_WAKE_DEADLOCK) {
    w->on_abandon(w);
    mfl_raise(L, "Deadlock",
              "an I/O wait can never finish: no run left could make "
              "progress and nothing else can wake one");
  }
  return reason;
}

/* }====== */

/* {====== Errors ====== */

int mfl_io_push_error(lua_State *L, int code, const char *name,
                      const char *what, const char *target,
                      const char *detail) {
  if (!name)
    name = code < 0 ? uv_err_name(code) : "EIO";
  if (!detail)
    detail = code < 0 ? uv_strerror(code) : "I/O error";
  mfl_push_error(L, "IOError", "%s %s: %s (%s)", what, target, detail, name);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "code");
  return 1;
}

int mfl_io_raise(lua_State *L, int code, const char *what, const char *target) {
  mfl_io_push_error(L, code, NULL, what, target, NULL);
  return lua_error(L);
}

int mfl_io_raise_detail(lua_State *L, int code, const char *name,
                        const char *what, const char *target,
                        const char *detail) {
  mfl_io_push_error(L, code, name, what, target, detail);
  return lua_error(L);
}

/* }====== */

/* {====== Helpers ====== */

mf_run *mfl_io_begin(lua_State *L, mfl_state *S, const char *what,
                     mfl_io **io) {
  mf_run *run = mfl_waiting_run(L, S, what);
  *io = mfl_io_get(L, S);
  return run;
}

double mfl_io_opt_timeout(lua_State *L, int idx, const char *what) {
  if (lua_isnoneornil(L, idx))
    return -1;
  double t = -1;
  if (lua_getfield(L, idx, "timeout") != LUA_TNIL) {
    char buf[96];
    snprintf(buf, sizeof buf, "%s: timeout", what);
    t = mfl_check_number(L, -1, buf);
    if (t < 0)
      mfl_raise(L, "UsageError", "%s: timeout must be >= 0, got %f", what, t);
  }
  lua_pop(L, 1);
  return t;
}

void mfl_io_attach(mfl_state *S, mf_resource *res) {
  mf_run *run = S->callback_depth > 0 ? NULL : mf_engine_current(S->engine);
  if (run)
    mf_run_attach(run, res);
}

/* }====== */

void mfl_open_io(lua_State *L) {
  /* core -> core, with core.io holding the families' functions */
  lua_newtable(L);
  mfl_open_io_promise(L);
  mfl_open_io_dns(L);
  mfl_open_io_fs(L);
  mfl_open_io_exec(L);
  mfl_open_io_conn(L);
  mfl_open_io_tcp(L);
  mfl_open_io_http(L);
  lua_setfield(L, -2, "io");
}
