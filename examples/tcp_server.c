/*
 * tcp_server.c -- a libuv TCP server on 127.0.0.1 whose requests are answered
 * by a Lua flow (examples/tcp_server.lua) running on the server's own loop,
 * or, with --plain, by the same arithmetic in C, so that the two can be
 * compared (the engine's cost per request).
 *
 * Protocol: one request per line ("\n" or "\r\n"); answers come in request
 * order on each connection, whatever order the flows finish in.
 *   sum N1 N2 ...  ->  "ok S" where S = 2*N1 + 2*N2 + ... (one task run per
 *                      number doubles it, the flow sums); "sum" alone: "ok 0"
 *   quit           ->  "ok bye", then the server shuts down
 *   anything else  ->  "err <why>"; the connection stays open
 * Limits: a line is at most 4096 bytes (longer: "err line too long" and the
 * connection is closed), at most 1000 numbers, each a decimal integer of at
 * most 10^15 in magnitude ("err out of range: N", from the task in Lua).
 *
 * Usage: tcp_server [--plain] [--script FILE] PORT     (PORT 0: ephemeral)
 * Prints "listening on 127.0.0.1:PORT" on stdout once it accepts.  SIGINT,
 * SIGTERM or a quit request stop it cleanly: the engine is closed, then every
 * connection and handle, then Lua and the loop; it exits 0.
 */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonflow_lua.h"

#ifndef TCP_SERVER_SCRIPT
#define TCP_SERVER_SCRIPT "tcp_server.lua"
#endif

enum {
  LINE_MAX_BYTES = 4096,   /* longer lines are refused */
  NUMBERS_MAX = 1000,      /* with |N| <= 10^15 the sum fits in 64 bits */
  REPLY_MAX = 160,         /* one answer line, "\n" included */
  QUEUE_MAX = 64,          /* unanswered requests before a client is paused */
  WRITE_QUEUE_MAX = 65536, /* unsent bytes before a client is paused */
  READ_BUF = 16384
};
static const long long LIMIT = 1000000000000000LL; /* 10^15, as in Lua */
static const char FLOW_NAME[] = "sum_flow";

typedef struct server server;
typedef struct conn conn;
typedef struct request request;

/* What happens once an answer is written. */
enum { AFTER_NONE, AFTER_CLOSE, AFTER_QUIT };

/* One request line.  It sits in its connection's FIFO until it is answered
 * and every answer before it was written; while its flow runs it is also in
 * the server's in-flight list, because the flow may outlive the connection
 * (then conn is NULL and the answer is dropped). */
struct request {
  server *srv;
  conn *c;
  request *next;          /* in the connection's FIFO */
  request *iprev, *inext; /* in the server's in-flight list */
  int inflight, done, after;
  size_t len;
  char reply[REPLY_MAX];
};

struct conn {
  uv_tcp_t tcp;
  server *srv;
  conn *prev, *next;    /* the server's connections, for the shutdown */
  request *head, *tail; /* requests not yet written, in request order */
  unsigned queued;      /* how many are in the FIFO */
  unsigned writes;      /* uv_write calls not yet called back */
  int closing, paused, eof, finished; /* finished: reads no more requests */
  size_t line_len;
  char line[LINE_MAX_BYTES + 1];
};

/* A write of the answers flushed at once; the bytes follow the struct. */
typedef struct write_req {
  uv_write_t req;
  int after;
  char data[];
} write_req;

struct server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sigint, sigterm;
  int plain;
  mf_engine *engine;
  lua_State *L;
  conn *conns;
  request *inflight;
  long long numbers[NUMBERS_MAX]; /* the request being submitted */
  size_t count;
  unsigned long long served, errors;
  char read_buf[READ_BUF]; /* one loop thread: reads are consumed at once */
};

static void flush(conn *c);
static void conn_close(conn *c);

/* {====== Requests ====== */

static request *request_push(conn *c) {
  request *r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->srv = c->srv;
  r->c = c;
  if (c->tail)
    c->tail->next = r;
  else
    c->head = r;
  c->tail = r;
  c->queued++;
  return r;
}

static void request_reply(request *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(r->reply, sizeof r->reply - 1, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n > sizeof r->reply - 2)
    n = (int)sizeof r->reply - 2; /* truncated: still one line */
  for (int i = 0; i < n; i++)     /* an error message must stay one line */
    if (r->reply[i] == '\n' || r->reply[i] == '\r')
      r->reply[i] = ' ';
  r->reply[n] = '\n';
  r->reply[n + 1] = '\0';
  r->len = (size_t)n + 1;
  r->done = 1;
  if (strncmp(r->reply, "err", 3) == 0)
    r->srv->errors++;
  r->srv->served++;
}

