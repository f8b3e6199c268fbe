/*
 * preempt.c -- time slices and timeouts for runs that compute without
 * yielding.
 *
 * A count hook makes Lua trace every VM instruction (CPU-bound code runs
 * twice as slowly), so it is set only on a run that has been computing for
 * a while.  One watchdog thread serves every Lua state of the process: each
 * registers a watch, and each step of a run counts in it.  The watchdog
 * sleeps on a condition variable while no step is going on (an idle process
 * or a sleeping host gets no wake-up and no signal); while steps go on it
 * looks every quarter slice, and when the same step has been executing for
 * half a slice, it sends that state's loop thread a signal (pthread_sigqueue,
 * the watch in the signal's value), and then another only when the hook
 * may be gone (hook_in_place) or every HOOK_RESIGNAL slices.  The handler sets
 * the count hook on the coroutine executing -- the technique of lua.c's Ctrl-C
 * handler: lua_sethook is the one Lua call meant for a signal handler.  The
 * hook then parks a run at the end of its slice, and stops one past its
 * deadline.
 *
 * What a host sees: one real-time signal (MFL_PREEMPT_SIGNAL), delivered
 * only to a thread executing a run that computed for half a slice, with
 * SA_RESTART.  mf.configure{ preempt = false } (or mf_config.no_preemption
 * for a host's engine) turns it off: computing runs then keep the loop
 * until they yield, and their timeouts fire only when they do.
 *
 * The replaced coroutine.resume and coroutine.wrap behave as the standard
 * ones (lcorolib.c); inside a run they note which coroutine executes, so
 * that a loop inside a coroutine of the user's can be stopped too, and they
 * refuse to resume the coroutine of a parked run, which only the scheduler
 * may do (the bridge from callbacks is mf.promise).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binding.h"
#include "store.h"

#define MFL_DEFAULT_SLICE 0.010
#define MFL_PREEMPT_SIGNAL (SIGRTMIN + 6)
/* Slices between two signals while the hook is set (3.2 ms at least:
 * look's resignal). */
#define HOOK_RESIGNAL 8
/* The watchdog's shortest pause between two looks, and so its shortest
 * doze: a slice may be as short as a nanosecond (mf.configure), and a
 * watchdog that looked again at once never let go of its lock. */
#define MIN_PAUSE_NS 100000u
#define MAX_PAUSE_NS 5000000u

/* {====== Watches and the watchdog ====== */

/* One per registered state.  Watches are never freed (a signal sent just
 * before a state closed may still arrive): a closed state's watch is
 * reused by the next one. */
typedef struct mfl_watch {
  _Atomic(mfl_state *) state;  /* NULL: free */
  _Atomic unsigned long steps; /* steps begun */
  atomic_int in_step;          /* a step is executing */
  _Atomic pthread_t thread;    /* the thread of the current step */
  _Atomic uint64_t seen_at;    /* ns: when the watchdog first saw the step */
  _Atomic uint64_t deadline;   /* ns: the step's run's deadline; 0: none */
  _Atomic uint64_t slice_ns;
  /* The hook is set on the coroutine executing (the handler set it, and
   * neither the coroutine nor the step changed since): another signal
   * would do nothing, so one goes only every HOOK_RESIGNAL slices (in case
   * code replaced the hook: debug.sethook).  A run blocked in a C call (a
   * read, os.execute) was signalled every quarter slice, 340 times a
   * second, each signal waking the process; and while every step going
   * on is hooked the watchdog dozes (LOOK_HOOKED) instead of looking
   * every quarter slice, 400 wake-ups a second. */
  atomic_int hook_in_place;
  _Atomic unsigned long signals; /* sent (core.preempt_signals) */
  uint64_t signaled_at;          /* watchdog only: ns of its last signal */
  unsigned long seen_steps;      /* watchdog only: the step it saw last */
  struct mfl_watch *next;
} mfl_watch;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static mfl_watch *watches;
static int watchdog_started;
static atomic_int watchdog_idle;
static atomic_int watchdog_dozing; /* every step going on is hooked */
static uint64_t idle_pause_ns;     /* before going idle: tests only */
static struct sigaction previous_action;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A quarter slice, within [MIN_PAUSE_NS, MAX_PAUSE_NS]: a run's timeout
 * does not wait for a long slice. */
