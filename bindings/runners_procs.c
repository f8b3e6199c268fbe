/*
 * runners_procs.c -- the processes runner: N worker processes, each the
 * moonflow program in its worker mode (`moonflow --worker`), started with
 * posix_spawn (io_spawn.c, which reaps it too) and spoken to through
 * length-prefixed frames over a socket pair on the child's descriptor 3.  Its
 * standard output and error are the parent's own, so that what it prints and
 * logs (under the run's name) lands where the parent's does; its standard input
 * is /dev/null.
 *
 * A frame: u32 length (of what follows), u8 type, u64 job id, payload.
 *   SETUP  parent->child  u16 version length, version, u32 config length,
 *                         config, setup parts
 *   JOB    parent->child  f64 timeout (its bits), parts
 *   CANCEL parent->child  (none)
 *   ANSWER child->parent  u8 status, parts
 * A worker that dies (a signal, out of memory, an exit) loses its jobs:
 * their runs end CRASHED with the signal or status, and the retries of the
 * task apply; the worker is replaced when the next job needs it.  A frame
 * that makes no sense, either way, drops that worker (logged): nothing
 * waits on it.  Shutting down kills and reaps every worker, so none
 * outlives its runner; a worker whose parent dies is killed too
 * (PR_SET_PDEATHSIG), and one whose pipe closes exits.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "runners.h"

enum { F_SETUP = 1, F_JOB, F_CANCEL, F_ANSWER };
#define HEADER 13                       /* u32 length, u8 type, u64 id */
#define MAX_FRAME (1024u * 1024 * 1024) /* longer: corrupt */

int mflw_is_program;

/* {====== Frames ====== */

