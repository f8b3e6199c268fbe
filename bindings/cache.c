/*
 * cache.c -- results kept and reused (api.md task options cache_key,
 * cache_expiration, refresh_cache, cache, persist_result).
 *
 * At an attempt's start the key is computed (the task's cache_key, or the
 * default key of `cache = true`, by the Lua keyer of lua/moonflow/cache.lua,
 * called as a plain callback: waiting in it is a UsageError) and looked up:
 * first among the results kept in this process, then in the run store.  A
 * hit decodes the value and ends the run COMPLETED/Cached without calling
 * the function; a value that no longer decodes is a miss with a warning.
 * On a miss the key is noted; when the body returns its result is encoded
 * (data only: a function is an error naming its path), and the final
 * Completed state carries it to this process's table and to the store,
 * which writes it in the same transaction as that state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "binding.h"
#include "codec.h"
#include "store.h"

static const char keyer_key = 0;

/* {====== The results kept in this process ====== */

typedef struct entry {
  struct entry *next;
  char *key, *value;
  size_t len;
  double expires;
} entry;

typedef struct mfl_cache {
  entry **buckets;
  size_t cap, count;
} mfl_cache;

static uint64_t hash64(const char *s, size_t len, uint64_t seed) {
  uint64_t h = seed;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33; /* a final mix (murmur3's) */
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

static entry **find(mfl_cache *c, const char *key) {
  entry **e = &c->buckets[hash64(key, strlen(key), 0xcbf29ce484222325ull) &
                          (c->cap - 1)];
  while (*e && strcmp((*e)->key, key) != 0)
    e = &(*e)->next;
  return e;
}

static void grow(mfl_cache *c) {
  size_t cap = c->cap ? c->cap * 2 : 256;
  entry **buckets = calloc(cap, sizeof *buckets);
  if (!buckets)
    return;
  for (size_t i = 0; i < c->cap; i++)
    for (entry *e = c->buckets[i], *next; e; e = next) {
      next = e->next;
      size_t j =
          hash64(e->key, strlen(e->key), 0xcbf29ce484222325ull) & (cap - 1);
      e->next = buckets[j];
      buckets[j] = e;
    }
  free(c->buckets);
  c->buckets = buckets;
  c->cap = cap;
}

void mfl_cache_remember(mfl_state *S, const mfl_note *note) {
  if (!note->key)
    return; /* persisted only: no key to find it by */
  if (!S->cache && !(S->cache = calloc(1, sizeof *S->cache)))
    return;
  mfl_cache *c = S->cache;
  if (c->count >= c->cap)
    grow(c);
  if (!c->cap)
    return;
  char *value = malloc(note->len ? note->len : 1);
  if (!value)
    return;
  memcpy(value, note->value, note->len);
  entry **slot = find(c, note->key), *e = *slot;
  if (!e) {
    e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(note->key))) {
      free(e);
      free(value);
      return;
    }
    *slot = e;
    c->count++;
  }
  free(e->value);
  e->value = value;
  e->len = note->len;
  e->expires = note->expires;
}

void mfl_cache_free(mfl_state *S) {
  mfl_cache *c = S->cache;
  S->cache = NULL;
  if (!c)
    return;
  for (size_t i = 0; i < c->cap; i++)
    for (entry *e = c->buckets[i], *next; e; e = next) {
      next = e->next;
      free(e->key);
      free(e->value);
      free(e);
    }
  free(c->buckets);
  free(c);
}

/* }====== */

static double wall_now(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Looks the key up: this process first, then the store.  Pushes the
 * encoded value (a string) and returns 1, or returns 0. */
static int lookup(lua_State *L, mfl_state *S, mf_run *run, const char *key) {
  double now = wall_now();
  if (S->cache && S->cache->cap) {
    entry *e = *find(S->cache, key);
    if (e && (e->expires == 0 || e->expires > now)) {
      lua_pushlstring(L, e->value, e->len);
      return 1;
    }
  }
  if (!S->store)
    return 0;
  char *value = NULL, err[512];
  size_t len = 0;
  int found =
      mfl_store_lookup(S->store, key, now, &value, &len, err, sizeof err);
  if (found < 0) {
    char who[256];
    mf_run_name(run, who, sizeof who);
    mfl_log_write(MFL_LOG_WARNING, who, err);
    return 0;
  }
  if (!found)
    return 0;
  lua_pushlstring(L, value, len);
  free(value);
  return 1;
}

/* Decodes the kept value on top (popped) into the run's result: 1, or 0
 * with a warning when it no longer decodes. */
static int restore(lua_State *L, mf_run *run, mfl_run *lr, int box,
                   const char *key) {
  size_t len;
  const char *bytes = lua_tolstring(L, -1, &len);
  if (mfl_decode(L, bytes, len, 0) != MFL_CODEC_OK || !lua_istable(L, -1)) {
    char who[256], line[1024];
    mf_run_name(run, who, sizeof who);
    snprintf(line, sizeof line,
             "the cached result under key '%.200s' no longer decodes (%s): "
             "running the task again",
             key, lua_istable(L, -1) ? mfl_describe(L, -1) : "not a result");
    mfl_log_write(MFL_LOG_WARNING, who, line);
    mfl_store_log_line(lr->S, run, MFL_LOG_WARNING, line);
    lua_pop(L, 2);
    return 0;
  }
  lua_remove(L, -2);
  lua_getfield(L, -1, "n");
  lua_Integer n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (n == 1) {
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
    lr->nresults = 1;
  } else if (n <= 0) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lr->nresults = 0;
  } else {
    lr->nresults = -1; /* the packed table itself */
  }
  lua_setiuservalue(L, box, MFL_UV_RESULT);
  return 1;
}

