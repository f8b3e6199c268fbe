/*
 * tcp_load.c -- a load tester for examples/tcp_server.c: many concurrent
 * libuv connections to 127.0.0.1, each sending a bounded number of requests
 * (count- and time-bounded, it stops by itself), every answer checked
 * against the one computed here; prints requests per second and latency
 * percentiles.  Exits 0 only if every request got its right answer.
 *
 * Usage: tcp_load --port P [--clients 200] [--requests 50] [--duration 10]
 *                 [--grace 5] [--depth 1] [--numbers 8] [--bad 10]
 *                 [--abandon 0] [--seed 1] [--quit]
 *   --clients   connections open at once (each sends its requests in turn)
 *   --requests  requests per connection
 *   --duration  seconds after which no new request is sent
 *   --grace     seconds more for the answers still due; then they are lost
 *   --depth     requests in flight per connection (pipelining)
 *   --numbers   at most that many numbers per "sum" request
 *   --bad       percent of requests that are wrong on purpose: their error
 *               answer is checked as exactly as the good ones
 *   --abandon   extra connections that send requests and hang up without
 *               reading (the server must survive flows that outlive them)
 *   --quit      at the end, send "quit" and expect "ok bye" then EOF
 * One more connection checks a fixed script (pipelined edge cases, answers
 * in order, a too-long line answered then closed).  Only 127.0.0.1.
 */
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

enum { DEPTH_MAX = 64, ANSWER_MAX = 96, LINE_BUF = 512, REQ_MAX = 16384 };

typedef struct load load;

/* An answer expected, and when its request was sent. */
typedef struct expect {
  uint64_t sent_at;
  int bad; /* an error answer was the point */
  char answer[ANSWER_MAX];
} expect;

typedef enum kind { RANDOM, SCRIPT, ABANDON, QUIT } kind;

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t connect;
  load *ld;
  kind kind;
  int id, connected, closing, eof_expected, done;
  unsigned sent, answered, limit;
  expect ring[DEPTH_MAX]; /* FIFO of answers due */
  unsigned head, count;
  size_t line_len;
  char line[LINE_BUF];
  uint64_t rng;
} client;

typedef struct write_req {
  uv_write_t req;
  client *c;
  char data[];
} write_req;

struct load {
  uv_loop_t *loop;
  uv_timer_t stop_timer, hard_timer;
  int port, clients, requests, depth, numbers, bad, abandon, quit;
  double duration, grace;
  uint64_t seed;
  client **all;
  int nall, open_now, max_open, finished, stopping;
  unsigned long long sent, answered, wrong, lost, errors_expected;
  unsigned long long connect_failed, closed_early, reported;
  uint64_t started, last_answer;
  double *lat; /* milliseconds, one per answer */
  size_t nlat, caplat;
  int timed_out; /* the hard timer fired */
  int failed;    /* a check outside the counters failed (script, quit) */
};