static void inflight_add(server *s, request *r) {
  r->inflight = 1;
  r->iprev = NULL;
  r->inext = s->inflight;
  if (s->inflight)
    s->inflight->iprev = r;
  s->inflight = r;
}

static void inflight_remove(server *s, request *r) {
  if (r->iprev)
    r->iprev->inext = r->inext;
  else
    s->inflight = r->inext;
  if (r->inext)
    r->inext->iprev = r->iprev;
  r->inflight = 0;
}

/* }====== */

/* {====== The engine side ====== */

/* An error value as text without calling metamethods (a raising __tostring
 * would leave the request unanswered): strings as they are, moonflow
 * errors as "kind: message", anything else by type. */
static void reply_error_value(request *r, lua_State *L, int idx) {
  idx = lua_absindex(L, idx); /* keys are pushed below */
  if (lua_type(L, idx) == LUA_TSTRING) {
    request_reply(r, "err %s", lua_tostring(L, idx));
    return;
  }
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_pushliteral(L, "kind");
    lua_rawget(L, idx);
    lua_pushliteral(L, "message");
    lua_rawget(L, idx);
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
      request_reply(r, "err %s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
      lua_pop(L, 2);
      return;
    }
    lua_pop(L, 2);
  }
  request_reply(r, "err flow failed with a %s", luaL_typename(L, idx));
}

/* The flow's done callback, fut:add_done_callback(this), the request in its
 * upvalue.  Never called after mf_engine_close. */
static int on_flow_done(lua_State *L) {
  request *r = lua_touserdata(L, lua_upvalueindex(1));
  conn *c = r->c;
  inflight_remove(r->srv, r);
  if (!c) { /* the client went away: nobody to answer */
    free(r);
    return 0;
  }
  int top = lua_gettop(L);
  int n = mf_lua_result(L, 1);
  if (n == 1 && lua_isinteger(L, -1))
    request_reply(r, "ok %lld", (long long)lua_tointeger(L, -1));
  else if (n == MF_EFAILED)
    reply_error_value(r, L, -1);
  else
    request_reply(r, "err internal: the flow returned no integer (%d)", n);
  lua_settop(L, top);
  flush(c); /* may free r */
  return 0;
}

/* Submits sum_flow(numbers) for the request (argument 1) and hangs
 * on_flow_done on its future.  Called protected, so that a Lua error (out
 * of memory) becomes an error answer instead of a panic; add_done_callback
 * raises only before it registered the callback, so a failed submit is
 * never called back. */
static int l_submit(lua_State *L) {
  request *r = lua_touserdata(L, 1);
  server *s = r->srv;
  lua_createtable(L, (int)s->count, 0);
  for (size_t i = 0; i < s->count; i++) {
    lua_pushinteger(L, (lua_Integer)s->numbers[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  if (mf_lua_call_flow(L, FLOW_NAME, 1) != 0)
    return lua_error(L); /* the message is on top */
  lua_getfield(L, -1, "add_done_callback");
  lua_insert(L, -2); /* method fut */
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, on_flow_done, 1);
  /* In the list first: were the flow already final, the callback would be
   * called at once. */
  inflight_add(s, r);
  lua_call(L, 2, 0);
  return 0;
}

static void submit_engine(server *s, request *r) {
  lua_State *L = s->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, l_submit);
  lua_pushlightuserdata(L, r);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    if (r->inflight) /* the flow may run, but its answer is ours now */
      inflight_remove(s, r);
    const char *msg = lua_tostring(L, -1);
    request_reply(r, "err internal: %s", msg ? msg : "?");
  }
  lua_settop(L, top);
}

/* }====== */

/* {====== The protocol ====== */

static int is_space(char ch) { return ch == ' ' || ch == '\t'; }

/* A decimal integer with an optional sign.  The characters are checked
 * first: strtoll alone would skip leading blanks and stop quietly at the
 * "e" of "1e3" or the "x" of "0x10". */
