/*
 * store_checkpoint.c -- the run store's checkpoints, on a thread of their
 * own.
 *
 * In WAL mode SQLite appends each commit to the -wal file, and a
 * checkpoint copies those pages back into the database file.  SQLite's
 * automatic checkpoint runs inside the commit that takes the WAL past its
 * threshold, on the connection that committed: the store's writer thread,
 * which then records nothing while it copies.  Recording a map of 10^6
 * runs made four of them, and the loop thread, its ring full, waited at the
 * start gate meanwhile: 1.22-1.28 µs per run, against 0.89-0.92 without
 * checkpoints (bench: a fresh store per process, 4 runs each).
 *
 * So the writer's connection has no automatic checkpoint: its WAL hook
 * (called after each commit with the WAL's page count) wakes a thread
 * that checkpoints on a connection of its own (PASSIVE: it copies what no
 * reader still needs, and never blocks the writer, which goes on
 * appending).  The thread starts at the first checkpoint wanted: a process
 * that writes little never has one.  (Not at idle priority: a thread
 * starved in the middle of a checkpoint holds SQLite's checkpoint lock,
 * and then no one can copy the WAL, which grows without bound; and the
 * loop's stalls measured the same either way.)  A WAL sixteen times past
 * the threshold means the thread is not keeping up (a machine busy with
 * other work): the writer tries a checkpoint itself too, as SQLite would
 * (which finds SQLite busy, and returns, while the thread's is under
 * way).  At close a checkpoint under way is
 * interrupted (sqlite3_interrupt), so that exit does not wait for it; the
 * next process's checkpoints take up what is left.  Should the thread or
 * its connection fail, the hook checkpoints in the writer as SQLite
 * would.  (sqlite3_wal_checkpoint_v2 clears an interrupt that came before
 * it began: a stop that falls just between the thread's look at
 * `stopping` and the checkpoint's start waits for that checkpoint.)
 * MOONFLOW_STORE_CHECKPOINT sets the threshold in pages (the tests use a
 * small one).
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "store.h"

/* WAL pages (of the file's page size) from which a checkpoint is wanted:
 * as the writer's automatic checkpoint had (PRAGMA wal_autocheckpoint). */
#define CHECKPOINT_PAGES 4000

struct mfl_checkpointer {
  char *path;
  uv_mutex_t lock;
  uv_cond_t wake;
  uv_thread_t thread;
  int started;   /* the thread was started (joined at stop) */
  int failed;    /* the thread or its connection could not be had */
  int wanted;    /* a checkpoint is wanted (the WAL passed its threshold) */
  int stopping;  /* mfl_checkpointer_stop was called */
  sqlite3 *db;   /* the thread's connection, once opened (under lock) */
  int threshold; /* WAL pages from which a checkpoint is wanted */
  uint64_t done; /* checkpoints run */
};

static void checkpointer_main(void *arg) {
  mfl_checkpointer *c = arg;
  sqlite3 *db = NULL;
  for (;;) {
    uv_mutex_lock(&c->lock);
    while (!c->wanted && !c->stopping)
      uv_cond_wait(&c->wake, &c->lock);
    int stop = c->stopping;
    c->wanted = 0;
    uv_mutex_unlock(&c->lock);
    if (stop)
      break;
    if (!db) {
      char err[256];
      if (mfl_store_connect(c->path, 1, &db, err, sizeof err) != 0) {
        db = NULL;
        uv_mutex_lock(&c->lock);
        c->failed = 1; /* the hook checkpoints in the writer from now on */
        uv_mutex_unlock(&c->lock);
        break;
      }
      uv_mutex_lock(&c->lock);
      c->db = db; /* (from now on, stop interrupts it) */
      stop = c->stopping;
      uv_mutex_unlock(&c->lock);
      if (stop)
        break;
    }
    /* (Busy, or interrupted at stop: the next wanted one goes on.) */
    sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    uv_mutex_lock(&c->lock);
    c->done++;
    uv_mutex_unlock(&c->lock);
  }
  uv_mutex_lock(&c->lock);
  c->db = NULL;
  uv_mutex_unlock(&c->lock);
  sqlite3_close(db);
}

/* sqlite3_wal_hook's callback, on the writer thread after each commit. */
static int on_commit(void *arg, sqlite3 *db, const char *name, int pages) {
  mfl_checkpointer *c = arg;
  if (pages < c->threshold)
    return SQLITE_OK;
  uv_mutex_lock(&c->lock);
  if (!c->started && !c->failed) {
    if (uv_thread_create(&c->thread, checkpointer_main, c) == 0)
      c->started = 1;
    else
      c->failed = 1;
  }
  /* (A WAL 16 times past the threshold: the thread is not keeping up.) */
  int here = c->failed || pages >= c->threshold * 16;
  if (!c->failed) {
    c->wanted = 1;
    uv_cond_signal(&c->wake);
  }
  uv_mutex_unlock(&c->lock);
  if (here) /* as SQLite's automatic checkpoint does */
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  return SQLITE_OK;
}

mfl_checkpointer *mfl_checkpointer_start(sqlite3 *writer, const char *path) {
  mfl_checkpointer *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->path = strdup(path);
  if (!c->path || uv_mutex_init(&c->lock) != 0) {
    free(c->path);
    free(c);
    return NULL;
  }
  if (uv_cond_init(&c->wake) != 0) {
    uv_mutex_destroy(&c->lock);
    free(c->path);
    free(c);
    return NULL;
  }
  const char *asked = getenv("MOONFLOW_STORE_CHECKPOINT");
  int pages = asked ? atoi(asked) : 0;
  c->threshold = pages > 0 ? pages : CHECKPOINT_PAGES;
  sqlite3_wal_hook(writer, on_commit, c); /* (replaces the automatic one) */
  return c;
}

void mfl_checkpointer_stop(mfl_checkpointer *c, sqlite3 *writer) {
  if (!c)
    return;
  sqlite3_wal_hook(writer, NULL, NULL);
  uv_mutex_lock(&c->lock);
  c->stopping = 1;
  if (c->db) /* (closed only after the thread sees stopping) */
    sqlite3_interrupt(c->db);
  uv_cond_signal(&c->wake);
  int started = c->started;
  uv_mutex_unlock(&c->lock);
  if (started)
    uv_thread_join(&c->thread);
  uv_cond_destroy(&c->wake);
  uv_mutex_destroy(&c->lock);
  free(c->path);
  free(c);
}

uint64_t mfl_checkpointer_done(mfl_checkpointer *c) {
  if (!c)
    return 0;
  uv_mutex_lock(&c->lock);
  uint64_t done = c->done;
  uv_mutex_unlock(&c->lock);
  return done;
}
