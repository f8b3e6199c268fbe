/*
 * io_conn.c -- Connections: a connected TCP or Unix stream socket read
 * with Lua's formats and written in order.
 *
 * Reading: once a read needs data the socket is read continuously into the
 * connection's buffer (alloc_cb hands out its free end: no copy), and
 * stops at HIGH_WATER bytes unless a read waits for more; a read that the
 * buffer satisfies returns at once, without parking.  Writing: uv_try_write
 * first; what the kernel did not take is copied and written by uv_write,
 * and the run parks until it is handed over.  A run's timeout or
 * cancellation while it is parked on a connection closes the connection.
 *
 * Owners of a connection (mfl_io_obj.refs): its Lua userdata (or its
 * creator before that), its open handle, a parked read, each write in
 * flight.  It is attached to the run that opened it (closed when that run
 * ends), and closed by the collector once unreachable.
 */
#include <stdlib.h>
#include <string.h>

#include "io.h"

#define HIGH_WATER (256 * 1024)
#define READ_SIZE (64 * 1024)

struct mfl_conn {
  mfl_io_obj obj;
  mf_resource res;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  mfl_io_wait reader;
  int open;        /* the handle is not closed */
  int reading;     /* uv_read_start is on */
  int read_status; /* 0, UV_EOF, or the error that ended reading */
  int cancelled;   /* closed while a read was parked on it */
  int want;        /* the parked read: 'l', 'L', 'a' or 'n' */
  size_t want_n;
  char *buf;
  size_t start, len, cap; /* unread: buf[start .. start + len) */
  size_t scanned;         /* bytes of it known to hold no newline */
  char name[128];
};

typedef struct conn_box {
  mfl_conn *c;
  mfl_state *S; /* (mfl_note_box) */
} conn_box;

/* {====== The handle ====== */

uv_stream_t *mfl_conn_stream(mfl_conn *c) { return &c->h.stream; }
const char *mfl_conn_name(const mfl_conn *c) { return c->name; }
void mfl_conn_unref(mfl_conn *c) { mfl_io_obj_unref(&c->obj); }

static void on_closed(uv_handle_t *handle) {
  mfl_conn *c = handle->data;
  mfl_io_obj_unref(&c->obj); /* the handle's */
}

void mfl_conn_close(mfl_conn *c) {
  if (!c->open)
    return;
  c->open = 0;
  c->reading = 0;
  mf_resource_detach(&c->res);
  uv_close(&c->h.handle, on_closed);
  if (c->reader.state == MFL_IO_PARKED) {
    c->cancelled = 1; /* closed under the read (by another run) */
    mfl_io_wake(&c->reader);
  }
}

static void conn_shutdown(mfl_io_obj *obj) { mfl_conn_close((mfl_conn *)obj); }

static void conn_finalize(mfl_io_obj *obj) { free(((mfl_conn *)obj)->buf); }

static void resource_close(mf_resource *res) {
  mfl_conn_close((mfl_conn *)((char *)res - offsetof(mfl_conn, res)));
}

/* The parked read's run went away: the connection is closed (api.md). */
static void reader_abandon(mfl_io_wait *w) {
  mfl_conn *c = (mfl_conn *)((char *)w - offsetof(mfl_conn, reader));
  mfl_conn_close(c);
  mfl_io_obj_unref(&c->obj); /* the read's */
}

mfl_conn *mfl_conn_new(mfl_io *io, int is_unix, const char *name) {
  mfl_conn *c = mfl_io_obj_new(io, sizeof *c);
  if (!c)
    return NULL;
  c->obj.shutdown = conn_shutdown;
  c->obj.finalize = conn_finalize;
  c->res.close = resource_close;
  c->reader.on_abandon = reader_abandon;
  snprintf(c->name, sizeof c->name, "%s", name);
  if (is_unix)
    uv_pipe_init(io->loop, &c->h.pipe, 0);
  else
    uv_tcp_init(io->loop, &c->h.tcp);
  c->h.handle.data = c;
  c->open = 1;
  mfl_io_obj_ref(&c->obj); /* the handle's, dropped by on_closed */
  return c;
}

/* }====== */

/* {====== Reading ====== */