static void put_u64(char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

typedef struct frame_write {
  uv_write_t req;
  mfl_buffer body; /* taken from the caller */
  char head[HEADER + 8];
} frame_write;

static void on_written(uv_write_t *req, int status) {
  (void)status; /* a dead worker: its exit says so */
  frame_write *fw = (frame_write *)req;
  mfl_buffer_free(&fw->body);
  free(fw);
}

/* Writes a frame: the header, extra bytes (at most 8), then body (taken).
 * Returns 0 or a libuv error. */
static int write_frame(uv_stream_t *s, int type, uint64_t id, const char *extra,
                       size_t nextra, mfl_buffer *body) {
  frame_write *fw = calloc(1, sizeof *fw);
  if (!fw)
    return UV_ENOMEM;
  size_t len = 9 + nextra + (body ? body->len : 0);
  if (len > MAX_FRAME) {
    free(fw);
    return UV_E2BIG;
  }
  for (int i = 0; i < 4; i++)
    fw->head[i] = (char)(len >> (8 * i));
  fw->head[4] = (char)type;
  put_u64(fw->head + 5, id);
  if (nextra)
    memcpy(fw->head + HEADER, extra, nextra);
  if (body) {
    fw->body = *body;
    memset(body, 0, sizeof *body);
  }
  uv_buf_t bufs[2] = {uv_buf_init(fw->head, (unsigned)(HEADER + nextra)),
                      uv_buf_init(fw->body.data, (unsigned)fw->body.len)};
  int rc = uv_write(&fw->req, s, bufs, fw->body.len ? 2 : 1, on_written);
  if (rc != 0) {
    mfl_buffer_free(&fw->body);
    free(fw);
  }
  return rc;
}

static void alloc_read(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  mfl_buffer *in = handle->data; /* the first field of its owner */
  (void)suggested;
  if (mfl_buffer_reserve(in, 65536) != 0) {
    *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the reader gives up */
    return;
  }
  *buf = uv_buf_init(in->data + in->len, (unsigned)(in->cap - in->len));
}

/* Calls fn for each whole frame in the buffer and keeps the rest; stops at
 * the first frame fn refuses (returns its message) or that is malformed. */
typedef const char *(*frame_fn)(void *data, int type, uint64_t id,
                                const unsigned char *payload, size_t len);

static const char *each_frame(mfl_buffer *in, frame_fn fn, void *data) {
  size_t at = 0;
  const char *bad = NULL;
  const unsigned char *b = (const unsigned char *)in->data;
  while (!bad && in->len - at >= 4) {
    uint32_t len = get_u32(b + at);
    if (len < 9 || len > MAX_FRAME) {
      bad = "a frame length out of bounds";
      break;
    }
    if (in->len - at - 4 < len)
      break;
    bad = fn(data, b[at + 4], get_u64(b + at + 5), b + at + HEADER, len - 9);
    at += 4 + (size_t)len;
  }
  memmove(in->data, in->data + at, in->len - at);
  in->len -= at;
  return bad;
}

/* }====== */

/* {====== The parent ====== */

typedef struct proc {
  mfl_buffer in; /* first: alloc_read finds it through data */
  mflr_runner *r;
  struct procs *ps;         /* NULL once the runner shut down */
  struct proc *prev, *next; /* every worker not yet freed */
  int index;
  int alive;    /* started and not reaped yet */
  int holds;    /* what keeps it: the pipe open, the child listed */
  char *reason; /* why it is being dropped, when not its exit */
  mfl_child child;
  uv_pipe_t pipe;
} proc;

typedef struct procs {
  mflr_runner *r;
  char *program;
  proc **w;    /* NULL where no worker runs */
  proc *all;   /* every worker not yet freed */
  int started; /* the first job started every worker */
  int keep;    /* jobs in flight: workers keep the loop alive */
} procs;

/* One of its holds let go: the last frees it. */
static void release(proc *p) {
  if (--p->holds > 0)
    return;
  mflr_runner *r = p->r;
  if (p->ps) {
    if (p->prev)
      p->prev->next = p->next;
    else
      p->ps->all = p->next;
    if (p->next)
      p->next->prev = p->prev;
  }
  mfl_buffer_free(&p->in);
  free(p->reason);
  free(p);
  mflr_release(r);
}

static void on_pipe_closed(uv_handle_t *handle) { release(handle->data); }

static void close_pipe(proc *p) {
  if (!uv_is_closing((uv_handle_t *)&p->pipe))
    uv_close((uv_handle_t *)&p->pipe, on_pipe_closed);
}

/* Not reaped yet, the pid is still its own. */
static void kill_worker(proc *p) {
  if (p->alive)
    kill(p->child.pid, SIGKILL);
}

/* Takes the worker out of its slot (its jobs are lost with the message). */
static void vacate(proc *p, const char *message) {
  procs *ps = p->ps;
  if (!ps || ps->w[p->index] != p)
    return;
  ps->w[p->index] = NULL;
  if (!p->r->closed)
    mflr_worker_lost(p->r, p->index, message);
}

/* Drops a worker that broke the protocol; its exit loses its jobs. */
static void corrupt(proc *p, const char *why) {
  if (p->reason)
    return;
  char text[256];
  snprintf(text, sizeof text,
           "its worker process %d sent a corrupt frame (%s) and was "
           "replaced",
           p->child.pid, why);
  p->reason = strdup(text);
  mflr_log(p->r, "worker process %d sent a corrupt frame (%s): dropped",
           p->child.pid, why);
  uv_read_stop((uv_stream_t *)&p->pipe);
  vacate(p, text);
  kill_worker(p);
}

/* Reaped (from the loop). */
static void on_worker_exit(mfl_child *child) {
  proc *p = (proc *)((char *)child - offsetof(proc, child));
  p->alive = 0;
  char text[256];
  if (p->reason)
    snprintf(text, sizeof text, "%s", p->reason);
  else if (child->term_signal)
    snprintf(text, sizeof text,
             "its worker process %d was killed by signal %d (%s)", child->pid,
             child->term_signal, strsignal(child->term_signal));
  else
    snprintf(text, sizeof text, "its worker process %d exited with status %ld",
             child->pid, child->exit_status);
  vacate(p, text);
  close_pipe(p);
  release(p); /* the child's hold */
}

static const char *on_parent_frame(void *data, int type, uint64_t id,
                                   const unsigned char *payload, size_t len) {
  proc *p = data;
  if (type != F_ANSWER || len < 1)
    return "not an answer";
  mfl_buffer answer = {0};
  if (len > 1) {
    if (mfl_buffer_reserve(&answer, len - 1) != 0)
      return "out of memory";
    memcpy(answer.data, payload + 1, len - 1);
    answer.len = len - 1;
    mflr_parts it;
    if (mflr_parts_open(&it, answer.data, answer.len) != 0) {
      mfl_buffer_free(&answer);
      return "an answer that is not parts";
    }
  }
  int rc = mflr_answer(p->r, p->index, id, payload[0], &answer);
  mfl_buffer_free(&answer);
  return rc == 0 ? NULL : "an answer to no job of its own";
}

static void on_parent_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  proc *p = s->data;
  if (n < 0) { /* its end closed: it died or is dying */
    uv_read_stop(s);
    kill_worker(p);
    return;
  }
  p->in.len += (size_t)n;
  const char *bad = each_frame(&p->in, on_parent_frame, p);
  if (bad)
    corrupt(p, bad);
}

