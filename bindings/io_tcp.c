/*
 * io_tcp.c -- opening Connections and Servers: mf.tcp.connect (the name
 * resolved through libuv, every address tried in turn), mf.unix.connect,
 * and mf.tcp.listen / mf.unix.listen, whose accepted connections are each
 * handed to a new run (the Lua side, lua/moonflow/io.lua, submits it).
 *
 * A Server belongs to the run that opened it and is closed when that run
 * ends; one opened outside any run lives until server:close() or the Lua
 * state closes, and keeps the loop alive (mf.run() serves).  While it
 * listens it is anchored in the registry: dropping the last reference to
 * it does not stop it.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

/* {====== Connecting ====== */

typedef struct connect_op {
  mfl_io_obj obj;
  mfl_io_wait wait;
  uv_getaddrinfo_t gai;
  uv_connect_t req;
  int resolving, connecting; /* libuv owns gai / req */
  int is_unix;
  int status;
  int stopped; /* the waiter went away: no further attempt */
  struct addrinfo *res, *next;
  mfl_conn *conn; /* the attempt's connection, then the result */
  char target[300];
} connect_op;

static void connect_finalize(mfl_io_obj *obj) {
  connect_op *op = (connect_op *)obj;
  if (op->res)
    uv_freeaddrinfo(op->res);
  if (op->conn) {
    mfl_conn_close(op->conn);
    mfl_conn_unref(op->conn);
  }
}

static void connect_stop(connect_op *op) {
  op->stopped = 1;
  if (op->resolving)
    uv_cancel((uv_req_t *)&op->gai);
  if (op->connecting && op->conn)
    mfl_conn_close(op->conn); /* the connect callback follows, cancelled */
}

static void connect_shutdown(mfl_io_obj *obj) {
  connect_stop((connect_op *)obj);
}

static void connect_abandon(mfl_io_wait *w) {
  connect_op *op = (connect_op *)((char *)w - offsetof(connect_op, wait));
  connect_stop(op);
  mfl_io_obj_unref(&op->obj);
}

static void try_next(connect_op *op);

static void on_connected(uv_connect_t *req, int status) {
  connect_op *op = req->data;
  op->connecting = 0;
  op->status = status;
  if (status < 0 && op->conn) {
    mfl_conn_close(op->conn);
    mfl_conn_unref(op->conn);
    op->conn = NULL;
  }
  if (status < 0 && !op->stopped && op->next)
    try_next(op); /* the next address */
  else
    mfl_io_wake(&op->wait);
  mfl_io_obj_unref(&op->obj); /* the attempt's */
}

/* Connects to the next resolved address. */
static void try_next(connect_op *op) {
  while (op->next) {
    struct addrinfo *ai = op->next;
    op->next = ai->ai_next;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    op->conn = mfl_conn_new(op->obj.io, 0, op->target);
    if (!op->conn) {
      op->status = UV_ENOMEM;
      break;
    }
    op->req.data = op;
    int rc = uv_tcp_connect(&op->req, (uv_tcp_t *)mfl_conn_stream(op->conn),
                            ai->ai_addr, on_connected);
    if (rc == 0) {
      op->connecting = 1;
      mfl_io_obj_ref(&op->obj);
      return;
    }
    op->status = rc;
    mfl_conn_close(op->conn);
    mfl_conn_unref(op->conn);
    op->conn = NULL;
  }
  mfl_io_wake(&op->wait);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  connect_op *op = req->data;
  op->resolving = 0;
  op->res = res;
  op->next = res;
  op->status = status;
  if (status == 0 && !op->stopped)
    try_next(op);
  else
    mfl_io_wake(&op->wait);
  mfl_io_obj_unref(&op->obj); /* the resolver's */
}

/* Stack: host port opts */
static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  connect_op *op = (connect_op *)ctx;
  mf_wake_reason reason = mfl_io_resumed(L, &op->wait);
  lua_pushstring(L, op->target);
  int target = lua_gettop(L);
  if (reason == MF_WAKE_TIMEOUT) {
    mfl_io_push_error(L, UV_ETIMEDOUT, NULL, "connect", op->target, NULL);
    connect_abandon(&op->wait);
    return lua_error(L);
  }
  if (!op->conn) {
    int rc = op->status < 0 ? op->status : UV_EADDRNOTAVAIL;
    mfl_io_obj_unref(&op->obj);
    return mfl_io_raise(L, rc, "connect", lua_tostring(L, target));
  }
  mfl_conn *conn = op->conn;
  op->conn = NULL;
  mfl_io_obj_unref(&op->obj);
  mfl_state *S = mfl_state_get(L);
  mfl_conn_push(L, conn, mfl_current_run(L, S));
  return 1;
}

