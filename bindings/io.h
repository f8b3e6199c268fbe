/*
 * io.h -- I/O inside runs: what every I/O call of the bindings shares.
 *
 * An I/O call waits the same way in every family: inside a run it parks
 * the run on the engine (mf_run_park, a ticket) and yields; the libuv
 * callback stores the outcome and wakes it (mfl_io_wake).  Outside any run
 * (stock lua5.4's main chunk) the wake finishes an external run that the
 * call drives the loop on, as a top-level wait does.  A run whose body is
 * abandoned while parked (cancelled, timed out, the engine closing) has
 * the operation it waited on aborted (mfl_io_wait.on_abandon).
 *
 * Memory: libuv owns a request's or handle's memory until its callback
 * (or close callback) came, and the waiting Lua side until it read the
 * outcome.  Each object counts its owners (mfl_io_obj.refs) and is freed
 * at the last; a callback that comes after the Lua side went away touches
 * nothing but the object's own memory.
 *
 * Every live object is listed in the state's mfl_io, so that closing the
 * Lua state closes every handle properly before the engine goes.
 */
#ifndef MFL_IO_H
#define MFL_IO_H

#include "binding.h"

/* {====== Objects the I/O layer owns ====== */

typedef struct mfl_io mfl_io;
typedef struct mfl_io_obj mfl_io_obj;

/* The head of every C object of the I/O layer (operations, connections,
 * servers): its owners and its place in the state's list. */
struct mfl_io_obj {
  mfl_io *io;
  int refs; /* owners: libuv (busy), a waiter, a Lua userdata */
  mfl_io_obj *prev, *next;
  /* Stops what the object does now: the Lua state is closing (called once,
   * before the engine closes).  May be NULL. */
  void (*shutdown)(mfl_io_obj *obj);
  /* Frees what the object holds besides its memory.  May be NULL. */
  void (*finalize)(mfl_io_obj *obj);
};

/* The I/O of one Lua state.  It outlives the state while libuv callbacks
 * are due (a host's loop goes on after the state closed). */
struct mfl_io {
  mfl_state *S; /* NULL once the state closed */
  uv_loop_t *loop;
  int refs; /* the state, and each live object */
  mfl_io_obj *first;
  struct mfl_http *http; /* the curl multi handle, made on first use */
  struct reaper *reaper; /* io_spawn.c: reaps the children of mf.exec */
  int servers_ref;       /* registry: listening servers (kept alive) */
};

/* Lists a new object (refs = 1, its creator's) with the state's I/O. */
MFL_INTERNAL void mfl_io_obj_init(mfl_io *io, mfl_io_obj *obj);
MFL_INTERNAL void mfl_io_obj_ref(mfl_io_obj *obj);
/* Drops one owner; the last frees the object (finalize first). */
MFL_INTERNAL void mfl_io_obj_unref(mfl_io_obj *obj);
/* Allocates and lists an object of size bytes (zeroed), or NULL. */
MFL_INTERNAL void *mfl_io_obj_new(mfl_io *io, size_t size);

/* The I/O of the state (made on first use); raises when out of memory. */
MFL_INTERNAL mfl_io *mfl_io_get(lua_State *L, mfl_state *S);
/* Whether the Lua state (and its engine) is still there. */
static inline int mfl_io_live(const mfl_io *io) { return io->S != NULL; }

/* }====== */

/* {====== Waiting ====== */

typedef enum mfl_io_wstate {
  MFL_IO_IDLE,   /* nobody waits */
  MFL_IO_PARKED, /* a run (or the top level) waits */
  MFL_IO_WOKEN,  /* woken, not yet resumed */
} mfl_io_wstate;

typedef struct mfl_io_wait mfl_io_wait;
struct mfl_io_wait {
  mf_run *run; /* the parked run */
  mf_run *ext; /* at top level: the external run the loop is driven on */
  unsigned ticket;
  unsigned char state;  /* mfl_io_wstate */
  unsigned char reason; /* at top level: how the driven wait ended */
  /* The waiter went away without reading the outcome (its run was
   * cancelled or timed out, or the engine closes): stop the I/O and drop
   * the waiter's reference. */
  void (*on_abandon)(mfl_io_wait *w);
};

/* Waits for w to be woken: parks run (from mfl_waiting_run) and yields, or,
 * when run is NULL, drives the loop and calls k(L, LUA_YIELD, ctx).  timeout
 * in seconds, < 0 for none.  Before it returns or raises at top level, a
 * failed drive (interrupted, nested in uv.run) abandons w. */
MFL_INTERNAL int mfl_io_park(lua_State *L, mf_run *run, mfl_io_wait *w,
                             double timeout, lua_KContext ctx, lua_KFunction k);
/* At top level only: drives the loop until w is woken or the timeout
 * passes; returns how the wait ended (as mfl_io_resumed does after it).
 * For a call that waits more than once (mf.exec with on_line), so that
 * its waits loop instead of nesting. */
MFL_INTERNAL mf_wake_reason mfl_io_drive(lua_State *L, mfl_io_wait *w,
                                         double timeout);
/* From a callback: the outcome is in; wakes the waiter (if any). */
MFL_INTERNAL void mfl_io_wake(mfl_io_wait *w);
/* In the continuation: the waiter is back.  Returns MF_WAKE_DONE or
 * MF_WAKE_TIMEOUT; raises Deadlock (after abandoning w) when the engine
 * found that nothing could ever wake it. */
