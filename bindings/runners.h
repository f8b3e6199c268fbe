/*
 * runners.h -- task runners that copy (threads, processes): what the main
 * side (runners.c), the transports (runners_threads.c, runners_procs.c) and
 * the worker side (worker.c) share.
 *
 * A run on such a runner stays an ordinary Lua run of the main state: its
 * life (states, attempts, retries, timeouts, limits, hooks) is the main
 * engine's.  Only its attempt's body is remote: core.remote_call (called
 * by lua/moonflow/runners.lua) encodes the context, the function and the
 * arguments into parts, hands them to a worker as a job and parks the run
 * until the answer; a run cancelled or timed out while parked abandons the
 * job, which tells the worker to stop it.
 *
 * Messages are lists of byte strings ("parts": u32 count, then for each
 * u32 length and bytes, little-endian), so that the thread transport
 * hands over one malloc'ed buffer and the process transport writes it as
 * a frame's payload.
 */
#ifndef MFL_RUNNERS_H
#define MFL_RUNNERS_H

#include "binding.h"
#include "codec.h"

/* How a job ended, as a worker answers (and MFLR_LOST: the worker died). */
enum {
  MFLR_COMPLETED = 0, /* parts: the results */
  MFLR_FAILED,        /* parts: { err, traceback } */
  MFLR_CRASHED,       /* parts: { err, traceback } (out of memory) */
  MFLR_CANCELLED,     /* no parts */
  MFLR_LOST,          /* main side only: the worker died; a message */
  MFLR_NSTATUS
};

typedef struct mflr_runner mflr_runner;
typedef struct mflr_job mflr_job;

/* What a transport does; every call on the main loop's thread. */
typedef struct mflr_transport {
  const char *kind; /* "threads", "processes" */
  /* Hands the job (its request in job->request) to one of the workers,
   * setting job->worker; returns 0, or -1 with a message in job->message
   * (the job is then lost). */
  int (*send)(mflr_runner *r, mflr_job *job);
  /* Asks the job's worker to stop that job (it answers CANCELLED). */
  void (*cancel)(mflr_runner *r, mflr_job *job);
  /* Jobs are in flight (1) or none (0): keep the loop alive or not. */
  void (*keepalive)(mflr_runner *r, int on);
  /* Stops every worker now; afterwards no answer arrives.  The transport
   * calls mflr_release when its handles are closed. */
  void (*shutdown)(mflr_runner *r);
  /* runner:_debug(what, ...) for tests (the stack: runner, what, ...);
   * may be NULL. */
  int (*debug)(lua_State *L, mflr_runner *r);
} mflr_transport;

/* A job: one attempt's body on a worker.  The run parks (mf_run_park) until
 * the answer, which unparks it; a park abandoned (the run cancelled or
 * timed out) tells the worker to stop the job.  Held by the runner while in
 * flight and by the attempt while it may read the answer. */
struct mflr_job {
  mf_run *run;         /* parked on it; NULL once the attempt let go */
  mflr_runner *runner; /* while in flight (in the runner's map) */
  uint64_t id;
  mflr_job *hnext; /* the runner's map of jobs in flight */
  int worker;      /* index of the worker it went to */
  int refs;        /* the runner's, the attempt's */
  unsigned ticket; /* of the run's park */
  unsigned char sent, done;
  unsigned char status; /* MFLR_*, once done */
  double timeout;       /* seconds left of the run's attempt; <= 0: none */
  mfl_buffer request;   /* parts, until sent */
  mfl_buffer answer;    /* parts, once done */
  char *message;        /* MFLR_LOST: why */
};

struct mflr_runner {
  const mflr_transport *t;
  mfl_state *S;
  uv_loop_t *loop;
  int workers;
  int closed;        /* shut down: nothing is sent any more */
  int refs;          /* the Runner userdata and the transport's open handles */
  mfl_buffer config; /* a codec message: path, cpath, slice, preempt */
  mfl_buffer setup;  /* a message (core.pack) of the setup function, or
                        empty */
  /* Jobs in flight by id: chained buckets. */
  mflr_job **buckets;
  size_t nbuckets, count;
  uint64_t next_id;
  size_t *load; /* jobs in flight per worker */
  void *impl;   /* the transport's */
};