static connect_op *new_connect(lua_State *L, mfl_io *io) {
  connect_op *op = mfl_io_obj_new(io, sizeof *op);
  if (!op)
    luaL_error(L, "moonflow: out of memory");
  op->obj.finalize = connect_finalize;
  op->obj.shutdown = connect_shutdown;
  op->wait.on_abandon = connect_abandon;
  op->gai.data = op;
  op->req.data = op;
  return op;
}

static int check_port(lua_State *L, int idx, const char *what) {
  if (!lua_isinteger(L, idx)) {
    if (lua_type(L, idx) == LUA_TSTRING) { /* "8080" */
      int isnum;
      lua_Integer p = lua_tointegerx(L, idx, &isnum);
      if (isnum && p >= 0 && p <= 65535)
        return (int)p;
    }
    mfl_raise(L, "UsageError",
              "%s: port must be an integer from 0 to "
              "65535, got %s",
              what, mfl_describe(L, idx));
  }
  lua_Integer p = lua_tointeger(L, idx);
  if (p < 0 || p > 65535)
    mfl_raise(L, "UsageError",
              "%s: port must be an integer from 0 to "
              "65535, got %I",
              what, p);
  return (int)p;
}

static const char *check_string(lua_State *L, int idx, const char *what,
                                const char *name) {
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    mfl_raise(L, "UsageError", "%s: %s must be a string, got %s", what, name,
              luaL_typename(L, idx));
  const char *s = lua_tolstring(L, idx, &len);
  if (len == 0 || strlen(s) != len)
    mfl_raise(L, "UsageError",
              "%s: %s must be a non-empty string without "
              "zero bytes",
              what, name);
  return s;
}

/* "host:port", "[v6]:port" */
static void host_port(char *out, size_t size, const char *host, int port) {
  if (strchr(host, ':'))
    snprintf(out, size, "[%s]:%d", host, port);
  else
    snprintf(out, size, "%s:%d", host, port);
}

/* core.io.tcp_connect(host, port, opts?) -> Connection */
static int l_tcp_connect(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *host = check_string(L, 1, "mf.tcp.connect", "host");
  int port = check_port(L, 2, "mf.tcp.connect");
  if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
    return mfl_raise(L, "UsageError",
                     "mf.tcp.connect: options must be a "
                     "table, got %s",
                     luaL_typename(L, 3));
  double timeout = mfl_io_opt_timeout(L, 3, "mf.tcp.connect");
  lua_settop(L, 3);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, "mf.tcp.connect", &io);
  connect_op *op = new_connect(L, io);
  host_port(op->target, sizeof op->target, host, port);
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc =
      uv_getaddrinfo(io->loop, &op->gai, on_resolved, host, service, &hints);
  if (rc < 0) {
    mfl_io_obj_unref(&op->obj);
    return mfl_io_raise(L, rc, "connect", lua_pushfstring(L, "%s", host));
  }
  op->resolving = 1;
  mfl_io_obj_ref(&op->obj);
  return mfl_io_park(L, run, &op->wait, timeout, (lua_KContext)op, connect_k);
}

/* core.io.unix_connect(path) -> Connection */
static int l_unix_connect(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *path = check_string(L, 1, "mf.unix.connect", "path");
  lua_settop(L, 3);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, "mf.unix.connect", &io);
  connect_op *op = new_connect(L, io);
  snprintf(op->target, sizeof op->target, "%s", path);
  op->is_unix = 1;
  op->conn = mfl_conn_new(io, 1, path);
  if (!op->conn) {
    mfl_io_obj_unref(&op->obj);
    return luaL_error(L, "moonflow: out of memory");
  }
  uv_pipe_connect(&op->req, (uv_pipe_t *)mfl_conn_stream(op->conn), path,
                  on_connected); /* errors come through the callback */
  op->connecting = 1;
  mfl_io_obj_ref(&op->obj);
  return mfl_io_park(L, run, &op->wait, -1, (lua_KContext)op, connect_k);
}

/* }====== */

/* {====== Servers ====== */

typedef struct server {
  mfl_io_obj obj;
  mf_resource res;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  int open;
  int is_unix;
  int port;
  int anchor; /* registry slot in io->servers_ref while listening */
  char *path; /* a Unix socket's file, removed when closed */
  char name[300];
} server;

typedef struct server_box {
  server *srv;
  mfl_state *S; /* (mfl_note_box) */
} server_box;

static void server_closed(uv_handle_t *handle) {
  server *srv = handle->data;
  mfl_io_obj_unref(&srv->obj); /* the handle's */
}

