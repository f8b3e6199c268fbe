/*
 * runners_threads.c -- the threads runner: N worker threads, each with its
 * own Lua state, engine and libuv loop (worker.c makes them workers), so
 * that async tasks interleave inside a worker as on the main loop.
 *
 * Messages go both ways through mutex-protected queues and a wake-up: to
 * a worker (job, cancel, stop) on its own, answers to the main loop on the
 * runner's; each wake-up drains the whole queue.  A wake-up is an eventfd
 * polled by the loop, written only when no wake-up is pending: libuv's
 * uv_async_send (1.44) makes the receiving loop spin while a sender is
 * between two of its steps, which on a busy machine costs more than the
 * jobs.  The
 * bytes are malloc'ed buffers handed from thread to thread: no Lua value
 * is ever shared.  Worker threads block every signal but the preemption
 * one, so that Ctrl-C and the like reach the main thread.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lua_heap.h"
#include "runners.h"

#define MFL_PREEMPT_SIGNAL (SIGRTMIN + 6) /* preempt.c's */

/* {====== Wake-ups ====== */

typedef struct wake {
  uv_poll_t poll; /* first: a handle's data finds the wake */
  int fd;
  atomic_int pending; /* written, not yet read */
  void (*cb)(struct wake *w);
  void (*done)(struct wake *w); /* after it closed */
  void *data;
} wake;

static void on_wake_poll(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  wake *w = (wake *)handle;
  uint64_t count;
  while (read(w->fd, &count, sizeof count) < 0 && errno == EINTR)
    ;
  /* Cleared before the queue is taken: a message queued after the take
   * writes again. */
  atomic_store(&w->pending, 0);
  w->cb(w);
}

static int wake_init(uv_loop_t *loop, wake *w, void (*cb)(wake *), void *data) {
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0)
    return UV_EMFILE;
  atomic_init(&w->pending, 0);
  w->cb = cb;
  w->data = data;
  int rc = uv_poll_init(loop, &w->poll, w->fd);
  if (rc == 0)
    rc = uv_poll_start(&w->poll, UV_READABLE, on_wake_poll);
  if (rc != 0) {
    close(w->fd);
    w->fd = -1;
  }
  return rc;
}

/* From any thread, after the message is queued. */
static void wake_send(wake *w) {
  if (atomic_exchange(&w->pending, 1) == 0) {
    uint64_t one = 1;
    while (write(w->fd, &one, sizeof one) < 0 && errno == EINTR)
      ;
  }
}

static void on_wake_closed(uv_handle_t *handle) {
  wake *w = (wake *)handle;
  close(w->fd);
  w->fd = -1;
  if (w->done)
    w->done(w);
}

/* Closes it; then done(w), if not NULL.  No send may follow. */
static void wake_close(wake *w, void (*done)(wake *)) {
  w->done = done;
  uv_close((uv_handle_t *)&w->poll, on_wake_closed);
}

/* }====== */

enum { MSG_JOB, MSG_CANCEL, MSG_STOP, MSG_ANSWER };

typedef struct msg {
  struct msg *next;
  int type, status, worker;
  uint64_t id;
  double timeout;
  mfl_buffer bytes;
} msg;

typedef struct queue {
  msg *head, *tail;
} queue;

static void queue_push(queue *q, msg *m) {
  m->next = NULL;
  if (q->tail)
    q->tail->next = m;
  else
    q->head = m;
  q->tail = m;
}

static void free_msgs(msg *m) {
  while (m) {
    msg *next = m->next;
    mfl_buffer_free(&m->bytes);
    free(m);
    m = next;
  }
}

struct pool;
static struct msg *msg_get(struct pool *p, int type, const char *bytes,
                           size_t len);
static void msg_put(struct pool *p, struct msg *m);

