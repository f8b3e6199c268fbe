/*
 * store_writer.c -- the run store's writer: a bounded ring of events filled
 * by the loop thread and drained by one writer thread, which commits them
 * in batches, one transaction each.
 *
 * The writer folds a batch's events per run: a run submitted, started and
 * finished within one batch is one INSERT; a run still live at the end of
 * a batch is inserted as it is and updated in the batch that ends it.  So
 * the busier the loop, the bigger the batches and the fewer the
 * statements per run.  A cached result travels with its run's final state
 * and is written in the same transaction.
 *
 * A run still waiting to start (inputs, slots) is not written until it
 * starts or ends, or a flush or the end comes: a map submits all its runs
 * before the first starts, and most then start and end within one batch.
 * The history blob is left NULL when it says nothing the times do not
 * (Pending at created, Running at started, the final state at ended).
 *
 * Policy when the ring is full: the loop thread waits for room (counted in
 * waits); nothing is dropped.  The writer frees a batch's slots once it
 * has folded them, before it commits: the loop fills the ring again while
 * SQLite writes.  After an SQLite error the writer reports it
 * once on stderr, rolls back, and from then on drains the ring discarding
 * events, so the loop never waits on a store that stopped.
 */
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "store.h"

/* Cells the ring holds (an event takes one or more): a power of 2.
 * MOONFLOW_STORE_RING sets another
 * (64 to 2^20), which the tests use to fill it. */
#define RING_SIZE 32768
#define BATCH_MAX 65536   /* events folded into one transaction at most */
#define BATCH_GATHER 4096 /* fewer events: a nap (GATHER_NAPS at most) */
#define GATHER_NAPS 4

typedef enum ev_kind {
  EV_SUBMIT = 1,
  EV_STATE,
  EV_LOG,
  EV_RENAME,
  EV_FLUSH,
  EV_STOP
} ev_kind;

/* One event: a cell of the ring (a cache line), its text going on into
 * the cells after it (up to MAX_CELLS in all; longer text is malloc'd, its
 * pointer in text).  A run's three events (submit, Running, final) take
 * about four cache lines, which the loop writes and the writer reads: the
 * other core's misses on them were much of the store's cost when events
 * had a fixed size of 168 bytes.  Strings in text are NUL-separated. */
#define CELL 64
#define MAX_CELLS 32
typedef struct event {
  unsigned char kind, type, name, is_flow;
  int attempt; /* EV_LOG: the level */
  uint64_t id;
  double time;
  union {
    struct {
      uint64_t parent;
      const char *shared; /* task\0tags\0 (mfl_store_intern); NULL: in text */
    } submit;
    mfl_store_result *result; /* EV_STATE: malloc'd; NULL: none */
  } u;
  uint32_t text_len;   /* 0: no text */
  unsigned char cells; /* this one and those its text takes */
  char text[CELL - 45];
} event;
#define INLINE_TEXT(cells) ((size_t)(cells)*CELL - offsetof(event, text))

/* The ring's memory.  The loop thread writes it in order, and a first
 * touch of a 4 KiB page costs ~11 us on this project's virtual machines:
 * on malloc's pages a run's events (four cells) paid 0.7 us of faults
 * until the ring had gone round once (32,768 cells: 8,000 runs), the
 * difference between the store on and off for a map of 1,000 runs.  So
 * its cells are mapped on a huge page boundary and marked MADV_HUGEPAGE:
 * its first 2 MiB are one fault; the MAX_CELLS spare cells past the end
 * go on a page of their own.  Under AddressSanitizer it is malloc's. */
#define HUGE_PAGE ((size_t)2 << 20)
#define RING_BYTES(st) (((st)->ring_size + MAX_CELLS) * CELL)

#if defined(__SANITIZE_ADDRESS__) || !defined(MADV_HUGEPAGE)
static void *ring_alloc(size_t bytes) { return aligned_alloc(CELL, bytes); }
static void ring_free(void *ring, size_t bytes) { (void)bytes, free(ring); }
#else
static size_t page_round(size_t bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (bytes + page - 1) / page * page;
}