int mfl_cache_start(lua_State *L, mf_run *run, mfl_run *lr, int box,
                    int nargs) {
  mfl_state *S = lr->S;
  int fn = lua_gettop(L) - nargs;
  luaL_checkstack(L, nargs + 8, "too many arguments");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &keyer_key);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_getiuservalue(L, box, MFL_UV_TASK);
  for (int i = 0; i <= nargs; i++)
    lua_pushvalue(L, fn + i);
  /* keyer(task, fn, args...) -> key or nil, expires (0: never), refresh,
   * keep */
  S->callback_depth++;
  int status = lua_pcall(L, nargs + 2, 4, 0);
  S->callback_depth--;
  if (status != LUA_OK)
    return lua_error(L); /* the attempt fails with it */
  int top = lua_gettop(L);
  const char *key = lua_tostring(L, top - 3);
  double expires = lua_tonumber(L, top - 2);
  int refresh = lua_toboolean(L, top - 1);
  int keep = lua_toboolean(L, top) && (key || S->store);
  int hit = 0;
  if (key && !refresh && lookup(L, S, run, key))
    hit = restore(L, run, lr, box, key);
  if (!hit && keep) {
    mfl_note *note = mfl_note_of(lr);
    if (note) {
      free(note->key);
      note->key = key ? strdup(key) : NULL;
      note->expires = expires > 0 ? wall_now() + expires : 0;
      note->keep = 1;
    }
    mfl_store_observe(S); /* the final state remembers the result */
  }
  lua_settop(L, top - 4);
  return hit;
}

int mfl_cache_result(lua_State *L, mfl_run *lr, int box) {
  mfl_note *note = lr->note;
  if (!note || !note->keep)
    return 0;
  /* Kept as a packed table { n = count, ... }. */
  lua_getiuservalue(L, box, MFL_UV_RESULT);
  if (lr->nresults >= 0) {
    lua_createtable(L, 1, 1);
    if (lr->nresults == 1) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, 1);
    }
    lua_pushinteger(L, lr->nresults);
    lua_setfield(L, -2, "n");
    lua_remove(L, -2);
  }
  mfl_buffer out = {0};
  int rc = mfl_encode(L, lua_gettop(L), &out, 0, "result");
  if (rc != MFL_CODEC_OK) {
    lua_remove(L, -2); /* the error stays */
    mfl_buffer_free(&out);
    note->keep = 0;
    return -1;
  }
  lua_pop(L, 1);
  free(note->value);
  note->value = out.data; /* malloc'd: handed on as it is */
  note->len = out.len;
  return 0;
}

/* core.hash(s) -> 32 hex digits (not cryptographic: cache keys) */
static int l_hash(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[33];
  snprintf(hex, sizeof hex, "%016llx%016llx",
           (unsigned long long)hash64(s, len, 0xcbf29ce484222325ull),
           (unsigned long long)hash64(s, len, 0x84222325cbf29ce4ull ^ len));
  lua_pushstring(L, hex);
  return 1;
}

/* core.set_cache_keyer(fn) */
static int l_set_cache_keyer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &keyer_key);
  return 0;
}

/* core.cache_clear(): forgets the results kept in this process (tests) */
static int l_cache_clear(lua_State *L) {
  mfl_cache_free(mfl_state_get(L));
  return 0;
}

static const luaL_Reg cache_functions[] = {
    {"hash", l_hash},
    {"set_cache_keyer", l_set_cache_keyer},
    {"cache_clear", l_cache_clear},
    {NULL, NULL}};

void mfl_open_cache(lua_State *L) {
  mfl_setfuncs(L, cache_functions);
  mfl_open_store(L);
}
