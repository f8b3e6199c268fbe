/*
 * moonflow.h -- the public C API of the moonflow engine.
 *
 * The engine owns scheduling: runs, their states, what each run waits on, the
 * tree of runs, cancellation, timers and deadlock detection, all on one libuv
 * loop.  It knows nothing about Lua: a run's body is a set of callbacks
 * (mf_run_ops) that the Lua bindings implement with coroutines, and that a C
 * host or a C test implements with plain functions.
 *
 * Thread rule: every function here must be called on the loop's thread.
 * Errors are returned as 0 or a negative MF_E* code, as libuv does.
 */
#ifndef MOONFLOW_H
#define MOONFLOW_H

/* uv.h needs POSIX declarations (pthread_rwlock_t, ...) that a strict
 * -std=c11 hides unless a feature-test macro asks for them: ask for them
 * here, so that a host needs none.  This works when moonflow.h (or
 * moonflow_lua.h) comes before the first system header. */
#if defined(__STRICT_ANSI__) && !defined(__cplusplus) &&                       \
    !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) &&                    \
    !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE) && !defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stddef.h>
#include <stdint.h>

#if defined(__GLIBC__) && !defined(__USE_XOPEN2K)
/* Too late to ask (a system header came first): say so, rather than let
 * uv.h fail obscurely.  Include moonflow.h first, or compile with
 * -D_POSIX_C_SOURCE=200809L (or -std=gnu11). */
#error "moonflow.h: uv.h needs POSIX.1-2008: include moonflow.h first"
#endif

#include <uv.h>

#include "moonflow_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MF_API __attribute__((visibility("default")))

/* The version this header belongs to: MF_VERSION ("0.1.0"),
 * MF_VERSION_MAJOR/MINOR/PATCH and MF_VERSION_HEX (0x000100), all from
 * moonflow_version.h, which the build generates from the CMake project
 * version.  mf_version() and mf_version_string() give the library's own, at
 * run time (as uv_version() does): a host can check it was linked against
 * the version it was compiled with. */
MF_API unsigned mf_version(void);
MF_API const char *mf_version_string(void);

/* Error codes (negative, like libuv's). */
#define MF_ERRNO_MAP(XX)                                                       \
  XX(EINVAL, -1, "invalid argument")                                           \
  XX(EBUSY, -2, "engine busy: called from inside an engine callback")          \
  XX(EDEADLK, -3, "deadlock: the wait can never finish")                       \
  XX(ENOMEM, -4, "out of memory")                                              \
  XX(ETIMEDOUT, -5, "wait timed out")                                          \
  XX(ESTATE, -6, "operation not allowed in the run's current state")           \
  XX(EINTR, -7, "wait interrupted")                                            \
  XX(EFAILED, -8, "the run did not complete")

enum {
#define XX(name, value, text) MF_##name = value,
  MF_ERRNO_MAP(XX)
#undef XX
};

/* Returns a static description of an MF_E* code. */
MF_API const char *mf_strerror(int code);
/* Returns the static name of an MF_E* code ("EDEADLK"). */
MF_API const char *mf_err_name(int code);

/* {====== States ====== */

/* The type of a state, as in Prefect. */
typedef enum mf_state_type {
  MF_PENDING,
  MF_SCHEDULED,
  MF_RUNNING,
  MF_COMPLETED,
  MF_FAILED,
  MF_CRASHED,
  MF_CANCELLED
} mf_state_type;

/* The name of a state: a finer distinction inside a type. */
typedef enum mf_state_name {
  MF_NAME_PENDING,
  MF_NAME_SCHEDULED,
  MF_NAME_RUNNING,
  MF_NAME_COMPLETED,
  MF_NAME_FAILED,
  MF_NAME_RETRYING,
  MF_NAME_AWAITING_RETRY,
  MF_NAME_NOT_READY,
  MF_NAME_TIMED_OUT,
  MF_NAME_CACHED,
  MF_NAME_CANCELLED,
  MF_NAME_CRASHED
} mf_state_name;

/* One entry of a run's history. */
typedef struct mf_state {
  mf_state_type type;
  mf_state_name name;
  double timestamp; /* seconds since the Unix epoch */
} mf_state;

/* "COMPLETED", "Completed", ... (static strings). */
MF_API const char *mf_state_type_string(mf_state_type type);
MF_API const char *mf_state_name_string(mf_state_name name);

/* }====== */