static uint64_t look_pause(uint64_t slice) {
  uint64_t pause = slice / 4;
  return pause < MIN_PAUSE_NS   ? MIN_PAUSE_NS
         : pause > MAX_PAUSE_NS ? MAX_PAUSE_NS
                                : pause;
}

/* What a look found, in order of the attention it asks. */
enum {
  LOOK_IDLE,   /* no step went on since the last look */
  LOOK_HOOKED, /* steps go on, each with its hook set: *resignal_at says
                * when the next signal is due */
  LOOK_BUSY    /* a step to time, or one to hook: a look every quarter
                * slice */
};

/* Looks at every watch (every quarter slice); signals the threads whose
 * step has computed for half a slice.  A step first seen now began, on
 * average, half a look earlier: that is its estimated start. */
static int look(uint64_t now, uint64_t *shortest, uint64_t *resignal_at) {
  int seen = LOOK_IDLE;
  for (mfl_watch *w = watches; w; w = w->next) {
    if (!atomic_load(&w->state))
      continue;
    unsigned long steps = atomic_load(&w->steps);
    uint64_t slice = atomic_load(&w->slice_ns);
    if (slice < *shortest)
      *shortest = slice;
    if (steps != w->seen_steps) {
      w->seen_steps = steps;
      atomic_store(&w->seen_at, now - slice / 8);
      seen = LOOK_BUSY;
    } else if (atomic_load(&w->in_step)) {
      uint64_t deadline = atomic_load(&w->deadline);
      uint64_t resignal =
          HOOK_RESIGNAL * (slice > 4 * MIN_PAUSE_NS ? slice : 4 * MIN_PAUSE_NS);
      if ((now - atomic_load(&w->seen_at) >= slice / 2 ||
           (deadline && now >= deadline)) &&
          (!atomic_load(&w->hook_in_place) ||
           now - w->signaled_at >= resignal)) {
        union sigval value = {.sival_ptr = w};
        if (pthread_sigqueue(atomic_load(&w->thread), MFL_PREEMPT_SIGNAL,
                             value) == 0)
          atomic_fetch_add(&w->signals, 1);
        w->signaled_at = now;
      }
      if (!atomic_load(&w->hook_in_place)) {
        seen = LOOK_BUSY;
      } else {
        /* (a pause at least: a late signal of the step before may have
         * hooked this one before its signal was due) */
        uint64_t at = w->signaled_at + resignal;
        if (at < now + look_pause(slice))
          at = now + look_pause(slice);
        if (seen == LOOK_IDLE)
          seen = LOOK_HOOKED;
        if (at < *resignal_at)
          *resignal_at = at;
      }
    }
  }
  return seen;
}

/* Waits on wake until resignal_at (now_ns's clock) at most, and for a
 * pause at least: the wait lets go of the lock, which a loop thread may
 * be waiting for (mfl_step_began, hook_moved). */
static void doze_until(uint64_t resignal_at) {
  uint64_t now = now_ns();
  if (resignal_at < now + MIN_PAUSE_NS)
    resignal_at = now + MIN_PAUSE_NS;
  struct timespec ts; /* (the condition's clock: CLOCK_REALTIME) */
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + (resignal_at - now);
  ts.tv_sec += (time_t)(ns / 1000000000u);
  ts.tv_nsec = (long)(ns % 1000000000u);
  pthread_cond_timedwait(&wake, &lock, &ts);
}