/* Whether the buffer answers a read of that kind now. */
static int satisfied(mfl_conn *c, int want, size_t n) {
  if (c->read_status || c->cancelled || !c->open)
    return 1;
  switch (want) {
  case 'l':
  case 'L': {
    if (c->len > c->scanned &&
        memchr(c->buf + c->start + c->scanned, '\n', c->len - c->scanned))
      return 1;
    c->scanned = c->len;
    return 0;
  }
  case 'a':
    return 0;
  default:
    return n == 0 ? c->len > 0 : c->len >= n;
  }
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
  (void)suggested;
  mfl_conn *c = handle->data;
  if (c->start > 0 && (c->len == 0 || c->start >= c->cap / 2)) {
    memmove(c->buf, c->buf + c->start, c->len);
    c->start = 0;
  }
  if (c->cap - c->start - c->len < READ_SIZE) {
    size_t cap = c->cap ? c->cap : READ_SIZE;
    while (cap - c->start - c->len < READ_SIZE)
      cap *= 2;
    char *grown = realloc(c->buf, cap);
    if (!grown) {
      *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
      return;
    }
    c->buf = grown;
    c->cap = cap;
  }
  *out = uv_buf_init(c->buf + c->start + c->len,
                     (unsigned)(c->cap - c->start - c->len));
}

static void stop_reading(mfl_conn *c) {
  if (c->reading) {
    c->reading = 0;
    uv_read_stop(&c->h.stream);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  mfl_conn *c = stream->data;
  if (nread > 0) {
    c->len += (size_t)nread;
  } else if (nread < 0) {
    c->read_status = (int)nread;
    stop_reading(c);
  }
  int parked = c->reader.state == MFL_IO_PARKED;
  if (parked && satisfied(c, c->want, c->want_n))
    mfl_io_wake(&c->reader);
  else if (!parked && c->len >= HIGH_WATER)
    stop_reading(c); /* nobody reads: the peer waits (back-pressure) */
}

static void start_reading(mfl_conn *c) {
  if (c->reading || c->read_status || !c->open)
    return;
  int rc = uv_read_start(&c->h.stream, alloc_cb, on_read);
  if (rc < 0)
    c->read_status = rc;
  else
    c->reading = 1;
}

static void consume(mfl_conn *c, size_t n) {
  c->start += n;
  c->len -= n;
  c->scanned = 0;
  if (c->len == 0)
    c->start = 0;
}

/* Pushes what a read of that kind returns (the buffer satisfies it). */
static int produce(lua_State *L, mfl_conn *c, int want, size_t n) {
  char *p = c->buf ? c->buf + c->start : NULL;
  int error = c->cancelled                                 ? UV_ECANCELED
              : c->read_status && c->read_status != UV_EOF ? c->read_status
                                                           : 0;
  if (!c->open && !c->cancelled && c->len == 0 && !c->read_status)
    error = UV_ECANCELED; /* closed by its run's end or the state */
  switch (want) {
  case 'l':
  case 'L': {
    char *nl = c->len ? memchr(p, '\n', c->len) : NULL;
    if (nl) {
      size_t size = (size_t)(nl - p);
      lua_pushlstring(L, p, size + (want == 'L'));
      consume(c, size + 1);
      return 1;
    }
    break;
  }
  case 'a':
    if (error)
      return mfl_io_raise(L, error, "read", c->name);
    lua_pushlstring(L, p ? p : "", c->len);
    consume(c, c->len);
    return 1;
  default:
    if (c->len > 0) {
      size_t size = n < c->len ? n : c->len;
      lua_pushlstring(L, p, size);
      consume(c, size);
      return 1;
    }
  }
  /* The end of the stream, or an error, with part of a line left. */
  if (c->len > 0 && want != 'n') {
    lua_pushlstring(L, p, c->len);
    consume(c, c->len);
    return 1;
  }
  if (error)
    return mfl_io_raise(L, error, "read", c->name);
  lua_pushnil(L);
  return 1;
}

static mfl_conn *check_open(lua_State *L, int idx, const char *what) {
  conn_box *box = luaL_testudata(L, idx, "moonflow.Connection");
  if (!box) {
    mfl_raise(L, "UsageError",
              "%s: a Connection expected, got %s (use "
              "conn:%s, not conn.%s)",
              what, luaL_typename(L, idx), what, what);
    return NULL; /* not reached */
  }
  if (!box->c || !box->c->open)
    mfl_raise(L, "UsageError", "%s: connection %s is closed", what,
              box->c ? box->c->name : "?");
  return box->c;
}

/* The format of a read: 'l', 'L', 'a', or 'n' with *n bytes. */
static int check_format(lua_State *L, int idx, size_t *n) {
  if (lua_isnoneornil(L, idx))
    return 'l';
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer count = lua_tointeger(L, idx);
    if (!lua_isinteger(L, idx) || count < 0)
      mfl_raise(L, "UsageError",
                "read: a byte count must be an integer "
                ">= 0");
    *n = (size_t)count;
    return 'n';
  }
  const char *fmt = lua_tostring(L, idx);
  if (fmt && *fmt == '*')
    fmt++; /* Lua 5.3's "*l" */
  if (fmt && (*fmt == 'l' || *fmt == 'L' || *fmt == 'a'))
    return *fmt;
  return mfl_raise(L, "UsageError",
                   "read: format must be a number, \"l\", "
                   "\"L\" or \"a\", got %s",
                   mfl_describe(L, idx));
}