static void set_ref(proc *p, int on) {
  if (on)
    uv_ref((uv_handle_t *)&p->pipe);
  else
    uv_unref((uv_handle_t *)&p->pipe);
  if (p->alive)
    mfl_child_keep_loop(&p->child, on);
}

/* Starts the worker's program with its end of a socket pair as descriptor
 * 3, the other end in the worker's pipe; returns 0 or a libuv error. */
static int start_program(procs *ps, proc *p, mfl_io *io) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return -errno;
  int rc = uv_pipe_open(&p->pipe, fds[0]);
  if (rc != 0) {
    close(fds[0]);
    close(fds[1]);
    return rc;
  }
  char *args[] = {ps->program, "--worker", NULL};
  mfl_spawn_opts o = {.argv = args,
                      .stdin_fd = -1,
                      .stdout_fd = 1,
                      .stderr_fd = 2,
                      .extra_fd = fds[1]};
  p->child.on_exit = on_worker_exit;
  rc = mfl_spawn(io, &p->child, &o);
  close(fds[1]);
  return rc;
}

/* Starts worker index; returns it, or NULL with the reason in *why. */
static proc *spawn_worker(procs *ps, int index, char *why, size_t size) {
  mflr_runner *r = ps->r;
  mfl_io *io = r->S->io; /* NULL once the state's I/O closed */
  proc *p = io ? calloc(1, sizeof *p) : NULL;
  if (!p) {
    snprintf(why, size, io ? "out of memory" : "the Lua state is closing");
    return NULL;
  }
  p->r = r;
  p->ps = ps;
  p->index = index;
  uv_pipe_init(r->loop, &p->pipe, 0);
  p->pipe.data = p;
  r->refs++; /* until it is freed */
  p->holds = 1;
  p->next = ps->all;
  if (ps->all)
    ps->all->prev = p;
  ps->all = p;
  int rc = start_program(ps, p, io);
  if (rc != 0) {
    snprintf(why, size, "cannot start a worker process (%s): %s", ps->program,
             uv_strerror(rc));
    close_pipe(p);
    return NULL;
  }
  p->alive = 1;
  p->holds++; /* until reaped or forgotten */
  set_ref(p, ps->keep);
  /* SETUP: the version, the config, the setup function's parts. */
  mfl_buffer body = {0};
  size_t vlen = strlen(MF_VERSION);
  rc = mfl_buffer_reserve(&body, 6 + vlen + r->config.len + r->setup.len);
  if (rc == 0) {
    body.data[0] = (char)vlen;
    body.data[1] = (char)(vlen >> 8);
    memcpy(body.data + 2, MF_VERSION, vlen);
    size_t at = 2 + vlen;
    for (int i = 0; i < 4; i++)
      body.data[at + i] = (char)(r->config.len >> (8 * i));
    memcpy(body.data + at + 4, r->config.data, r->config.len);
    at += 4 + r->config.len;
    if (r->setup.len)
      memcpy(body.data + at, r->setup.data, r->setup.len);
    body.len = at + r->setup.len;
    rc = write_frame((uv_stream_t *)&p->pipe, F_SETUP, 0, NULL, 0, &body);
  }
  mfl_buffer_free(&body);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&p->pipe, alloc_read, on_parent_read);
  if (rc != 0) {
    snprintf(why, size, "cannot talk to a worker process: %s",
             rc == -1 ? "out of memory" : uv_strerror(rc));
    p->reason = strdup(why);
    kill_worker(p);
    return NULL; /* its exit closes it */
  }
  ps->w[index] = p;
  return p;
}