/* {====== Heap: many small blocks of a few sizes ======
 *
 * An allocator for Lua states (the moonflow program's use it), offered to
 * hosts for theirs; it knows nothing of Lua: blocks of
 * up to MF_HEAP_SMALL_MAX bytes come from MF_HEAP_PAGE-byte pages, each cut
 * into blocks of one size (16-byte steps), bigger ones from malloc, and
 * from MF_HEAP_HUGE_MIN bytes mappings of whole 2 MB huge pages.  The
 * caller says a block's size when it frees or resizes it, as Lua does, so
 * a block has no header.  A page whose blocks are all free is kept for
 * reuse (a few) or given back to malloc.  One heap serves one thread at a
 * time: it has no lock. */

#define MF_HEAP_SMALL_MAX 1024 /* bytes: bigger blocks are malloc's */
#define MF_HEAP_HUGE_MIN                                                       \
  (2u << 20)               /* bytes: from here, mappings of their              \
                              own, backed by huge pages */
#define MF_HEAP_PAGE 65536 /* bytes, each page aligned to its size */

typedef struct mf_heap mf_heap;

typedef struct mf_heap_stats {
  size_t pages;        /* pages held, with blocks or kept empty */
  size_t empty_pages;  /* of which kept empty for reuse */
  size_t small_blocks; /* small blocks handed out and not freed */
  size_t small_bytes;  /* their sizes, as asked */
  size_t regions;      /* 2 MiB regions mapped for pages (0 under ASan,
                          whose pages are malloc's) */
} mf_heap_stats;

/* A new, empty heap; NULL when out of memory.  Its pages come from 2 MiB
 * regions; its first two are backed by 4 KiB pages, touched as they are
 * used, the next ones by huge pages (MADV_HUGEPAGE), if the kernel has
 * them. */
MF_API mf_heap *mf_heap_new(void);
/* Which of the heap's regions, counted from 0 in the order it maps them,
 * are backed by huge pages: the first `first`, and those from `from` on
 * (mf_heap_new's: 0 and 2; UINT_MAX for none).  A first touch of a 4 KiB
 * page costs ~11 us on this project's virtual machines, of a 2 MiB huge
 * page 0.2 to 4 ms at once (the host backs it page by page): huge pages
 * suit memory touched early (a script's first region) or in bulk, not a
 * heap that grows inside a long computation that must yield on time.  The
 * cost: resident memory grows 2 MiB at a time, and such a heap keeps up to
 * 8 empty huge regions rather than unmapping them (making one again is a
 * huge page's first touch). */
MF_API void mf_heap_huge_regions(mf_heap *heap, unsigned first, unsigned from);
/* Frees the heap and every page it holds, blocks in use or not. */
MF_API void mf_heap_delete(mf_heap *heap);
/* Lua's lua_Alloc contract, heap being the mf_heap: block NULL allocates
 * new_size bytes (old_size is then ignored); new_size 0 frees block (of
 * old_size bytes) and returns NULL; otherwise block, of old_size bytes,
 * is resized, its contents kept.  NULL when out of memory (block is then
 * unchanged).  Blocks are aligned to 16 bytes.
 *   lua_State *L = lua_newstate(mf_heap_realloc, mf_heap_new()); */
MF_API void *mf_heap_realloc(void *heap, void *block, size_t old_size,
                             size_t new_size);
MF_API void mf_heap_get_stats(const mf_heap *heap, mf_heap_stats *stats);
/* Whether block, a small block's address (at most MF_HEAP_SMALL_MAX bytes),
 * is one of the heap's: a shift and a load (a bit per 2 MiB region; under
 * AddressSanitizer a walk of its pages).  An allocator that takes over a
 * state which has already allocated tells its blocks from the old
 * allocator's with it. */
MF_API int mf_heap_holds(const mf_heap *heap, const void *block);

/* }====== */

/* {====== Engine ====== */

typedef struct mf_engine mf_engine;
typedef struct mf_run mf_run;

/* Called for an error that belongs to no run (a failing done callback). */
typedef void (*mf_error_fn)(mf_engine *engine, const char *message, void *data);