typedef struct worker {
  mflw_host host; /* first: the host is the worker */
  struct pool *pool;
  int index;
  int started, joined;
  uv_thread_t thread;
  uv_mutex_t lock; /* inbox, ready */
  queue inbox;
  int ready;    /* its wake-up exists: sends wake it */
  wake wakeup;  /* on the worker's loop */
  lua_State *L; /* the worker thread's */
  int stopping;
  /* Its stop, made with the thread: shutting down allocates nothing, so
   * it cannot fail to stop a worker it then joins. */
  struct msg *stop;
  /* Wake-ups wait for the end of a loop's turn, so that a turn that sends
   * many messages wakes the other side once. */
  int wake_due;       /* main thread: this worker's wake-up */
  int answers_due;    /* worker thread: the main loop's */
  int has_flush;      /* worker thread: flush below exists */
  uv_prepare_t flush; /* on the worker's loop */
} worker;

typedef struct pool {
  mflr_runner *r;
  worker *w;
  wake answers;    /* on the main loop */
  uv_mutex_t lock; /* outbox */
  queue outbox;
  uv_mutex_t free_lock; /* spare messages */
  msg *spare;
  int nspare;
  uv_prepare_t flush; /* on the main loop: the workers' wake-ups */
  int handles;        /* open: answers, flush */
} pool;

/* {====== Messages ======
 *
 * Every message, its buffer with it, comes from the pool and goes back to
 * it: a buffer that one thread mallocs and another frees costs glibc
 * (whose arenas are per thread) more than a small job.  Bytes are copied
 * into a message, never handed over. */

#define SPARE_MAX 1024
#define SPARE_BYTES (64 * 1024) /* a bigger buffer is not kept */

static msg *msg_get(pool *p, int type, const char *bytes, size_t len) {
  uv_mutex_lock(&p->free_lock);
  msg *m = p->spare;
  if (m) {
    p->spare = m->next;
    p->nspare--;
  }
  uv_mutex_unlock(&p->free_lock);
  if (!m && !(m = calloc(1, sizeof *m)))
    return NULL;
  mfl_buffer b = m->bytes;
  memset(m, 0, sizeof *m);
  m->type = type;
  m->bytes = b;
  m->bytes.len = 0;
  if (len) {
    if (mfl_buffer_reserve(&m->bytes, len) != 0) {
      msg_put(p, m);
      return NULL;
    }
    memcpy(m->bytes.data, bytes, len);
    m->bytes.len = len;
  }
  return m;
}

static void msg_put(pool *p, msg *m) {
  if (m->bytes.cap > SPARE_BYTES)
    mfl_buffer_free(&m->bytes);
  uv_mutex_lock(&p->free_lock);
  int keep = p->nspare < SPARE_MAX;
  if (keep) {
    m->next = p->spare;
    p->spare = m;
    p->nspare++;
  }
  uv_mutex_unlock(&p->free_lock);
  if (!keep) {
    mfl_buffer_free(&m->bytes);
    free(m);
  }
}

static void put_msgs(pool *p, msg *m) {
  while (m) {
    msg *next = m->next;
    msg_put(p, m);
    m = next;
  }
}

/* }====== */

/* {====== The worker thread ====== */

static void flush_answers(uv_prepare_t *handle);

static void worker_answer(mflw_host *host, uint64_t id, int status,
                          mfl_buffer *parts) {
  worker *w = (worker *)host;
  pool *p = w->pool;
  msg *m = msg_get(p, MSG_ANSWER, parts->data, parts->len);
  if (!m)
    return; /* out of memory: the run waits for its timeout or cancel */
  m->worker = w->index;
  m->id = id;
  m->status = status;
  uv_mutex_lock(&p->lock);
  queue_push(&p->outbox, m);
  uv_mutex_unlock(&p->lock);
  if (!w->has_flush) {
    wake_send(&p->answers);
    return;
  }
  w->answers_due = 1; /* at the end of this turn of the worker's loop */
  if (!uv_is_active((uv_handle_t *)&w->flush))
    uv_prepare_start(&w->flush, flush_answers);
}

static void flush_answers(uv_prepare_t *handle) {
  worker *w = handle->data;
  uv_prepare_stop(handle);
  if (w->answers_due) {
    w->answers_due = 0;
    wake_send(&w->pool->answers);
  }
}

/* A job the worker cannot run (its state could not be made): answered
 * failed with the reason. */