static void *ring_alloc(size_t bytes) {
  size_t mapped = page_round(bytes) + HUGE_PAGE;
  char *raw = mmap(NULL, mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return NULL;
  char *ring = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
  if (ring > raw)
    munmap(raw, (size_t)(ring - raw));
  size_t after = (size_t)(raw + mapped - (ring + page_round(bytes)));
  if (after)
    munmap(ring + page_round(bytes), after);
  if (bytes >= HUGE_PAGE) /* (a hint: without it, 4 KiB pages) */
    madvise(ring, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
  return ring;
}

static void ring_free(void *ring, size_t bytes) {
  if (ring)
    munmap(ring, page_round(bytes));
}
#endif

_Static_assert(sizeof(event) == CELL, "an event is a cell");

/* The event's text, NULL when none. */
static const char *event_text(const event *e) {
  if (!e->text_len)
    return NULL;
  if (e->text_len <= INLINE_TEXT(MAX_CELLS))
    return e->text;
  const char *p;
  memcpy(&p, e->text, sizeof p);
  return p;
}

/* {====== The writer's fold of a run ====== */

#define HISTORY_ENTRY 9

/* What few runs have, kept apart so that a run waiting to start (a map
 * submits all its runs before the first starts) is small. */
typedef struct wrun_more {
  char *name; /* renamed (task_run_name): replaces the one in fields */
  char *message, *traceback;
  unsigned char *history; /* every state, once the times do not tell them */
  size_t history_len, history_cap;
  mfl_store_result result;
} wrun_more;

typedef struct wrun {
  uint64_t id;
  sqlite3_int64 rowid, parent_row, flow_row; /* 0: none (yet) */
  struct wrun *parent; /* until inserted; held (see holds) */
  struct wrun *next_touched;
  double created, started, ended;
  const char *shared; /* task\0tags\0: interned, or in fields */
  wrun_more *more;    /* NULL: none */
  int attempts;
  int holds; /* children not inserted yet that point here */
  uint16_t name_len, params_len, task_len, tags_len; /* (strlen) */
  /* plain: the states so far are Pending, [Running], [final], which
   * created, started and ended tell (the history column is NULL);
   * states: how many, while plain.  gone: out of the map, freed when no
   * child holds it. */
  unsigned char is_flow, type, name, final, touched, renamed, plain, states,
      gone, pooled;
  char fields[]; /* name\0params\0, then task\0tags\0 when not interned */
} wrun;

typedef struct log_line {
  wrun *run; /* NULL: no recorded run */
  int level;
  double time;
  char *message;
} log_line;

/* Open addressing (linear probing) from the engine's id to the fold. */
typedef struct run_map {
  wrun **slots;
  size_t cap, count;
} run_map;

/* The engine numbers runs in order: eight consecutive ids share a cache
 * line of the table and the groups of eight are scattered, so the runs of
 * a burst are found with one miss per eight (hashing every id apart made
 * each lookup a miss: most of the fold's time), and clusters stay short
 * (the id alone as the hash made a burst one cluster, and linear probing's
 * removals walk a cluster to its end). */
static size_t hash_id(uint64_t id, size_t cap) {
  uint64_t group = (id >> 3) * 0x9e3779b97f4a7c15ull;
  return (size_t)((group >> 17) << 3 | (id & 7)) & (cap - 1);
}

static wrun *map_get(run_map *m, uint64_t id) {
  if (!m->cap)
    return NULL;
  for (size_t i = hash_id(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (!m->slots[i])
      return NULL;
    if (m->slots[i]->id == id)
      return m->slots[i];
  }
}

static int map_put(run_map *m, wrun *r) {
  if ((m->count + 1) * 2 > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    wrun **slots = calloc(cap, sizeof *slots);
    if (!slots)
      return -1;
    for (size_t i = 0; i < m->cap; i++)
      if (m->slots[i]) {
        size_t j = hash_id(m->slots[i]->id, cap);
        while (slots[j])
          j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
      }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
  }
  size_t i = hash_id(r->id, m->cap);
  while (m->slots[i])
    i = (i + 1) & (m->cap - 1);
  m->slots[i] = r;
  m->count++;
  return 0;
}

/* Removes with backward shifting (no tombstones). */
static void map_remove(run_map *m, uint64_t id) {
  size_t i = hash_id(id, m->cap);
  while (m->slots[i]->id != id)
    i = (i + 1) & (m->cap - 1);
  m->slots[i] = NULL;
  m->count--;
  for (size_t j = (i + 1) & (m->cap - 1); m->slots[j];
       j = (j + 1) & (m->cap - 1)) {
    size_t home = hash_id(m->slots[j]->id, m->cap);
    /* Move it into the hole if its home is not between the hole and j. */
    if ((j > i && (home <= i || home > j)) ||
        (j < i && (home <= i && home > j))) {
      m->slots[i] = m->slots[j];
      m->slots[j] = NULL;
      i = j;
    }
  }
}

static void result_free(mfl_store_result *r) {
  free(r->key);
  free(r->value);
  memset(r, 0, sizeof *r);
}

/* A result given with an event and not kept. */
static void result_drop(mfl_store_result *r) {
  if (r) {
    result_free(r);
    free(r);
  }
}

static void more_free(wrun_more *m) {
  if (!m)
    return;
  free(m->name);
  free(m->message);
  free(m->traceback);
  free(m->history);
  result_free(&m->result);
  free(m);
}

/* Task and tags, the same for every run of a task: kept once, until the
 * store closes (at most INTERN_MAX of them; past that, each run's submit
 * carries its own copy).  Filled by the loop thread (mfl_store_intern),
 * read by the writer through the submits' pointers. */
#define INTERN_MAX 1024
typedef struct interned {
  uint32_t hash, len;
  char *text;
} interned;
typedef struct intern_table {
  interned slots[2 * INTERN_MAX]; /* open addressing, half full at most */
  size_t count;
  const interned *last; /* a map repeats the same task */
} intern_table;

static uint32_t hash_text(const char *s, size_t len) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

/* The kept copy of len bytes at s, or NULL when the table is full. */
static const char *intern(intern_table *t, const char *s, size_t len) {
  if (t->last && t->last->len == len && memcmp(t->last->text, s, len) == 0)
    return t->last->text;
  uint32_t h = hash_text(s, len);
  size_t mask = 2 * INTERN_MAX - 1, i = h & mask;
  for (; t->slots[i].text; i = (i + 1) & mask)
    if (t->slots[i].hash == h && t->slots[i].len == len &&
        memcmp(t->slots[i].text, s, len) == 0) {
      t->last = &t->slots[i];
      return t->slots[i].text;
    }
  if (t->count == INTERN_MAX)
    return NULL;
  char *copy = malloc(len);
  if (!copy)
    return NULL;
  memcpy(copy, s, len);
  t->slots[i] = (interned){.hash = h, .len = (uint32_t)len, .text = copy};
  t->count++;
  t->last = &t->slots[i];
  return copy;
}

static void intern_free(intern_table *t) {
  for (size_t i = 0; i < 2 * INTERN_MAX; i++)
    free(t->slots[i].text);
}

typedef struct bound bound; /* see Binding */

#define POOL_BLOCK 192 /* bytes: a fold and 70 bytes of fields */
#define POOL_CHUNK 512 /* blocks */
typedef struct fold_pool {
  void *free;   /* blocks put back, linked through their first bytes */
  char *chunks; /* the newest; each starts with the one before */
  size_t fresh; /* blocks of the newest chunk given out */
  size_t used;
} fold_pool;

/* Runs are inserted BLOCK_ROWS[i] rows per statement (one statement, its
 * cursors opened once), the rest one by one: the writer's batches are as
 * big as what the loop made while it committed the last one. */
#define BLOCK_SIZES 3
static const int BLOCK_ROWS[BLOCK_SIZES] = {128, 32, 8};
#define INSERT_ROWS 128 /* the biggest */

/* }====== */

struct mfl_store {
  struct mfl_store *next_open; /* the stores open in this process */
  uv_thread_t owner;           /* the loop thread: the only producer */
  char *path;
  sqlite3 *db, *reader;
  uv_thread_t thread;
  /* The ring: head written by the loop thread, tail by the writer. */
  event *ring;
  size_t ring_size;
  _Atomic size_t head, tail;
  atomic_int writer_sleeping, producer_waiting;
  atomic_int urgent; /* a flush or the end waits: no nap */
  uv_mutex_t lock;
  uv_cond_t wake_writer, room, flushed;
  uint64_t flush_asked;        /* loop thread */
  _Atomic uint64_t flush_done; /* writer */
  _Atomic uint64_t events, commits, waits;
  _Atomic uint64_t writer_ns; /* the writer thread's CPU time */
  char *error;                /* set once by the writer */
  atomic_int failed;
  sqlite3_int64 process_row; /* written with the first batch */
  double opened_at;
  double keep;             /* seconds runs are kept; 0: forever */
  _Atomic uint64_t pruned; /* old runs deleted */
  atomic_int pruning;      /* prune not done yet */
  int reader_failed;
  uint64_t serial; /* (mfl_store_serial) */
  /* Writer-only. */
  run_map runs;
  mfl_checkpointer *checkpointer; /* NULL: SQLite's automatic checkpoint */
  wrun *touched_first, *touched_last;
  log_line *logs;
  size_t log_count, log_cap;
  sqlite3_stmt *insert_run, *update_run, *insert_log, *insert_result,
      *delete_results, *max_row, *rename_run;
  sqlite3_int64 last_row; /* the highest run id, in a batch */
  intern_table *interned;
  bound *insert_run_bound;
  struct block_insert {
    sqlite3_stmt *stmt;
    bound *bound;
  } blocks[BLOCK_SIZES][2]; /* [size][plain] */
  fold_pool pool;
  mfl_prune *prune; /* while old runs are left to delete */
};

/* {====== Folds' memory ======
 * Most folds fit a block of POOL_BLOCK bytes: taken from chunks of
 * POOL_CHUNK blocks and put back on a free list (malloc and free were a
 * twentieth of the writer's instructions: a map's burst of submits
 * outgrows malloc's caches).  When no block is in use the chunks but the
 * first are freed: a burst's memory is kept only while its runs live. */

static void *pool_get(fold_pool *p) {
  void *b = p->free;
  if (b)
    memcpy(&p->free, b, sizeof(void *));
  else {
    if (p->fresh == POOL_CHUNK || !p->chunks) {
      /* A chunk: a pointer to the one before, then its blocks. */
      char *chunk = malloc(POOL_BLOCK * (POOL_CHUNK + 1));
      if (!chunk)
        return NULL;
      memcpy(chunk, &p->chunks, sizeof p->chunks);
      p->chunks = chunk;
      p->fresh = 0;
    }
    b = p->chunks + POOL_BLOCK * (1 + p->fresh++);
  }
  p->used++;
  return b;
}

static void pool_put(fold_pool *p, void *b) {
  memcpy(b, &p->free, sizeof(void *));
  p->free = b;
  if (--p->used == 0 && p->chunks) {
    char *next;
    memcpy(&next, p->chunks, sizeof next);
    while (next) {
      char *after;
      memcpy(&after, next, sizeof after);
      free(next);
      next = after;
    }
    char *none = NULL;
    memcpy(p->chunks, &none, sizeof none);
    p->free = NULL;
    p->fresh = 0;
  }
}

static void pool_free(fold_pool *p) {
  for (char *c = p->chunks, *next; c; c = next) {
    memcpy(&next, c, sizeof next);
    free(c);
  }
  memset(p, 0, sizeof *p);
}

/* A fold with room for fields_len bytes of fields; zeroed but for them. */
static wrun *wrun_new(mfl_store *st, size_t fields_len) {
  int pooled = sizeof(wrun) + fields_len <= POOL_BLOCK;
  wrun *r = pooled ? pool_get(&st->pool) : malloc(sizeof *r + fields_len);
  if (r) {
    memset(r, 0, sizeof *r);
    r->plain = 1;
    r->pooled = (unsigned char)pooled;
  }
  return r;
}

static void wrun_free(mfl_store *st, wrun *r) {
  more_free(r->more);
  if (r->pooled)
    pool_put(&st->pool, r);
  else
    free(r);
}

/* A child inserted, or gone: its parent may go too. */
static void wrun_unhold(mfl_store *st, wrun *p) {
  if (--p->holds == 0 && p->gone)
    wrun_free(st, p);
}

/* Out of the map (final and written, or the store closing). */
static void wrun_release(mfl_store *st, wrun *r) {
  if (r->parent) {
    wrun_unhold(st, r->parent);
    r->parent = NULL;
  }
  r->gone = 1;
  if (!r->holds)
    wrun_free(st, r);
}

/* }====== */

static wrun_more *more_of(wrun *r) {
  if (!r->more)
    r->more = calloc(1, sizeof *r->more);
  return r->more;
}

/* {====== The writer thread ====== */

/* The store stops: reported once, with why (what: message). */
static void writer_stop(mfl_store *st, const char *what, const char *message) {
  if (atomic_load(&st->failed))
    return;
  char buf[512];
  snprintf(buf, sizeof buf, "%s: %s", what, message);
  st->error = strdup(buf);
  atomic_store(&st->failed, 1);
  sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  fprintf(stderr,
          "moonflow: run store %s: %s; runs go on, nothing more is "
          "recorded\n",
          st->path, buf);
  fflush(stderr);
}

static void writer_error(mfl_store *st, const char *what) {
  writer_stop(st, what, sqlite3_errmsg(st->db));
}

static void touch(mfl_store *st, wrun *r) {
  if (r->touched)
    return;
  r->touched = 1;
  r->next_touched = NULL;
  if (st->touched_last)
    st->touched_last->next_touched = r;
  else
    st->touched_first = r;
  st->touched_last = r;
}

static int final_state(int type, int name) {
  return type >= MF_COMPLETED || name == MF_NAME_NOT_READY;
}

/* Whether state number n (from 0) keeps the history plain. */
static int plain_next(unsigned n, const event *e) {
  unsigned code = (unsigned)(e->type << 4 | e->name);
  switch (n) {
  case 0:
    return code == (MF_PENDING << 4 | MF_NAME_PENDING);
  case 1:
    return code == (MF_RUNNING << 4 | MF_NAME_RUNNING);
  case 2:
    return final_state(e->type, e->name);
  default:
    return 0;
  }
}

static int history_put(wrun_more *m, unsigned code, double time) {
  if (m->history_len + HISTORY_ENTRY > m->history_cap) {
    size_t cap = m->history_cap ? m->history_cap * 2 : 4 * HISTORY_ENTRY;
    unsigned char *h = realloc(m->history, cap);
    if (!h)
      return -1;
    m->history = h;
    m->history_cap = cap;
  }
  unsigned char *p = m->history + m->history_len;
  p[0] = (unsigned char)code;
  memcpy(p + 1, &time, sizeof time); /* little-endian hosts */
  m->history_len += HISTORY_ENTRY;
  return 0;
}

/* Before e's time fields are folded in (started is the first Running's). */
static void history_add(wrun *r, const event *e) {
  if (r->plain) {
    if (plain_next(r->states, e)) {
      r->states++;
      return;
    }
    /* No longer plain: the blob, from what the times said so far. */
    r->plain = 0;
    wrun_more *m = more_of(r);
    if (!m)
      return;
    if (r->states >= 1)
      history_put(m, MF_PENDING << 4 | MF_NAME_PENDING, r->created);
    if (r->states >= 2)
      history_put(m, MF_RUNNING << 4 | MF_NAME_RUNNING, r->started);
  }
  if (r->more)
    history_put(r->more, (unsigned)(e->type << 4 | e->name), e->time);
}

static char *dup_text(const char *s) { return s && *s ? strdup(s) : NULL; }

static void fold_submit(mfl_store *st, const event *e) {
  /* The text: name\0params\0 when shared, else name\0task\0tags\0params\0 */
  const char *text = event_text(e), *kept = e->u.submit.shared;
  const char *name = "?", *shared = "\0", *params = "";
  size_t name_len = 2, shared_len = 2, params_len = 1;
  if (text) {
    name = text;
    name_len = strlen(name) + 1;
    if (!kept) {
      shared = name + name_len;
      size_t task_len = strlen(shared) + 1;
      shared_len = task_len + strlen(shared + task_len) + 1;
    } else
      shared_len = 0;
    params = name + name_len + shared_len;
    params_len = strlen(params) + 1;
  }
  wrun *r = wrun_new(st, name_len + params_len + (kept ? 0 : shared_len));
  if (!r)
    return;
  memcpy(r->fields, name, name_len);
  memcpy(r->fields + name_len, params, params_len);
  if (!kept) {
    memcpy(r->fields + name_len + params_len, shared, shared_len);
    kept = r->fields + name_len + params_len;
  }
  r->shared = kept;
  r->name_len = (uint16_t)(name_len - 1);
  r->params_len = (uint16_t)(params_len - 1);
  r->task_len = (uint16_t)strlen(kept);
  r->tags_len = (uint16_t)strlen(kept + r->task_len + 1);
  r->id = e->id;
  r->is_flow = e->is_flow;
  r->created = e->time;
  r->type = e->type;
  r->name = e->name;
  history_add(r, e);
  if (map_put(&st->runs, r) != 0) {
    wrun_free(st, r);
    return;
  }
  r->parent =
      e->u.submit.parent ? map_get(&st->runs, e->u.submit.parent) : NULL;
  if (r->parent)
    r->parent->holds++;
  touch(st, r);
}

/* Takes over e's result. */
static void fold_state(mfl_store *st, const event *e) {
  mfl_store_result *result = e->u.result;
  wrun *r = map_get(&st->runs, e->id);
  if (!r) { /* a run not recorded (the program's main chunk, a host's) */
    result_drop(result);
    return;
  }
  history_add(r, e);
  r->type = e->type;
  r->name = e->name;
  if (e->attempt > r->attempts)
    r->attempts = e->attempt;
  if (e->type == MF_RUNNING && r->started == 0)
    r->started = e->time;
  const char *message = event_text(e);
  const char *traceback = message ? message + strlen(message) + 1 : NULL;
  if (final_state(e->type, e->name)) {
    r->final = 1;
    r->ended = e->time;
    if ((message && *message) || (traceback && *traceback) || result ||
        r->more) {
      wrun_more *m = more_of(r);
      if (m) {
        free(m->message);
        free(m->traceback);
        m->message = dup_text(message);
        m->traceback = traceback ? dup_text(traceback) : NULL;
        if (result) {
          result_free(&m->result);
          m->result = *result;
          free(result);
          result = NULL;
        }
      }
    }
  } else if (message && *message) {
    /* The message of a failed attempt that is retried: a log line. */
    if (st->log_count == st->log_cap) {
      size_t cap = st->log_cap ? st->log_cap * 2 : 64;
      log_line *logs = realloc(st->logs, cap * sizeof *logs);
      if (!logs)
        goto done;
      st->logs = logs;
      st->log_cap = cap;
    }
    size_t n = strlen(message) + 64;
    char *text = malloc(n);
    if (text) {
      snprintf(text, n, "attempt %d failed: %s", e->attempt, message);
      st->logs[st->log_count++] =
          (log_line){.run = r, .level = 30, .time = e->time, .message = text};
    }
  }
done:
  result_drop(result); /* not kept: not final, or out of memory */
  touch(st, r);
}

/* A run named when it started (task_run_name): its name field replaced;
 * the row is updated with its next write. */
static void fold_rename(mfl_store *st, const event *e) {
  wrun *r = map_get(&st->runs, e->id);
  const char *text = event_text(e);
  if (!r || !text)
    return;
  wrun_more *m = more_of(r);
  char *name = m ? strdup(text) : NULL;
  if (!name)
    return;
  free(m->name);
  m->name = name;
  r->renamed = 1;
  touch(st, r);
}

static void fold_log(mfl_store *st, const event *e) {
  if (st->log_count == st->log_cap) {
    size_t cap = st->log_cap ? st->log_cap * 2 : 64;
    log_line *logs = realloc(st->logs, cap * sizeof *logs);
    if (!logs)
      return;
    st->logs = logs;
    st->log_cap = cap;
  }
  wrun *r = e->id ? map_get(&st->runs, e->id) : NULL;
  st->logs[st->log_count++] =
      (log_line){.run = r,
                 .level = e->attempt,
                 .time = e->time,
                 .message = strdup(event_text(e) ? event_text(e) : "")};
  if (r)
    touch(st, r); /* kept until the lines are written */
}

/* {====== Binding ====== */

/* What a parameter of a statement was last bound to: a bind that would
 * bind the same again is skipped (most columns of a map's runs are the
 * same run after run).  Text and blobs are bound SQLITE_STATIC, so SQLite
 * reads them at the next step: the same pointer and length bind the same,
 * whatever the bytes there are now. */
enum { B_UNSET, B_NULL, B_INT, B_REAL, B_TEXT, B_BLOB };
struct bound {
  sqlite3_int64 v;
  const void *p;
  int n, kind;
};

typedef struct binder {
  sqlite3_stmt *s;
  bound *b; /* one per parameter; NULL: bind every time */
} binder;

static int same(binder *x, int i, int kind, sqlite3_int64 v, const void *p,
                int n) {
  if (!x->b)
    return 0;
  bound *b = &x->b[i - 1];
  if (b->kind == kind && b->v == v && b->p == p && b->n == n)
    return 1;
  *b = (bound){.v = v, .p = p, .n = n, .kind = kind};
  return 0;
}

static void put_null(binder *x, int i) {
  if (!same(x, i, B_NULL, 0, NULL, 0))
    sqlite3_bind_null(x->s, i);
}

static void put_int(binder *x, int i, sqlite3_int64 v) {
  if (!same(x, i, B_INT, v, NULL, 0))
    sqlite3_bind_int64(x->s, i, v);
}

static void put_int_or_null(binder *x, int i, sqlite3_int64 v) {
  if (v)
    put_int(x, i, v);
  else
    put_null(x, i);
}

/* A time: NULL when not known (0). */
static void put_time(binder *x, int i, double t) {
  sqlite3_int64 bits;
  memcpy(&bits, &t, sizeof bits);
  if (!(t > 0))
    put_null(x, i);
  else if (!same(x, i, B_REAL, bits, NULL, 0))
    sqlite3_bind_double(x->s, i, t);
}

/* Text of n bytes: NULL when empty. */
static void put_text_n(binder *x, int i, const char *text, size_t n) {
  if (!n)
    put_null(x, i);
  else if (!same(x, i, B_TEXT, 0, text, (int)n))
    sqlite3_bind_text(x->s, i, text, (int)n, SQLITE_STATIC);
}

/* Text: NULL when NULL or empty. */
static void put_text(binder *x, int i, const char *text) {
  put_text_n(x, i, text, text ? strlen(text) : 0);
}

static void put_blob(binder *x, int i, const void *p, size_t len) {
  if (!same(x, i, B_BLOB, 0, p, (int)len))
    sqlite3_bind_blob(x->s, i, p, (int)len, SQLITE_STATIC);
}

/* }====== */

static int step_reset(mfl_store *st, sqlite3_stmt *s, const char *what) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) {
    writer_error(st, what);
    return -1;
  }
  return 0;
}

/* A new run's row: INSERT_COLUMNS values from base + 1, in the order of
 * the INSERT's columns (the id is SQLite's next rowid: see insert_runs). */
#define INSERT_COLUMNS 18
#define PLAIN_COLUMNS 15 /* without history, message, traceback */

static const char *run_name(const wrun *r) {
  return r->more && r->more->name ? r->more->name : r->fields;
}

static void bind_new_run(mfl_store *st, binder *x, int base, wrun *r) {
  const char *params = r->fields + r->name_len + 1;
  const char *task = r->shared, *tags = task + r->task_len + 1;
  put_int(x, base + 1, st->process_row);
  put_int(x, base + 2, (sqlite3_int64)r->id);
  put_int_or_null(x, base + 3, r->parent_row);
  put_int_or_null(x, base + 4, r->flow_row);
  put_int(x, base + 5, r->is_flow);
  if (r->more && r->more->name)
    put_text(x, base + 6, *r->more->name ? r->more->name : "?");
  else if (r->name_len)
    put_text_n(x, base + 6, r->fields, r->name_len);
  else
    put_text_n(x, base + 6, "?", 1);
  put_text_n(x, base + 7, task, r->task_len);
  put_text_n(x, base + 8, tags, r->tags_len);
  put_text_n(x, base + 9, params, r->params_len);
  put_time(x, base + 10, r->created);
}

/* Whether the history, message and traceback are NULL. */
static int plain_run(const wrun *r) {
  return r->plain && (!r->more || (!r->more->message && !r->more->traceback));
}

/* The state part (8 values from base + 1, 5 when !full: the history,
 * message and traceback left out): of an insert or an update. */
static void bind_state(binder *x, int base, wrun *r, int full) {
  put_int(x, base + 1, r->type);
  put_int(x, base + 2, r->name);
  put_time(x, base + 3, r->started);
  put_time(x, base + 4, r->ended);
  put_int(x, base + 5, r->attempts);
  if (!full)
    return;
  wrun_more *m = r->more;
  if (r->plain || !m || !m->history)
    put_null(x, base + 6);
  else
    put_blob(x, base + 6, m->history, m->history_len);
  put_text(x, base + 7, m ? m->message : NULL);
  put_text(x, base + 8, m ? m->traceback : NULL);
}

/* Gives a new run its row id: the writer holds the write lock for the
 * whole batch (BEGIN IMMEDIATE) and inserts the rows in this order, so
 * SQLite's next rowid (max(id) + 1) is the one given here; insert_runs
 * checks it.  (An INSERT that names the id looks it up first: a seek per
 * run.) */
static void assign_row(mfl_store *st, wrun *r) {
  wrun *p = r->parent;
  if (p) {
    r->parent_row = p->rowid;
    r->flow_row = p->is_flow ? p->rowid : p->flow_row;
    r->parent = NULL;
    wrun_unhold(st, p);
  }
  r->rowid = ++st->last_row;
}

#define RUN_COLUMNS                                                            \
  "process, local_id, parent, flow, kind, name, task, tags, parameters,"       \
  " created, state_type, state_name, started, ended, attempts, history,"       \
  " message, traceback"
#define RUN_VALUES "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
#define PLAIN_RUN_COLUMNS                                                      \
  "process, local_id, parent, flow, kind, name, task, tags, parameters,"       \
  " created, state_type, state_name, started, ended, attempts"
#define PLAIN_RUN_VALUES "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

/* The INSERT of rows rows of the full or the plain columns (malloc'd). */
static char *block_sql(int rows, int plain) {
  const char *columns = plain ? PLAIN_RUN_COLUMNS : RUN_COLUMNS;
  const char *values = plain ? PLAIN_RUN_VALUES : RUN_VALUES;
  size_t size = 64 + strlen(columns) + (size_t)rows * (strlen(values) + 1);
  char *sql = malloc(size);
  if (!sql)
    return NULL;
  int n = snprintf(sql, size, "INSERT INTO runs(%s) VALUES ", columns);
  for (int i = 0; i < rows; i++)
    n += snprintf(sql + n, size - (size_t)n, "%s%s", i ? "," : "", values);
  return sql;
}

/* The statement of blocks[size][plain], prepared the first time a batch
 * needs it (by the writer thread, which alone uses st->db once started):
 * parsing an INSERT of 128 rows costs about a millisecond, which a
 * program's start would otherwise pay six times over, whatever it runs. */
static struct block_insert *block_statement(mfl_store *st, int size,
                                            int plain) {
  struct block_insert *b = &st->blocks[size][plain];
  if (b->stmt)
    return b;
  int rows = BLOCK_ROWS[size];
  if (!b->bound)
    b->bound = calloc((size_t)rows * (plain ? PLAIN_COLUMNS : INSERT_COLUMNS),
                      sizeof *b->bound);
  char *sql = b->bound ? block_sql(rows, plain) : NULL;
  int rc = sql ? sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                    &b->stmt, NULL)
               : SQLITE_NOMEM;
  free(sql);
  if (rc != SQLITE_OK) {
    writer_error(st, "cannot prepare the insert of runs");
    return NULL;
  }
  return b;
}