static void *watchdog(void *unused) {
  (void)unused;
  pthread_mutex_lock(&lock);
  for (;;) {
    uint64_t shortest = (uint64_t)(MFL_DEFAULT_SLICE * 1e9);
    uint64_t resignal_at = UINT64_MAX;
    int seen = look(now_ns(), &shortest, &resignal_at);
    if (seen == LOOK_HOOKED) {
      /* Every step going on has its hook (a run blocked in a C call):
       * nothing to do before the next signal is due, unless a step begins
       * or a hook goes (mfl_step_began, hook_moved wake us).  Dozing
       * first, then one more look, as for idle below. */
      atomic_store(&watchdog_dozing, 1);
      resignal_at = UINT64_MAX;
      if (look(now_ns(), &shortest, &resignal_at) == LOOK_HOOKED)
        doze_until(resignal_at);
      atomic_store(&watchdog_dozing, 0);
      continue;
    }
    if (seen == LOOK_IDLE) {
      if (idle_pause_ns) { /* (MOONFLOW_TEST_WATCHDOG_PAUSE: start_watchdog) */
        pthread_mutex_unlock(&lock);
        struct timespec ts = {(time_t)(idle_pause_ns / 1000000000u),
                              (long)(idle_pause_ns % 1000000000u)};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&lock);
      }
      /* Idle first, then one more look: a step that began after the look
       * above read idle 0 and did not wake us, so it must be seen now; else
       * a run computing forever was never stopped (control_spec; likely
       * the API fuzzer's rare hangs).  Both sides order a write before a
       * read with seq_cst (mfl_step_began): one of them sees the other. */
      atomic_store(&watchdog_idle, 1);
      if (look(now_ns(), &shortest, &resignal_at) != LOOK_IDLE) {
        atomic_store(&watchdog_idle, 0);
        continue;
      }
      pthread_cond_wait(&wake, &lock); /* until a step begins */
      atomic_store(&watchdog_idle, 0);
      continue;
    }
    pthread_mutex_unlock(&lock);
    uint64_t pause = look_pause(shortest);
    struct timespec ts = {(time_t)(pause / 1000000000u),
                          (long)(pause % 1000000000u)};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&lock);
  }
  return NULL;
}

static void on_signal(int sig, siginfo_t *info, void *context);

/* The watchdog thread and the signal handler live in this library: when
 * it is a module Lua loaded, it stays mapped after lua_close's dlclose. */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)pin_library, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

/* fork: the child has no watchdog thread, and the lock may have been held
 * by it; the child starts its own at its next step. */
static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&lock); }
static void after_fork_child(void) {
  pthread_mutex_init(&lock, NULL);
  pthread_cond_init(&wake, NULL);
  watchdog_started = 0;
  atomic_store(&watchdog_idle, 0);
  atomic_store(&watchdog_dozing, 0);
}

static int create_thread(void);

/* Installs the handler and starts the watchdog, once per process. */
static int start_watchdog(void) {
  static int installed;
  if (watchdog_started)
    return 0;
  if (installed)
    return create_thread(); /* after a fork */
  pin_library();
  /* MOONFLOW_TEST_WATCHDOG_PAUSE=ms: the watchdog pauses this long between
   * finding no step and going idle, so that a test can begin a step in
   * that window (control_spec's test of the lost wake-up). */
  const char *pause = getenv("MOONFLOW_TEST_WATCHDOG_PAUSE");
  if (pause && atoi(pause) > 0)
    idle_pause_ns = (uint64_t)atoi(pause) * 1000000u;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(MFL_PREEMPT_SIGNAL, &sa, &previous_action) != 0)
    return -1;
  if (create_thread() != 0) {
    sigaction(MFL_PREEMPT_SIGNAL, &previous_action, NULL);
    return -1;
  }
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
  installed = 1;
  return 0;
}

static int create_thread(void) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* The watchdog never receives the signal itself. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, watchdog, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return -1;
  watchdog_started = 1;
  return 0;
}

static void set_slice(mfl_watch *w, double slice) {
  atomic_store(&w->slice_ns, (uint64_t)(slice * 1e9));
}

/* The coroutine executing changed, or the hook went: the next look signals
 * again if the step computes on. */
static void hook_moved(mfl_state *S) {
  if (S->watch && atomic_exchange(&S->watch->hook_in_place, 0) &&
      atomic_load(&watchdog_dozing)) {
    pthread_mutex_lock(&lock);
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
  }
}

unsigned long mfl_preempt_signals(const mfl_state *S) {
  return S->watch ? atomic_load(&S->watch->signals) : 0;
}

void mfl_preempt_start(mfl_state *S) {
  if (S->slice <= 0)
    S->slice = MFL_DEFAULT_SLICE;
  if (S->watch || mf_engine_preemption_off(S->engine))
    return;
  pthread_mutex_lock(&lock);
  if (start_watchdog() == 0) {
    mfl_watch *w = watches;
    while (w && atomic_load(&w->state))
      w = w->next;
    if (!w && (w = calloc(1, sizeof *w))) {
      w->next = watches;
      watches = w;
    }
    if (w) {
      atomic_store(&w->in_step, 0);
      atomic_store(&w->hook_in_place, 0);
      atomic_store(&w->signals, 0);
      set_slice(w, S->slice);
      atomic_store(&w->state, S);
      S->watch = w;
    }
  }
  pthread_mutex_unlock(&lock);
}

