/*
 * store.h -- the run store: an SQLite file (WAL mode, versioned schema)
 * recording every run, its states, logs, errors and cached results.
 *
 * The loop thread never writes to SQLite: it hands compact events (strings
 * copied) to a writer thread through a bounded ring, and the writer
 * commits them in batches, one transaction per batch.  Queue policy: the
 * hot path blocks only when the ring is full, until the writer made room
 * (back-pressure: no event is ever dropped while the store works, and a
 * program that makes runs faster than SQLite records them runs at the
 * store's pace).  Once SQLite fails (a full or read-only disk, a corrupt
 * file), the store reports one error, stops writing and discards what comes
 * after: runs go on.
 *
 * Reading (cache lookups, the CLI) uses a second connection on the loop
 * thread: WAL readers never wait for the writer.
 */
#ifndef MFL_STORE_H
#define MFL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "moonflow.h"

#define MFL_INTERNAL_STORE __attribute__((visibility("hidden")))

/* The schema version this build writes; older files are migrated. */
#define MFL_STORE_SCHEMA 2
/* PRAGMA application_id of a moonflow store ("MFLW"). */
#define MFL_STORE_APP_ID 0x4d464c57

typedef struct mfl_store mfl_store;

/* What a run's submit records. */
typedef struct mfl_store_submit {
  uint64_t id, parent; /* the engine's ids in this process; parent 0: none */
  int is_flow;
  double time;
  const char *name, *task, *tags, *params; /* copied; NULL: none */
  /* Instead of task and tags: "task\0tags\0" from mfl_store_intern (not
   * copied); NULL: none.  name_len and params_len: their strlen, or
   * (size_t)-1 when not known. */
  const char *shared;
  size_t name_len, params_len;
} mfl_store_submit;

/* A cached or persisted result, written with the Completed state. */
typedef struct mfl_store_result {
  char *key;   /* owned by the store once given; NULL: persisted only */
  char *value; /* encoded (codec.h), owned once given */
  size_t len;
  double expires; /* wall seconds; 0: never */
} mfl_store_result;

/* Opens (creating or migrating) the store at path: ":memory:" is a
 * private database.  Returns NULL with a message in err for a file that is
 * not a moonflow store (left untouched), a newer schema, or an SQLite
 * error. */
MFL_INTERNAL_STORE mfl_store *mfl_store_open(const char *path, char *err,
                                             size_t errlen);
/* Flushes what is queued, stops the writer, closes the file. */
MFL_INTERNAL_STORE void mfl_store_close(mfl_store *st);
/* Waits until every event queued so far is committed (or discarded
 * after an error). */
MFL_INTERNAL_STORE void mfl_store_flush(mfl_store *st);
MFL_INTERNAL_STORE const char *mfl_store_path(const mfl_store *st);
/* Whether the ring is more than 7/8 full: the writer is behind (a batch
 * being committed, a checkpoint).  The loop thread holds new work back
 * then (the engine's start gate, a map's slices) rather than fill the ring
 * and wait for room, which stalls the loop. */
MFL_INTERNAL_STORE int mfl_store_busy(const mfl_store *st);
/* Waits at most ns nanoseconds for the ring to be no longer busy (a writer
 * that is merely behind catches up in less); returns whether it is. */
MFL_INTERNAL_STORE int mfl_store_wait_room(mfl_store *st, uint64_t ns);

/* The store's own copy of len bytes at text (a task's "task\0tags\0", the
 * same for all its runs: kept once rather than copied with every submit),
 * valid until the store closes; NULL when the store keeps no more
 * (1024 of them).  mfl_store_serial tells one opened store from another,
 * for a cache of these pointers (a store's address may be reused). */
MFL_INTERNAL_STORE const char *mfl_store_intern(mfl_store *st, const char *text,
                                                size_t len);
MFL_INTERNAL_STORE uint64_t mfl_store_serial(const mfl_store *st);

/* Events, from the loop thread. */
MFL_INTERNAL_STORE void mfl_store_submit_run(mfl_store *st,
                                             const mfl_store_submit *s);
/* message and traceback are copied (NULL: none); result (NULL: none) is
 * taken over. */
MFL_INTERNAL_STORE void mfl_store_state(mfl_store *st, uint64_t id,
                                        const mf_state *state, int attempt,
                                        const char *message,
                                        const char *traceback,
                                        mfl_store_result *result);
/* The run was named (task_run_name, after its submit). */
MFL_INTERNAL_STORE void mfl_store_rename(mfl_store *st, uint64_t id,
                                         const char *name);