/* Inserts n rows in one statement of blocks[size]. */
static int insert_block(mfl_store *st, wrun **runs, int n, int size) {
  /* Most runs end plain: a statement without the columns they leave NULL
   * does less per row. */
  int plain = 1;
  for (int i = 0; plain && i < n; i++)
    plain = plain_run(runs[i]);
  struct block_insert *b = block_statement(st, size, plain);
  if (!b)
    return -1;
  binder x = {b->stmt, b->bound};
  int columns = plain ? PLAIN_COLUMNS : INSERT_COLUMNS;
  for (int i = 0; i < n; i++) {
    bind_new_run(st, &x, i * columns, runs[i]);
    bind_state(&x, i * columns + 10, runs[i], !plain);
  }
  return step_reset(st, x.s, "cannot record runs");
}

/* Inserts n new runs: in blocks as big as they fill, the rest one by one;
 * checks that SQLite gave them the ids assign_row did. */
static int insert_runs(mfl_store *st, wrun **runs, int n) {
  int done = 0;
  for (int size = 0; size < BLOCK_SIZES; size++)
    while (n - done >= BLOCK_ROWS[size]) {
      if (insert_block(st, runs + done, BLOCK_ROWS[size], size) != 0)
        return -1;
      done += BLOCK_ROWS[size];
    }
  binder x = {st->insert_run, st->insert_run_bound};
  for (; done < n; done++) {
    bind_new_run(st, &x, 0, runs[done]);
    bind_state(&x, 10, runs[done], 1);
    if (step_reset(st, x.s, "cannot record a run") != 0)
      return -1;
  }
  if (n && sqlite3_last_insert_rowid(st->db) != runs[n - 1]->rowid) {
    writer_error(st, "run ids out of step");
    return -1;
  }
  return 0;
}