static int procs_send(mflr_runner *r, mflr_job *job) {
  procs *ps = r->impl;
  int best = 0;
  for (int i = 1; i < r->workers; i++)
    if (r->load[i] < r->load[best])
      best = i;
  char why[512];
  if (!ps->started) { /* the first job starts them all */
    ps->started = 1;
    for (int i = 0; i < r->workers; i++)
      if (i != best && !ps->w[i])
        spawn_worker(ps, i, why, sizeof why);
  }
  proc *p = ps->w[best];
  if (!p && !(p = spawn_worker(ps, best, why, sizeof why))) {
    job->message = strdup(why);
    return -1;
  }
  job->worker = best;
  char timeout[8];
  uint64_t bits;
  memcpy(&bits, &job->timeout, sizeof bits);
  put_u64(timeout, bits);
  int rc = write_frame((uv_stream_t *)&p->pipe, F_JOB, job->id, timeout, 8,
                       &job->request);
  if (rc != 0) {
    char text[256];
    snprintf(text, sizeof text, "cannot write to worker process %d: %s",
             p->child.pid, uv_strerror(rc));
    job->message = strdup(text);
    return -1;
  }
  return 0;
}

static void procs_cancel(mflr_runner *r, mflr_job *job) {
  procs *ps = r->impl;
  proc *p = ps->w[job->worker];
  if (p && !p->reason)
    write_frame((uv_stream_t *)&p->pipe, F_CANCEL, job->id, NULL, 0, NULL);
}

static void procs_keepalive(mflr_runner *r, int on) {
  procs *ps = r->impl;
  ps->keep = on;
  for (int i = 0; i < r->workers; i++)
    if (ps->w[i])
      set_ref(ps->w[i], on);
}

/* Kills and reaps every worker now: none outlives the runner. */
static void procs_shutdown(mflr_runner *r) {
  procs *ps = r->impl;
  for (proc *p = ps->all, *next; p; p = next) {
    next = p->next;
    p->ps = NULL;
    uv_read_stop((uv_stream_t *)&p->pipe);
    close_pipe(p);
    if (p->alive) {
      kill_worker(p);
      p->alive = 0;
      while (waitpid(p->child.pid, NULL, 0) < 0 && errno == EINTR)
        ;
      mfl_child_forget(&p->child);
      release(p); /* the child's hold */
    }
  }
  free(ps->w);
  free(ps->program);
  free(ps);
  r->impl = NULL;
}

/* runner:_debug("pids") -> pids of the live workers;
 * runner:_debug("inject", i, bytes): bytes written into worker i's pipe. */