MFL_INTERNAL_STORE void mfl_store_log(mfl_store *st, uint64_t id, int level,
                                      double time, const char *message);

/* The newest unexpired result under key: 1 with a malloc'd copy in
 * *value, 0 when none, -1 on an SQLite error (message in err). */
MFL_INTERNAL_STORE int mfl_store_lookup(mfl_store *st, const char *key,
                                        double now, char **value, size_t *len,
                                        char *err, size_t errlen);

/* Counters and the error that stopped writing (NULL: none). */
typedef struct mfl_store_stats {
  uint64_t events, commits, waits; /* waits: the ring was full */
  uint64_t checkpoints;            /* run by the checkpoint thread */
  double writer_cpu;               /* seconds the writer thread computed */
  uint64_t pruned;                 /* old runs deleted (store_prune.c) */
  int pruning;                     /* old runs are still being looked for */
  double keep;                     /* seconds runs are kept; 0: forever */
  const char *error;
} mfl_store_stats;
MFL_INTERNAL_STORE void mfl_store_get_stats(mfl_store *st,
                                            mfl_store_stats *out);

/* Internals shared by store.c and store_writer.c. */
struct sqlite3;
/* Opens a connection and checks (or creates, or migrates) the schema;
 * returns 0 or -1 with err set. */
MFL_INTERNAL_STORE int mfl_store_connect(const char *path, int writable,
                                         struct sqlite3 **out, char *err,
                                         size_t errlen);
MFL_INTERNAL_STORE mfl_store *mfl_store_writer_start(struct sqlite3 *db,
                                                     const char *path,
                                                     char *err, size_t errlen);
MFL_INTERNAL_STORE struct sqlite3 *mfl_store_reader(mfl_store *st);

/* The writer connection's checkpoints, on a thread of their own
 * (store_checkpoint.c).  start replaces the connection's automatic
 * checkpoint (NULL when out of memory: SQLite's stays); stop, after the
 * writer's last commit, interrupts a checkpoint under way and ends the
 * thread.  done: the checkpoints run so far. */
typedef struct mfl_checkpointer mfl_checkpointer;
MFL_INTERNAL_STORE mfl_checkpointer *
mfl_checkpointer_start(struct sqlite3 *writer, const char *path);
MFL_INTERNAL_STORE void mfl_checkpointer_stop(mfl_checkpointer *c,
                                              struct sqlite3 *writer);
MFL_INTERNAL_STORE uint64_t mfl_checkpointer_done(mfl_checkpointer *c);

/* A statement of a list a module prepares at once and keeps (the
 * writer's, the pruning's). */
struct sqlite3_stmt;
typedef struct mfl_store_statement {
  const char *sql;
  struct sqlite3_stmt **stmt;
} mfl_store_statement;
/* Prepares the n statements of list (prepare_flags: sqlite3_prepare_v3's);
 * returns SQLITE_OK, or the failure's code (sqlite3_errmsg says why; the
 * list is to be finalized). */
MFL_INTERNAL_STORE int mfl_store_prepare_list(struct sqlite3 *db,
                                              const mfl_store_statement *list,
                                              size_t n, unsigned prepare_flags);
/* Finalizes the list's statements (NULL ones too) and sets them to NULL. */
MFL_INTERNAL_STORE void mfl_store_finalize_list(const mfl_store_statement *list,
                                                size_t n);

/* store_prune.c: deleting the runs older than the store's keep. */
#define MFL_STORE_KEEP_DEFAULT (7 * 86400.0) /* a week */
/* MOONFLOW_STORE_KEEP's text ("7d", "12h", "30m", "90s", "forever"; NULL
 * or empty: the default) in seconds; 0: forever; -1: not a duration. */
MFL_INTERNAL_STORE double mfl_store_parse_keep(const char *text);
typedef struct mfl_prune mfl_prune;
/* A pruning of what was created before now - keep (wall seconds), with
 * statements prepared on db; NULL on an SQLite error or out of memory. */
MFL_INTERNAL_STORE mfl_prune *mfl_prune_new(struct sqlite3 *db, double now,
                                            double keep);
/* One transaction of it: 1 when there is more, 0 when done, -1 on an
 * SQLite error (rolled back). */
MFL_INTERNAL_STORE int mfl_prune_step(struct sqlite3 *db, mfl_prune *p);
MFL_INTERNAL_STORE uint64_t mfl_prune_deleted(const mfl_prune *p);
/* The message of the step that failed, its SQLite code in *code. */
MFL_INTERNAL_STORE const char *mfl_prune_error(const mfl_prune *p, int *code);
MFL_INTERNAL_STORE void mfl_prune_free(mfl_prune *p);

#endif