static int update_run(mfl_store *st, wrun *r) {
  binder x = {st->update_run, NULL};
  bind_state(&x, 0, r, 1);
  sqlite3_bind_int64(st->update_run, 9, r->rowid);
  return step_reset(st, st->update_run, "cannot record a run");
}

static int write_result(mfl_store *st, wrun *r) {
  const mfl_store_result *res = &r->more->result;
  if (res->key) {
    sqlite3_stmt *s = st->delete_results;
    sqlite3_bind_text(s, 1, res->key, -1, SQLITE_STATIC);
    if (step_reset(st, s, "cannot record a result") != 0)
      return -1;
  }
  binder x = {st->insert_result, NULL};
  sqlite3_bind_int64(x.s, 1, r->rowid);
  put_text(&x, 2, res->key);
  put_time(&x, 3, r->ended);
  put_time(&x, 4, res->expires);
  put_blob(&x, 5, res->value, res->len);
  return step_reset(st, x.s, "cannot record a result");
}

/* Writes one run: a new row (queued in rows, flushed by INSERT_ROWS),
 * or its row updated; then its kept result. */
static int write_run(mfl_store *st, wrun *r, wrun **rows, int *nrows) {
  int ok = 1;
  if (!r->rowid) {
    assign_row(st, r);
    rows[(*nrows)++] = r;
    if (*nrows == INSERT_ROWS) {
      ok = insert_runs(st, rows, *nrows) == 0;
      *nrows = 0;
    }
  } else {
    ok = update_run(st, r) == 0;
    if (ok && r->renamed) {
      sqlite3_bind_text(st->rename_run, 1, run_name(r), -1, SQLITE_STATIC);
      sqlite3_bind_int64(st->rename_run, 2, r->rowid);
      ok = step_reset(st, st->rename_run, "cannot record a run") == 0;
    }
  }
  r->renamed = 0;
  if (ok && r->final && r->more && r->more->result.value &&
      r->type == MF_COMPLETED)
    ok = write_result(st, r) == 0;
  return ok ? 0 : -1;
}

