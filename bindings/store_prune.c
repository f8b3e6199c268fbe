/*
 * store_prune.c -- the run store's retention: runs older than the store's
 * keep (MOONFLOW_STORE_KEEP, a week by default) are deleted with their
 * logs, so that a store that records every run of every script does not
 * grow without bound.  Cached results under a key outlive their run until
 * they expire (the cache's rules do not change); a result kept without a
 * key goes with its run.
 *
 * The writer thread prunes when it has nothing else to write, one step at
 * a time (a transaction of at most PRUNE_STEP runs), once per opened
 * store: the runs' rowids grow with time, so a step reads the rows from
 * where the last one stopped, in rowid order, until the first row that is
 * young enough.  A run not final yet (its process still going, or one that
 * died without saying so) is kept.  What a stop interrupts, the next
 * process goes on with.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define PRUNE_STEP 2000 /* runs looked at per transaction */

double mfl_store_parse_keep(const char *text) {
  if (!text || !*text)
    return MFL_STORE_KEEP_DEFAULT;
  if (strcmp(text, "forever") == 0)
    return 0;
  char *end;
  double n = strtod(text, &end);
  if (end == text || !(n > 0) || n > 1e9)
    return -1;
  double unit = 0;
  switch (*end) {
  case 's':
    unit = 1;
    break;
  case 'm':
    unit = 60;
    break;
  case 'h':
    unit = 3600;
    break;
  case 'd':
    unit = 86400;
    break;
  default:
    return -1;
  }
  return end[1] ? -1 : n * unit;
}

/* Rows of one table read in rowid order from next: the old ones form
 * the range [from, to). */
typedef struct cursor {
  sqlite3_stmt *scan; /* SELECT rowid, time ... WHERE rowid >= ?1 LIMIT ?2 */
  sqlite3_int64 next; /* the lowest rowid not looked at yet */
  int done;           /* a young row (or the end) was reached */
} cursor;

struct mfl_prune {
  cursor runs, logs;
  sqlite3_stmt *delete_runs, *delete_run_logs, *delete_results,
      *delete_loose_logs, *delete_processes;
  double cutoff; /* wall seconds: what was created before goes */
  double now;    /* results that expired before go */
  uint64_t deleted;
  int error_code;    /* the failed step's (extended) SQLite code */
  char message[256]; /* and its message */
};

#define PRUNE_STATEMENTS 7

/* The pruning's statements, to prepare and to finalize. */
static void list_statements(mfl_prune *p,
                            mfl_store_statement list[PRUNE_STATEMENTS]) {
  const mfl_store_statement all[PRUNE_STATEMENTS] = {
      {"SELECT id, created FROM runs WHERE id >= ?1 ORDER BY id LIMIT ?2",
       &p->runs.scan},
      {"SELECT id, time FROM logs WHERE id >= ?1 ORDER BY id LIMIT ?2",
       &p->logs.scan},
      /* Only final runs (a live one is still written to), never the
       * newest (its id would be given again: a result kept under a key
       * names its run). */
      {"DELETE FROM runs WHERE id >= ?1 AND id < ?2 AND state_type >= 3"
       " AND id < (SELECT max(id) FROM runs)",
       &p->delete_runs},
      {"DELETE FROM logs WHERE run >= ?1 AND run < ?2 AND run NOT IN"
       " (SELECT id FROM runs WHERE id >= ?1 AND id < ?2)",
       &p->delete_run_logs},
      {"DELETE FROM results WHERE run >= ?1 AND run < ?2 AND (key IS NULL OR"
       " (expires IS NOT NULL AND expires < ?3)) AND run NOT IN"
       " (SELECT id FROM runs WHERE id >= ?1 AND id < ?2)",
       &p->delete_results},
      /* Logs written outside any run. */
      {"DELETE FROM logs WHERE id >= ?1 AND id < ?2 AND run IS NULL",
       &p->delete_loose_logs},
      /* Processes ended before the cutoff and older than every run kept. */
      {"DELETE FROM processes WHERE ended < ?1 AND id <"
       " (SELECT process FROM runs ORDER BY id LIMIT 1)",
       &p->delete_processes},
  };
  memcpy(list, all, sizeof all);
}

