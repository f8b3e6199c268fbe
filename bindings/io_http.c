/*
 * io_http.c -- mf.http.request: HTTP and HTTPS through libcurl's multi
 * interface on the engine's loop, as curl's docs/examples/multi-uv.c does
 * it: curl tells which sockets to watch (CURLMOPT_SOCKETFUNCTION: a
 * uv_poll_t each) and when to call it back (CURLMOPT_TIMERFUNCTION: one
 * uv_timer_t); libuv's events are handed to curl_multi_socket_action, and
 * each finished transfer wakes the run that waits on it.  No HTTP parsing
 * here but the header lines; TLS, redirects, keep-alive and connection
 * reuse are curl's.
 *
 * A transfer whose run is cancelled or times out is removed from the multi
 * handle at once (curl closes or keeps its connection).  Transport
 * failures become IOErrors with libuv's names for curl's codes.  libcurl
 * is loaded by the first request (curl_api.h: mfl_curl).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "curl_api.h"
#include "io.h"

#define SPARE_MAX 128

typedef struct mfl_http mfl_http;
typedef struct http_op http_op;

struct mfl_http {
  mfl_io_obj obj; /* refs: the state's I/O, the timer, each socket */
  CURLM *multi;
  uv_timer_t timer;
  int in_timer;
  int closed;
  http_op *first; /* transfers in the multi handle */
  /* Easy handles of finished transfers, reset for the next (an easy
   * handle is costly to make: most of a small request's allocations). */
  CURL *spare[SPARE_MAX];
  int spare_count;
  struct curl_slist *no_expect; /* the headers of a request without any */
};

typedef struct buf {
  char *data;
  size_t len, cap;
} buf;

struct http_op {
  mfl_io_obj obj;
  mfl_io_wait wait;
  mfl_http *http;
  CURL *easy;
  http_op *prev, *next; /* in the multi handle while busy */
  int busy;
  CURLcode result;
  long status;
  long os_errno;
  struct curl_slist *req_headers;
  buf body, headers;
  char errbuf[CURL_ERROR_SIZE];
  char method[32];
  char where[300]; /* host:port */
};

/* {====== Buffers ====== */

static int buf_add(buf *b, const char *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
      cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown)
      return -1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, n);
  b->len += n;
  return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp) {
  http_op *op = userp;
  return buf_add(&op->body, data, size * n) ? 0 : size * n;
}

/* Header lines of the last response only (a redirect starts another). */
static size_t on_header(char *data, size_t size, size_t n, void *userp) {
  http_op *op = userp;
  size_t len = size * n;
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
    op->headers.len = 0;
  return buf_add(&op->headers, data, len) ? 0 : len;
}

/* }====== */

/* {====== The multi handle on the loop ====== */

typedef struct http_sock {
  uv_poll_t poll;
  curl_socket_t fd;
  mfl_http *http;
} http_sock;

static void check_done(mfl_http *h);

static void transfer_removed(http_op *op) {
  mfl_http *h = op->http;
  if (op->prev)
    op->prev->next = op->next;
  else
    h->first = op->next;
  if (op->next)
    op->next->prev = op->prev;
  op->prev = op->next = NULL;
  op->busy = 0;
}

static void on_sock_closed(uv_handle_t *handle) {
  http_sock *sock = handle->data;
  mfl_http *h = sock->http;
  free(sock);
  mfl_io_obj_unref(&h->obj);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  http_sock *sock = poll->data;
  mfl_http *h = sock->http;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  mfl_io_obj_ref(&h->obj);
  mfl_curl->multi_socket_action(h->multi, sock->fd, flags, &running);
  check_done(h);
  mfl_io_obj_unref(&h->obj);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  (void)easy;
  mfl_http *h = userp;
  http_sock *sock = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (sock) {
      uv_poll_stop(&sock->poll);
      mfl_curl->multi_assign(h->multi, fd, NULL);
      uv_close((uv_handle_t *)&sock->poll, on_sock_closed);
    }
    return 0;
  }
  if (!sock) {
    sock = calloc(1, sizeof *sock);
    if (!sock)
      return -1;
    if (uv_poll_init_socket(h->obj.io->loop, &sock->poll, fd) != 0) {
      free(sock);
      return -1;
    }
    sock->fd = fd;
    sock->http = h;
    sock->poll.data = sock;
    mfl_io_obj_ref(&h->obj);
    mfl_curl->multi_assign(h->multi, fd, sock);
  }
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, on_poll);
  return 0;
}