static int read_last_row(mfl_store *st) {
  int rc = sqlite3_step(st->max_row);
  st->last_row = rc == SQLITE_ROW ? sqlite3_column_int64(st->max_row, 0) : 0;
  sqlite3_reset(st->max_row);
  if (rc != SQLITE_ROW) {
    writer_error(st, "cannot read the store");
    return -1;
  }
  return 0;
}

/* Writes the batch's folds and lines, commits, forgets final runs. */
static int waiting_to_start(const wrun *r) {
  return !r->rowid && !r->started && !r->final;
}

/* The row of this process, with its first batch (a process that records
 * nothing writes nothing). */
static int write_process(mfl_store *st) {
  if (st->process_row)
    return 0;
  char sql[128];
  snprintf(sql, sizeof sql,
           "INSERT INTO processes(pid, started) VALUES(%ld, %.6f)",
           (long)getpid(), st->opened_at);
  if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
    writer_error(st, "cannot record the process");
    return -1;
  }
  st->process_row = sqlite3_last_insert_rowid(st->db);
  return 0;
}

/* all: runs waiting to start are written too (a flush, the end). */
static void commit_batch(mfl_store *st, int all) {
  int ok = !atomic_load(&st->failed) &&
           (!(st->touched_first || st->log_count) ||
            (write_process(st) == 0 && read_last_row(st) == 0));
  wrun *rows[INSERT_ROWS];
  int nrows = 0;
  for (wrun *r = st->touched_first; ok && r; r = r->next_touched)
    if (!waiting_to_start(r))
      ok = write_run(st, r, rows, &nrows) == 0;
  for (size_t i = 0; all && ok && i < st->runs.cap; i++)
    if (st->runs.slots[i] && waiting_to_start(st->runs.slots[i]))
      ok = write_run(st, st->runs.slots[i], rows, &nrows) == 0;
  if (ok && nrows)
    ok = insert_runs(st, rows, nrows) == 0;
  for (size_t i = 0; ok && i < st->log_count; i++) {
    log_line *l = &st->logs[i];
    sqlite3_stmt *s = st->insert_log;
    if (l->run && l->run->rowid)
      sqlite3_bind_int64(s, 1, l->run->rowid);
    else
      sqlite3_bind_null(s, 1);
    sqlite3_bind_double(s, 2, l->time);
    sqlite3_bind_int(s, 3, l->level);
    sqlite3_bind_text(s, 4, l->message ? l->message : "", -1, SQLITE_STATIC);
    ok = step_reset(st, s, "cannot record a log line") == 0;
  }
  if (ok) {
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
      writer_error(st, "cannot commit");
    else
      atomic_fetch_add(&st->commits, 1);
  }
  for (size_t i = 0; i < st->log_count; i++)
    free(st->logs[i].message);
  st->log_count = 0;
  wrun *r = st->touched_first;
  while (r) {
    wrun *next = r->next_touched;
    r->touched = 0;
    if (r->final) {
      map_remove(&st->runs, r->id);
      wrun_release(st, r);
    }
    r = next;
  }
  st->touched_first = st->touched_last = NULL;
}