void mfl_prune_free(mfl_prune *p) {
  if (!p)
    return;
  mfl_store_statement list[PRUNE_STATEMENTS];
  list_statements(p, list);
  mfl_store_finalize_list(list, PRUNE_STATEMENTS);
  free(p);
}

mfl_prune *mfl_prune_new(sqlite3 *db, double now, double keep) {
  mfl_prune *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->now = now;
  p->cutoff = now - keep;
  mfl_store_statement list[PRUNE_STATEMENTS];
  list_statements(p, list);
  if (mfl_store_prepare_list(db, list, PRUNE_STATEMENTS, 0) != SQLITE_OK) {
    mfl_prune_free(p);
    return NULL;
  }
  return p;
}

uint64_t mfl_prune_deleted(const mfl_prune *p) { return p->deleted; }

const char *mfl_prune_error(const mfl_prune *p, int *code) {
  *code = p->error_code;
  return p->message;
}

/* Keeps the error before a rollback clears it; returns -1. */
static int failed(sqlite3 *db, mfl_prune *p, int in_transaction) {
  p->error_code = sqlite3_extended_errcode(db);
  snprintf(p->message, sizeof p->message, "%s", sqlite3_errmsg(db));
  if (in_transaction)
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* The old rows from c->next on (at most PRUNE_STEP): [c->next, *to).
 * Returns 0 or -1 (an SQLite error). */
static int old_range(cursor *c, double cutoff, sqlite3_int64 *to) {
  sqlite3_stmt *s = c->scan;
  *to = c->next;
  if (c->done)
    return 0;
  sqlite3_bind_int64(s, 1, c->next);
  sqlite3_bind_int(s, 2, PRUNE_STEP);
  int rc, rows = 0, young = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    int type = sqlite3_column_type(s, 1);
    if ((type != SQLITE_FLOAT && type != SQLITE_INTEGER) ||
        sqlite3_column_double(s, 1) >= cutoff) {
      young = 1; /* (no time: kept, and what follows too) */
      break;
    }
    *to = sqlite3_column_int64(s, 0) + 1;
    rows++;
  }
  sqlite3_reset(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return -1;
  c->done = young || rows < PRUNE_STEP;
  return 0;
}

static int delete_range(sqlite3_stmt *s, sqlite3_int64 from, sqlite3_int64 to,
                        const double *time) {
  sqlite3_bind_int64(s, 1, from);
  sqlite3_bind_int64(s, 2, to);
  if (time)
    sqlite3_bind_double(s, 3, *time);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? 0 : -1;
}

int mfl_prune_step(sqlite3 *db, mfl_prune *p) {
  sqlite3_int64 runs_to, logs_to;
  if (old_range(&p->runs, p->cutoff, &runs_to) != 0 ||
      old_range(&p->logs, p->cutoff, &logs_to) != 0)
    return failed(db, p, 0);
  int last = p->runs.done && p->logs.done;
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return failed(db, p, 0);
  sqlite3_int64 from = p->runs.next;
  int before = sqlite3_total_changes(db);
  int ok = delete_range(p->delete_runs, from, runs_to, NULL) == 0;
  int deleted = sqlite3_total_changes(db) - before;
  ok = ok && delete_range(p->delete_run_logs, from, runs_to, NULL) == 0 &&
       delete_range(p->delete_results, from, runs_to, &p->now) == 0 &&
       delete_range(p->delete_loose_logs, p->logs.next, logs_to, NULL) == 0;
  if (ok && last) {
    sqlite3_bind_double(p->delete_processes, 1, p->cutoff);
    ok = sqlite3_step(p->delete_processes) == SQLITE_DONE;
    sqlite3_reset(p->delete_processes);
  }
  if (!ok || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    return failed(db, p, 1);
  p->deleted += (uint64_t)deleted;
  p->runs.next = runs_to;
  p->logs.next = logs_to;
  return !last;
}