/* Stack: conn fmt */
static int read_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mfl_conn *c = (mfl_conn *)ctx;
  mfl_io_resumed(L, &c->reader);
  mfl_io_obj_unref(&c->obj); /* the read's (the userdata holds it too) */
  return produce(L, c, c->want, c->want_n);
}

/* conn:read(fmt) -> string or nil */
static int conn_read(lua_State *L) {
  mfl_conn *c = check_open(L, 1, "read");
  size_t n = 0;
  int want = check_format(L, 2, &n);
  if (c->reader.state != MFL_IO_IDLE)
    return mfl_raise(L, "UsageError",
                     "read: a read is already waiting on "
                     "connection %s",
                     c->name);
  if (satisfied(c, want, n))
    return produce(L, c, want, n);
  mfl_state *S = mfl_state_get(L);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, "read", &io);
  start_reading(c);
  if (satisfied(c, want, n)) /* reading could not start */
    return produce(L, c, want, n);
  lua_settop(L, 2);
  c->want = want;
  c->want_n = n;
  mfl_io_obj_ref(&c->obj); /* the read's */
  return mfl_io_park(L, run, &c->reader, -1, (lua_KContext)c, read_k);
}

/* The iterator of conn:lines(): conn:read("l"). */
static int lines_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushliteral(L, "l");
  return conn_read(L);
}

/* conn:lines() -> iterator */
static int conn_lines(lua_State *L) {
  check_open(L, 1, "lines");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state); /* mfl_state_get */
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, lines_next, 2);
  return 1;
}

/* }====== */

/* {====== Writing ====== */

typedef struct write_op {
  mfl_io_obj obj;
  mfl_io_wait wait;
  uv_write_t req;
  mfl_conn *c;
  int busy;
  int status;
  size_t len;
  char data[];
} write_op;

static void write_finalize(mfl_io_obj *obj) {
  mfl_io_obj_unref(&((write_op *)obj)->c->obj);
}

static void write_abandon(mfl_io_wait *w) {
  write_op *op = (write_op *)((char *)w - offsetof(write_op, wait));
  mfl_conn_close(op->c); /* the write's callback follows, cancelled */
  mfl_io_obj_unref(&op->obj);
}

static void on_written(uv_write_t *req, int status) {
  write_op *op = req->data;
  op->busy = 0;
  op->status = status;
  mfl_io_wake(&op->wait);
  mfl_io_obj_unref(&op->obj);
}

/* Stack: conn ... */
static int write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  write_op *op = (write_op *)ctx;
  mfl_io_resumed(L, &op->wait);
  int rc = op->status;
  lua_pushstring(L, op->c->name);
  mfl_io_obj_unref(&op->obj);
  if (rc < 0)
    return mfl_io_raise(L, rc, "write", lua_tostring(L, -1));
  lua_settop(L, 1);
  return 1;
}

#define WRITE_BUFS 16

/* conn:write(...) -> conn */
static int conn_write(lua_State *L) {
  mfl_conn *c = check_open(L, 1, "write");
  int n = lua_gettop(L) - 1;
  uv_buf_t stack_bufs[WRITE_BUFS];
  uv_buf_t *bufs = n <= WRITE_BUFS
                       ? stack_bufs
                       : lua_newuserdatauv(L, (size_t)n * sizeof *bufs, 0);
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    int t = lua_type(L, i + 2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return mfl_raise(L, "UsageError",
                       "write: argument #%d must be a "
                       "string, got %s",
                       i + 1, luaL_typename(L, i + 2));
    size_t len;
    const char *s = lua_tolstring(L, i + 2, &len);
    bufs[i] = uv_buf_init((char *)s, (unsigned)len);
    total += len;
  }
  size_t done = 0;
  if (total > 0 && c->h.stream.write_queue_size == 0) {
    int rc = uv_try_write(&c->h.stream, bufs, (unsigned)n);
    if (rc < 0 && rc != UV_EAGAIN)
      return mfl_io_raise(L, rc, "write", c->name);
    if (rc > 0)
      done = (size_t)rc;
  }
  if (done == total) {
    lua_settop(L, 1);
    return 1;
  }
  mfl_state *S = mfl_state_get(L);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, "write", &io);
  write_op *op = mfl_io_obj_new(io, sizeof *op + (total - done));
  if (!op)
    return luaL_error(L, "moonflow: out of memory");
  op->c = c;
  mfl_io_obj_ref(&c->obj);
  op->obj.finalize = write_finalize;
  op->wait.on_abandon = write_abandon;
  /* The rest, copied: the strings may go before libuv is done with it. */
  size_t skip = done;
  for (int i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(op->data + op->len, bufs[i].base + skip, len - skip);
    op->len += len - skip;
    skip = 0;
  }
  uv_buf_t rest = uv_buf_init(op->data, (unsigned)op->len);
  op->req.data = op;
  int rc = uv_write(&op->req, &c->h.stream, &rest, 1, on_written);
  if (rc < 0) {
    mfl_io_obj_unref(&op->obj);
    return mfl_io_raise(L, rc, "write", c->name);
  }
  op->busy = 1;
  mfl_io_obj_ref(&op->obj); /* libuv's */
  lua_settop(L, 1);
  return mfl_io_park(L, run, &op->wait, -1, (lua_KContext)op, write_k);
}