/* What an event owns, once read (the writer only reads the ring: its
 * cache lines stay clean for the loop to write again). */
static void event_release(const event *e, int folded) {
  if (e->text_len > INLINE_TEXT(MAX_CELLS))
    free((void *)event_text(e));
  if (!folded && e->kind == EV_STATE)
    result_drop(e->u.result);
}

/* Folds the events from tail, up to head or BATCH_MAX cells, into one
 * transaction; returns whether a stop was among them. */
static int drain(mfl_store *st, size_t tail, size_t head, uint64_t *flush) {
  int stop = 0, live = !atomic_load(&st->failed);
  if (live &&
      sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    writer_error(st, "cannot begin a transaction");
    live = 0;
  }
  size_t i = tail, events = 0;
  for (const event *e; i != head && i - tail < BATCH_MAX; i += e->cells) {
    e = &st->ring[i & (st->ring_size - 1)];
    events++;
    int folded = live && !atomic_load(&st->failed);
    if (folded) {
      switch ((ev_kind)e->kind) {
      case EV_SUBMIT:
        fold_submit(st, e);
        break;
      case EV_STATE:
        fold_state(st, e);
        break;
      case EV_LOG:
        fold_log(st, e);
        break;
      case EV_RENAME:
        fold_rename(st, e);
        break;
      default:
        break;
      }
    }
    if (e->kind == EV_FLUSH)
      *flush = e->id;
    if (e->kind == EV_STOP)
      stop = 1;
    event_release(e, folded);
  }
  /* Everything the events said is in the folds now: their slots are free
   * before the commit, so the loop thread goes on while SQLite writes. */
  atomic_store(&st->tail, i);
  if (atomic_load(&st->producer_waiting)) {
    uv_mutex_lock(&st->lock);
    uv_cond_broadcast(&st->room);
    uv_mutex_unlock(&st->lock);
  }
  if (live || st->touched_first || st->log_count)
    commit_batch(st, stop || *flush); /* after a failure: frees the folds */
  atomic_fetch_add(&st->events, events);
  return stop;
}

/* The writer thread's CPU time so far, for mfl_store_get_stats. */
static void note_cpu(mfl_store *st) {
  struct timespec cpu;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
    atomic_store(&st->writer_ns,
                 (uint64_t)cpu.tv_sec * 1000000000u + (uint64_t)cpu.tv_nsec);
}

/* A step of deleting old runs.  Another process writing (busy) stops the
 * pruning until the next start; any other error stops the store, as it
 * would stop the next batch. */
static void prune_step(mfl_store *st) {
  int rc = atomic_load(&st->failed) ? 0 : mfl_prune_step(st->db, st->prune);
  atomic_store(&st->pruned, mfl_prune_deleted(st->prune));
  note_cpu(st);
  if (rc > 0)
    return;
  int code;
  const char *message = rc < 0 ? mfl_prune_error(st->prune, &code) : NULL;
  if (message && (code & 0xff) != SQLITE_BUSY && (code & 0xff) != SQLITE_LOCKED)
    writer_stop(st, "cannot delete old runs", message); /* as any write */
  mfl_prune_free(st->prune);
  st->prune = NULL;
  atomic_store(&st->pruning, 0);
}

static void writer_main(void *arg) {
  mfl_store *st = arg;
  for (;;) {
    size_t tail = atomic_load(&st->tail);
    size_t head = atomic_load(&st->head);
    if (head == tail && st->prune) {
      prune_step(st); /* nothing else to write: a step of the pruning */
      continue;
    }
    if (head == tail) {
      /* Asleep until the loop thread signals; then a nap of a
       * millisecond gathers a batch, during which it does not signal (one
       * wake-up per batch, not per event). */
      atomic_store(&st->writer_sleeping, 1);
      head = atomic_load(&st->head);
      if (head == tail) {
        uv_mutex_lock(&st->lock);
        if (atomic_load(&st->head) == tail)
          uv_cond_timedwait(&st->wake_writer, &st->lock, 1000000000);
        uv_mutex_unlock(&st->lock);
      }
      atomic_store(&st->writer_sleeping, 0);
      if (!atomic_load(&st->producer_waiting) && !atomic_load(&st->urgent))
        uv_sleep(1);
      continue; /* (urgent stays set until its flush is written: cleared
                 * here, the naps below waited 4 ms at every exit) */
    }
    /* While the loop adds events, a few more naps gather a fuller batch:
     * each commit has a cost of its own and rewrites the tables' last
     * pages, and a batch of a few runs misses the block INSERTs. */
    for (int nap = 0;
         nap < GATHER_NAPS && head - tail < BATCH_GATHER &&
         !atomic_load(&st->urgent) && !atomic_load(&st->producer_waiting);
         nap++) {
      uv_sleep(1);
      head = atomic_load(&st->head);
    }
    uint64_t flush = 0;
    int stop = drain(st, tail, head, &flush);
    if (flush)
      atomic_store(&st->urgent, 0); /* (a later flush sets it again) */
    if (atomic_load(&st->producer_waiting) || flush) {
      uv_mutex_lock(&st->lock);
      if (flush)
        atomic_store(&st->flush_done, flush);
      uv_cond_broadcast(&st->room);
      uv_cond_broadcast(&st->flushed);
      uv_mutex_unlock(&st->lock);
    }
    note_cpu(st);
    if (stop)
      return;
  }
}

/* }====== */

/* {====== The loop thread's side ====== */

static size_t cells_used(const mfl_store *st) {
  size_t head = atomic_load_explicit(&st->head, memory_order_relaxed);
  return head - atomic_load_explicit(&st->tail, memory_order_acquire);
}

/* Waits until at most used_max cells are in use, or ns nanoseconds have
 * passed (0: no limit); returns whether they are. */
static int wait_room(mfl_store *st, size_t used_max, uint64_t ns) {
  uint64_t deadline = ns ? uv_hrtime() + ns : 0;
  uv_mutex_lock(&st->lock);
  atomic_store(&st->producer_waiting, 1);
  uv_cond_signal(&st->wake_writer);
  int room;
  while (!(room = (cells_used(st) <= used_max))) {
    uint64_t wait = 100000000;
    if (deadline) {
      uint64_t now = uv_hrtime();
      if (now >= deadline)
        break;
      if (deadline - now < wait)
        wait = deadline - now;
    }
    uv_cond_timedwait(&st->room, &st->lock, wait);
  }
  atomic_store(&st->producer_waiting, 0);
  uv_mutex_unlock(&st->lock);
  return room;
}