static int procs_debug(lua_State *L, mflr_runner *r) {
  procs *ps = r->impl;
  const char *what = luaL_checkstring(L, 2);
  if (strcmp(what, "pids") == 0) {
    lua_newtable(L);
    for (int i = 0; ps && i < r->workers; i++)
      if (ps->w[i] && ps->w[i]->alive) {
        lua_pushinteger(L, ps->w[i]->child.pid);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      }
    return 1;
  }
  if (strcmp(what, "inject") == 0) {
    int i = (int)luaL_checkinteger(L, 3) - 1;
    size_t len;
    const char *bytes = luaL_checklstring(L, 4, &len);
    proc *p = ps && i >= 0 && i < r->workers ? ps->w[i] : NULL;
    mfl_buffer raw = {0};
    if (!p || len == 0 || mfl_buffer_reserve(&raw, len) != 0)
      return 0;
    memcpy(raw.data, bytes, len);
    raw.len = len;
    frame_write *fw = calloc(1, sizeof *fw);
    if (fw) {
      fw->body = raw;
      uv_buf_t buf = uv_buf_init(fw->body.data, (unsigned)len);
      if (uv_write(&fw->req, (uv_stream_t *)&p->pipe, &buf, 1, on_written)) {
        mfl_buffer_free(&fw->body);
        free(fw);
      }
    } else {
      mfl_buffer_free(&raw);
    }
    lua_pushboolean(L, fw != NULL);
    return 1;
  }
  return 0;
}

static const mflr_transport procs_transport = {
    .kind = "processes",
    .send = procs_send,
    .cancel = procs_cancel,
    .keepalive = procs_keepalive,
    .shutdown = procs_shutdown,
    .debug = procs_debug,
};

/* The program workers run: $MOONFLOW_PROGRAM; the moonflow program
 * itself; the one beside the module (a build tree); else moonflow on
 * PATH. */
static char *worker_program(void) {
  const char *env = getenv("MOONFLOW_PROGRAM");
  if (env && *env)
    return strdup(env);
  char path[PATH_MAX];
  size_t size = sizeof path;
  if (mflw_is_program && uv_exepath(path, &size) == 0)
    return strdup(path);
  Dl_info info;
  if (dladdr((void *)worker_program, &info) && info.dli_fname) {
    const char *slash = strrchr(info.dli_fname, '/');
    if (slash &&
        snprintf(path, sizeof path, "%.*s/moonflow",
                 (int)(slash - info.dli_fname),
                 info.dli_fname) < (int)sizeof path &&
        access(path, X_OK) == 0)
      return strdup(path);
  }
  return strdup("moonflow");
}

int mflr_procs_init(mflr_runner *r) {
  procs *ps = calloc(1, sizeof *ps);
  if (!ps)
    return -1;
  ps->w = calloc((size_t)r->workers, sizeof *ps->w);
  ps->program = worker_program();
  if (!ps->w || !ps->program) {
    free(ps->w);
    free(ps->program);
    free(ps);
    return -1;
  }
  ps->r = r;
  r->t = &procs_transport;
  r->impl = ps;
  return 0;
}

/* }====== */

/* {====== The worker process ====== */

typedef struct child {
  mfl_buffer in; /* first: alloc_read finds it through data */
  mflw_host host;
  lua_State *L;
  uv_pipe_t pipe;
  int started, stopping, status;
} child;

static child *the_child;

static void child_answer(mflw_host *host, uint64_t id, int status,
                         mfl_buffer *parts) {
  child *c = (child *)((char *)host - offsetof(child, host));
  if (c->stopping)
    return;
  char st = (char)status;
  write_frame((uv_stream_t *)&c->pipe, F_ANSWER, id, &st, 1, parts);
}

static void child_stop(child *c, int status) {
  if (c->stopping)
    return;
  c->stopping = 1;
  c->status = status;
  uv_read_stop((uv_stream_t *)&c->pipe);
  uv_close((uv_handle_t *)&c->pipe, NULL);
  if (c->started)
    mflw_stop(c->L);
}