static void answer_error(worker *w, uint64_t id, const char *why) {
  mfl_buffer parts = {0};
  lua_State *L = luaL_newstate();
  if (L) {
    lua_pushfstring(L, "%s", why);
    lua_createtable(L, 0, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "err");
    mfl_buffer msg = {0};
    if (mfl_encode(L, -1, &msg, 0, "error") == MFL_CODEC_OK &&
        mflr_parts_begin(&parts) == 0)
      mflr_parts_add(&parts, msg.data, msg.len);
    mfl_buffer_free(&msg);
    lua_close(L);
  }
  worker_answer(&w->host, id, MFLR_FAILED, &parts);
  mfl_buffer_free(&parts);
}

static void on_wake(wake *wk) {
  worker *w = wk->data;
  uv_mutex_lock(&w->lock);
  msg *m = w->inbox.head;
  w->inbox.head = w->inbox.tail = NULL;
  uv_mutex_unlock(&w->lock);
  for (msg *next; m; m = next) {
    next = m->next;
    switch (m->type) {
    case MSG_JOB:
      mflw_job(w->L, m->id, m->timeout, m->bytes.data, m->bytes.len);
      break;
    case MSG_CANCEL:
      mflw_cancel(w->L, m->id);
      break;
    case MSG_STOP:
      if (!w->stopping) {
        w->stopping = 1;
        mflw_stop(w->L);
        wake_close(&w->wakeup, NULL);
        flush_answers(&w->flush);
        uv_close((uv_handle_t *)&w->flush, NULL);
        w->has_flush = 0;
      }
      break;
    }
    msg_put(w->pool, m);
  }
}

/* Without a Lua state every job fails; it stops at MSG_STOP. */
static void run_broken(worker *w, const char *why) {
  for (;;) {
    uv_mutex_lock(&w->lock);
    msg *m = w->inbox.head;
    w->inbox.head = w->inbox.tail = NULL;
    w->ready = 2; /* a send only queues: this loop polls */
    uv_mutex_unlock(&w->lock);
    int stop = 0;
    for (msg *x = m; x; x = x->next) {
      if (x->type == MSG_JOB || x->type == MSG_CANCEL)
        answer_error(w, x->id, why);
      stop |= x->type == MSG_STOP;
    }
    put_msgs(w->pool, m);
    if (stop)
      return;
    uv_sleep(10);
  }
}

static void worker_main(void *arg) {
  worker *w = arg;
  mflr_runner *r = w->pool->r;
  const char *err = NULL;
  lua_State *L = mflw_new_state(&err);
  if (L && mflw_start(L, &w->host, r->config.data, r->config.len, r->setup.data,
                      r->setup.len) != 0) {
    err = "the worker could not start";
    mfl_heap_close(L);
    L = NULL;
  }
  if (!L) {
    run_broken(w, err ? err : "out of memory");
    return;
  }
  w->L = L;
  mf_engine *engine = mf_lua_engine(L);
  if (wake_init(mf_engine_loop(engine), &w->wakeup, on_wake, w) != 0) {
    mfl_heap_close(L);
    w->L = NULL;
    run_broken(w, "cannot make the worker's wake-up");
    return;
  }
  uv_prepare_init(mf_engine_loop(engine), &w->flush);
  w->flush.data = w;
  uv_unref((uv_handle_t *)&w->flush);
  w->has_flush = 1;
  uv_mutex_lock(&w->lock);
  w->ready = 1;
  uv_mutex_unlock(&w->lock);
  on_wake(&w->wakeup); /* what came before it was ready */
  while (!w->stopping)
    mf_engine_run(engine);
  mf_engine_run(engine); /* the cancelled runs end */
  mfl_heap_close(L);
  w->L = NULL;
}

/* }====== */

/* {====== The main side ====== */

/* The wake-ups due, at the end of the main loop's turn. */
static void flush_jobs(uv_prepare_t *handle) {
  pool *p = handle->data;
  uv_prepare_stop(handle);
  for (int i = 0; i < p->r->workers; i++)
    if (p->w[i].wake_due) {
      p->w[i].wake_due = 0;
      wake_send(&p->w[i].wakeup);
    }
}