/* Cells in use above which the writer is behind (mfl_store_busy): the
 * eighth left is for what the loop does while new work is held back. */
static size_t busy_above(const mfl_store *st) { return st->ring_size / 8 * 7; }

int mfl_store_busy(const mfl_store *st) {
  return cells_used(st) > busy_above(st);
}

int mfl_store_wait_room(mfl_store *st, uint64_t ns) {
  return !mfl_store_busy(st) || wait_room(st, busy_above(st), ns);
}

/* A new event of cells cells at the ring's head (not yet published),
 * waiting for room when the ring is full; its header zeroed. */
static event *slot(mfl_store *st, unsigned cells) {
  size_t head = atomic_load_explicit(&st->head, memory_order_relaxed);
  if (cells_used(st) + cells > st->ring_size) {
    atomic_fetch_add(&st->waits, 1);
    wait_room(st, st->ring_size - cells, 0);
  }
  /* The ring has MAX_CELLS spare cells past its end: an event's cells
   * are consecutive in memory (those past the end stand for the first
   * ones, which its cells also reserve). */
  event *e = &st->ring[head & (st->ring_size - 1)];
  memset(e, 0, offsetof(event, text));
  e->cells = (unsigned char)cells;
  return e;
}

static void publish(mfl_store *st, const event *e) {
  /* seq_cst: ordered before the load */
  atomic_fetch_add(&st->head, e->cells);
  if (atomic_load(&st->writer_sleeping)) {
    uv_mutex_lock(&st->lock);
    uv_cond_signal(&st->wake_writer);
    uv_mutex_unlock(&st->lock);
  }
}

/* A string of an event's text: len (size_t)-1 when not known yet. */
typedef struct part {
  const char *s; /* NULL counts as "" */
  size_t len;
} part;

/* A new event whose text is the n parts, NUL-separated (none when n is
 * 0): inline in its cells, or malloc'd when longer than MAX_CELLS hold
 * (no text when that fails). */
static event *new_event(mfl_store *st, int kind, part *parts, int n) {
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    if (parts[i].len == (size_t)-1)
      parts[i].len = parts[i].s ? strlen(parts[i].s) : 0;
    len += parts[i].len + 1;
  }
  char *heap = NULL;
  if (len > INLINE_TEXT(MAX_CELLS) &&
      (len > UINT32_MAX || !(heap = malloc(len))))
    len = 0;
  unsigned cells = 1;
  if (!heap)
    while (len > INLINE_TEXT(cells))
      cells++;
  event *e = slot(st, cells);
  e->kind = (unsigned char)kind;
  e->text_len = (uint32_t)len;
  char *p = heap ? heap : e->text;
  if (heap)
    memcpy(e->text, &heap, sizeof heap);
  for (int i = 0; len && i < n; i++) {
    if (parts[i].len)
      memcpy(p, parts[i].s, parts[i].len);
    p[parts[i].len] = 0;
    p += parts[i].len + 1;
  }
  return e;
}

void mfl_store_submit_run(mfl_store *st, const mfl_store_submit *s) {
  part parts[4] = {{s->name, s->name_len},
                   {s->task, (size_t)-1},
                   {s->tags, (size_t)-1},
                   {s->params, s->params_len}};
  event *e;
  if (s->shared) {
    parts[1] = parts[3];
    e = new_event(st, EV_SUBMIT, parts, 2);
  } else
    e = new_event(st, EV_SUBMIT, parts, 4);
  e->type = MF_PENDING;
  e->name = MF_NAME_PENDING;
  e->is_flow = (unsigned char)s->is_flow;
  e->id = s->id;
  e->u.submit.parent = s->parent;
  e->u.submit.shared = s->shared;
  e->time = s->time;
  publish(st, e);
}

void mfl_store_state(mfl_store *st, uint64_t id, const mf_state *state,
                     int attempt, const char *message, const char *traceback,
                     mfl_store_result *result) {
  part parts[2] = {{message, (size_t)-1}, {traceback, (size_t)-1}};
  mfl_store_result *kept = NULL;
  if (result && (kept = malloc(sizeof *kept)) != NULL) {
    *kept = *result;
    memset(result, 0, sizeof *result);
  }
  event *e = new_event(st, EV_STATE, parts, message || traceback ? 2 : 0);
  e->type = (unsigned char)state->type;
  e->name = (unsigned char)state->name;
  e->attempt = attempt;
  e->id = id;
  e->time = state->timestamp;
  e->u.result = kept;
  publish(st, e);
}

void mfl_store_log(mfl_store *st, uint64_t id, int level, double time,
                   const char *message) {
  part text = {message, (size_t)-1};
  event *e = new_event(st, EV_LOG, &text, 1);
  e->attempt = level;
  e->id = id;
  e->time = time;
  publish(st, e);
}

void mfl_store_rename(mfl_store *st, uint64_t id, const char *name) {
  part text = {name, (size_t)-1};
  event *e = new_event(st, EV_RENAME, &text, 1);
  e->id = id;
  publish(st, e);
}

const char *mfl_store_intern(mfl_store *st, const char *text, size_t len) {
  return intern(st->interned, text, len);
}

uint64_t mfl_store_serial(const mfl_store *st) { return st->serial; }

void mfl_store_flush(mfl_store *st) {
  uint64_t n = ++st->flush_asked;
  event *e = new_event(st, EV_FLUSH, NULL, 0);
  e->id = n;
  atomic_store(&st->urgent, 1);
  publish(st, e);
  uv_mutex_lock(&st->lock);
  while (atomic_load(&st->flush_done) < n)
    uv_cond_timedwait(&st->flushed, &st->lock, 100000000);
  uv_mutex_unlock(&st->lock);
}

void mfl_store_get_stats(mfl_store *st, mfl_store_stats *out) {
  out->events = atomic_load(&st->events);
  out->commits = atomic_load(&st->commits);
  out->waits = atomic_load(&st->waits);
  out->checkpoints = mfl_checkpointer_done(st->checkpointer);
  out->writer_cpu = (double)atomic_load(&st->writer_ns) / 1e9;
  out->pruned = atomic_load(&st->pruned);
  out->pruning = atomic_load(&st->pruning);
  out->keep = st->keep;
  out->error = atomic_load(&st->failed) ? st->error : NULL;
}

const char *mfl_store_path(const mfl_store *st) { return st->path; }

/* Opened on first use: a process that looks nothing up needs none. */
sqlite3 *mfl_store_reader(mfl_store *st) {
  if (!st->reader && !st->reader_failed && strcmp(st->path, ":memory:") != 0) {
    char err[256];
    if (mfl_store_connect(st->path, 0, &st->reader, err, sizeof err) != 0)
      st->reader_failed = 1;
  }
  return st->reader;
}

/* }====== */

/* {====== Start and stop ====== */

/* A script that calls os.exit() leaves without closing its Lua state: the
 * stores still open are flushed at exit (from the loop thread that
 * called exit; another thread's exit leaves them as a SIGKILL would). */
static uv_mutex_t open_lock;
static uv_once_t open_once = UV_ONCE_INIT;
static mfl_store *open_stores;

static void flush_at_exit(void) {
  uv_thread_t self = uv_thread_self();
  uv_mutex_lock(&open_lock);
  for (mfl_store *st = open_stores; st; st = st->next_open)
    if (uv_thread_equal(&st->owner, &self))
      mfl_store_flush(st);
  uv_mutex_unlock(&open_lock);
}

static void init_open_list(void) {
  uv_mutex_init(&open_lock);
  atexit(flush_at_exit);
}

