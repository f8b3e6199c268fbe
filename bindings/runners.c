/*
 * runners.c -- the main side of task runners that copy: the Runner object,
 * choosing a run's runner, and the job a remote attempt parks on.
 *
 * The attempt encodes its run's context, function and arguments, hands
 * them to a worker as a job and parks the run (mf_run_park) until the
 * worker's answer unparks it.  A run cancelled or timed out while parked is
 * abandoned by the engine: the job then tells the worker to stop it.  The
 * runner keeps every job in flight in a map by id until the answer comes: a
 * late answer for an abandoned job is dropped, an answer for an id it never
 * sent is a corrupt one.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "runners.h"

static const char key_default, key_attempt, key_fn_cache;

/* The Runner userdata: the coroutine runner has no C side. */
typedef struct runner_box {
  mflr_runner *r; /* NULL: coroutines */
  mfl_state *S;   /* (mfl_note_box) */
} runner_box;

/* {====== Jobs in flight ====== */

static size_t bucket_of(const mflr_runner *r, uint64_t id) {
  return (size_t)(id * 0x9e3779b97f4a7c15u >> 20) & (r->nbuckets - 1);
}

static int map_grow(mflr_runner *r) {
  size_t n = r->nbuckets ? r->nbuckets * 2 : 64;
  mflr_job **b = calloc(n, sizeof *b);
  if (!b)
    return -1;
  mflr_job **old = r->buckets;
  size_t old_n = r->nbuckets;
  r->buckets = b;
  r->nbuckets = n;
  for (size_t i = 0; i < old_n; i++)
    for (mflr_job *j = old[i], *next; j; j = next) {
      next = j->hnext;
      size_t at = bucket_of(r, j->id);
      j->hnext = b[at];
      b[at] = j;
    }
  free(old);
  return 0;
}

static int map_add(mflr_runner *r, mflr_job *job) {
  if (r->count + 1 > r->nbuckets && map_grow(r) != 0)
    return -1;
  size_t at = bucket_of(r, job->id);
  job->hnext = r->buckets[at];
  r->buckets[at] = job;
  r->count++;
  return 0;
}

static mflr_job *map_remove(mflr_runner *r, uint64_t id, int worker) {
  if (!r->nbuckets)
    return NULL;
  for (mflr_job **p = &r->buckets[bucket_of(r, id)]; *p; p = &(*p)->hnext) {
    mflr_job *job = *p;
    if (job->id == id && (worker < 0 || job->worker == worker)) {
      *p = job->hnext;
      job->hnext = NULL;
      r->count--;
      return job;
    }
  }
  return NULL;
}

static void job_release(mflr_job *job) {
  if (--job->refs > 0)
    return;
  mfl_buffer_free(&job->request);
  mfl_buffer_free(&job->answer);
  free(job->message);
  free(job);
}

/* The job is over (answered or lost): the run parked on it (if any)
 * resumes; the runner lets go of it. */
static void finish_job(mflr_runner *r, mflr_job *job, int status,
                       mfl_buffer *answer, const char *message) {
  job->runner = NULL;
  job->done = 1;
  job->status = (unsigned char)status;
  if (answer) {
    job->answer = *answer;
    memset(answer, 0, sizeof *answer);
  }
  if (message && !job->message)
    job->message = strdup(message);
  if (job->sent && r->load[job->worker] > 0)
    r->load[job->worker]--;
  if (job->run)
    mf_run_unpark(job->run, job->ticket);
  if (job->sent) {
    job->sent = 0;
    job_release(job); /* the runner's */
  }
  if (r->count == 0 && !r->closed)
    r->t->keepalive(r, 0);
}

int mflr_answer(mflr_runner *r, int worker, uint64_t id, int status,
                mfl_buffer *answer) {
  mflr_job *job = map_remove(r, id, worker);
  if (!job || status < 0 || status >= MFLR_LOST)
    return -1;
  finish_job(r, job, status, answer, NULL);
  return 0;
}

