/*
 * store.c -- the run store's file: opening it, telling a moonflow store
 * from a foreign or corrupt file before anything is written to it, the
 * schema and its migrations, and cache lookups on the reading connection.
 * The writer thread is store_writer.c.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* {====== Schema ====== */

/* Migration n takes a file from version n - 1 to n.  Version 1 recorded
 * runs, their states (the history blob: per state one byte type << 4 |
 * name, then the time as a little-endian double) and logs; version 2 added
 * results (caching, persist_result). */
static const char *const migrations[MFL_STORE_SCHEMA + 1] = {
    NULL,
    "CREATE TABLE processes(id INTEGER PRIMARY KEY, pid INTEGER,"
    " started REAL, ended REAL);"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY, process INTEGER NOT NULL,"
    " local_id INTEGER NOT NULL, parent INTEGER, flow INTEGER,"
    " kind INTEGER NOT NULL, name TEXT NOT NULL, task TEXT, tags TEXT,"
    " parameters TEXT, state_type INTEGER NOT NULL,"
    " state_name INTEGER NOT NULL, created REAL, started REAL, ended REAL,"
    " attempts INTEGER NOT NULL DEFAULT 0, history BLOB, message TEXT,"
    " traceback TEXT);"
    "CREATE INDEX runs_flow ON runs(flow) WHERE flow IS NOT NULL;"
    "CREATE INDEX runs_flows ON runs(created) WHERE kind = 1;"
    "CREATE TABLE logs(id INTEGER PRIMARY KEY, run INTEGER,"
    " time REAL NOT NULL, level INTEGER NOT NULL, message TEXT NOT NULL);"
    "CREATE INDEX logs_run ON logs(run);",
    "CREATE TABLE results(run INTEGER PRIMARY KEY, key TEXT,"
    " created REAL NOT NULL, expires REAL, value BLOB NOT NULL);"
    "CREATE INDEX results_key ON results(key);",
};

static int fail(sqlite3 *db, char *err, size_t errlen, const char *what) {
  snprintf(err, errlen, "%s: %s", what, db ? sqlite3_errmsg(db) : "?");
  return -1;
}

/* One integer from a query (a PRAGMA); -1 with err set on an error. */
static int query_int(sqlite3 *db, const char *sql, long long *out, char *err,
                     size_t errlen) {
  sqlite3_stmt *stmt;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
    return fail(db, err, errlen, "cannot read the file");
  int rc = sqlite3_step(stmt);
  *out = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return fail(db, err, errlen, "cannot read the file");
  return 0;
}

/* Which version of the schema the file has (0: a new, empty file), read
 * without writing anything; -1 for a file that is not a store. */
static int schema_version(sqlite3 *db, char *err, size_t errlen) {
  long long app, version, objects;
  if (query_int(db, "PRAGMA application_id", &app, err, errlen) ||
      query_int(db, "PRAGMA user_version", &version, err, errlen) ||
      query_int(db, "SELECT count(*) FROM sqlite_master", &objects, err,
                errlen))
    return -1;
  if (app == 0 && objects == 0)
    return 0;
  if (app != MFL_STORE_APP_ID) {
    snprintf(err, errlen,
             "not a moonflow store (an SQLite database of another "
             "application); left untouched");
    return -1;
  }
  if (version > MFL_STORE_SCHEMA) {
    snprintf(err, errlen,
             "written by a newer moonflow (schema %lld, this one knows %d); "
             "left untouched",
             version, MFL_STORE_SCHEMA);
    return -1;
  }
  return (int)version;
}

static int migrate(sqlite3 *db, char *err, size_t errlen) {
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return fail(db, err, errlen, "cannot migrate the store");
  /* Another process may have migrated it meanwhile: read it again. */
  int version = schema_version(db, err, errlen);
  for (int v = version + 1; version >= 0 && v <= MFL_STORE_SCHEMA; v++)
    if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK) {
      fail(db, err, errlen, "cannot migrate the store");
      version = -1;
    }
  char sql[96];
  snprintf(sql, sizeof sql, "PRAGMA application_id=%d; PRAGMA user_version=%d",
           MFL_STORE_APP_ID, MFL_STORE_SCHEMA);
  if (version >= 0 && sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
    fail(db, err, errlen, "cannot migrate the store");
    version = -1;
  }
  if (version < 0) {
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
  }
  if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    return fail(db, err, errlen, "cannot migrate the store");
  return 0;
}

/* }====== */