/* {====== Messages (runners_msg.c) ====== */

/* Starts an empty list of parts; appends a part.  0, or -1 when memory
 * ran out. */
int mflr_parts_begin(mfl_buffer *b);
int mflr_parts_add(mfl_buffer *b, const char *bytes, size_t len);

/* Reading parts in order. */
typedef struct mflr_parts {
  const char *p;
  size_t left;
  int count; /* parts left */
} mflr_parts;
/* 0, or -1 when the bytes are not a list of parts. */
int mflr_parts_open(mflr_parts *it, const char *bytes, size_t len);
/* The next part: 1, or 0 when none is left. */
int mflr_parts_next(mflr_parts *it, const char **part, size_t *len);
/* Pushes each part as a string; returns how many, or -1 (nothing pushed)
 * when the bytes are not parts. */
int mflr_parts_push(lua_State *L, const char *bytes, size_t len);

/* A message: its values, one part each (mflr_put_value, named for errors:
 * "args[1].conn"), then the Tasks they met (mflr_put_tasks); read back in
 * the same order.  mflr_session_reset comes first.  Errors are pushed:
 * MFL_CODEC_* codes for values, -1 for Tasks. */
void mflr_session_reset(lua_State *L);
int mflr_put_value(lua_State *L, int idx, mfl_buffer *parts, const char *root);
int mflr_put_tasks(lua_State *L, mfl_buffer *parts);
int mflr_get_value(lua_State *L, mflr_parts *it); /* pushes it */
int mflr_get_tasks(lua_State *L, mflr_parts *it); /* the parts left */
void mflr_open_msg(lua_State *L);

/* }====== */

/* {====== Main side (runners.c) ====== */

/* A worker answered job id with status and the answer's parts (taken:
 * the buffer is left empty).  Returns 0, or -1 when no job of that worker
 * has that id (a corrupt answer). */
int mflr_answer(mflr_runner *r, int worker, uint64_t id, int status,
                mfl_buffer *answer);
/* The worker died: each of its jobs ends lost, with the message. */
void mflr_worker_lost(mflr_runner *r, int worker, const char *message);
/* Drops a reference (the transport's handles closed); frees at the last. */
void mflr_release(mflr_runner *r);
/* A line on the log (stderr) about the runner: an error no run owns. */
void mflr_log(mflr_runner *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Transports: set r->t and r->impl; 0, or -1 when memory ran out. */
int mflr_threads_init(mflr_runner *r);
int mflr_procs_init(mflr_runner *r);

/* }====== */

/* {====== Worker side (worker.c) ====== */

/* Where a worker's answers go. */
typedef struct mflw_host {
  void (*answer)(struct mflw_host *host, uint64_t id, int status,
                 mfl_buffer *parts);
} mflw_host;

/* Makes L (the module open) a worker: its answers go to host, config and
 * setup as in mflr_runner (setup_len 0: none).  The setup runs now; its
 * error, if any, fails every job.  Returns 0, or -1 with the error on top
 * of L. */
int mflw_start(lua_State *L, mflw_host *host, const char *config,
               size_t config_len, const char *setup, size_t setup_len);
/* A job: runs it as a run of L's engine; the answer comes through the
 * host once it is final. */
void mflw_job(lua_State *L, uint64_t id, double timeout, const char *parts,
              size_t len);
void mflw_cancel(lua_State *L, uint64_t id);
/* Cancels every run of L's engine. */
void mflw_stop(lua_State *L);
/* A new Lua state with the standard libraries and moonflow open, or NULL
 * (the error in *err, static). */
lua_State *mflw_new_state(const char **err);
/* core.worker_answer, core.is_worker (in every state). */
void mflw_open(lua_State *L);

/* runners_procs.c: `moonflow --worker`: L (moonflow open) serves the
 * parent on descriptor fd until it closes; returns the exit status. */
int mflw_process_main(lua_State *L, int fd);
/* Set by the moonflow program: it is its own workers' program. */
extern int mflw_is_program;

/* }====== */

#endif