void mflr_worker_lost(mflr_runner *r, int worker, const char *message) {
  /* Taken out first: finishing wakes runs, and nothing may change the map
   * under the walk. */
  mflr_job *lost = NULL;
  for (size_t i = 0; i < r->nbuckets; i++)
    for (mflr_job **p = &r->buckets[i]; *p;) {
      mflr_job *job = *p;
      if (worker >= 0 && job->worker != worker) {
        p = &job->hnext;
        continue;
      }
      *p = job->hnext;
      r->count--;
      job->hnext = lost;
      lost = job;
    }
  while (lost) {
    mflr_job *job = lost;
    lost = job->hnext;
    job->hnext = NULL;
    finish_job(r, job, MFLR_LOST, NULL, message);
  }
}

/* The attempt lets go of its job; one still in flight is stopped. */
static void attempt_done(mfl_run *lr) {
  mflr_job *job = lr->remote;
  lr->remote = NULL;
  job->run = NULL;
  mflr_runner *r = job->runner;
  if (!job->done && job->sent && r && !r->closed)
    r->t->cancel(r, job); /* it stays in the map until the worker answers */
  job_release(job);
}

void mfl_remote_abandon(mfl_run *lr) { attempt_done(lr); }

/* }====== */

/* {====== Runners ====== */

