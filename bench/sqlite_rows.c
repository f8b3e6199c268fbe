/*
 * bench/sqlite_rows.c -- what SQLite alone costs per row, by the number of
 * columns: the floor under the run store's writer, which inserts one row
 * of 15 columns per run (bindings/store_writer.c).  The same shape of
 * writing: a file in WAL mode with synchronous=NORMAL, 128-row INSERT
 * statements prepared once, a transaction per 8,192 rows, values of the
 * kinds a run's row has (integers, times, short text); no checkpoints.
 *
 * Prints, for 1, 3, 6, 10 and 15 columns: microseconds per row (wall, one
 * thread).  Build: cmake --build build --target bench_sqlite_rows
 * Run: build/bench_sqlite_rows [rows, default 1000000] [directory]
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROWS_PER_STATEMENT 128
#define ROWS_PER_COMMIT 8192

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int fail(sqlite3 *db, const char *what) {
  fprintf(stderr, "sqlite_rows: %s: %s\n", what, sqlite3_errmsg(db));
  return -1;
}

/* The INSERT of ROWS_PER_STATEMENT rows of columns c0..c(n-1). */
static char *insert_sql(int columns) {
  size_t size = 64 + (size_t)columns * 8 +
                (size_t)ROWS_PER_STATEMENT * ((size_t)columns * 2 + 4);
  char *sql = malloc(size);
  if (!sql)
    return NULL;
  int at = snprintf(sql, size, "INSERT INTO t(");
  for (int c = 0; c < columns; c++)
    at += snprintf(sql + at, size - (size_t)at, "%sc%d", c ? "," : "", c);
  at += snprintf(sql + at, size - (size_t)at, ") VALUES ");
  for (int r = 0; r < ROWS_PER_STATEMENT; r++) {
    at += snprintf(sql + at, size - (size_t)at, "%s(", r ? "," : "");
    for (int c = 0; c < columns; c++)
      at += snprintf(sql + at, size - (size_t)at, "%s?", c ? "," : "");
    at += snprintf(sql + at, size - (size_t)at, ")");
  }
  return sql;
}

/* Microseconds per row for rows rows of columns columns, or -1. */
static double measure(const char *path, int columns, long rows) {
  char sql[512];
  for (const char *suffix = ""; suffix; suffix = *suffix ? NULL : "-wal") {
    snprintf(sql, sizeof sql, "%s%s", path, suffix);
    remove(sql);
  }
  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK)
    return fail(db, "cannot open"), sqlite3_close(db), -1;
  int at = snprintf(sql, sizeof sql, "CREATE TABLE t(id INTEGER PRIMARY KEY");
  for (int c = 0; c < columns; c++)
    at += snprintf(sql + at, sizeof sql - (size_t)at, ", c%d", c);
  snprintf(sql + at, sizeof sql - (size_t)at, ")");
  char *insert = insert_sql(columns);
  sqlite3_stmt *stmt = NULL;
  double us = -1;
  if (!insert ||
      sqlite3_exec(db,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   " PRAGMA wal_autocheckpoint=0",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, insert, -1, &stmt, NULL) != SQLITE_OK) {
    fail(db, "cannot set up");
    goto done;
  }
  long id = 0;
  double start = now();
  while (id < rows) {
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
      fail(db, "cannot begin");
      goto done;
    }
    for (int s = 0; s < ROWS_PER_COMMIT / ROWS_PER_STATEMENT; s++) {
      for (int r = 0; r < ROWS_PER_STATEMENT; r++) {
        id++;
        for (int c = 0; c < columns; c++) {
          int param = r * columns + c + 1;
          if (c % 3 == 0) /* an id */
            sqlite3_bind_int64(stmt, param, id);
          else if (c % 3 == 1) /* a time */
            sqlite3_bind_double(stmt, param, 1.79e9 + (double)id * 1e-7);
          else /* a name */
            sqlite3_bind_text(stmt, param, "double-12345", 12, SQLITE_STATIC);
        }
      }
      if (sqlite3_step(stmt) != SQLITE_DONE) {
        fail(db, "cannot insert");
        goto done;
      }
      sqlite3_reset(stmt);
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
      fail(db, "cannot commit");
      goto done;
    }
  }
  us = (now() - start) / (double)id * 1e6;
done:
  sqlite3_finalize(stmt);
  free(insert);
  sqlite3_close(db);
  return us;
}

int main(int argc, char **argv) {
  long rows = argc > 1 ? atol(argv[1]) : 1000000;
  const char *dir = argc > 2 ? argv[2] : "/tmp";
  if (rows < ROWS_PER_COMMIT)
    rows = ROWS_PER_COMMIT;
  char path[448];
  snprintf(path, sizeof path, "%s/sqlite_rows.%ld.db", dir, (long)getpid());
  static const int columns[] = {1, 3, 6, 10, 15};
  printf("SQLite %s, %ld rows, %d per INSERT, %d per commit\n",
         sqlite3_libversion(), rows, ROWS_PER_STATEMENT, ROWS_PER_COMMIT);
  int rc = 0;
  for (size_t i = 0; i < sizeof columns / sizeof *columns; i++) {
    double us = measure(path, columns[i], rows);
    if (us < 0) {
      rc = 1;
      break;
    }
    printf("%2d columns: %.3f us/row\n", columns[i], us);
  }
  char wal[512];
  snprintf(wal, sizeof wal, "%s-wal", path);
  remove(path);
  remove(wal);
  return rc;
}