static void send_msg(worker *w, msg *m) {
  uv_mutex_lock(&w->lock);
  queue_push(&w->inbox, m);
  int ready = w->ready == 1;
  uv_mutex_unlock(&w->lock);
  if (!ready)
    return; /* it takes the inbox when it is */
  w->wake_due = 1;
  uv_prepare_t *flush = &w->pool->flush;
  if (!uv_is_active((uv_handle_t *)flush))
    uv_prepare_start(flush, flush_jobs);
}

static int start_worker(pool *p, worker *w) {
  if (!w->stop && !(w->stop = msg_get(p, MSG_STOP, NULL, 0)))
    return UV_ENOMEM;
  /* Only the preemption signal reaches a worker thread. */
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, MFL_PREEMPT_SIGNAL);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  uv_thread_options_t opts = {.flags = UV_THREAD_HAS_STACK_SIZE,
                              .stack_size = 8u << 20};
  int rc = uv_thread_create_ex(&w->thread, &opts, worker_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0)
    return rc; /* (the stop stays for the next try, or the pool's end) */
  w->started = 1;
  return 0;
}

static int threads_send(mflr_runner *r, mflr_job *job) {
  pool *p = r->impl;
  int best = 0;
  for (int i = 1; i < r->workers; i++)
    if (r->load[i] < r->load[best])
      best = i;
  worker *w = &p->w[best];
  if (!w->started) { /* the first job starts them all */
    for (int i = 0; i < r->workers; i++) {
      int rc = p->w[i].started ? 0 : start_worker(p, &p->w[i]);
      if (rc != 0 && i == best) {
        char text[256];
        snprintf(text, sizeof text, "cannot start a worker thread: %s",
                 uv_strerror(rc));
        job->message = strdup(text);
        return -1;
      }
    }
  }
  msg *m = msg_get(p, MSG_JOB, job->request.data, job->request.len);
  if (!m) {
    job->message = strdup("out of memory");
    return -1;
  }
  m->id = job->id;
  m->timeout = job->timeout;
  job->worker = best;
  send_msg(w, m);
  return 0;
}

static void threads_cancel(mflr_runner *r, mflr_job *job) {
  pool *p = r->impl;
  msg *m = msg_get(p, MSG_CANCEL, NULL, 0);
  if (!m)
    return;
  m->id = job->id;
  send_msg(&p->w[job->worker], m);
}

static void threads_keepalive(mflr_runner *r, int on) {
  pool *p = r->impl;
  if (on)
    uv_ref((uv_handle_t *)&p->answers.poll);
  else
    uv_unref((uv_handle_t *)&p->answers.poll);
}

/* The whole outbox per wake-up. */
static void on_answers(wake *wk) {
  pool *p = wk->data;
  uv_mutex_lock(&p->lock);
  msg *m = p->outbox.head;
  p->outbox.head = p->outbox.tail = NULL;
  uv_mutex_unlock(&p->lock);
  for (msg *x = m; x; x = x->next) {
    /* The runner takes a copy of the main thread's own: the message and
     * its buffer go back to the pool. */
    mfl_buffer copy = {0};
    if (p->r->closed ||
        (x->bytes.len && mfl_buffer_reserve(&copy, x->bytes.len) != 0))
      continue;
    if (x->bytes.len)
      memcpy(copy.data, x->bytes.data, x->bytes.len);
    copy.len = x->bytes.len;
    mflr_answer(p->r, x->worker, x->id, x->status, &copy);
    mfl_buffer_free(&copy);
  }
  put_msgs(p, m);
}

static void pool_handle_closed(pool *p);
static void on_answers_closed(wake *wk) { pool_handle_closed(wk->data); }
static void on_flush_closed(uv_handle_t *handle) {
  pool_handle_closed(handle->data);
}