static int parse_number(const char *tok, size_t len, long long *out) {
  size_t i = (tok[0] == '+' || tok[0] == '-') ? 1 : 0;
  if (i == len || len > 32)
    return -1;
  for (size_t j = i; j < len; j++)
    if (tok[j] < '0' || tok[j] > '9')
      return -1;
  char buf[40];
  memcpy(buf, tok, len);
  buf[len] = '\0';
  errno = 0;
  *out = strtoll(buf, NULL, 10);
  return errno == ERANGE ? -1 : 0;
}

/* What --plain answers: the same as the flow, errors included. */
static void answer_plain(server *s, request *r) {
  long long total = 0;
  for (size_t i = 0; i < s->count; i++) {
    long long x = s->numbers[i];
    if (x > LIMIT || x < -LIMIT) {
      request_reply(r, "err out of range: %lld", x);
      return;
    }
    total += 2 * x;
  }
  request_reply(r, "ok %lld", total);
}

/* One request line, without its "\n"; queues its answer. */
static void handle_line(conn *c, char *line, size_t len) {
  server *s = c->srv;
  if (len > 0 && line[len - 1] == '\r')
    len--;
  request *r = request_push(c);
  if (!r) {
    conn_close(c); /* out of memory: this client is dropped, not the rest */
    return;
  }
  size_t i = 0;
  while (i < len && is_space(line[i]))
    i++;
  size_t cmd = i;
  while (i < len && !is_space(line[i]))
    i++;
  size_t cmd_len = i - cmd;
  if (cmd_len == 0) {
    request_reply(r, "err empty request");
  } else if (cmd_len == 4 && memcmp(line + cmd, "quit", 4) == 0) {
    while (i < len && is_space(line[i]))
      i++;
    if (i < len) {
      request_reply(r, "err quit takes no arguments");
    } else {
      request_reply(r, "ok bye");
      r->after = AFTER_QUIT;
      c->finished = 1; /* nothing after quit is read */
    }
  } else if (cmd_len == 3 && memcmp(line + cmd, "sum", 3) == 0) {
    s->count = 0;
    for (;;) {
      while (i < len && is_space(line[i]))
        i++;
      if (i == len)
        break;
      size_t tok = i;
      while (i < len && !is_space(line[i]))
        i++;
      if (s->count == NUMBERS_MAX) {
        request_reply(r, "err too many numbers (at most %d)", NUMBERS_MAX);
        return;
      }
      if (parse_number(line + tok, i - tok, &s->numbers[s->count]) != 0) {
        request_reply(r, "err bad number '%.*s'",
                      (int)(i - tok > 32 ? 32 : i - tok), line + tok);
        return;
      }
      s->count++;
    }
    if (s->plain)
      answer_plain(s, r);
    else
      submit_engine(s, r);
  } else {
    request_reply(r, "err unknown command '%.*s'",
                  (int)(cmd_len > 32 ? 32 : cmd_len), line + cmd);
  }
}

/* }====== */

/* {====== Connections ====== */

static void on_conn_closed(uv_handle_t *handle) {
  conn *c = handle->data;
  server *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c);
}

/* Closes the connection; answers not written are dropped, and flows still
 * running for it will find their request orphaned. */
