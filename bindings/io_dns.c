/*
 * io_dns.c -- mf.dns.resolve(host): the addresses of a name, through
 * libuv's getaddrinfo (on its thread pool: the loop never blocks on a
 * resolver).  A wait that is abandoned cancels the request if it has not
 * started; one already running finishes on its thread and is freed.
 */
#include <string.h>

#include "io.h"

typedef struct dns_op {
  mfl_io_obj obj;
  mfl_io_wait wait;
  uv_getaddrinfo_t req;
  int busy;   /* libuv owns req */
  int status; /* 0 or a libuv error */
  struct addrinfo *res;
} dns_op;

static void dns_finalize(mfl_io_obj *obj) {
  dns_op *op = (dns_op *)obj;
  if (op->res)
    uv_freeaddrinfo(op->res);
}

static void dns_stop(dns_op *op) {
  if (op->busy)
    uv_cancel((uv_req_t *)&op->req); /* fails when running: it ends soon */
}

static void dns_shutdown(mfl_io_obj *obj) { dns_stop((dns_op *)obj); }

static void dns_abandon(mfl_io_wait *w) {
  dns_op *op = (dns_op *)((char *)w - offsetof(dns_op, wait));
  dns_stop(op);
  mfl_io_obj_unref(&op->obj);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  dns_op *op = req->data;
  op->busy = 0;
  op->status = status;
  op->res = res;
  mfl_io_wake(&op->wait);
  mfl_io_obj_unref(&op->obj);
}

/* Pushes the distinct addresses of res as strings, in order. */
static void push_addresses(lua_State *L, const struct addrinfo *res) {
  lua_newtable(L);
  int n = 0;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    char text[64] = "";
    if (ai->ai_family == AF_INET)
      uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, text, sizeof text);
    else if (ai->ai_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, text, sizeof text);
    else
      continue;
    int seen = 0;
    for (int i = 1; i <= n && !seen; i++) {
      lua_rawgeti(L, -1, i);
      seen = strcmp(lua_tostring(L, -1), text) == 0;
      lua_pop(L, 1);
    }
    if (!seen) {
      lua_pushstring(L, text);
      lua_rawseti(L, -2, ++n);
    }
  }
}

/* Stack: host */
static int resolve_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  dns_op *op = (dns_op *)ctx;
  mfl_io_resumed(L, &op->wait);
  if (op->status < 0) {
    int code = op->status;
    mfl_io_obj_unref(&op->obj);
    return mfl_io_raise(L, code, "resolve", lua_tostring(L, 1));
  }
  push_addresses(L, op->res);
  mfl_io_obj_unref(&op->obj);
  return 1;
}

/* core.io.resolve(host) -> array of address strings */
static int l_resolve(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  if (lua_type(L, 1) != LUA_TSTRING)
    return mfl_raise(L, "UsageError",
                     "mf.dns.resolve: host must be a string, got %s",
                     luaL_typename(L, 1));
  lua_settop(L, 1);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, "mf.dns.resolve", &io);
  dns_op *op = mfl_io_obj_new(io, sizeof *op);
  if (!op)
    return luaL_error(L, "moonflow: out of memory");
  op->obj.finalize = dns_finalize;
  op->obj.shutdown = dns_shutdown;
  op->wait.on_abandon = dns_abandon;
  op->req.data = op;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(io->loop, &op->req, on_resolved, lua_tostring(L, 1),
                          NULL, &hints);
  if (rc < 0) {
    mfl_io_obj_unref(&op->obj);
    return mfl_io_raise(L, rc, "resolve", lua_tostring(L, 1));
  }
  op->busy = 1;
  mfl_io_obj_ref(&op->obj); /* libuv's, dropped by on_resolved */
  return mfl_io_park(L, run, &op->wait, -1, (lua_KContext)op, resolve_k);
}

void mfl_open_io_dns(lua_State *L) {
  mfl_pushcfunction(L, l_resolve);
  lua_setfield(L, -2, "resolve");
}