static void on_timer(uv_timer_t *timer) {
  mfl_http *h = timer->data;
  int running;
  mfl_io_obj_ref(&h->obj);
  h->in_timer = 1;
  mfl_curl->multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  h->in_timer = 0;
  check_done(h);
  mfl_io_obj_unref(&h->obj);
}

/* curl's timeout: 0 means "call me at once", which from inside the timer's
 * own callback would make libuv run it again in the same pass, forever. */
static int on_timeout_changed(CURLM *multi, long ms, void *userp) {
  (void)multi;
  mfl_http *h = userp;
  if (h->closed)
    return 0;
  if (ms < 0) {
    uv_timer_stop(&h->timer);
    return 0;
  }
  if (ms == 0 && h->in_timer)
    ms = 1;
  uv_timer_start(&h->timer, on_timer, (uint64_t)ms, 0);
  return 0;
}

/* Finished transfers: each wakes its waiter. */
static void check_done(mfl_http *h) {
  CURLMsg *msg;
  int pending;
  while (!h->closed && (msg = mfl_curl->multi_info_read(h->multi, &pending))) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    CURL *easy = msg->easy_handle;
    CURLcode result = msg->data.result;
    http_op *op = NULL;
    mfl_curl->easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&op);
    op->result = result;
    mfl_curl->easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &op->status);
    mfl_curl->easy_getinfo(easy, CURLINFO_OS_ERRNO, &op->os_errno);
    mfl_curl->multi_remove_handle(h->multi, easy);
    transfer_removed(op);
    mfl_io_wake(&op->wait);
    mfl_io_obj_unref(&op->obj); /* the multi handle's */
  }
}

static void on_timer_closed(uv_handle_t *handle) {
  mfl_http *h = handle->data;
  mfl_io_obj_unref(&h->obj);
}

void mfl_http_shutdown(mfl_io *io) {
  mfl_http *h = io->http;
  if (!h)
    return;
  io->http = NULL;
  while (h->first) {
    http_op *op = h->first;
    mfl_curl->multi_remove_handle(h->multi, op->easy);
    transfer_removed(op);
    mfl_io_obj_unref(&op->obj);
  }
  mfl_curl->multi_cleanup(h->multi); /* removes its sockets (on_socket) */
  h->multi = NULL;
  h->closed = 1;
  while (h->spare_count > 0)
    mfl_curl->easy_cleanup(h->spare[--h->spare_count]);
  mfl_curl->slist_free_all(h->no_expect);
  h->no_expect = NULL;
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
  mfl_io_obj_unref(&h->obj); /* the state's */
}

static mfl_http *get_http(lua_State *L, mfl_io *io) {
  if (io->http)
    return io->http;
  mfl_http *h = mfl_io_obj_new(io, sizeof *h);
  if (!h || !(h->multi = mfl_curl->multi_init())) {
    if (h)
      mfl_io_obj_unref(&h->obj);
    luaL_error(L, "moonflow: cannot start libcurl");
    return NULL; /* not reached */
  }
  mfl_curl->multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  mfl_curl->multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  mfl_curl->multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timeout_changed);
  mfl_curl->multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  h->no_expect = mfl_curl->slist_append(NULL, "Expect:");
  if (!h->no_expect) {
    mfl_curl->multi_cleanup(h->multi);
    mfl_io_obj_unref(&h->obj);
    luaL_error(L, "moonflow: out of memory");
  }
  uv_timer_init(io->loop, &h->timer);
  h->timer.data = h;
  mfl_io_obj_ref(&h->obj); /* the timer's */
  io->http = h;
  return h;
}

/* }====== */

/* {====== Transfers ====== */

static void http_finalize(mfl_io_obj *obj) {
  http_op *op = (http_op *)obj;
  mfl_http *h = op->http;
  if (op->easy && h && !h->closed && h->spare_count < SPARE_MAX) {
    mfl_curl->easy_reset(op->easy);
    h->spare[h->spare_count++] = op->easy;
  } else if (op->easy) {
    mfl_curl->easy_cleanup(op->easy);
  }
  mfl_curl->slist_free_all(op->req_headers);
  free(op->body.data);
  free(op->headers.data);
  if (op->http)
    mfl_io_obj_unref(&op->http->obj);
}

/* The waiter went away: the transfer leaves the multi handle now. */
static void http_abandon(mfl_io_wait *w) {
  http_op *op = (http_op *)((char *)w - offsetof(http_op, wait));
  if (op->busy) {
    mfl_curl->multi_remove_handle(op->http->multi, op->easy);
    transfer_removed(op);
    mfl_io_obj_unref(&op->obj); /* the multi handle's */
  }
  mfl_io_obj_unref(&op->obj);
}