/* }====== */

/* {====== The userdata ====== */

static void release_conn_box(void *p) {
  conn_box *box = p;
  if (box->c) {
    mfl_conn_close(box->c);
    mfl_io_obj_unref(&box->c->obj);
    box->c = NULL;
  }
}

void mfl_conn_push(lua_State *L, mfl_conn *c, mf_run *run) {
  conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->c = NULL;
  box->S = c->obj.io->S;
  luaL_setmetatable(L, "moonflow.Connection");
  mfl_note_box(L, box->S, box, release_conn_box);
  box->c = c;
  if (run)
    mf_run_attach(run, &c->res);
}

static int conn_close_method(lua_State *L) {
  conn_box *box = luaL_testudata(L, 1, "moonflow.Connection");
  if (!box)
    return mfl_raise(L, "UsageError", "close: a Connection expected, got %s",
                     luaL_typename(L, 1));
  if (box->c)
    mfl_conn_close(box->c);
  return 0;
}

static int conn_gc(lua_State *L) {
  conn_box *box = lua_touserdata(L, 1);
  mfl_forget_box(box->S, box);
  release_conn_box(box);
  return 0;
}

typedef struct shutdown_op {
  mfl_io_obj obj;
  uv_shutdown_t req;
  mfl_conn *c;
} shutdown_op;

static void shutdown_finalize(mfl_io_obj *obj) {
  mfl_io_obj_unref(&((shutdown_op *)obj)->c->obj);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  shutdown_op *op = req->data;
  mfl_io_obj_unref(&op->obj);
}

/* conn:shutdown(): no more writes (the peer reads its end); reading goes
 * on.  Queued after the writes before it. */
static int conn_shutdown_method(lua_State *L) {
  mfl_conn *c = check_open(L, 1, "shutdown");
  shutdown_op *op = mfl_io_obj_new(c->obj.io, sizeof *op);
  if (!op)
    return luaL_error(L, "moonflow: out of memory");
  op->c = c;
  mfl_io_obj_ref(&c->obj);
  op->obj.finalize = shutdown_finalize;
  op->req.data = op;
  int rc = uv_shutdown(&op->req, &c->h.stream, on_shutdown);
  if (rc < 0) {
    mfl_io_obj_unref(&op->obj);
    if (rc != UV_ENOTCONN)
      return mfl_io_raise(L, rc, "shutdown", c->name);
  }
  lua_settop(L, 1);
  return 1;
}

static int conn_tostring(lua_State *L) {
  conn_box *box = lua_touserdata(L, 1);
  lua_pushfstring(L, "Connection (%s%s)", box->c ? box->c->name : "?",
                  box->c && box->c->open ? "" : ", closed");
  return 1;
}

/* core.io.conn_attach(conn, future): the connection belongs to that run
 * (a server's handler run). */
static int l_conn_attach(lua_State *L) {
  conn_box *box = luaL_checkudata(L, 1, "moonflow.Connection");
  mfl_future *f = mfl_check_future(L, 2);
  if (box->c && box->c->open) {
    mf_resource_detach(&box->c->res);
    mf_run_attach(f->run, &box->c->res);
  }
  return 0;
}

static const luaL_Reg conn_methods[] = {{"read", conn_read},
                                        {"write", conn_write},
                                        {"lines", conn_lines},
                                        {"close", conn_close_method},
                                        {"shutdown", conn_shutdown_method},
                                        {NULL, NULL}};

void mfl_open_io_conn(lua_State *L) {
  if (luaL_newmetatable(L, "moonflow.Connection")) {
    lua_newtable(L);
    mfl_setfuncs(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, conn_close_method);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
    mfl_protect_mt(L);
  }
  lua_pop(L, 1);
  mfl_pushcfunction(L, l_conn_attach);
  lua_setfield(L, -2, "conn_attach");
}