static void track(mfl_store *st, int open) {
  uv_once(&open_once, init_open_list);
  uv_mutex_lock(&open_lock);
  mfl_store **p = &open_stores;
  while (*p && *p != st)
    p = &(*p)->next_open;
  if (open && !*p) {
    st->next_open = open_stores;
    open_stores = st;
  } else if (!open && *p) {
    *p = st->next_open;
  }
  uv_mutex_unlock(&open_lock);
}

#define WRITER_STATEMENTS 7

/* The writer's statements (but the blocks': block_statement), to prepare
 * and to finalize. */
static void list_statements(mfl_store *st,
                            mfl_store_statement list[WRITER_STATEMENTS]) {
  const mfl_store_statement all[WRITER_STATEMENTS] = {
      {"INSERT INTO runs(" RUN_COLUMNS ") VALUES " RUN_VALUES, &st->insert_run},
      {"UPDATE runs SET state_type = ?1, state_name = ?2, started = ?3,"
       " ended = ?4, attempts = ?5, history = ?6, message = ?7,"
       " traceback = ?8 WHERE id = ?9",
       &st->update_run},
      {"INSERT INTO logs(run, time, level, message) VALUES(?1, ?2, ?3, ?4)",
       &st->insert_log},
      {"INSERT OR REPLACE INTO results(run, key, created, expires, value)"
       " VALUES(?1, ?2, ?3, ?4, ?5)",
       &st->insert_result},
      {"DELETE FROM results WHERE key = ?1", &st->delete_results},
      {"SELECT max(id) FROM runs", &st->max_row},
      {"UPDATE runs SET name = ?1 WHERE id = ?2", &st->rename_run},
  };
  memcpy(list, all, sizeof all);
}

static int prepare(mfl_store *st, char *err, size_t errlen) {
  mfl_store_statement list[WRITER_STATEMENTS];
  list_statements(st, list);
  if (mfl_store_prepare_list(st->db, list, WRITER_STATEMENTS,
                             SQLITE_PREPARE_PERSISTENT) != SQLITE_OK) {
    snprintf(err, errlen, "cannot prepare: %s", sqlite3_errmsg(st->db));
    return -1;
  }
  return 0;
}

static void finalize_all(mfl_store *st) {
  mfl_store_statement list[WRITER_STATEMENTS];
  list_statements(st, list);
  mfl_store_finalize_list(list, WRITER_STATEMENTS);
  for (int size = 0; size < BLOCK_SIZES; size++)
    for (int plain = 0; plain < 2; plain++) {
      sqlite3_finalize(st->blocks[size][plain].stmt);
      free(st->blocks[size][plain].bound);
    }
}

/* MOONFLOW_STORE_KEEP: how long runs are kept (a file's only).  A value
 * that is not a duration is reported, and nothing is deleted. */
static int start_pruning(mfl_store *st, char *err, size_t errlen) {
  const char *text = getenv("MOONFLOW_STORE_KEEP");
  st->keep = mfl_store_parse_keep(text);
  if (st->keep < 0) {
    fprintf(stderr,
            "moonflow: MOONFLOW_STORE_KEEP=%s is not a duration (7d, 12h, "
            "30m, 90s or forever): runs are kept forever\n",
            text);
    fflush(stderr);
    st->keep = 0;
  }
  if (st->keep == 0 || strcmp(st->path, ":memory:") == 0)
    return 0;
  st->prune = mfl_prune_new(st->db, st->opened_at, st->keep);
  if (!st->prune) {
    snprintf(err, errlen, "cannot prepare the pruning: %s",
             sqlite3_errmsg(st->db));
    return -1;
  }
  atomic_store(&st->pruning, 1);
  return 0;
}

mfl_store *mfl_store_writer_start(sqlite3 *db, const char *path, char *err,
                                  size_t errlen) {
  mfl_store *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  st->db = db;
  st->path = strdup(path);
  st->ring_size = RING_SIZE;
  const char *ring = getenv("MOONFLOW_STORE_RING");
  long asked = ring ? strtol(ring, NULL, 10) : 0;
  if (asked >= 64 && asked <= (1 << 20) && (asked & (asked - 1)) == 0)
    st->ring_size = (size_t)asked;
  st->ring = ring_alloc(RING_BYTES(st));
  static _Atomic uint64_t serials;
  st->serial = atomic_fetch_add(&serials, 1) + 1;
  st->interned = calloc(1, sizeof *st->interned);
  st->insert_run_bound = calloc(INSERT_COLUMNS, sizeof *st->insert_run_bound);
  if (!st->path || !st->ring || !st->interned || !st->insert_run_bound) {
    snprintf(err, errlen, "out of memory");
    goto failed;
  }
  if (prepare(st, err, errlen) != 0)
    goto failed;
  if (strcmp(path, ":memory:") != 0) /* (a private database has no WAL) */
    st->checkpointer = mfl_checkpointer_start(db, path);
  struct timeval tv;
  gettimeofday(&tv, NULL);
  st->opened_at = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
  if (start_pruning(st, err, errlen) != 0)
    goto failed;
  uv_mutex_init(&st->lock);
  uv_cond_init(&st->wake_writer);
  uv_cond_init(&st->room);
  uv_cond_init(&st->flushed);
  if (uv_thread_create(&st->thread, writer_main, st) != 0) {
    snprintf(err, errlen, "cannot start the writer thread");
    uv_cond_destroy(&st->flushed);
    uv_cond_destroy(&st->room);
    uv_cond_destroy(&st->wake_writer);
    uv_mutex_destroy(&st->lock);
    goto failed;
  }
  st->owner = uv_thread_self();
  track(st, 1);
  return st;
failed:
  mfl_checkpointer_stop(st->checkpointer, db);
  mfl_prune_free(st->prune);
  finalize_all(st);
  sqlite3_close(st->reader);
  free(st->interned);
  free(st->insert_run_bound);
  ring_free(st->ring, RING_BYTES(st));
  free(st->path);
  free(st);
  return NULL;
}

void mfl_store_close(mfl_store *st) {
  if (!st)
    return;
  track(st, 0);
  event *e = new_event(st, EV_STOP, NULL, 0);
  atomic_store(&st->urgent, 1);
  publish(st, e);
  uv_thread_join(&st->thread);
  if (!atomic_load(&st->failed) && st->process_row) {
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE processes SET ended = julianday('now') * 86400 - "
             "210866760000 WHERE id = %lld",
             (long long)st->process_row);
    sqlite3_exec(st->db, sql, NULL, NULL, NULL);
  }
  mfl_checkpointer_stop(st->checkpointer, st->db);
  /* The children first: a parent held by one goes with it. */
  for (size_t i = 0; i < st->runs.cap; i++)
    if (st->runs.slots[i] && st->runs.slots[i]->parent) {
      wrun_unhold(st, st->runs.slots[i]->parent);
      st->runs.slots[i]->parent = NULL;
    }
  for (size_t i = 0; i < st->runs.cap; i++)
    if (st->runs.slots[i])
      wrun_release(st, st->runs.slots[i]);
  free(st->runs.slots);
  pool_free(&st->pool);
  intern_free(st->interned);
  free(st->interned);
  free(st->insert_run_bound);
  free(st->logs);
  mfl_prune_free(st->prune);
  finalize_all(st);
  sqlite3_close(st->reader);
  sqlite3_close(st->db);
  uv_cond_destroy(&st->flushed);
  uv_cond_destroy(&st->room);
  uv_cond_destroy(&st->wake_writer);
  uv_mutex_destroy(&st->lock);
  free(st->error);
  ring_free(st->ring, RING_BYTES(st));
  free(st->path);
  free(st);
}

/* }====== */