/* libuv's name for a failed transfer. */
static const char *code_name(http_op *op) {
  switch (op->result) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return "EAI_NONAME";
  case CURLE_COULDNT_CONNECT:
    return op->os_errno ? uv_err_name(-(int)op->os_errno) : "ECONNREFUSED";
  case CURLE_OPERATION_TIMEDOUT:
    return "ETIMEDOUT";
  case CURLE_SEND_ERROR:
    return op->os_errno ? uv_err_name(-(int)op->os_errno) : "EPIPE";
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    return op->os_errno ? uv_err_name(-(int)op->os_errno) : "ECONNRESET";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return "EPROTO";
  case CURLE_TOO_MANY_REDIRECTS:
    return "ELOOP";
  case CURLE_OUT_OF_MEMORY:
  case CURLE_WRITE_ERROR:
    return "ENOMEM";
  case CURLE_ABORTED_BY_CALLBACK:
    return "ECANCELED";
  default:
    return "EIO";
  }
}

/* Pushes the response headers: lower-case names; a repeated header's
 * values joined with ", " (RFC 9110, 5.3). */
static void push_headers(lua_State *L, const buf *b) {
  lua_newtable(L);
  const char *p = b->data, *end = b->data + b->len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon && colon > p && !(line_end - p >= 5 && !memcmp(p, "HTTP/", 5))) {
      luaL_Buffer name;
      luaL_buffinit(L, &name);
      for (const char *c = p; c < colon; c++)
        luaL_addchar(&name, (char)tolower((unsigned char)*c));
      luaL_pushresult(&name);
      const char *v = colon + 1, *ve = line_end;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = eol ? eol + 1 : end;
  }
}

/* Stack: opts url */
static int request_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  http_op *op = (http_op *)ctx;
  mfl_io_resumed(L, &op->wait);
  if (op->result != CURLE_OK) {
    const char *detail =
        op->errbuf[0] ? op->errbuf : mfl_curl->easy_strerror(op->result);
    lua_pushfstring(L, "%s (%s)", lua_tostring(L, 2), op->where);
    lua_pushstring(L, detail);
    const char *name = code_name(op);
    lua_pushstring(L, op->method);
    mfl_io_obj_unref(&op->obj);
    mfl_io_push_error(L, 0, name, lua_tostring(L, -1), lua_tostring(L, -3),
                      lua_tostring(L, -2));
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "url");
    return lua_error(L);
  }
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, op->status);
  lua_setfield(L, -2, "status");
  push_headers(L, &op->headers);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, op->body.data ? op->body.data : "", op->body.len);
  lua_setfield(L, -2, "body");
  char *effective = NULL;
  mfl_curl->easy_getinfo(op->easy, CURLINFO_EFFECTIVE_URL, &effective);
  lua_pushstring(L, effective ? effective : lua_tostring(L, 2));
  lua_setfield(L, -2, "url");
  mfl_io_obj_unref(&op->obj);
  return 1;
}

/* Checks the URL (http or https, well formed) and writes its host:port. */
static void check_url(lua_State *L, const char *url, char *where, size_t size) {
  CURLU *u = mfl_curl->url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  int ok = u && mfl_curl->url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
           mfl_curl->url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
           mfl_curl->url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
           mfl_curl->url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ==
               CURLUE_OK;
  int http = ok && (!strcmp(scheme, "http") || !strcmp(scheme, "https"));
  if (http)
    snprintf(where, size, "%s:%s", host, port);
  mfl_curl->free(scheme);
  mfl_curl->free(host);
  mfl_curl->free(port);
  mfl_curl->url_cleanup(u);
  if (!ok)
    mfl_raise(L, "UsageError", "mf.http.request: bad URL '%s'", url);
  if (!http)
    mfl_raise(L, "UsageError",
              "mf.http.request: only http and https URLs, got '%s'", url);
}

/* The request, read and checked before anything is allocated. */
typedef struct request {
  const char *url;
  char method[32];
  const char *body;
  size_t body_len;
  int headers; /* stack index of the headers table, or 0 */
  double timeout;
  int follow;
} request;

/* Reads the request: the options table at 1 (or nil), the url at 2; the
 * method and body given by mf.http.get/post (method not NULL) win over
 * the table's.  Leaves 3 method, 4 body, 5 headers, 6 follow. */