typedef struct mf_config {
  /* sizeof(mf_config) as the host was compiled: {.size = sizeof(mf_config),
   * ...}.  The engine reads only the fields that fit in it, so a host built
   * against an older header keeps working with a newer library (fields are
   * only ever added at the end).  0 stands for the first layout (loop ..
   * step_only); a smaller non-zero size is MF_EINVAL.  A size larger than the
   * library's struct is accepted when the bytes it does not know are zero, else
   * mf_engine_new returns MF_EINVAL. */
  size_t size;
  /* The loop to run on.  NULL: the engine creates and owns one.  A host's
   * loop is never closed by the engine and mf_engine_step never runs it;
   * mf_engine_run and mf_engine_wait do run it (uv_run) until their work is
   * done, so a host that drives its loop itself calls mf_engine_step.  The
   * engine's idle handle does not keep it alive. */
  uv_loop_t *loop;
  /* Where errors that belong to no run go; NULL prints them on stderr. */
  mf_error_fn on_error;
  void *error_data;
  /* The most steps of runs one scheduler pass (one mf_engine_step) makes;
   * 0: no count, only the 10 ms time slice.  A game host bounds its frame
   * cost with it. */
  unsigned max_steps;
  /* With a host's loop: runs ready to step keep that loop alive too, so
   * that the host's uv_run does not return before they ran (luv's
   * uv.run() sharing the loop wants this; a game host stepping the
   * engine does not). */
  unsigned char keep_loop_alive;
  /* Runs execute only inside mf_engine_step (and the engine's own waits):
   * never from the loop's callbacks, so a frame-based host knows where its
   * frame time goes and max_steps bounds it. */
  unsigned char step_only;
  /* The Lua bindings stop a run that computes without yielding at the end
   * of its time slice and at its timeout, with the help of a watchdog
   * thread that sends the loop thread a real-time signal (SIGRTMIN + 6)
   * only while a run has computed for half a slice (an idle or sleeping
   * host gets none; a system call it makes meanwhile may see EINTR, with
   * SA_RESTART set).  Set to turn that off for this engine: computing runs
   * then keep the loop until they yield. */
  unsigned char no_preemption;
  /* Seconds one scheduler pass (one mf_engine_step) may take at most,
   * checked between steps; 0: 10 ms.  The pass ends before the steps that,
   * at the pace of the last ones, would take it past the budget.  A game
   * host gives the frame's share (a step already executing finishes first:
   * a body computing longer is bounded by the time slice of the Lua
   * bindings). */
  double step_budget;
} mf_config;

/* Creates an engine.  cfg may be NULL for the defaults.  Returns 0 or an
 * MF_E* code; on success *out owns the engine until mf_engine_close. */
MF_API int mf_engine_new(mf_engine **out, const mf_config *cfg);

/* Cancels every run that is not final, closes the engine's handles and, when
 * the engine owns its loop, closes the loop.  No run callback is called after
 * it returns.  Must not be called from inside an engine callback. */
MF_API void mf_engine_close(mf_engine *engine);

MF_API uv_loop_t *mf_engine_loop(const mf_engine *engine);

/* Whether mf_config.no_preemption was set. */
MF_API int mf_engine_preemption_off(const mf_engine *engine);

/* Runs the loop (the host's too) until no run is left that could progress.
 * Parked waits that nothing can ever wake are then woken with
 * MF_WAKE_DEADLOCK.  Returns 0, or
 * MF_EBUSY when called from inside an engine callback. */
MF_API int mf_engine_run(mf_engine *engine);

/* Runs every ready run once without blocking: the step a host with its own
 * frame loop calls.  Returns the number of runs still ready or parked (>= 0),
 * or MF_EBUSY when called from inside an engine callback. */
MF_API int mf_engine_step(mf_engine *engine);

/* Ends the current scheduler pass after the step executing now, so that
 * the loop turns (a body that used up its time slice calls it). */
MF_API void mf_engine_end_pass(mf_engine *engine);
/* When the scheduler pass running now began, on mf_engine_now's clock; a
 * negative number outside a pass.  A body that computes in slices (a map
 * making a million runs) counts its slice from there rather than from its
 * own step, so that the pass ends near its budget and the runs that timers
 * and I/O woke do not wait for a pass and a slice. */
MF_API double mf_engine_pass_started(const mf_engine *engine);
/* Seconds left of the current pass's budget (mf_config.step_budget): 0
 * when it is used up, the whole budget outside a pass.  A start gate that
 * may block a moment waits no longer than this, so that the pass still
 * ends within its budget. */
MF_API double mf_engine_pass_left(const mf_engine *engine);
/* The longest scheduler pass so far, in seconds (the longest the engine
 * kept the loop from its turn), since the engine was made or since the
 * last call with reset non-zero, which starts the count again.  A host
 * checks its frame budget with it; bench/compare.lua measures a long map's
 * passes with it. */
MF_API double mf_engine_longest_pass(mf_engine *engine, int reset);

/* The gate on starting runs: gate(engine, data) is asked before the
 * scheduler takes a run from its queue of runs to start (a new run, a
 * retry, a run that gave up its time slice).  While it answers nonzero, no
 * such run starts; it is asked again a millisecond later.  Runs woken by
 * timers, I/O or other runs go on, and so do done callbacks, timers and
 * the loop.  A consumer of the engine's events that cannot keep up (the
 * bindings' run store, whose writer thread commits in batches) holds new
 * work back this way instead of blocking the loop thread.  NULL: no gate
 * (the default). */