static void conn_close(conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  request *r = c->head;
  while (r) {
    request *next = r->next;
    if (r->inflight)
      r->c = NULL; /* freed by on_flow_done, or at the shutdown */
    else
      free(r);
    r = next;
  }
  c->head = c->tail = NULL;
  c->queued = 0;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn *c = handle->data;
  *buf = uv_buf_init(c->srv->read_buf, sizeof c->srv->read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Reads are paused while a client has many unanswered requests or unsent
 * bytes (it sends faster than it reads), so that one client cannot make
 * the server queue without bound; resumed as answers go out. */
static void update_reading(conn *c) {
  if (c->closing || c->finished || c->eof)
    return;
  int full =
      c->queued >= QUEUE_MAX ||
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >= WRITE_QUEUE_MAX;
  if (full && !c->paused) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->paused = 1;
  } else if (!full && c->paused) {
    c->paused = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
      conn_close(c);
  }
}

/* A client that sent its last request (EOF, quit, a too long line) is
 * closed once every answer is written. */
static void maybe_finish(conn *c) {
  if (!c->closing && (c->eof || c->finished) && !c->head && c->writes == 0)
    conn_close(c);
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  conn *c = req->data;
  server *s = c->srv;
  int after = w->after;
  free(w);
  c->writes--;
  if (after == AFTER_QUIT)
    uv_stop(s->loop); /* main() tears everything down, outside callbacks */
  if (c->closing)
    return;
  if (status < 0 || after == AFTER_CLOSE) {
    conn_close(c);
    return;
  }
  update_reading(c);
  maybe_finish(c);
}

/* Writes the answers at the head of the FIFO that are ready, in one write;
 * a later answer waits for every earlier one. */
static void flush(conn *c) {
  if (c->closing)
    return;
  size_t bytes = 0;
  request *end = c->head;
  int after = AFTER_NONE;
  while (end && end->done) {
    bytes += end->len;
    after = end->after;
    end = end->next;
    if (after != AFTER_NONE)
      break; /* nothing is written after a closing answer */
  }
  if (bytes > 0) {
    write_req *w = malloc(sizeof *w + bytes);
    if (!w) {
      conn_close(c);
      return;
    }
    size_t at = 0;
    while (c->head != end) {
      request *r = c->head;
      memcpy(w->data + at, r->reply, r->len);
      at += r->len;
      c->head = r->next;
      c->queued--;
      free(r);
    }
    if (!c->head)
      c->tail = NULL;
    if (after != AFTER_NONE) { /* drop what was queued after it */
      request *r = c->head;
      while (r) {
        request *next = r->next;
        if (r->inflight)
          r->c = NULL;
        else
          free(r);
        r = next;
      }
      c->head = c->tail = NULL;
      c->queued = 0;
    }
    w->after = after;
    w->req.data = c;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)bytes);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
    if (rc != 0) {
      free(w);
      if (after == AFTER_QUIT)
        uv_stop(c->srv->loop);
      conn_close(c);
      return;
    }
    c->writes++;
  }
  update_reading(c);
  maybe_finish(c);
}