static void complain(load *ld, const char *fmt, ...) {
  if (ld->reported++ >= 10)
    return; /* the counters tell the rest */
  va_list ap;
  va_start(ap, fmt);
  fputs("tcp_load: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static uint64_t next_rand(uint64_t *s) { /* xorshift64: reproducible runs */
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* {====== Requests and their answers ====== */

/* The requests the bad ones are drawn from, with their exact answers: the
 * out-of-range one fails inside the Lua task, the rest in the C parser. */
static const char *const bad_requests[][2] = {
    {"sum 1 x 3", "err bad number 'x'"},
    {"frobnicate 1 2", "err unknown command 'frobnicate'"},
    {"sum 5 2000000000000000 7", "err out of range: 2000000000000000"},
    {"", "err empty request"},
    {"   \t ", "err empty request"},
    {"sum 99999999999999999999", "err bad number '99999999999999999999'"},
    {"sum 1.5", "err bad number '1.5'"},
    {"quit now", "err quit takes no arguments"},
    {"sum -1000000000000001", "err out of range: -1000000000000001"},
};

/* Writes one random request into buf (with "\n"), its answer into e. */
static size_t make_request(client *c, char *buf, size_t size, expect *e) {
  load *ld = c->ld;
  uint64_t r = next_rand(&c->rng);
  if ((int)(r % 100) < ld->bad) {
    size_t n = sizeof bad_requests / sizeof *bad_requests;
    size_t k = (size_t)(r >> 8) % n;
    snprintf(e->answer, sizeof e->answer, "%s", bad_requests[k][1]);
    e->bad = 1;
    return (size_t)snprintf(buf, size, "%s\n", bad_requests[k][0]);
  }
  int count = (int)((r >> 8) % (uint64_t)(ld->numbers + 1)); /* 0 too */
  size_t len = (size_t)snprintf(buf, size, "sum");
  long long total = 0;
  for (int i = 0; i < count; i++) {
    long long x = (long long)(next_rand(&c->rng) % 2000001) - 1000000;
    total += 2 * x; /* the server's tasks double each number */
    len += (size_t)snprintf(buf + len, size - len, "%s%lld",
                            (r >> 40) & 1 ? "  " : " ", x);
  }
  /* A few clients end lines with "\r\n", as telnet does. */
  len += (size_t)snprintf(buf + len, size - len, (r >> 41) % 8 ? "\n" : "\r\n");
  snprintf(e->answer, sizeof e->answer, "ok %lld", total);
  e->bad = 0;
  return len;
}

/* The fixed script: edge cases, pipelined at once, answered in order. */
static const char *const script[][2] = {
    {"sum", "ok 0"},
    {"sum 1 2 3", "ok 12"},
    {"  sum   -4\t 4  ", "ok 0"},
    {"sum +7", "ok 14"},
    {"sum 1000000000000000 -1000000000000000 1000000000000000",
     "ok 2000000000000000"},
    {"sum 3 -1000000000000001 2000000000000000",
     "err out of range: -1000000000000001"},
    {"SUM 1", "err unknown command 'SUM'"},
    {"sum 0x10", "err bad number '0x10'"},
    {"sum 1e3", "err bad number '1e3'"},
    {"sum -", "err bad number '-'"},
    {"sum 9223372036854775808", "err bad number '9223372036854775808'"},
    {"sum 5", "ok 10"},
};
/* Sent last on the script's connection: answered, then the server closes. */
static const char long_line_answer[] = "err line too long (at most 4096 bytes)";

/* }====== */

/* {====== Connections ====== */

static void client_send_more(client *c);
static void check_finished(load *ld);

static void on_closed(uv_handle_t *handle) {
  client *c = handle->data;
  load *ld = c->ld;
  if (c->connected && c->kind == RANDOM)
    ld->open_now--;
  c->done = 1;
  ld->finished++;
  check_finished(ld);
}

/* Closes the client; answers still due are lost. */
static void client_close(client *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->kind != ABANDON)
    c->ld->lost += c->count;
  c->count = 0;
  if (c->connected)
    uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  client *c = w->c;
  free(w);
  if (c->kind == ABANDON) { /* hang up with the answers still coming */
    client_close(c);
    return;
  }
  if (status < 0 && !c->closing) {
    complain(c->ld, "client %d: write: %s", c->id, uv_strerror(status));
    c->ld->closed_early++;
    client_close(c);
  }
}

static int client_write(client *c, const char *data, size_t len) {
  write_req *w = malloc(sizeof *w + len);
  if (!w)
    return -1;
  w->c = c;
  memcpy(w->data, data, len);
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
  if (rc != 0) {
    free(w);
    complain(c->ld, "client %d: write: %s", c->id, uv_strerror(rc));
    c->ld->closed_early++;
    client_close(c);
  }
  return rc;
}

/* Fills the client's pipeline: requests go out while fewer than depth are
 * due, the count is not reached and the time is not over. */
static void client_send_more(client *c) {
  load *ld = c->ld;
  char buf[REQ_MAX];
  size_t len = 0;
  while (!c->closing && c->count < (unsigned)ld->depth && c->sent < c->limit &&
         !ld->stopping && len + 1024 < sizeof buf) {
    expect *e = &c->ring[(c->head + c->count) % DEPTH_MAX];
    len += make_request(c, buf + len, sizeof buf - len, e);
    e->sent_at = uv_hrtime();
    c->count++;
    c->sent++;
    ld->sent++;
  }
  if (len > 0)
    client_write(c, buf, len);
  else if (c->count == 0 && !c->closing)
    client_close(c); /* all answered, nothing more to send */
}

static void record_latency(load *ld, uint64_t sent_at, uint64_t now) {
  if (ld->nlat == ld->caplat) {
    size_t cap = ld->caplat ? 2 * ld->caplat : 4096;
    double *lat = realloc(ld->lat, cap * sizeof *lat);
    if (!lat)
      return; /* the percentiles miss one sample; the counts stay exact */
    ld->lat = lat;
    ld->caplat = cap;
  }
  ld->lat[ld->nlat++] = (double)(now - sent_at) / 1e6;
}

/* One answer line from the server. */
static void on_line(client *c, const char *line) {
  load *ld = c->ld;
  if (c->count == 0) {
    complain(ld, "client %d: unexpected answer '%s'", c->id, line);
    ld->wrong++;
    return;
  }
  expect *e = &c->ring[c->head];
  c->head = (c->head + 1) % DEPTH_MAX;
  c->count--;
  c->answered++;
  uint64_t now = uv_hrtime();
  if (strcmp(line, e->answer) != 0) {
    complain(ld, "client %d: answer %u: got '%s', want '%s'", c->id,
             c->answered, line, e->answer);
    ld->wrong++;
  } else if (e->bad) {
    ld->errors_expected++;
  }
  if (c->kind == RANDOM) { /* the script's answers are not load */
    ld->answered++;
    ld->last_answer = now;
    record_latency(ld, e->sent_at, now);
  }
}

/* One loop thread and every read consumed at once: one buffer serves all,
 * which keeps the tester's own cost per answer low. */
static char read_buf[65536];

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  client *c = stream->data;
  load *ld = c->ld;
  if (nread < 0) {
    if (!(nread == UV_EOF && c->eof_expected && c->count == 0)) {
      complain(ld, "client %d: %s with %u answers due", c->id,
               uv_strerror((int)nread), c->count);
      ld->closed_early++;
    }
    client_close(c);
    return;
  }
  for (ssize_t i = 0; i < nread && !c->closing; i++) {
    char ch = buf->base[i];
    if (ch != '\n') {
      if (c->line_len + 1 < sizeof c->line)
        c->line[c->line_len++] = ch;
      continue;
    }
    c->line[c->line_len] = '\0';
    c->line_len = 0;
    on_line(c, c->line);
  }
  if (c->closing)
    return;
  if (c->kind == RANDOM)
    client_send_more(c);
  else if (c->count == 0 && !c->eof_expected)
    client_close(c);
}

/* The script's requests, all in one write, then a line too long. */
static void send_script(client *c) {
  static char buf[REQ_MAX];
  size_t len = 0, n = sizeof script / sizeof *script;
  for (size_t i = 0; i < n; i++) {
    expect *e = &c->ring[(c->head + c->count) % DEPTH_MAX];
    snprintf(e->answer, sizeof e->answer, "%s", script[i][1]);
    e->bad = strncmp(e->answer, "err", 3) == 0;
    e->sent_at = uv_hrtime();
    c->count++;
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s\n", script[i][0]);
  }
  expect *e = &c->ring[(c->head + c->count) % DEPTH_MAX];
  snprintf(e->answer, sizeof e->answer, "%s", long_line_answer);
  e->bad = 1;
  c->count++;
  memset(buf + len, '7', 5000); /* longer than the server's 4096 */
  len += 5000;
  c->eof_expected = 1;
  client_write(c, buf, len);
}

static void on_connect(uv_connect_t *req, int status) {
  client *c = req->data;
  load *ld = c->ld;
  if (status < 0) {
    complain(ld, "client %d: connect: %s", c->id, uv_strerror(status));
    if (c->kind != ABANDON)
      ld->connect_failed++;
    client_close(c);
    return;
  }
  c->connected = 1;
  if (c->kind == RANDOM && ++ld->open_now > ld->max_open)
    ld->max_open = ld->open_now; /* the load's concurrency, nothing else */
  uv_tcp_nodelay(&c->tcp, 1);
  if (c->kind != ABANDON &&
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    client_close(c);
    return;
  }
  switch (c->kind) {
  case RANDOM:
    client_send_more(c);
    break;
  case SCRIPT:
    send_script(c);
    break;
  case ABANDON: {
    /* Long flows (many numbers) so that they are still running when the
     * server sees the hang-up. */
    char buf[REQ_MAX];
    size_t len = 0;
    for (int r = 0; r < 4; r++) {
      len += (size_t)snprintf(buf + len, sizeof buf - len, "sum");
      for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, " %d", i);
      buf[len++] = '\n';
    }
    client_write(c, buf, len);
    break;
  }
  case QUIT:
    snprintf(c->ring[0].answer, sizeof c->ring[0].answer, "ok bye");
    c->ring[0].bad = 0;
    c->ring[0].sent_at = uv_hrtime();
    c->count = 1;
    c->eof_expected = 1;
    client_write(c, "quit\n", 5);
    break;
  }
}

