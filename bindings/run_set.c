/*
 * run_set.c -- a set of runs by address, for mf.wait's removal of
 * duplicates (wait.c at the top level, collect.c inside a run).
 *
 * A Lua table keyed by light userdata did it first: about 300 instructions
 * an element of mf.wait over 50,000 Futures (callgrind), a third of the
 * whole wait.  This is open addressing over a power-of-2 array at most half
 * full, in a userdata (the collector owns it, so an error raised midway
 * leaks nothing, and a wait that yields keeps it on its stack).
 */
#include <stdint.h>
#include <string.h>

#include "binding.h"

struct mfl_run_set {
  size_t mask;
  const mf_run *slots[];
};

mfl_run_set *mfl_run_set_new(lua_State *L, size_t n) {
  size_t room = 8;
  while (room < 2 * n)
    room *= 2;
  mfl_run_set *set =
      lua_newuserdatauv(L, sizeof *set + room * sizeof set->slots[0], 0);
  set->mask = room - 1;
  memset(set->slots, 0, room * sizeof set->slots[0]);
  return set;
}

int mfl_run_set_add(mfl_run_set *set, const mf_run *run) {
  /* Records are 16-byte aligned: the low bits say nothing. */
  uint64_t h = ((uint64_t)(uintptr_t)run >> 4) * 0x9E3779B97F4A7C15u;
  for (size_t i = (size_t)(h >> 32) & set->mask;; i = (i + 1) & set->mask) {
    if (!set->slots[i]) {
      set->slots[i] = run;
      return 1;
    }
    if (set->slots[i] == run)
      return 0;
  }
}