int mfl_store_connect(const char *path, int writable, sqlite3 **out, char *err,
                      size_t errlen) {
  sqlite3 *db = NULL;
  int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                       : SQLITE_OPEN_READONLY;
  *out = NULL;
  if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    fail(db, err, errlen, "cannot open");
    sqlite3_close(db);
    return -1;
  }
  sqlite3_busy_timeout(db, 10000); /* another process is committing */
  /* No checkpoint when the last connection closes: it syncs the file,
   * which would make every program's exit wait for the disk.  The WAL is
   * checkpointed while writing (wal_autocheckpoint) and read by the next
   * process as it is. */
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
  /* The three reads in one snapshot: one by one, they could straddle
   * another process's migration of a new file (application_id read
   * before it, the tables after) and call a moonflow store foreign. */
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  int version = schema_version(db, err, errlen);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (version < 0)
    goto failed;
  if (writable) {
    /* Only now, the file known to be ours (or new): the first writes. */
    /* Fewer checkpoints; a page cache of 2 MB (about SQLite's default):
     * the writer appends to the same few pages (the tables' and indexes'
     * ends) batch after batch, and a bigger cache only kept pages already
     * written (16 MB held ~60 bytes per recorded run until it was full).
     * The writer's own connection checkpoints on a thread instead
     * (store_checkpoint.c), while its WAL grows past the threshold: the
     * WAL file is cut back to 16 MB when it starts over. */
    /* A new file is switched to WAL by the first process to open it; the
     * switch needs the file alone, and SQLite answers busy at once (its
     * busy handler would deadlock) while another process opening it at
     * the same moment reads it: tried again, for up to the busy timeout
     * (the pragmas can be run again). */
    int rc, tries = 0;
    while ((rc = sqlite3_exec(
                db,
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                " PRAGMA cache_size=-2048; PRAGMA wal_autocheckpoint=4000;"
                " PRAGMA journal_size_limit=16777216",
                NULL, NULL, NULL)) == SQLITE_BUSY &&
           tries++ < 2000)
      sqlite3_sleep(5);
    if (rc != SQLITE_OK) {
      fail(db, err, errlen, "cannot set up the store");
      goto failed;
    }
    if (version < MFL_STORE_SCHEMA && migrate(db, err, errlen) != 0)
      goto failed;
    /* A cap on the file's size, in pages (a quota; the tests' full disk). */
    const char *cap = getenv("MOONFLOW_STORE_MAX_PAGES");
    if (cap && *cap) {
      char sql[64];
      snprintf(sql, sizeof sql, "PRAGMA max_page_count=%ld",
               strtol(cap, NULL, 10));
      sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
  } else if (version < MFL_STORE_SCHEMA) {
    snprintf(err, errlen,
             "the store has schema %d (older than %d): run moonflow once "
             "with it to migrate it",
             version, MFL_STORE_SCHEMA);
    goto failed;
  }
  *out = db;
  return 0;
failed:
  sqlite3_close(db);
  return -1;
}

mfl_store *mfl_store_open(const char *path, char *err, size_t errlen) {
  sqlite3 *db;
  if (mfl_store_connect(path, 1, &db, err, errlen) != 0)
    return NULL;
  mfl_store *st = mfl_store_writer_start(db, path, err, errlen);
  if (!st)
    sqlite3_close(db);
  return st;
}

int mfl_store_prepare_list(sqlite3 *db, const mfl_store_statement *list,
                           size_t n, unsigned prepare_flags) {
  for (size_t i = 0; i < n; i++) {
    int rc = sqlite3_prepare_v3(db, list[i].sql, -1, prepare_flags,
                                list[i].stmt, NULL);
    if (rc != SQLITE_OK)
      return rc;
  }
  return SQLITE_OK;
}

void mfl_store_finalize_list(const mfl_store_statement *list, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sqlite3_finalize(*list[i].stmt);
    *list[i].stmt = NULL;
  }
}

int mfl_store_lookup(mfl_store *st, const char *key, double now, char **value,
                     size_t *len, char *err, size_t errlen) {
  sqlite3 *db = mfl_store_reader(st);
  if (!db)
    return 0;
  sqlite3_stmt *stmt;
  if (sqlite3_prepare_v2(db,
                         "SELECT value FROM results WHERE key = ?1 AND "
                         "(expires IS NULL OR expires > ?2) "
                         "ORDER BY run DESC LIMIT 1",
                         -1, &stmt, NULL) != SQLITE_OK)
    return fail(db, err, errlen, "cache lookup");
  sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_double(stmt, 2, now);
  int rc = sqlite3_step(stmt), found = 0;
  if (rc == SQLITE_ROW) {
    size_t n = (size_t)sqlite3_column_bytes(stmt, 0);
    const void *bytes = sqlite3_column_blob(stmt, 0);
    *value = malloc(n ? n : 1);
    if (*value) {
      if (n)
        memcpy(*value, bytes, n);
      *len = n;
      found = 1;
    }
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return fail(db, err, errlen, "cache lookup");
  return found;
}