void mflr_log(mflr_runner *r, const char *fmt, ...) {
  char message[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  char who[64];
  snprintf(who, sizeof who, "runner %s", r->t ? r->t->kind : "?");
  mfl_log_write(MFL_LOG_ERROR, who, message);
}

void mflr_release(mflr_runner *r) {
  if (--r->refs > 0)
    return;
  mfl_buffer_free(&r->config);
  mfl_buffer_free(&r->setup);
  free(r->buckets);
  free(r->load);
  free(r);
}

/* Stops the workers; runs still waiting on a job end lost (CRASHED). */
static void shutdown_runner(mflr_runner *r) {
  if (r->closed)
    return;
  r->closed = 1;
  if (r->S->remote_runners > 0)
    r->S->remote_runners--;
  r->t->shutdown(r);
  mflr_worker_lost(r, -1, "its runner was shut down");
}

static runner_box *check_runner(lua_State *L, int idx) {
  runner_box *b = luaL_testudata(L, idx, "moonflow.Runner");
  if (!b)
    mfl_raise(L, "UsageError", "expected a Runner (mf.runners.*), got %s",
              luaL_typename(L, idx));
  return b;
}

static void release_runner_box(void *box) {
  runner_box *b = box;
  if (b->r) {
    mflr_runner *r = b->r;
    b->r = NULL;
    shutdown_runner(r);
    mflr_release(r);
  }
}

static int runner_gc(lua_State *L) {
  runner_box *b = luaL_testudata(L, 1, "moonflow.Runner");
  if (b) {
    mfl_forget_box(b->S, b);
    release_runner_box(b);
  }
  return 0;
}

static int runner_tostring(lua_State *L) {
  runner_box *b = check_runner(L, 1);
  if (!b->r)
    lua_pushliteral(L, "<Runner coroutines>");
  else
    lua_pushfstring(L, "<Runner %s, %d workers%s>", b->r->t->kind,
                    b->r->workers, b->r->closed ? ", shut down" : "");
  return 1;
}

/* core.runner_new(kind, workers, config, setup?) -> Runner (config: a
 * codec message; setup: core.pack of the setup function) */
static int l_runner_new(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  const char *kind = luaL_checkstring(L, 1);
  int (*init)(mflr_runner *) = strcmp(kind, "threads") == 0 ? mflr_threads_init
                               : strcmp(kind, "processes") == 0
                                   ? mflr_procs_init
                                   : NULL;
  if (!init && strcmp(kind, "coroutines") != 0)
    return luaL_error(L, "moonflow: no runner '%s'", kind);
  int workers = init ? (int)luaL_checkinteger(L, 2) : 0;
  size_t clen = 0, slen = 0;
  const char *config = init ? luaL_checklstring(L, 3, &clen) : NULL;
  const char *setup = init ? luaL_optlstring(L, 4, NULL, &slen) : NULL;
  if (init && (workers < 1 || clen == 0))
    return luaL_error(L, "moonflow: bad runner arguments");
  runner_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->r = NULL;
  b->S = S;
  luaL_setmetatable(L, "moonflow.Runner");
  if (!init)
    return 1;
  mfl_note_box(L, S, b, release_runner_box);
  /* Worker processes are reaped by the state's I/O (io_spawn.c): opened
   * here, where it may raise, unless the state is closing (no worker then
   * starts: their runs end lost). */
  if (init == mflr_procs_init && !S->closing && !S->closed)
    mfl_io_get(L, S);
  /* Nothing raises from here until the runner is whole. */
  mflr_runner *r = calloc(1, sizeof *r);
  int fail = !r;
  if (!fail) {
    r->refs = 1;
    r->S = S;
    r->loop = mf_engine_loop(S->engine);
    r->workers = workers;
    r->load = calloc((size_t)workers, sizeof *r->load);
    fail = !r->load || mfl_buffer_reserve(&r->config, clen) != 0 ||
           (slen && mfl_buffer_reserve(&r->setup, slen) != 0);
  }
  if (!fail) {
    memcpy(r->config.data, config, clen);
    r->config.len = clen;
    if (slen) {
      memcpy(r->setup.data, setup, slen);
      r->setup.len = slen;
    }
    fail = init(r);
  }
  if (fail) {
    if (r) {
      mfl_buffer_free(&r->config);
      mfl_buffer_free(&r->setup);
      free(r->load);
      free(r);
    }
    return luaL_error(L, "moonflow: out of memory");
  }
  b->r = r;
  S->remote_runners++;
  return 1;
}

/* runner.kind, runner.workers, and test hooks. */
static int runner_index(lua_State *L) {
  runner_box *b = check_runner(L, 1);
  /* any other key (a table, nil, a number left as it is) indexes nothing:
   * nil, not luaL_checkstring's untyped error */
  const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(key, "kind") == 0) {
    lua_pushstring(L, b->r ? b->r->t->kind : "coroutines");
    return 1;
  }
  if (strcmp(key, "workers") == 0) {
    if (b->r)
      lua_pushinteger(L, b->r->workers);
    else
      lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* runner:_shutdown(): stops its workers now (tests; the collector and
 * the state's closing do it otherwise). */
static int runner_shutdown(lua_State *L) {
  runner_box *b = check_runner(L, 1);
  if (b->r)
    shutdown_runner(b->r);
  return 0;
}

/* runner:_debug(what, ...): the transport's test hooks (worker pids,
 * garbage written into a worker's pipe). */
static int runner_debug(lua_State *L) {
  runner_box *b = check_runner(L, 1);
  if (!b->r || !b->r->t->debug)
    return 0;
  return b->r->t->debug(L, b->r);
}

/* runner:_in_flight() -> jobs in flight */
static int runner_in_flight(lua_State *L) {
  runner_box *b = check_runner(L, 1);
  lua_pushinteger(L, b->r ? (lua_Integer)b->r->count : 0);
  return 1;
}

/* }====== */

/* {====== The remote attempt ====== */

static const char *const status_names[] = {"completed", "failed", "crashed",
                                           "cancelled", "lost"};

/* lua_CFunction, protected: pushes what the answer of the job (a light
 * userdata) holds: true and the results, or false, the status and what
 * failed (a table { err, traceback }, or a message). */
static int push_answer(lua_State *L) {
  mflr_job *job = lua_touserdata(L, 1);
  lua_settop(L, 0);
  int status = job->done ? job->status : MFLR_CANCELLED;
  if (status == MFLR_COMPLETED || status == MFLR_FAILED ||
      status == MFLR_CRASHED) {
    mflr_parts it;
    mflr_session_reset(L);
    if (mflr_parts_open(&it, job->answer.data, job->answer.len) != 0 ||
        mflr_get_value(L, &it) != MFL_CODEC_OK || mflr_get_tasks(L, &it) != 0)
      return lua_error(L); /* a DecodeError: the attempt fails with it */
    if (status == MFLR_COMPLETED && lua_istable(L, -1)) {
      lua_getfield(L, 1, "n");
      int n = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
      luaL_checkstack(L, n + 1, "too many results");
      lua_pushboolean(L, 1);
      for (int i = 1; i <= n; i++)
        lua_rawgeti(L, 1, i);
      return n + 1;
    }
  } else {
    lua_pushstring(L, job->message ? job->message : "");
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, status_names[status]);
  lua_rotate(L, -3, 2);
  return 3;
}

static int remote_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  mfl_state *S = mfl_state_get(L);
  mf_run *run = mfl_current_run(L, S);
  mfl_run *lr = mf_run_body(run);
  mflr_job *job = lr->remote;
  int top = lua_gettop(L);
  lua_pushcfunction(L, push_answer);
  lua_pushlightuserdata(L, job);
  int rc = lua_pcall(L, 1, LUA_MULTRET, 0);
  attempt_done(lr);
  mfl_wait_outcome(L, status); /* a Deadlock raises */
  if (rc != LUA_OK)
    return lua_error(L);
  return lua_gettop(L) - top;
}

/* The context of the run, for mf.context() in the worker and the name of
 * its run there: u64 id, u32 attempt, u8 flags (1: log_prints), name,
 * flow id, flow name, u32 tag count, tags (strings: u32 length, bytes). */
static int put_str(mfl_buffer *b, const char *s, size_t len) {
  if (len > UINT32_MAX || mfl_buffer_reserve(b, 4 + len) != 0)
    return -1;
  for (int i = 0; i < 4; i++)
    b->data[b->len + i] = (char)(len >> (8 * i));
  memcpy(b->data + b->len + 4, s, len);
  b->len += 4 + len;
  return 0;
}

static int put_context(lua_State *L, mf_run *run, int box, mfl_buffer *parts,
                       int flags) {
  mfl_buffer b = {0};
  char head[13];
  uint64_t id = mf_run_id(run);
  unsigned attempt = (unsigned)mf_run_attempt(run);
  for (int i = 0; i < 8; i++)
    head[i] = (char)(id >> (8 * i));
  for (int i = 0; i < 4; i++)
    head[8 + i] = (char)(attempt >> (8 * i));
  head[12] =
      (char)(flags | (((mfl_run *)mf_run_body(run))->log_prints ? 1 : 0));
  int fail = mfl_buffer_reserve(&b, sizeof head);
  if (!fail) {
    memcpy(b.data, head, sizeof head);
    b.len = sizeof head;
  }
  char name[256];
  size_t len = mf_run_name(run, name, sizeof name);
  fail = fail || put_str(&b, name, len < sizeof name ? len : sizeof name - 1);
  mf_run *flow = mf_run_parent(run);
  while (flow && !(mf_run_flags(flow) & MF_RUN_FLOW))
    flow = mf_run_parent(flow);
  char fid[32] = "";
  size_t flen = 0;
  name[0] = 0;
  if (flow) {
    snprintf(fid, sizeof fid, "%llu", (unsigned long long)mf_run_id(flow));
    flen = mf_run_name(flow, name, sizeof name);
    if (flen >= sizeof name)
      flen = sizeof name - 1;
  }
  fail = fail || put_str(&b, fid, strlen(fid)) || put_str(&b, name, flen);
  lua_getiuservalue(L, box, MFL_UV_TASK);
  lua_getiuservalue(L, -1, MFL_TASK_UV_OPTS);
  lua_getfield(L, -1, "tags");
  size_t ntags = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0;
  char count[4];
  for (int i = 0; i < 4; i++)
    count[i] = (char)(ntags >> (8 * i));
  fail = fail || mfl_buffer_reserve(&b, 4) != 0;
  if (!fail) {
    memcpy(b.data + b.len, count, 4);
    b.len += 4;
  }
  for (size_t i = 1; !fail && i <= ntags; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    size_t tlen;
    const char *tag = lua_tolstring(L, -1, &tlen);
    fail = put_str(&b, tag ? tag : "", tag ? tlen : 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 3);
  fail = fail || mflr_parts_add(parts, b.data, b.len) != 0;
  mfl_buffer_free(&b);
  return fail ? -1 : 0;
}

/* Sends the job; a runner that cannot (shut down, no worker could start)
 * loses it at once. */
static void dispatch(mflr_runner *r, mflr_job *job) {
  if (r->closed) {
    finish_job(r, job, MFLR_LOST, NULL, "its runner was shut down");
    return;
  }
  job->id = ++r->next_id;
  if (map_add(r, job) != 0) {
    finish_job(r, job, MFLR_LOST, NULL, "out of memory");
    return;
  }
  job->runner = r;
  job->sent = 1;
  job->refs++; /* the runner's, until the answer */
  if (r->count == 1)
    r->t->keepalive(r, 1);
  if (r->t->send(r, job) != 0) {
    map_remove(r, job->id, -1);
    finish_job(r, job, MFLR_LOST, NULL, job->message);
    return;
  }
  r->load[job->worker]++;
  mfl_buffer_free(&job->request);
}

/* Whether the message of the function at idx is always the same bytes: a
 * Lua function whose only upvalue (if any) is the global table.  Its
 * message is then kept (key_fn_cache), and the worker keeps the function
 * it makes of it (context flag 2): no dump and no load per run. */
static int fixed_function(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx))
    return 0;
  for (int i = 1; lua_getupvalue(L, idx, i); i++) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int globals = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!globals)
      return 0;
  }
  return 1;
}