void mfl_preempt_stop(mfl_state *S) {
  mfl_watch *w = S->watch;
  if (!w)
    return;
  pthread_mutex_lock(&lock);
  atomic_store(&w->in_step, 0);
  atomic_store(&w->state, NULL);
  pthread_mutex_unlock(&lock);
  S->watch = NULL;
  if (S->tick_hooked && S->hooked_co) {
    lua_sethook(S->hooked_co, NULL, 0, 0);
    S->tick_hooked = 0;
  }
}

void mfl_preempt_configure(mfl_state *S) {
  if (S->watch)
    set_slice(S->watch, S->slice);
}

/* }====== */

/* {====== Steps ====== */

void mfl_step_began(mfl_state *S, lua_State *co, double deadline) {
  S->running_co = co;
  mfl_watch *w = S->watch;
  if (!w)
    return;
  atomic_store_explicit(&w->hook_in_place, 0, memory_order_relaxed);
  atomic_store_explicit(&w->deadline,
                        deadline >= 0 ? (uint64_t)(deadline * 1e9) : 0,
                        memory_order_relaxed);
  if (!watchdog_started) { /* a child process after fork */
    pthread_mutex_lock(&lock);
    start_watchdog();
    pthread_mutex_unlock(&lock);
  }
  atomic_store_explicit(&w->thread, pthread_self(), memory_order_relaxed);
  /* seq_cst, as the watchdog's going idle (watchdog): the count written
   * before idle is read (on x86 as cheap as relaxed: a locked add). */
  atomic_fetch_add_explicit(&w->steps, 1, memory_order_seq_cst);
  atomic_store_explicit(&w->in_step, 1, memory_order_release);
  if (atomic_load_explicit(&watchdog_idle, memory_order_seq_cst) ||
      atomic_load_explicit(&watchdog_dozing, memory_order_seq_cst)) {
    pthread_mutex_lock(&lock); /* once per busy period, not per step */
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
  }
}

/* After a step: the hook goes, so the next run on this coroutine runs at
 * full speed. */
void mfl_step_ended(mfl_state *S, lua_State *co) {
  mfl_restore_alloc(S, co);
  S->running_co = NULL;
  if (S->watch) {
    atomic_store_explicit(&S->watch->in_step, 0, memory_order_release);
    atomic_store_explicit(&S->watch->hook_in_place, 0, memory_order_relaxed);
  }
  atomic_signal_fence(memory_order_seq_cst);
  if (S->tick_hooked) {
    lua_sethook(S->hooked_co, NULL, 0, 0);
    S->tick_hooked = 0;
  }
}

/* }====== */

/* {====== The hook ====== */

static mfl_state *hook_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state);
  mfl_state *S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S && !S->closed ? S : NULL;
}

/* {====== An error no handler can catch ======
 *
 * Where a run past its deadline cannot yield (a C call, an xpcall message
 * handler), raising an error is no use: Lua calls the message handler for
 * it with hooks off, and a handler that loops would then never be stopped.
 * A memory error is thrown without calling any message handler, so the
 * hook makes the allocator fail for one allocation's time: the error
 * unwinds to the nearest pcall or to the run's resume, and the allocator is
 * put back at the next hook call or when the step ends. */

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mfl_state *S = ud;
  if (nsize == 0) /* frees still free */
    return S->saved_alloc(S->saved_alloc_data, ptr, osize, 0);
  return NULL;
}

void mfl_restore_alloc(mfl_state *S, lua_State *L) {
  if (!S->alloc_failing)
    return;
  lua_setallocf(L, S->saved_alloc, S->saved_alloc_data);
  S->alloc_failing = 0;
}

static void throw_past_handlers(mfl_state *S, lua_State *L) {
  S->saved_alloc = lua_getallocf(L, &S->saved_alloc_data);
  lua_setallocf(L, failing_alloc, S);
  S->alloc_failing = 1;
  lua_newuserdatauv(L, 64, 0); /* throws LUA_ERRMEM */
}

/* }====== */

static void unhook(mfl_state *S, lua_State *L) {
  lua_sethook(L, NULL, 0, 0);
  if (S->hooked_co == L)
    S->tick_hooked = 0;
  hook_moved(S);
}