typedef int (*mf_start_gate_fn)(mf_engine *engine, void *data);
MF_API void mf_engine_set_start_gate(mf_engine *engine, mf_start_gate_fn gate,
                                     void *data);

/* For hosts that poll: the loop's backend descriptor (uv_backend_fd), and
 * the milliseconds until the engine has something to do: 0 when runs are
 * ready, -1 when nothing is due. */
MF_API int mf_engine_backend_fd(const mf_engine *engine);
MF_API int mf_engine_timeout(const mf_engine *engine);

/* The one call allowed from any thread: fn(engine, data) will be called on
 * the loop thread, from the loop (all posts are drained per wake-up, in
 * order).  Returns 0, MF_ENOMEM, or MF_ESTATE once the engine is closing.
 * Posting races with mf_engine_close: stop the posting threads first. */
typedef void (*mf_post_fn)(mf_engine *engine, void *data);
MF_API int mf_engine_post(mf_engine *engine, mf_post_fn fn, void *data);

/* Hands a message to the engine's error sink (mf_config.on_error). */
MF_API void mf_engine_report(mf_engine *engine, const char *message);

/* Called once, at the start of mf_engine_close, before any run is
 * cancelled: for a binding that must stop using the engine.  One per
 * engine; a second call replaces the first. */
MF_API void mf_engine_on_close(mf_engine *engine,
                               void (*fn)(mf_engine *engine, void *data),
                               void *data);

/* An observer of every run's states (a run store, a tracer): fn is called
 * on the loop thread when a run is submitted, with its Pending state (its
 * id, parent, name and flags are set then), and on each state it enters
 * after that, the final one included, with the state as recorded in its
 * history (already the run's current state and the last of its history).
 * It is called from inside the engine (a step, a cancel, close):
 * it may read the run (mf_run_id, mf_run_parent, mf_run_name, mf_run_body,
 * mf_run_attempt, mf_run_error_code, ...) but must not change anything the
 * engine owns nor wait.  Runs never submitted are not observed.  One
 * observer per engine; NULL removes it.  With none set, a state costs one
 * branch. */
typedef void (*mf_observe_fn)(mf_run *run, const mf_state *state, void *data);
MF_API void mf_engine_observe(mf_engine *engine, mf_observe_fn fn, void *data);

/* The run whose body is executing now, or NULL. */
MF_API mf_run *mf_engine_current(const mf_engine *engine);

/* Number of runs not yet final. */
MF_API size_t mf_engine_live_runs(const mf_engine *engine);

/* The engine keeps heap's next 2 MiB regions made ahead of need (mapped
 * and touched, backed by huge pages) on libuv's thread pool while heap
 * fills, as it does for its own records' heap, so that the loop thread
 * takes no huge page's first fault (up to 4 ms on this project's virtual
 * machines).  heap is used on the loop thread only (a Lua state's: the
 * program tends its main state's); NULL: none.  Stop before deleting the
 * heap if the engine outlives it. */
MF_API void mf_engine_tend_heap(mf_engine *engine, mf_heap *heap);

/* The stats of the heap that holds the engine's run records and waiters
 * (see Heap): all zero in a build with AddressSanitizer, where they are
 * malloc's. */
MF_API void mf_engine_heap_stats(const mf_engine *engine, mf_heap_stats *stats);

/* Monotonic seconds, high resolution. */
MF_API double mf_engine_now(const mf_engine *engine);

/* Host data, untouched by the engine. */
MF_API void mf_engine_set_data(mf_engine *engine, void *data);
MF_API void *mf_engine_data(const mf_engine *engine);

/* }====== */

/* {====== Runs ====== */

/* Why a body's step callback is called. */
typedef enum mf_step_reason {
  MF_STEP_START,  /* an attempt begins (mf_run_attempt): execute the body */
  MF_STEP_RESUME, /* the park is over; see mf_run_wake_reason */
  MF_STEP_HOOKS,  /* run the hooks of mf_run_hook_point (see mf_run_policy) */
} mf_step_reason;

/* Why a park ended. */
typedef enum mf_wake_reason {
  MF_WAKE_NONE,
  MF_WAKE_DONE,     /* what the run waited for happened (or its sleep ended) */
  MF_WAKE_TIMEOUT,  /* the wait's timeout passed first */
  MF_WAKE_DEADLOCK, /* nothing can ever wake it: the wait is a deadlock */
} mf_wake_reason;