static void pool_handle_closed(pool *p) {
  if (--p->handles > 0)
    return;
  mflr_runner *r = p->r;
  for (int i = 0; i < r->workers; i++) {
    uv_mutex_destroy(&p->w[i].lock);
    free_msgs(p->w[i].stop); /* (a worker that never started) */
  }
  uv_mutex_destroy(&p->lock);
  free_msgs(p->spare);
  uv_mutex_destroy(&p->free_lock);
  free(p->w);
  free(p);
  r->impl = NULL;
  mflr_release(r);
}

/* The last message to a worker: queued, and its wake-up written, under the
 * worker's lock.  The worker takes its inbox under that lock, so it cannot
 * see the stop, and close its wake-up, before the write is done (a write
 * left to flush_jobs raced with that close: a write to a closed descriptor,
 * or to another file that reused its number). */
static void send_stop(worker *w, msg *m) {
  uv_mutex_lock(&w->lock);
  queue_push(&w->inbox, m);
  if (w->ready == 1)
    wake_send(&w->wakeup);
  w->wake_due = 0; /* (this wakes it for what came before too) */
  uv_mutex_unlock(&w->lock);
}

/* Stops and joins every worker: their runs are cancelled, their states
 * closed; answers still queued are dropped. */
static void threads_shutdown(mflr_runner *r) {
  pool *p = r->impl;
  for (int i = 0; i < r->workers; i++) {
    worker *w = &p->w[i];
    if (!w->started || !w->stop) /* (never started, or stopped before) */
      continue;
    send_stop(w, w->stop);
    w->stop = NULL; /* (the worker gives it back to the pool) */
  }
  for (int i = 0; i < r->workers; i++) {
    worker *w = &p->w[i];
    if (w->started && !w->joined) {
      uv_thread_join(&w->thread);
      w->joined = 1;
      free_msgs(w->inbox.head);
      w->inbox.head = w->inbox.tail = NULL;
    }
  }
  free_msgs(p->outbox.head);
  p->outbox.head = p->outbox.tail = NULL;
  uv_close((uv_handle_t *)&p->flush, on_flush_closed);
  wake_close(&p->answers, on_answers_closed);
}

/* runner:_debug("threads") -> how many worker threads started */
static int threads_debug(lua_State *L, mflr_runner *r) {
  pool *p = r->impl;
  const char *what = luaL_checkstring(L, 2);
  if (strcmp(what, "threads") == 0) {
    int n = 0;
    for (int i = 0; p && i < r->workers; i++)
      n += p->w[i].started && !p->w[i].joined;
    lua_pushinteger(L, n);
    return 1;
  }
  return 0;
}

static const mflr_transport threads_transport = {
    .kind = "threads",
    .send = threads_send,
    .cancel = threads_cancel,
    .keepalive = threads_keepalive,
    .shutdown = threads_shutdown,
    .debug = threads_debug,
};

int mflr_threads_init(mflr_runner *r) {
  pool *p = calloc(1, sizeof *p);
  if (!p)
    return -1;
  p->w = calloc((size_t)r->workers, sizeof *p->w);
  if (!p->w) {
    free(p);
    return -1;
  }
  p->r = r;
  for (int i = 0; i < r->workers; i++) {
    p->w[i].pool = p;
    p->w[i].index = i;
    p->w[i].host.answer = worker_answer;
    uv_mutex_init(&p->w[i].lock);
  }
  uv_mutex_init(&p->lock);
  uv_mutex_init(&p->free_lock);
  if (wake_init(r->loop, &p->answers, on_answers, p) != 0) {
    for (int i = 0; i < r->workers; i++)
      uv_mutex_destroy(&p->w[i].lock);
    uv_mutex_destroy(&p->lock);
    uv_mutex_destroy(&p->free_lock);
    free(p->w);
    free(p);
    return -1;
  }
  uv_unref((uv_handle_t *)&p->answers.poll);
  uv_prepare_init(r->loop, &p->flush);
  p->flush.data = p;
  uv_unref((uv_handle_t *)&p->flush);
  p->handles = 2;
  r->t = &threads_transport;
  r->impl = p;
  r->refs++; /* the handles, until both closed */
  return 0;
}

/* }====== */