static const char *setup(child *c, const unsigned char *p, size_t len) {
  if (len < 2)
    return "a short setup";
  size_t vlen = (size_t)p[0] | (size_t)p[1] << 8;
  if (len - 2 < vlen + 4)
    return "a short setup";
  if (vlen != strlen(MF_VERSION) || memcmp(p + 2, MF_VERSION, vlen) != 0) {
    fprintf(stderr,
            "moonflow worker: the parent is moonflow %.*s, this program "
            "%s\n",
            (int)vlen, (const char *)p + 2, MF_VERSION);
    return "another version of moonflow";
  }
  size_t at = 2 + vlen;
  uint32_t clen = get_u32(p + at);
  at += 4;
  if (len - at < clen)
    return "a short setup";
  const char *setup_parts = (const char *)p + at + clen;
  size_t slen = len - at - clen;
  mflr_parts it;
  if (slen && mflr_parts_open(&it, setup_parts, slen) != 0)
    return "a setup that is not parts";
  if (mflw_start(c->L, &c->host, (const char *)p + at, clen, setup_parts,
                 slen) != 0) {
    fprintf(stderr, "moonflow worker: %s\n", mfl_describe(c->L, -1));
    lua_pop(c->L, 2);
    return "the worker could not start";
  }
  c->started = 1;
  return NULL;
}

static const char *on_child_frame(void *data, int type, uint64_t id,
                                  const unsigned char *payload, size_t len) {
  child *c = data;
  if (c->stopping)
    return NULL;
  if (!c->started && type != F_SETUP)
    return "a frame before the setup";
  switch (type) {
  case F_SETUP:
    return c->started ? "a second setup" : setup(c, payload, len);
  case F_JOB: {
    mflr_parts it;
    if (len < 8 ||
        mflr_parts_open(&it, (const char *)payload + 8, len - 8) != 0)
      return "a job that is not parts";
    uint64_t bits = get_u64(payload);
    double timeout;
    memcpy(&timeout, &bits, sizeof timeout);
    mflw_job(c->L, id, timeout, (const char *)payload + 8, len - 8);
    return NULL;
  }
  case F_CANCEL:
    mflw_cancel(c->L, id);
    return NULL;
  default:
    return "an unknown frame type";
  }
}

static void on_child_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  child *c = s->data;
  if (n < 0) { /* the parent is gone, or shut us down */
    child_stop(c, 0);
    return;
  }
  c->in.len += (size_t)n;
  const char *bad = each_frame(&c->in, on_child_frame, c);
  if (bad && !c->stopping) {
    /* Nothing more can be trusted: the parent loses this worker's jobs
     * when it sees the exit status. */
    fprintf(stderr, "moonflow worker %d: corrupt input from its parent (%s)\n",
            (int)getpid(), bad);
    fflush(stderr);
    _exit(3);
  }
}

/* core.worker_send_raw(bytes): bytes written to the parent as they are
 * (a test of the parent's defences). */
static int l_worker_send_raw(lua_State *L) {
  size_t len;
  const char *bytes = luaL_checklstring(L, 1, &len);
  if (!the_child || the_child->stopping)
    return 0;
  uv_buf_t buf = uv_buf_init((char *)bytes, (unsigned)len);
  uv_try_write((uv_stream_t *)&the_child->pipe, &buf, 1);
  return 0;
}

int mflw_process_main(lua_State *L, int fd) {
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* no orphan if the parent dies */
  if (getppid() != parent)
    return 1;
  signal(SIGINT, SIG_IGN); /* Ctrl-C is the parent's to handle */
  signal(SIGPIPE, SIG_IGN);
  mf_engine *engine = mf_lua_engine(L);
  if (!engine)
    return 1;
  static child c;
  c.L = L;
  c.host.answer = child_answer;
  the_child = &c;
  uv_pipe_init(mf_engine_loop(engine), &c.pipe, 0);
  c.pipe.data = &c;
  if (uv_pipe_open(&c.pipe, fd) != 0 ||
      uv_read_start((uv_stream_t *)&c.pipe, alloc_read, on_child_read) != 0) {
    fprintf(stderr, "moonflow worker: no parent on descriptor %d\n", fd);
    return 1;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "moonflow.core");
  lua_pushcfunction(L, l_worker_send_raw);
  lua_setfield(L, -2, "worker_send_raw");
  lua_pop(L, 2);
  while (!c.stopping)
    mf_engine_run(engine);
  mf_engine_run(engine); /* the cancelled runs end */
  mfl_buffer_free(&c.in);
  the_child = NULL;
  return c.status;
}

/* }====== */