/* The callbacks that make a run's body.  All are called on the loop thread,
 * from the scheduler's frame, never nested inside another step. */
typedef struct mf_run_ops {
  /* Executes or continues the body: an attempt (MF_STEP_START) or its
   * hooks (MF_STEP_HOOKS).  Before returning the body must either end what
   * it was stepped for (mf_run_finish) or park (mf_run_wait, mf_run_sleep,
   * mf_run_wait_children, mf_run_park).  A body that does neither ends
   * CRASHED (mf_run_error_code: MF_ESTATE). */
  void (*step)(mf_run *run, mf_step_reason reason);
  /* The body will not continue what it began: a step was stopped (the run
   * was cancelled or timed out while parked, or the engine closed), or the
   * run became final without its body ever running (NotReady, cancelled
   * while pending).  Release what the body holds for that step, and all of
   * it once mf_run_is_final.  May be NULL. */
  void (*abandon)(mf_run *run);
  /* held = 1 when the engine starts holding the run, 0 when it stops.  A
   * binding keeps the run's host-side data alive while held.  May be NULL. */
  void (*hold)(mf_run *run, int held);
  /* The run's memory is about to be freed.  May be NULL. */
  void (*free)(mf_run *run);
  /* An attempt failed and the policy allows another: non-zero to retry
   * (the retry condition).  Called when the attempt ends -- from inside
   * mf_run_finish when the body ends it, after the body's own work -- with
   * the engine busy: it must not wait, park or drive the loop (MF_ESTATE,
   * MF_EBUSY).  NULL: always retry. */
  int (*retry)(mf_run *run);
} mf_run_ops;

/* Creates a run in state PENDING with body_size bytes of body memory
 * (zeroed) and one reference owned by the caller.  ops may be NULL for a run
 * completed from outside (a C-side future).  Returns NULL when out of
 * memory. */
MF_API mf_run *mf_run_new(mf_engine *engine, const mf_run_ops *ops,
                          size_t body_size);

/* The body memory given to mf_run_new. */
MF_API void *mf_run_body(mf_run *run);

/* References: the run's memory lives while a reference or an engine hold
 * exists.  mf_run_unref frees it at the last one. */
MF_API void mf_run_ref(mf_run *run);
MF_API void mf_run_unref(mf_run *run);
/* The number of references (not engine holds). */
MF_API int mf_run_refcount(const mf_run *run);

/* Flags given before submit. */
enum {
  MF_RUN_FLOW = 1 << 0, /* a flow: it ends after every run started in it */
  MF_RUN_ROOT = 1 << 1, /* has no parent, even if submitted inside a run */
};
MF_API void mf_run_set_flags(mf_run *run, unsigned flags);
MF_API unsigned mf_run_flags(const mf_run *run);

/* The run's display name: "<prefix>-<number>", or the custom name if set.
 * The prefix must outlive the run (it is usually the task's name, held by
 * the binding).  mf_run_set_custom_name copies its argument. */
MF_API void mf_run_set_name(mf_run *run, const char *prefix, uint64_t number);
MF_API int mf_run_set_custom_name(mf_run *run, const char *name);
/* Writes the name into buf (always NUL-terminated, cut to size - 1 bytes);
 * returns the name's full length, as snprintf does. */
MF_API size_t mf_run_name(const mf_run *run, char *buf, size_t size);
MF_API uint64_t mf_run_id(const mf_run *run);

/* Adds a run this one must wait for before it starts.  allow_failure: the
 * run starts even if that input does not complete.  Before submit only. */
MF_API int mf_run_add_input(mf_run *run, mf_run *input, int allow_failure);

/* Schedules the run as a child of parent (NULL: the current run, if any).
 * Returns 0, MF_EDEADLK when an input is a flow that contains the new run
 * (the run is then left unsubmitted), or MF_ESTATE when submitted twice. */
MF_API int mf_run_submit(mf_run *run, mf_run *parent);

/* The run's parent, or NULL. */
MF_API mf_run *mf_run_parent(const mf_run *run);
/* How many runs it started are not final yet (its live children). */
MF_API size_t mf_run_live_children(const mf_run *run);

/* Current state, and the history of every state the run went through. */
MF_API mf_state_type mf_run_state_type(const mf_run *run);
MF_API mf_state_name mf_run_state_name(const mf_run *run);
MF_API size_t mf_run_history(const mf_run *run, const mf_state **out);
MF_API int mf_run_is_final(const mf_run *run);
/* The attempt number, from 1 once running (0 before). */
MF_API int mf_run_attempt(const mf_run *run);