static void unanchor(server *srv) {
  mfl_io *io = srv->obj.io;
  if (srv->anchor == LUA_NOREF || !mfl_io_live(io))
    return;
  lua_State *L = io->S->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, io->servers_ref);
  luaL_unref(L, -1, srv->anchor);
  lua_pop(L, 1);
  srv->anchor = LUA_NOREF;
}

static void server_close(server *srv) {
  if (!srv->open)
    return;
  srv->open = 0;
  mf_resource_detach(&srv->res);
  uv_close(&srv->h.handle, server_closed);
  if (srv->path)
    unlink(srv->path);
  unanchor(srv);
}

static void server_shutdown(mfl_io_obj *obj) {
  server *srv = (server *)obj;
  srv->anchor = LUA_NOREF; /* the registry goes with the state */
  server_close(srv);
}

static void server_finalize(mfl_io_obj *obj) { free(((server *)obj)->path); }

static void server_resource_close(mf_resource *res) {
  server_close((server *)((char *)res - offsetof(server, res)));
}

/* A connection came: accept it, and hand it to the server's on_accept
 * function (the Lua side submits the handler's run).  Called from the
 * loop, outside any run: a plain callback. */
static void on_connection(uv_stream_t *stream, int status) {
  server *srv = stream->data;
  mfl_io *io = srv->obj.io;
  if (status < 0 || !srv->open || !mfl_io_live(io) || io->S->closing)
    return;
  mfl_conn *c = mfl_conn_new(io, srv->is_unix, srv->name);
  if (!c)
    return; /* out of memory: the client waits in the backlog */
  if (uv_accept(stream, mfl_conn_stream(c)) != 0) {
    mfl_conn_close(c);
    mfl_conn_unref(c);
    return;
  }
  mfl_state *S = io->S;
  lua_State *L = S->L;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) {
    mfl_conn_close(c);
    mfl_conn_unref(c);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, io->servers_ref);
  lua_rawgeti(L, -1, srv->anchor); /* the server's box */
  lua_getiuservalue(L, -1, 1);     /* on_accept */
  mfl_conn_push(L, c, NULL);
  S->callback_depth++;
  int rc = lua_pcall(L, 1, 0, 0);
  S->callback_depth--;
  if (rc != LUA_OK)
    mfl_report(S, "a server's handler could not start", mfl_describe(L, -1));
  lua_settop(L, top);
}

static server *new_server(lua_State *L, mfl_io *io, int is_unix) {
  server *srv = mfl_io_obj_new(io, sizeof *srv);
  if (!srv)
    luaL_error(L, "moonflow: out of memory");
  srv->obj.shutdown = server_shutdown;
  srv->obj.finalize = server_finalize;
  srv->res.close = server_resource_close;
  srv->anchor = LUA_NOREF;
  srv->is_unix = is_unix;
  if (is_unix)
    uv_pipe_init(io->loop, &srv->h.pipe, 0);
  else
    uv_tcp_init(io->loop, &srv->h.tcp);
  srv->h.handle.data = srv;
  srv->open = 1;
  mfl_io_obj_ref(&srv->obj); /* the handle's */
  return srv;
}

static void release_server_box(void *p) {
  server_box *box = p;
  if (box->srv) {
    server_close(box->srv); /* unanchored: the state closes */
    mfl_io_obj_unref(&box->srv->obj);
    box->srv = NULL;
  }
}

/* Pushes the Server userdata (it holds the creator's reference), with
 * on_accept (at idx) as its user value. */
static void push_server(lua_State *L, server *srv, int on_accept) {
  server_box *box = lua_newuserdatauv(L, sizeof *box, 1);
  box->srv = NULL;
  box->S = srv->obj.io->S;
  luaL_setmetatable(L, "moonflow.Server");
  mfl_note_box(L, box->S, box, release_server_box);
  box->srv = srv;
  lua_pushvalue(L, on_accept);
  lua_setiuservalue(L, -2, 1);
}

/* Starts listening and anchors the server (box on top of L). */
static int start_listening(lua_State *L, mfl_state *S, server *srv) {
  int rc = uv_listen(&srv->h.stream, 511, on_connection);
  if (rc < 0)
    return rc;
  mfl_io *io = srv->obj.io;
  lua_rawgeti(L, LUA_REGISTRYINDEX, io->servers_ref);
  lua_pushvalue(L, -2);
  srv->anchor = luaL_ref(L, -2);
  lua_pop(L, 1);
  mfl_io_attach(S, &srv->res);
  return 0;
}