static int put_function(lua_State *L, int idx, mfl_buffer *req, int fixed) {
  if (!fixed)
    return mflr_put_value(L, idx, req, "function");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_fn_cache) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L); /* weak keys: a function collected goes */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_fn_cache);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    size_t len;
    const char *bytes = lua_tolstring(L, -1, &len);
    int rc =
        mflr_parts_add(req, bytes, len) == 0 ? MFL_CODEC_OK : MFL_CODEC_ERROR;
    lua_pop(L, 2);
    if (rc != MFL_CODEC_OK)
      lua_pushliteral(L, "not enough memory");
    return rc;
  }
  lua_pop(L, 1);
  size_t at = req->len;
  int rc = mflr_put_value(L, idx, req, "function");
  if (rc == MFL_CODEC_OK) {
    lua_pushvalue(L, idx);
    lua_pushlstring(L, req->data + at + 4, req->len - at - 4);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  } else {
    lua_remove(L, -2); /* the cache: the error stays on top */
  }
  return rc;
}

/* Encodes the request: the context, the function, the arguments (from
 * stack index 3 to top), their Tasks.  Returns 0, or -1 with the error
 * pushed. */
static int encode_request(lua_State *L, mf_run *run, mfl_buffer *req, int top) {
  int nargs = top - 2;
  mflr_session_reset(L);
  int fixed = fixed_function(L, 2);
  mfl_push_future_of(L, run);
  int fail = mflr_parts_begin(req) ||
             put_context(L, run, lua_gettop(L), req, fixed ? 2 : 0);
  lua_pop(L, 1);
  if (fail) {
    lua_pushliteral(L, "not enough memory");
    return -1;
  }
  if (put_function(L, 2, req, fixed) != MFL_CODEC_OK)
    return -1;
  lua_createtable(L, nargs, 1);
  for (int i = 1; i <= nargs; i++) {
    lua_pushvalue(L, 2 + i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  if (mflr_put_value(L, -1, req, "args") != MFL_CODEC_OK ||
      mflr_put_tasks(L, req) != 0)
    return -1;
  lua_pop(L, 1);
  return 0;
}

/* core.remote_call(runner, fn, ...) -> true, results... or false, status,
 * failure: runs fn(...) on a worker of the runner as a job and parks the
 * current run until the worker answers. */
static int l_remote_call(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  runner_box *b = check_runner(L, 1);
  mf_run *run = mfl_current_run(L, S);
  if (!run || !b->r)
    return mfl_raise(L, "UsageError",
                     "remote_call runs a run's attempt on a worker");
  mfl_check_yieldable(L, run, "a run on a worker");
  mfl_run *lr = mf_run_body(run);
  int top = lua_gettop(L);
  mflr_job *job = calloc(1, sizeof *job);
  if (!job)
    return luaL_error(L, "moonflow: out of memory");
  job->refs = 1; /* the attempt's */
  if (encode_request(L, run, &job->request, top) != 0) {
    job_release(job);
    return lua_error(L);
  }
  double deadline = mf_run_deadline(run);
  job->timeout = deadline >= 0 ? deadline - mf_engine_now(S->engine) : 0;
  if (deadline >= 0 && job->timeout <= 0)
    job->timeout = 1e-3; /* due now: the worker stops it at once */
  lr->remote = job;
  dispatch(b->r, job);
  if (job->done) /* lost at once */
    return remote_k(L, LUA_OK, 0);
  if (mf_run_park(run, -1, &job->ticket) != 0) {
    attempt_done(lr);
    return luaL_error(L, "moonflow: out of memory");
  }
  job->run = run;
  return mfl_yield_parked(L, run, 0, remote_k);
}

/* }====== */

/* {====== Choosing a run's runner ====== */

/* The Runner in field key of the options of the task at task_idx, pushed;
 * returns whether there is one. */
static int push_option_runner(lua_State *L, int task_idx, const char *key) {
  if (lua_getiuservalue(L, task_idx, MFL_TASK_UV_OPTS) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  if (lua_getfield(L, -1, key) != LUA_TNIL) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* The runner of a run: its task's option runner, else the task_runner of
 * the nearest enclosing flow that has one, else the default. */
static void push_runner_of(lua_State *L, mf_run *run, int box) {
  lua_getiuservalue(L, box, MFL_UV_TASK);
  int task = lua_gettop(L);
  if (push_option_runner(L, task, "runner")) {
    lua_remove(L, task);
    return;
  }
  lua_pop(L, 1);
  mfl_state *S = ((mfl_run *)mf_run_body(run))->S;
  for (mf_run *p = mf_run_parent(run); p; p = mf_run_parent(p)) {
    if (mf_run_data(p) != S || !((mfl_run *)mf_run_body(p))->runner_flow)
      continue; /* not a Lua flow with a task_runner */
    mfl_push_future_of(L, p);
    lua_getiuservalue(L, -1, MFL_UV_TASK);
    int found = push_option_runner(L, lua_gettop(L), "task_runner");
    if (found) {
      lua_replace(L, -3);
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 2);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_default);
}

int mfl_remote_prepare(lua_State *L, mf_run *run, int box) {
  mfl_run *lr = mf_run_body(run);
  if (lr->kind != MFL_TASK || lr->quiet)
    return 0;
  push_runner_of(L, run, box);
  runner_box *b = luaL_testudata(L, -1, "moonflow.Runner");
  if (!b || !b->r) {
    lua_pop(L, 1);
    return 0;
  }
  /* ... fn runner -> ... attempt runner fn */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_attempt);
  lua_rotate(L, -3, 1);
  lua_rotate(L, -2, 1);
  return 2;
}

/* core.set_default_runner(runner) */
static int l_set_default_runner(lua_State *L) {
  check_runner(L, 1);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_default);
  return 0;
}

/* core.default_runner() -> Runner or nil */
static int l_default_runner(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_default);
  return 1;
}

/* core.set_remote_attempt(fn): fn(runner, task_fn, ...) is the body of
 * an attempt on a copying runner (lua/moonflow/runners.lua). */
static int l_set_remote_attempt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key_attempt);
  return 0;
}