static client *client_start(load *ld, kind kind) {
  client *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->ld = ld;
  c->kind = kind;
  c->id = ld->nall;
  c->limit = (unsigned)ld->requests;
  c->rng = ld->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)c->id * 2654435761u + 1;
  ld->all[ld->nall++] = c;
  uv_tcp_init(ld->loop, &c->tcp);
  c->tcp.data = c;
  c->connect.data = c;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", ld->port, &addr); /* loopback only */
  int rc = uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&addr,
                          on_connect);
  if (rc != 0) {
    complain(ld, "client %d: connect: %s", c->id, uv_strerror(rc));
    ld->connect_failed++;
    client_close(c);
  }
  return c;
}

/* }====== */

/* {====== The run ====== */

static void on_stop_timer(uv_timer_t *timer) {
  load *ld = timer->data;
  ld->stopping = 1; /* no new requests; answers due still count */
}

static void on_hard_timer(uv_timer_t *timer) {
  load *ld = timer->data;
  ld->timed_out = 1;
  complain(ld, "time is up: closing the connections still open");
  for (int i = 0; i < ld->nall; i++)
    if (!ld->all[i]->closing)
      client_close(ld->all[i]);
}

static void check_finished(load *ld) {
  int expected = ld->clients + 1 + ld->abandon;
  if (ld->finished == expected && ld->quit) {
    ld->quit = 0; /* once: the quit client finishing comes here again */
    if (ld->timed_out) {
      complain(ld, "no time left to send quit");
      ld->failed = 1;
    } else {
      /* quit gets its own grace period, so the run still ends by itself
       * if the server never answers it */
      uv_timer_start(&ld->hard_timer, on_hard_timer,
                     (uint64_t)(ld->grace * 1000), 0);
      client_start(ld, QUIT);
      return;
    }
  }
  if (ld->finished < ld->nall || ld->quit)
    return;
  uv_close((uv_handle_t *)&ld->stop_timer, NULL);
  uv_close((uv_handle_t *)&ld->hard_timer, NULL);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted samples. */
static double percentile(const double *v, size_t n, double p) {
  if (n == 0)
    return 0;
  size_t rank = (size_t)ceil(p / 100.0 * (double)n);
  return v[rank == 0 ? 0 : rank - 1];
}

static int usage(void) {
  fprintf(stderr,
          "usage: tcp_load --port P [--clients N] [--requests N] "
          "[--duration S] [--grace S] [--depth N] [--numbers N] [--bad PCT] "
          "[--abandon N] [--seed N] [--quit]\n");
  return 2;
}

int main(int argc, char **argv) {
  load ld = {.clients = 200,
             .requests = 50,
             .duration = 10,
             .grace = 5,
             .depth = 1,
             .numbers = 8,
             .bad = 10,
             .seed = 1,
             .port = -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--quit") == 0) {
      ld.quit = 1;
      continue;
    }
    if (!v)
      return usage();
    i++;
    if (strcmp(a, "--port") == 0)
      ld.port = atoi(v);
    else if (strcmp(a, "--clients") == 0)
      ld.clients = atoi(v);
    else if (strcmp(a, "--requests") == 0)
      ld.requests = atoi(v);
    else if (strcmp(a, "--duration") == 0)
      ld.duration = atof(v);
    else if (strcmp(a, "--grace") == 0)
      ld.grace = atof(v);
    else if (strcmp(a, "--depth") == 0)
      ld.depth = atoi(v);
    else if (strcmp(a, "--numbers") == 0)
      ld.numbers = atoi(v);
    else if (strcmp(a, "--bad") == 0)
      ld.bad = atoi(v);
    else if (strcmp(a, "--abandon") == 0)
      ld.abandon = atoi(v);
    else if (strcmp(a, "--seed") == 0)
      ld.seed = strtoull(v, NULL, 10);
    else
      return usage();
  }
  /* Bounds keep every loop finite and every buffer big enough. */
  if (ld.port <= 0 || ld.port > 65535 || ld.clients < 1 || ld.clients > 10000 ||
      ld.requests < 0 || ld.requests > 1000000 || ld.depth < 1 ||
      ld.depth > DEPTH_MAX || ld.numbers < 0 || ld.numbers > 20 || ld.bad < 0 ||
      ld.bad > 100 || ld.abandon < 0 || ld.abandon > 1000 ||
      !(ld.duration > 0 && ld.duration <= 600) ||
      !(ld.grace > 0 && ld.grace <= 600))
    return usage();
  signal(SIGPIPE, SIG_IGN); /* a server that hangs up is reported, not fatal */

  ld.loop = uv_default_loop();
  ld.all = calloc((size_t)(ld.clients + ld.abandon + 2), sizeof *ld.all);
  if (!ld.all)
    return 1;
  uv_timer_init(ld.loop, &ld.stop_timer);
  uv_timer_init(ld.loop, &ld.hard_timer);
  ld.stop_timer.data = ld.hard_timer.data = &ld;
  uv_timer_start(&ld.stop_timer, on_stop_timer, (uint64_t)(ld.duration * 1000),
                 0);
  uv_timer_start(&ld.hard_timer, on_hard_timer,
                 (uint64_t)((ld.duration + ld.grace) * 1000), 0);
  ld.started = uv_hrtime();
  for (int i = 0; i < ld.clients; i++)
    client_start(&ld, RANDOM);
  client_start(&ld, SCRIPT);
  for (int i = 0; i < ld.abandon; i++)
    client_start(&ld, ABANDON);
  uv_run(ld.loop, UV_RUN_DEFAULT);

  for (int i = 0; i < ld.nall; i++) {
    client *c = ld.all[i];
    if (c->kind == SCRIPT &&
        c->answered != sizeof script / sizeof *script + 1) {
      complain(&ld, "the script got %u answers of %zu", c->answered,
               sizeof script / sizeof *script + 1);
      ld.failed = 1;
    }
    if (c->kind == QUIT && c->answered != 1) {
      complain(&ld, "quit was not answered");
      ld.failed = 1;
    }
    free(c);
  }
  double seconds = ld.last_answer > ld.started
                       ? (double)(ld.last_answer - ld.started) / 1e9
                       : 0.0;
  if (ld.nlat > 0) /* qsort wants a non-null array even for 0 items */
    qsort(ld.lat, ld.nlat, sizeof *ld.lat, cmp_double);
  int ok = !ld.failed && ld.wrong == 0 && ld.lost == 0 &&
           ld.connect_failed == 0 && ld.closed_early == 0 &&
           ld.answered == ld.sent && ld.answered > 0;
  printf("tcp_load: %d connections (%d open at once), depth %d: %llu "
         "requests sent, %llu answered (%llu errors on purpose), %llu wrong, "
         "%llu lost, %llu failed connects, %llu closed early\n",
         ld.clients, ld.max_open, ld.depth, ld.sent, ld.answered,
         ld.errors_expected, ld.wrong, ld.lost, ld.connect_failed,
         ld.closed_early);
  printf("tcp_load: %.0f requests/s (%llu in %.3f s)\n",
         seconds > 0 ? (double)ld.answered / seconds : 0.0, ld.answered,
         seconds);
  printf("tcp_load: latency ms: p50 %.3f p90 %.3f p99 %.3f max %.3f\n",
         percentile(ld.lat, ld.nlat, 50), percentile(ld.lat, ld.nlat, 90),
         percentile(ld.lat, ld.nlat, 99), percentile(ld.lat, ld.nlat, 100));
  printf("tcp_load: %s\n", ok ? "OK" : "FAILED");
  free(ld.lat);
  free(ld.all);
  int rc = uv_loop_close(ld.loop);
  return ok && rc == 0 ? 0 : 1;
}

/* }====== */