static int check_handler(lua_State *L, int idx, const char *what) {
  if (!lua_isfunction(L, idx))
    mfl_raise(L, "UsageError", "%s: on_accept must be a function, got %s", what,
              luaL_typename(L, idx));
  return idx;
}

/* core.io.tcp_listen(host, port, on_accept) -> Server */
static int l_tcp_listen(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *host = check_string(L, 1, "mf.tcp.listen", "host");
  int port = check_port(L, 2, "mf.tcp.listen");
  check_handler(L, 3, "mf.tcp.listen");
  mfl_io *io = mfl_io_get(L, S);
  char where[300];
  host_port(where, sizeof where, host, port);
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  if (rc != 0) {
    if (strcmp(host, "localhost") != 0)
      return mfl_raise(L, "UsageError",
                       "mf.tcp.listen: host must be an "
                       "IPv4 or IPv6 address (or localhost), got %s",
                       host);
    uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&addr);
  }
  server *srv = new_server(L, io, 0);
  push_server(L, srv, 3);
  rc = uv_tcp_bind(&srv->h.tcp, (struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = start_listening(L, S, srv);
  if (rc < 0) {
    server_close(srv);
    return mfl_io_raise(L, rc, "listen", where);
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&srv->h.tcp, (struct sockaddr *)&bound, &len);
  srv->port = ntohs(bound.ss_family == AF_INET6
                        ? ((struct sockaddr_in6 *)&bound)->sin6_port
                        : ((struct sockaddr_in *)&bound)->sin_port);
  host_port(srv->name, sizeof srv->name, host, srv->port);
  return 1;
}

/* core.io.unix_listen(path, on_accept) -> Server */
static int l_unix_listen(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *path = check_string(L, 1, "mf.unix.listen", "path");
  check_handler(L, 2, "mf.unix.listen");
  mfl_io *io = mfl_io_get(L, S);
  server *srv = new_server(L, io, 1);
  push_server(L, srv, 2);
  snprintf(srv->name, sizeof srv->name, "%s", path);
  int rc = uv_pipe_bind(&srv->h.pipe, path);
  if (rc == 0 && !(srv->path = strdup(path)))
    rc = UV_ENOMEM;
  if (rc == 0)
    rc = start_listening(L, S, srv);
  if (rc < 0) {
    server_close(srv);
    return mfl_io_raise(L, rc, "listen", path);
  }
  return 1;
}

static server_box *check_server(lua_State *L, int idx) {
  server_box *box = luaL_testudata(L, idx, "moonflow.Server");
  if (!box)
    mfl_raise(L, "UsageError",
              "a Server expected, got %s (use "
              "server:close(), not server.close())",
              luaL_typename(L, idx));
  return box;
}

static int server_close_method(lua_State *L) {
  server_box *box = check_server(L, 1);
  if (box->srv)
    server_close(box->srv);
  return 0;
}

static int server_gc(lua_State *L) {
  server_box *box = lua_touserdata(L, 1);
  mfl_forget_box(box->S, box);
  release_server_box(box);
  return 0;
}

static int server_index(lua_State *L) {
  server_box *box = lua_touserdata(L, 1);
  const char *key = lua_tostring(L, 2);
  server *srv = box->srv;
  if (key && srv && !strcmp(key, "port") && !srv->is_unix) {
    lua_pushinteger(L, srv->port);
    return 1;
  }
  if (key && srv && !strcmp(key, "path") && srv->is_unix) {
    lua_pushstring(L, srv->name);
    return 1;
  }
  if (key && srv && !strcmp(key, "name")) {
    lua_pushstring(L, srv->name);
    return 1;
  }
  if (key && !strcmp(key, "close")) {
    lua_pushcfunction(L, server_close_method);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

static int server_tostring(lua_State *L) {
  server_box *box = lua_touserdata(L, 1);
  lua_pushfstring(L, "Server (%s%s)", box->srv ? box->srv->name : "?",
                  box->srv && box->srv->open ? "" : ", closed");
  return 1;
}

/* }====== */

static const luaL_Reg tcp_functions[] = {{"tcp_connect", l_tcp_connect},
                                         {"unix_connect", l_unix_connect},
                                         {"tcp_listen", l_tcp_listen},
                                         {"unix_listen", l_unix_listen},
                                         {NULL, NULL}};

void mfl_open_io_tcp(lua_State *L) {
  if (luaL_newmetatable(L, "moonflow.Server")) {
    lua_pushcfunction(L, server_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, server_close_method);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, server_tostring);
    lua_setfield(L, -2, "__tostring");
    mfl_protect_mt(L);
  }
  lua_pop(L, 1);
  mfl_setfuncs(L, tcp_functions);
}