/* core.runner_metatables() -> the Runner's and the Task's metatables,
 * for the codecs that let them travel. */
static int l_runner_metatables(lua_State *L) {
  luaL_getmetatable(L, "moonflow.Runner");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_task_mt);
  return 2;
}

/* core.runtime() -> cpus, slice, preempt */
static int l_runtime(lua_State *L) {
  mfl_state *S = mfl_state_get(L);
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  lua_pushnumber(L, S->slice);
  lua_pushboolean(L, S->watch != NULL);
  return 3;
}

/* }====== */

static const luaL_Reg runner_functions[] = {
    {"runner_new", l_runner_new},
    {"remote_call", l_remote_call},
    {"set_default_runner", l_set_default_runner},
    {"default_runner", l_default_runner},
    {"set_remote_attempt", l_set_remote_attempt},
    {"runner_metatables", l_runner_metatables},
    {"runtime", l_runtime},
    {NULL, NULL}};

static const luaL_Reg runner_methods[] = {{"_shutdown", runner_shutdown},
                                          {"_in_flight", runner_in_flight},
                                          {"_debug", runner_debug},
                                          {NULL, NULL}};

void mfl_open_runners(lua_State *L) {
  /* core -> core */
  luaL_newmetatable(L, "moonflow.Runner");
  lua_pushcfunction(L, runner_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, runner_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  luaL_setfuncs(L, runner_methods, 0);
  lua_pushcclosure(L, runner_index, 1);
  lua_setfield(L, -2, "__index");
  mfl_protect_mt(L);
  lua_pop(L, 1);
  mfl_setfuncs(L, runner_functions);
  mflr_open_msg(L);
  mflw_open(L);
}