static void read_request(lua_State *L, request *r, const char *method,
                         const char *what) {
  memset(r, 0, sizeof *r);
  r->url = lua_tostring(L, 2);
  int opts = lua_istable(L, 1);
  if (!method && (!opts || lua_getfield(L, 1, "method") == LUA_TNIL)) {
    if (!opts)
      lua_pushnil(L);
    method = "GET";
  } else if (!method) {
    if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0 ||
        lua_rawlen(L, -1) >= sizeof r->method)
      mfl_raise(L, "UsageError",
                "%s: method must be a string (\"GET\", \"POST\", ...), got %s",
                what, mfl_describe(L, -1));
    method = lua_tostring(L, -1);
  } else {
    lua_pushnil(L);
  }
  for (size_t i = 0; method[i] && i + 1 < sizeof r->method; i++)
    r->method[i] = (char)toupper((unsigned char)method[i]);
  if (!lua_isnoneornil(L, 4)) { /* post's body */
    lua_pushvalue(L, 4);
  } else if (!opts || lua_getfield(L, 1, "body") == LUA_TNIL) {
    if (!opts)
      lua_pushnil(L);
  }
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      mfl_raise(L, "UsageError", "%s: body must be a string, got %s", what,
                luaL_typename(L, -1));
    r->body = lua_tolstring(L, -1, &r->body_len);
  }
  lua_replace(L, 4);
  lua_settop(L, 4);
  if (opts && lua_getfield(L, 1, "headers") != LUA_TNIL) { /* 5 */
    if (!lua_istable(L, -1))
      mfl_raise(L, "UsageError", "%s: headers must be a table, got %s", what,
                luaL_typename(L, -1));
    lua_pushnil(L);
    while (lua_next(L, 5)) {
      if (lua_type(L, -2) != LUA_TSTRING ||
          (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
        mfl_raise(L, "UsageError",
                  "%s: headers must map names to strings (%s = %s)", what,
                  luaL_typename(L, -2), luaL_typename(L, -1));
      lua_pop(L, 1);
    }
    r->headers = 5;
  } else if (!opts) {
    lua_pushnil(L);
  }
  r->timeout = opts ? mfl_io_opt_timeout(L, 1, what) : -1;
  if (opts)
    lua_getfield(L, 1, "follow"); /* 6 */
  else
    lua_pushnil(L);
  r->follow = lua_toboolean(L, -1);
}

/* Sets up the easy handle for the request (nothing here raises but an
 * allocation failing). */
static int configure(lua_State *L, http_op *op, const request *r) {
  CURL *e = op->easy;
  memcpy(op->method, r->method, sizeof op->method);
  mfl_curl->easy_setopt(e, CURLOPT_URL, r->url);
  mfl_curl->easy_setopt(e, CURLOPT_PRIVATE, op);
  mfl_curl->easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  mfl_curl->easy_setopt(e, CURLOPT_ERRORBUFFER, op->errbuf);
  mfl_curl->easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  mfl_curl->easy_setopt(e, CURLOPT_WRITEDATA, op);
  mfl_curl->easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  mfl_curl->easy_setopt(e, CURLOPT_HEADERDATA, op);
  mfl_curl->easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  mfl_curl->easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  mfl_curl->easy_setopt(e, CURLOPT_USERAGENT, "moonflow/" MF_VERSION);
  if (r->body) {
    mfl_curl->easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t)r->body_len);
    if (mfl_curl->easy_setopt(e, CURLOPT_COPYPOSTFIELDS, r->body) != CURLE_OK)
      return 0;
  }
  if (!strcmp(op->method, "HEAD"))
    mfl_curl->easy_setopt(e, CURLOPT_NOBODY, 1L);
  else if (strcmp(op->method, r->body ? "POST" : "GET") != 0)
    mfl_curl->easy_setopt(e, CURLOPT_CUSTOMREQUEST, op->method);
  if (r->headers) {
    lua_pushnil(L);
    while (lua_next(L, r->headers)) {
      lua_pushvalue(L, -2); /* tostring on a copy of the key */
      const char *line = lua_pushfstring(L, "%s: %s", lua_tostring(L, -1),
                                         lua_tostring(L, -2));
      struct curl_slist *more = mfl_curl->slist_append(op->req_headers, line);
      lua_pop(L, 3);
      if (!more)
        return 0;
      op->req_headers = more;
    }
  }
  /* A body goes at once, without "Expect: 100-continue" and its wait. */
  if (op->req_headers) {
    struct curl_slist *more =
        mfl_curl->slist_append(op->req_headers, "Expect:");
    if (!more)
      return 0;
    op->req_headers = more;
  }
  mfl_curl->easy_setopt(e, CURLOPT_HTTPHEADER,
                        op->req_headers ? op->req_headers
                                        : op->http->no_expect);
  if (r->timeout >= 0)
    mfl_curl->easy_setopt(
        e, CURLOPT_TIMEOUT_MS,
        (long)(r->timeout * 1000 > 1 ? r->timeout * 1000 : 1));
  if (r->follow) {
    mfl_curl->easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    mfl_curl->easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
  }
  return 1;
}