/* For a run that ended NotReady: the upstream run that did not complete. */
MF_API mf_run *mf_run_cause(const mf_run *run);

/* For a run the engine itself failed: the MF_E* code (MF_EDEADLK: its inputs
 * could never finish; MF_ETIMEDOUT: its attempt passed its deadline, set
 * before its body is abandoned; MF_ESTATE: a body that broke the step
 * contract); 0 otherwise. */
MF_API int mf_run_error_code(const mf_run *run);

/* {====== Summaries: finished runs kept in 48 bytes ======
 * A host that holds many finished runs (the runs of a big map whose results
 * it keeps) can give a run's record back and keep its summary instead, then
 * make the record again if it is asked for the run itself. */
typedef struct mf_run_summary {
  uint64_t id, number;     /* mf_run_id; the n of its name */
  const char *name_prefix; /* as given to mf_run_set_name (not owned) */
  double timestamps[3];    /* of its Pending, Running and Completed states */
} mf_run_summary;

/* Fills out and returns 1 when the run can be made again from a summary
 * with nothing lost: it is final and completed at its first attempt
 * (history Pending, Running, Completed), has no custom name, no policy,
 * tags, limits, resources, done callbacks or cause, the engine holds it no
 * more, and the caller's reference is its only one.  Returns 0 otherwise
 * (out untouched).  The caller may then drop its reference. */
MF_API int mf_run_summarize(const mf_run *run, mf_run_summary *out);

/* A record made again from a summary: final, Completed, handled, with the
 * summary's id, name and history, attempt 1, the flags given, no parent;
 * one reference owned by the caller, a zeroed body of body_size bytes.  The
 * engine's observer is not told (it saw these states once).  NULL when out
 * of memory. */
MF_API mf_run *mf_run_from_summary(mf_engine *engine, const mf_run_ops *ops,
                                   size_t body_size, unsigned flags,
                                   const mf_run_summary *summary);

/* }====== */

/*
 * The life of a run, which the engine owns: a run waits for its inputs, then
 * for the slots of its limits, then its attempts begin.  Each attempt is a
 * step of the body (MF_STEP_START) that ends with mf_run_finish; a failed
 * attempt (FAILED or CRASHED, TimedOut included) is retried while the policy
 * allows it and ops->retry agrees: the run goes AwaitingRetry, gives its
 * slots back for the delay, takes them again, goes Retrying.  Once the
 * outcome is decided the hooks of that point run (MF_STEP_HOOKS), then the
 * run becomes final -- a flow only after every run started inside it.
 * States: Pending, Running, (AwaitingRetry, Retrying)*, then final.
 */

/* Hook points: where the body is stepped with MF_STEP_HOOKS. */
enum {
  MF_HOOK_RUNNING = 1 << 0,   /* before each attempt's body */
  MF_HOOK_COMPLETED = 1 << 1, /* once, the run completed */
  MF_HOOK_FAILED = 1 << 2,    /* once, after the last attempt failed */
  MF_HOOK_CANCELLED = 1 << 3, /* once, the run was cancelled once begun */
  MF_HOOK_CRASHED = 1 << 4,   /* once, the last attempt crashed */
};

/* What the engine does with a run's attempts (before submit). */
typedef struct mf_run_policy {
  int retries;                /* attempts after the first failed one */
  const double *retry_delays; /* seconds before retry n: delays[n-1], the
                                 last one repeating; copied */
  size_t retry_delay_count;   /* 0: retries start at once */
  double retry_jitter;        /* 0..1: each delay is drawn from
                                 delay * (1 +- jitter) */
  double timeout;             /* seconds per attempt, from the body's start;
                                 <= 0: none */
  unsigned hooks;             /* MF_HOOK_* points the body has hooks for */
} mf_run_policy;

/* Sets the policy.  Returns 0, MF_EINVAL (a negative count or delay, a
 * jitter outside 0..1, a NaN), MF_ENOMEM, or MF_ESTATE after submit. */
MF_API int mf_run_set_policy(mf_run *run, const mf_run_policy *policy);

/* Ends what the body was stepped for: an attempt, with that outcome (the
 * engine decides on a retry, the hooks, the final state), or the hooks (the
 * outcome is then ignored).  A cancelled run's attempt ends CANCELLED; an
 * attempt that completes after its deadline passed ends FAILED/TimedOut.
 * Also completes an external run (a C future) from outside. */
MF_API void mf_run_finish(mf_run *run, mf_state_type type, mf_state_name name);

/* During MF_STEP_HOOKS: which hooks (MF_HOOK_*); 0 in an attempt. */
MF_API unsigned mf_run_hook_point(const mf_run *run);
/* The outcome of the attempt that ended (for the retry condition and the
 * hooks), the final state once final, else the current state. */