/*
 * A run past its deadline is stopped: on its own coroutine, where it can
 * yield, by a yield it never comes back from (a pcall cannot catch it);
 * elsewhere (a C call that cannot yield, a coroutine of the user's, an
 * xpcall message handler) by an error no message handler sees, again at
 * every check, until it reaches code that can be stopped (its result is
 * then TimedOut).  A run that computed for its slice
 * is parked (a yield from the hook, which Lua allows for count hooks).
 */
static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mfl_state *S = hook_state(L);
  if (!S)
    return;
  mfl_restore_alloc(S, L);
  mf_run *run = mf_engine_current(S->engine);
  if (!run) {
    unhook(S, L);
    return;
  }
  mfl_run *lr = mf_run_body(run);
  int own = lr->co == L && S->callback_depth == 0;
  if (mf_run_timed_out(run)) {
    if (own && lua_isyieldable(L)) {
      lr->yield = MFL_YIELD_STOPPED;
      mf_engine_end_pass(S->engine);
      lua_yield(L, 0);
      return;
    }
    throw_past_handlers(S, L);
    return;
  }
  if (!own) {
    /* A coroutine of the user's: only its own resumer can park it.  With
     * no deadline to watch the hook goes (it slows every instruction); the
     * watchdog puts it back if need be. */
    if (mf_run_deadline(run) < 0)
      unhook(S, L);
    return;
  }
  /* seen_at: the step's estimated start (see look). */
  mfl_watch *w = S->watch;
  uint64_t slice = w ? atomic_load(&w->slice_ns) : 0;
  if (w && now_ns() - atomic_load(&w->seen_at) >= slice && lua_isyieldable(L)) {
    mf_engine_end_pass(S->engine); /* let timers and I/O have their turn */
    lr->yield = MFL_YIELD_PREEMPTED;
    lua_yield(L, 0);
  }
}

static void on_signal(int sig, siginfo_t *info, void *context) {
  if (info->si_code != SI_QUEUE || !info->si_value.sival_ptr) {
    /* Not the watchdog's: whoever had the signal before gets it. */
    if ((previous_action.sa_flags & SA_SIGINFO) && previous_action.sa_sigaction)
      previous_action.sa_sigaction(sig, info, context);
    else if (previous_action.sa_handler != SIG_DFL &&
             previous_action.sa_handler != SIG_IGN &&
             previous_action.sa_handler)
      previous_action.sa_handler(sig);
    return;
  }
  mfl_watch *w = info->si_value.sival_ptr;
  mfl_state *S = atomic_load(&w->state);
  if (!S || !atomic_load(&w->in_step))
    return;
  lua_State *co = S->running_co;
  if (!co)
    return;
  S->hooked_co = co;
  S->tick_hooked = 1;
  lua_sethook(co, hook, LUA_MASKCOUNT, 100);
  atomic_store(&w->hook_in_place, 1);
}

/* }====== */

/* {====== Slices of C calls ======
 *
 * The hook acts only between VM instructions, so a C call that computes
 * long (map making its runs) holds the loop until it returns.  Such a call
 * asks, between chunks of its work, whether its run should give the loop
 * a turn, and then yields as the hook would, with a continuation. */

mf_run *mfl_slice_run(lua_State *L, mfl_state *S) {
  if (!S->watch) /* preemption off: computing runs keep the loop */
    return NULL;
  mf_run *run = mfl_current_run(L, S);
  return run && lua_isyieldable(L) ? run : NULL;
}

/* Where the current step's slice began: the start of the scheduler pass
 * it runs in (mf_engine_pass_started), so that the slicing calls a step
 * makes one after the other (map's check, its making, a collection) share
 * one slice, and share it with the runs the pass ran before. */
uint64_t mfl_slice_clock(mfl_state *S) {
  uint64_t now = now_ns();
  mfl_watch *w = S->watch;
  if (!w)
    return now;
  S->slice_look = now; /* a sliced call's work starts here */
  unsigned long step = atomic_load_explicit(&w->steps, memory_order_relaxed);
  if (S->slice_step != step) {
    S->slice_step = step;
    S->slice_since = now;
    S->slice_chunk = 0;
    /* (the pass began earlier: what it ran counts, on the same clock) */
    double pass = S->engine ? mf_engine_pass_started(S->engine) : -1;
    if (pass >= 0 && (uint64_t)(pass * 1e9) < now)
      S->slice_since = (uint64_t)(pass * 1e9);
  }
  return S->slice_since;
}