MFL_INTERNAL mf_wake_reason mfl_io_resumed(lua_State *L, mfl_io_wait *w);

/* }====== */

/* {====== Errors ====== */

/* Pushes an IOError: code is a libuv error (< 0), or 0 with name giving
 * the code ("EXIT"); the message is "<what> <target>: <description>". */
MFL_INTERNAL int mfl_io_push_error(lua_State *L, int code, const char *name,
                                   const char *what, const char *target,
                                   const char *detail);
MFL_INTERNAL int mfl_io_raise(lua_State *L, int code, const char *what,
                              const char *target);
/* The same with a free detail text (curl's message, an exit status). */
MFL_INTERNAL int mfl_io_raise_detail(lua_State *L, int code, const char *name,
                                     const char *what, const char *target,
                                     const char *detail);

/* }====== */

/* {====== Helpers ====== */

/* The run an I/O call waits in (NULL at top level); raises where no wait
 * can happen.  Also sets up the state's I/O. */
MFL_INTERNAL mf_run *mfl_io_begin(lua_State *L, mfl_state *S, const char *what,
                                  mfl_io **io);
/* The timeout field of an options table at idx (< 0 when absent). */
MFL_INTERNAL double mfl_io_opt_timeout(lua_State *L, int idx, const char *what);
/* Attaches the resource to the run that opens it (none at top level). */
MFL_INTERNAL void mfl_io_attach(mfl_state *S, mf_resource *res);

/* }====== */

/* {====== The families ====== */

/* io_promise.c */
MFL_INTERNAL void mfl_open_io_promise(lua_State *L);
/* io_dns.c: name resolution, shared by mf.dns.resolve and connect. */
MFL_INTERNAL void mfl_open_io_dns(lua_State *L);
/* io_fs.c */
MFL_INTERNAL void mfl_open_io_fs(lua_State *L);
/* io_spawn.c: starting programs (posix_spawn) and reaping them
 * (SIGCHLD): mf.exec's and the processes runner's. */
typedef struct mfl_child mfl_child;
struct mfl_child {
  int pid;                       /* > 0 once started */
  int exited;                    /* reaped */
  long exit_status;              /* its code (-1: reaped by someone else) */
  int term_signal;               /* the signal that ended it, or 0 */
  int weak;                      /* does not keep the loop alive */
  void (*on_exit)(mfl_child *c); /* reaped (from the loop) */
  mfl_child *prev, *next;        /* in the reaper's list until reaped */
  struct reaper *reaper;
};
typedef struct mfl_spawn_opts {
  char **argv;     /* argv[0] a path, or a name looked up on PATH */
  char **env;      /* "NAME=value" strings; NULL: this process's */
  const char *cwd; /* NULL: this process's */
  int stdin_fd;    /* < 0: /dev/null */
  int stdout_fd, stderr_fd;
  int extra_fd;    /* >= 0: becomes the child's descriptor 3 */
  int new_session; /* leads a new session (its own process group) */
} mfl_spawn_opts;
/* Starts the program; on success the child is listed until reaped (then
 * c->on_exit) or forgotten, and keeps the loop alive unless c->weak.
 * Returns 0 or a libuv error (UV_ENOENT, UV_EACCES, ...). */
MFL_INTERNAL int mfl_spawn(mfl_io *io, mfl_child *c, const mfl_spawn_opts *o);
/* Whether the listed child keeps the loop alive (sets c->weak). */
MFL_INTERNAL void mfl_child_keep_loop(mfl_child *c, int on);
/* Stops waiting for the child (the state closes). */
MFL_INTERNAL void mfl_child_forget(mfl_child *c);
/* io_exec.c */
MFL_INTERNAL void mfl_open_io_exec(lua_State *L);
/* io_conn.c: Connections (a TCP or Unix stream socket). */
typedef struct mfl_conn mfl_conn;
/* A new connection (one reference: the creator's) with an initialised,
 * unconnected handle; name is "host:port" or the path, for messages.
 * NULL when out of memory. */
MFL_INTERNAL mfl_conn *mfl_conn_new(mfl_io *io, int is_unix, const char *name);
MFL_INTERNAL uv_stream_t *mfl_conn_stream(mfl_conn *c);
MFL_INTERNAL const char *mfl_conn_name(const mfl_conn *c);
/* Closes the handle (idempotent) / drops the creator's reference. */
MFL_INTERNAL void mfl_conn_close(mfl_conn *c);
MFL_INTERNAL void mfl_conn_unref(mfl_conn *c);
/* Pushes the Connection userdata, which takes over the creator's
 * reference, and attaches the connection to run (if not NULL). */
MFL_INTERNAL void mfl_conn_push(lua_State *L, mfl_conn *c, mf_run *run);
MFL_INTERNAL void mfl_open_io_conn(lua_State *L);
MFL_INTERNAL void mfl_open_io_tcp(lua_State *L);
/* io_http.c */
MFL_INTERNAL void mfl_open_io_http(lua_State *L);
MFL_INTERNAL void mfl_http_shutdown(mfl_io *io);

/* }====== */

#endif