MF_API void mf_run_outcome(const mf_run *run, mf_state_type *type,
                           mf_state_name *name);

/* Whether the attempt's deadline passed (a computing body checks it and
 * stops), and the deadline in monotonic seconds (< 0: none). */
MF_API int mf_run_timed_out(const mf_run *run);
MF_API double mf_run_deadline(const mf_run *run);
/* The body's last word on its deadline, just before it ends its attempt:
 * 1 when the deadline passed (the attempt is to end FAILED/TimedOut, and
 * mf_run_timed_out says so from now on); else 0 and the deadline stops, so
 * that the mf_run_finish that follows stands even if storing the results
 * takes the body past it.  0 outside an attempt. */
MF_API int mf_run_stop_deadline(mf_run *run);

/* Cancels a run that is not final, and every run it started that is not
 * final.  A parked or pending run ends CANCELLED at once (ops->abandon is
 * called); the run that is executing now ends CANCELLED when its body
 * returns.  Returns 1 if the run was not final, 0 otherwise. */
MF_API int mf_run_cancel(mf_run *run);
/* Non-zero once cancellation was requested. */
MF_API int mf_run_cancel_requested(const mf_run *run);
/* Cancels the live children (and their trees) of run, not run itself. */
MF_API void mf_run_cancel_children(mf_run *run);
/* Moves the live children of run to the top level, so that cancelling run
 * leaves them going (a REPL interrupting the chunk that waits on them). */
MF_API void mf_run_release_children(mf_run *run);
/* Cancels every run that is not final; returns how many top-level runs were
 * cancelled.  When names is not NULL, calls it with each one's name. */
MF_API size_t mf_engine_cancel_all(mf_engine *engine,
                                   void (*names)(mf_run *run, void *data),
                                   void *data);

/* Unhandled failures: a run that ends FAILED or NotReady is counted against
 * its nearest enclosing flow (or the engine's root scope) until something
 * handles it (reads its result or state after it is final, ...).  Marking a
 * run before it is final claims its outcome in advance (a caller that will
 * take it): its failure is never counted, nor the upstream failure that
 * leaves it NotReady. */
MF_API void mf_run_mark_handled(mf_run *run);
/* The unhandled failed runs inside a flow (NULL: the root scope), oldest
 * first.  Returns the count; *first (if not NULL) gets the oldest. */
MF_API size_t mf_run_unhandled(mf_engine *engine, mf_run *flow, mf_run **first);
/* Calls fn on each unhandled failed run in the scope, oldest first. */
MF_API void mf_run_each_unhandled(mf_engine *engine, mf_run *flow,
                                  void (*fn)(mf_run *run, void *data),
                                  void *data);
/* Forgets the unhandled failures of the scope (after they were reported). */
MF_API void mf_run_clear_unhandled(mf_engine *engine, mf_run *flow);

/* Done callbacks: called once the run is final, from the scheduler (never
 * inside another run's step).  Returns 0 or MF_ENOMEM; a run already final
 * gets its callback called at the next scheduler pass. */
typedef void (*mf_done_fn)(mf_run *run, void *data);
MF_API int mf_run_on_done(mf_run *run, mf_done_fn fn, void *data);

/* Progress of a top-level flow (a flow inside no other flow): counts of the
 * runs submitted inside it, to any depth, the flow itself not counted. */
typedef struct mf_flow_stats {
  size_t submitted;
  size_t waiting; /* not started: inputs not ready, or not scheduled yet */
  size_t running; /* started, not final (executing or parked) */
  size_t completed, failed, cancelled; /* failed counts NotReady too */
  double started_at; /* mf_engine_now() when the flow was submitted */
} mf_flow_stats;

/* Fills out for a top-level flow; returns MF_EINVAL for any other run. */
MF_API int mf_run_flow_stats(const mf_run *flow, mf_flow_stats *out);

/* Stores up to max live top-level flows in out, oldest first; returns how
 * many there are. */
MF_API size_t mf_engine_top_flows(const mf_engine *engine, mf_run **out,
                                  size_t max);

/* {====== Limits ====== */

typedef struct mf_limit mf_limit;

/* At most capacity runs carrying tag execute at once; the others wait in
 * FIFO order.  Setting it again changes the capacity. */
MF_API int mf_limit_set(mf_engine *engine, const char *tag, size_t capacity);
/* Runs carrying tag start at most per_second times a second, evenly
 * spaced.  Returns MF_EINVAL unless per_second > 0. */