int mfl_slice_over(mfl_state *S, lua_State *L, mf_run *run, uint64_t since) {
  mfl_watch *w = S->watch;
  if (!w)
    return 0;
  if (mf_run_timed_out(run))
    return 1;
  /* The store's writer is behind: the slice ends, and the run waits at the
   * engine's start gate until the writer has caught up (store_lua.c). */
  if (S->store && mfl_store_busy(S->store))
    return 1;
  uint64_t now = now_ns(), slice = atomic_load(&w->slice_ns);
  /* The work up to the next look is expected to take as long as the
   * longest work between two looks in this step: the slice ends before
   * that work would take it past its end, not after (the loop's longest
   * wait for a turn is the slice, bench/compare.lua --stall, and not the
   * slice and a chunk).  The longest, not the last: the same chunk of work
   * varies (64 runs made took 0.05-0.2 ms, more where they met fresh
   * pages, and now and then 1-4 ms, mostly while the thread was off its
   * CPU), and the last chunk's time alone let passes run 0.1-0.2 ms
   * over. */
  uint64_t last =
      S->slice_look >= since && S->slice_look <= now ? S->slice_look : now;
  S->slice_look = now;
  if (now - last > S->slice_chunk)
    S->slice_chunk = now - last;
  if (now - since + S->slice_chunk >= slice)
    return 1;
  /* The watchdog saw this step compute for half a slice (it set the hook):
   * its estimate of the step's start counts what ran before the call. */
  return S->tick_hooked && S->hooked_co == L &&
         now - atomic_load(&w->seen_at) >= slice;
}

int mfl_yield_slice(lua_State *L, mfl_state *S, mf_run *run, lua_KContext ctx,
                    lua_KFunction k) {
  mfl_run *lr = mf_run_body(run);
  lr->yield = mf_run_timed_out(run) ? MFL_YIELD_STOPPED : MFL_YIELD_PREEMPTED;
  mf_engine_end_pass(S->engine); /* let timers and I/O have their turn */
  return lua_yieldk(L, 0, ctx, k);
}

/* }====== */

/* {====== coroutine.resume and coroutine.wrap ====== */

static void check_not_parked_run(lua_State *L, mfl_state *S, int idx) {
  if (!S)
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->threads_ref);
  lua_pushvalue(L, idx);
  int parked = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  if (parked)
    mfl_raise(L, "UsageError",
              "this coroutine is a parked run's: only moonflow's scheduler "
              "resumes it (to wake a run from a callback, settle a promise: "
              "mf.promise)");
}

static int resume_tracked(lua_State *L, lua_State *co, int narg) {
  mfl_state *S = hook_state(L);
  lua_State *outer = S ? S->running_co : NULL;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  if (outer) {
    S->running_co = co;
    hook_moved(S);
  }
  int nres, status = lua_resume(co, L, narg, &nres);
  if (outer) {
    if (S->tick_hooked && S->hooked_co == co)
      unhook(S, co); /* the outer one gets it at the next signal */
    S->running_co = outer;
    hook_moved(S);
  }
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1); /* the error */
  return -1;
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  check_not_parked_run(L, hook_state(L), 1);
  int r = resume_tracked(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_wrapped(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = resume_tracked(L, co, lua_gettop(L));
  if (r >= 0)
    return r;
  int status = lua_status(co);
  if (status != LUA_OK && status != LUA_YIELD) {
    mfl_closethread(co, L); /* close its variables, as lcorolib does */
    if (lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
  }
  return lua_error(L);
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_wrapped, 1);
  return 1;
}

/* coroutine.close: the standard one, after the parked-run check. */
static int co_close(lua_State *L) {
  check_not_parked_run(L, hook_state(L), 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

void mfl_open_preempt(lua_State *L) {
  lua_getglobal(L, "coroutine");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushcfunction(L, co_resume);
  lua_setfield(L, -2, "resume");
  lua_pushcfunction(L, co_wrap);
  lua_setfield(L, -2, "wrap");
  if (lua_getfield(L, -1, "close") == LUA_TFUNCTION) {
    lua_pushcclosure(L, co_close, 1);
    lua_setfield(L, -2, "close");
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* }====== */