/* Starts the request whose stack is opts url method body headers follow
 * (read_request's). */
static int start_request(lua_State *L, request *r, const char *what) {
  mfl_state *S = mfl_state_get(L);
  const char *why;
  if (!mfl_curl_load(&why))
    return mfl_io_raise_detail(L, 0, "ELIBACC", what, r->url, why);
  char where[300];
  check_url(L, r->url, where, sizeof where);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, what, &io);
  mfl_http *h = get_http(L, io);
  http_op *op = mfl_io_obj_new(io, sizeof *op);
  if (!op)
    return luaL_error(L, "moonflow: out of memory");
  op->obj.finalize = http_finalize;
  op->wait.on_abandon = http_abandon;
  op->http = h;
  mfl_io_obj_ref(&h->obj);
  snprintf(op->where, sizeof op->where, "%s", where);
  CURLMcode rc = CURLM_OUT_OF_MEMORY;
  op->easy =
      h->spare_count > 0 ? h->spare[--h->spare_count] : mfl_curl->easy_init();
  if (op->easy && configure(L, op, r))
    rc = mfl_curl->multi_add_handle(h->multi, op->easy);
  if (rc != CURLM_OK) {
    mfl_io_obj_unref(&op->obj);
    return luaL_error(L, "moonflow: cannot start the transfer: %s",
                      mfl_curl->multi_strerror(rc));
  }
  op->busy = 1;
  op->next = h->first;
  if (h->first)
    h->first->prev = op;
  h->first = op;
  mfl_io_obj_ref(&op->obj); /* the multi handle's */
  lua_settop(L, 2);
  return mfl_io_park(L, run, &op->wait, -1, (lua_KContext)op, request_k);
}

static void check_url_arg(lua_State *L, int idx, const char *what) {
  if (lua_type(L, idx) != LUA_TSTRING)
    mfl_raise(L, "UsageError", "%s: url must be a string, got %s", what,
              luaL_typename(L, idx));
}

/* core.io.http_request{method, url, headers, body, timeout, follow} ->
 * {status, headers, body, url} */
static int l_request(lua_State *L) {
  if (!lua_istable(L, 1))
    return mfl_raise(L, "UsageError",
                     "mf.http.request expects a table "
                     "{method, url, headers, body, timeout, follow}, got %s",
                     luaL_typename(L, 1));
  lua_settop(L, 1);
  lua_getfield(L, 1, "url"); /* 2 */
  check_url_arg(L, 2, "mf.http.request");
  lua_settop(L, 4); /* no body of post's */
  request r;
  read_request(L, &r, NULL, "mf.http.request");
  return start_request(L, &r, "mf.http.request");
}

/* The options of get and post: a table or nothing. */
static void check_opts(lua_State *L, int idx, const char *what) {
  if (!lua_isnoneornil(L, idx) && !lua_istable(L, idx))
    mfl_raise(L, "UsageError", "%s: options must be a table, got %s", what,
              luaL_typename(L, idx));
}

/* core.io.http_get(url, opts?) */
static int l_get(lua_State *L) {
  check_url_arg(L, 1, "mf.http.get");
  check_opts(L, 2, "mf.http.get");
  lua_settop(L, 2);
  lua_insert(L, 1); /* opts url */
  lua_settop(L, 4);
  request r;
  read_request(L, &r, "GET", "mf.http.get");
  return start_request(L, &r, "mf.http.get");
}

/* core.io.http_post(url, body, opts?) */
static int l_post(lua_State *L) {
  check_url_arg(L, 1, "mf.http.post");
  if (lua_type(L, 2) != LUA_TSTRING)
    mfl_raise(L, "UsageError", "mf.http.post: body must be a string, got %s",
              luaL_typename(L, 2));
  check_opts(L, 3, "mf.http.post");
  lua_settop(L, 3);
  lua_rotate(L, 1, 1); /* opts url body */
  lua_pushnil(L);
  lua_insert(L, 3); /* opts url nil body */
  request r;
  read_request(L, &r, "POST", "mf.http.post");
  return start_request(L, &r, "mf.http.post");
}

/* }====== */

void mfl_open_io_http(lua_State *L) {
  mfl_pushcfunction(L, l_request);
  lua_setfield(L, -2, "http_request");
  mfl_pushcfunction(L, l_get);
  lua_setfield(L, -2, "http_get");
  mfl_pushcfunction(L, l_post);
  lua_setfield(L, -2, "http_post");
}