/* The client sent no more: stop reading (the line being read is lost). */
static void finish_reading(conn *c) {
  c->finished = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn *c = stream->data;
  if (nread == UV_EOF) {
    /* A last line without "\n" is a request too (printf 'sum 1' | nc). */
    if (c->line_len > 0 && !c->finished)
      handle_line(c, c->line, c->line_len);
    c->line_len = 0;
    c->eof = 1;
    uv_read_stop(stream);
    flush(c);
    return;
  }
  if (nread < 0) {
    conn_close(c); /* reset: answers could not be delivered anyway */
    return;
  }
  const char *p = buf->base, *end = buf->base + nread;
  /* The whole buffer is parsed even if the client gets paused meanwhile:
   * at most READ_BUF bytes of requests more than QUEUE_MAX. */
  while (p < end && !c->finished && !c->closing) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t seg = (size_t)((nl ? nl : end) - p);
    if (c->line_len + seg > LINE_MAX_BYTES) {
      request *r = request_push(c);
      if (!r) {
        conn_close(c);
        return;
      }
      request_reply(r, "err line too long (at most %d bytes)", LINE_MAX_BYTES);
      r->after = AFTER_CLOSE;
      finish_reading(c);
      break;
    }
    memcpy(c->line + c->line_len, p, seg);
    c->line_len += seg;
    p += seg;
    if (!nl)
      break;
    p++; /* the "\n" */
    c->line[c->line_len] = '\0';
    size_t len = c->line_len;
    c->line_len = 0;
    handle_line(c, c->line, len);
  }
  if (c->finished && !c->closing)
    uv_read_stop(stream);
  flush(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  server *s = listener->data;
  if (status < 0) {
    fprintf(stderr, "tcp_server: accept: %s\n", uv_strerror(status));
    return;
  }
  conn *c = calloc(1, sizeof *c);
  if (!c)
    return; /* the pending connection stays in the backlog */
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  /* Answers are small and latency matters: no Nagle delay. */
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

/* }====== */

/* {====== Life ====== */

static void on_signal(uv_signal_t *handle, int signum) {
  (void)signum;
  uv_stop(handle->loop); /* main() tears down, outside any callback */
}

static void on_engine_error(mf_engine *engine, const char *message,
                            void *data) {
  (void)engine;
  (void)data;
  fprintf(stderr, "tcp_server: engine: %s\n", message);
}

static int open_engine(server *s, const char *script) {
  /* keep_loop_alive: ready runs keep uv_run from blocking in poll even if
   * the listener were the only other handle and closed; the listener keeps
   * the loop alive anyway while we serve. */
  mf_config cfg = {
      .loop = s->loop, .on_error = on_engine_error, .keep_loop_alive = 1};
  int rc = mf_engine_new(&s->engine, &cfg);
  if (rc != 0) {
    fprintf(stderr, "tcp_server: engine: %s\n", mf_strerror(rc));
    return -1;
  }
  s->L = luaL_newstate();
  if (!s->L)
    return -1;
  luaL_openlibs(s->L);
  mf_lua_attach(s->L, s->engine);
  luaL_requiref(s->L, "moonflow", luaopen_moonflow, 1);
  lua_pop(s->L, 1);
  if (luaL_dofile(s->L, script) != LUA_OK) {
    fprintf(stderr, "tcp_server: %s\n", lua_tostring(s->L, -1));
    return -1;
  }
  lua_getglobal(s->L, FLOW_NAME);
  int found = !lua_isnil(s->L, -1);
  lua_pop(s->L, 1);
  if (!found) {
    fprintf(stderr, "tcp_server: %s defines no global %s\n", script, FLOW_NAME);
    return -1;
  }
  return 0;
}

/* Closes everything in the order the engine wants: the engine first (no
 * done callback after it), then what its runs referred to, the handles,
 * and Lua last.  Returns uv_loop_close's code. */
static int shutdown_server(server *s) {
  if (s->engine)
    mf_engine_close(s->engine);
  for (conn *c = s->conns; c; c = c->next)
    conn_close(c);
  while (s->inflight) { /* orphans now: their callbacks will never come */
    request *r = s->inflight;
    inflight_remove(s, r);
    free(r);
  }
  if (!uv_is_closing((uv_handle_t *)&s->listener))
    uv_close((uv_handle_t *)&s->listener, NULL);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_run(s->loop, UV_RUN_DEFAULT); /* the close callbacks, the engine's too */
  if (s->L)
    lua_close(s->L);
  return uv_loop_close(s->loop);
}

static int usage(void) {
  fprintf(stderr, "usage: tcp_server [--plain] [--script FILE] PORT\n"
                  "  PORT 0 picks a free port; listens on 127.0.0.1 only\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *script = TCP_SERVER_SCRIPT, *port_arg = NULL;
  int plain = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--plain") == 0)
      plain = 1;
    else if (strcmp(argv[i], "--script") == 0 && i + 1 < argc)
      script = argv[++i];
    else if (argv[i][0] != '-' && !port_arg)
      port_arg = argv[i];
    else
      return usage();
  }
  char *tail;
  long port = port_arg ? strtol(port_arg, &tail, 10) : -1;
  if (!port_arg || *tail || port < 0 || port > 65535)
    return usage();
  /* A client that resets while we write must not kill the server. */
  signal(SIGPIPE, SIG_IGN);

  static server srv; /* static: read_buf, and zeroed */
  server *s = &srv;
  s->loop = uv_default_loop();
  s->plain = plain;
  uv_tcp_init(s->loop, &s->listener);
  s->listener.data = s;
  uv_signal_init(s->loop, &s->sigint);
  uv_signal_init(s->loop, &s->sigterm);
  int failed = 0;
  if (!plain && open_engine(s, script) != 0)
    failed = 1;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", (int)port, &addr); /* loopback only */
  int rc = 0;
  if (!failed &&
      ((rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0)) ||
       (rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)))) {
    fprintf(stderr, "tcp_server: 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
    failed = 1;
  }
  if (!failed) {
    struct sockaddr_storage name;
    int namelen = sizeof name;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &namelen);
    int bound = ntohs(((struct sockaddr_in *)&name)->sin_port);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    printf("listening on 127.0.0.1:%d (%s)\n", bound,
           plain ? "plain C" : "moonflow engine");
    fflush(stdout); /* a test script waits for this line */
    uv_run(s->loop, UV_RUN_DEFAULT);
    /* CPU time per answer: the engine's cost, whatever the load tester
     * sharing the machine could drive. */
    uv_rusage_t ru;
    double cpu = 0;
    if (uv_getrusage(&ru) == 0)
      cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    fprintf(stderr,
            "tcp_server: shutting down: %llu requests answered, %llu with an "
            "error; %.3f s CPU, %.1f us per request; %zu runs to cancel\n",
            s->served, s->errors, cpu,
            s->served ? cpu * 1e6 / (double)s->served : 0.0,
            s->engine ? mf_engine_live_runs(s->engine) : (size_t)0);
  }
  rc = shutdown_server(s);
  if (rc != 0)
    fprintf(stderr, "tcp_server: uv_loop_close: %s\n", uv_strerror(rc));
  return failed || rc != 0 ? 1 : 0;
}

/* }====== */