MF_API int mf_rate_limit_set(mf_engine *engine, const char *tag,
                             double per_second);

typedef struct mf_limit_info {
  const char *tag;
  long capacity; /* -1: no concurrency limit (a rate limit only) */
  size_t holders, waiters;
  double per_second; /* 0: no rate limit */
} mf_limit_info;
/* Fills up to max entries; returns how many limits there are. */
MF_API size_t mf_limit_each(const mf_engine *engine, mf_limit_info *out,
                            size_t max);

/* The tags of a run (before submit).  The strings must outlive the run. */
MF_API int mf_run_set_tags(mf_run *run, const char *const *tags, size_t count);

/* }====== */

/* Host data of the run. */
MF_API void mf_run_set_data(mf_run *run, void *data);
MF_API void *mf_run_data(const mf_run *run);

/* }====== */

/* {====== Waiting ====== */

typedef enum mf_wait_mode {
  MF_WAIT_ALL,      /* until every target is final */
  MF_WAIT_ANY,      /* until one target is final */
  MF_WAIT_ALL_FAST, /* until all are final, or one ends not COMPLETED */
} mf_wait_mode;

/* Parks the executing run until the targets are final (per mode), or the
 * timeout (seconds; < 0 for none) passes.  The body must return after it; it
 * is stepped again with MF_STEP_RESUME.  Returns 0, or MF_EDEADLK without
 * parking when a target can be seen never to finish before the waiter
 * (it is the waiter, waits on it, or is a flow containing it). */
MF_API int mf_run_wait(mf_run *run, mf_run *const *targets, size_t count,
                       mf_wait_mode mode, double timeout);

/* Parks the executing run for that many seconds.  0 yields once: the run
 * is ready again at once, behind the runs ready to start; runs that timers
 * and I/O wake meanwhile are served first (the scheduler serves woken runs
 * and runs to start in turn, woken first in each pass). */
MF_API int mf_run_sleep(mf_run *run, double seconds);

/* Parks the executing run until every run it started is final.
 * MF_EDEADLK (not parked) when one of them waits, through its inputs or
 * its own waits, for this run: neither could ever end. */
MF_API int mf_run_wait_children(mf_run *run);

/* Parks the executing run on something outside the engine (I/O, a host's
 * callback) until mf_run_unpark is called with the ticket written to
 * *ticket, or the timeout (seconds; < 0 for none) passes.  The body must
 * return after it; it is stepped again with MF_STEP_RESUME. */
MF_API int mf_run_park(mf_run *run, double timeout, unsigned *ticket);
/* Ends that park (any callback on the loop thread).  Returns 0, or
 * MF_ESTATE when that park is over already (timed out, cancelled, or a
 * later park): a late completion never wakes the wrong wait. */
MF_API int mf_run_unpark(mf_run *run, unsigned ticket);

/* Something a run holds that must be closed when the run ends, however it
 * ends (a handle, a connection, a process): embedded in the owner's
 * struct.  close is called once, on the loop thread, after the run became
 * final (and before that only if the owner detaches it first). */
typedef struct mf_resource {
  void (*close)(struct mf_resource *resource);
  struct mf_resource *prev, *next;
  mf_run *run; /* while attached */
} mf_resource;
/* Attaches the resource to the run (not final).  Returns 0 or MF_ESTATE. */
MF_API int mf_run_attach(mf_run *run, mf_resource *resource);
/* Detaches it (closed by its owner): close will not be called. */
MF_API void mf_resource_detach(mf_resource *resource);

/* Why the last park ended. */
MF_API mf_wake_reason mf_run_wake_reason(const mf_run *run);

/* Waits outside any run: drives the loop (the host's too) until the targets
 * are final (per mode) or the timeout passes.  With no targets it returns at
 * once, except in mode MF_WAIT_ANY with a timeout: a sleep.  Returns 0,
 * MF_ETIMEDOUT, MF_EDEADLK (nothing could ever finish them), MF_EINTR
 * (mf_engine_interrupt), or MF_EBUSY when called from inside an engine callback
 * or a run.  After a scheduler pass that used its budget (or was ended:
 * mf_engine_end_pass) the loop turns before the next pass, so timers due
 * meanwhile are seen before a computing run takes another slice. */
MF_API int mf_engine_wait(mf_engine *engine, mf_run *const *targets,
                          size_t count, mf_wait_mode mode, double timeout);

/* Makes the innermost mf_engine_wait return MF_EINTR (for a SIGINT). */
MF_API void mf_engine_interrupt(mf_engine *engine);

/* }====== */

#ifdef __cplusplus
}
#endif

#endif /* MOONFLOW_H */
