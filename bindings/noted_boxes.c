/*
 * noted_boxes.c -- boxes that Lua may never finalize.  lua_close calls
 * every pending finalizer, and one of them may still use moonflow: submit
 * a run, map, wait.  An object made then gets no finalizer (Lua 5.4.4
 * stops giving them when the state closes), so the run references its box
 * holds would never be released.  A box made inside a finalizer is noted
 * here with the function that releases it; its own __gc forgets it; the
 * state's __gc, the last moonflow finalizer to run, releases the rest.
 */
#include <stdlib.h>

#include "binding.h"

typedef struct mfl_noted_box {
  void *box;
  mfl_release_fn release;
} mfl_noted_box;

void mfl_note_box(lua_State *L, mfl_state *S, void *box,
                  mfl_release_fn release) {
  /* Inside a finalizer lua_gc refuses every request (-1); elsewhere this
   * is the only cost.  A box made by a finalizer outside lua_close gets a
   * finalizer, and forgets itself there. */
  if (lua_gc(L, LUA_GCISRUNNING) >= 0)
    return;
  if (S->noted_count == S->noted_capacity) {
    size_t capacity = S->noted_capacity ? 2 * S->noted_capacity : 8;
    mfl_noted_box *grown = realloc(S->noted, capacity * sizeof *grown);
    if (!grown)
      luaL_error(L, "moonflow: out of memory");
    S->noted = grown;
    S->noted_capacity = capacity;
  }
  S->noted[S->noted_count++] = (mfl_noted_box){box, release};
}

void mfl_forget_box(mfl_state *S, void *box) {
  for (size_t i = S->noted_count; i-- > 0;)
    if (S->noted[i].box == box) {
      S->noted[i] = S->noted[--S->noted_count];
      return;
    }
}

void mfl_release_noted_boxes(mfl_state *S) {
  /* (a release may not note another box: no Lua runs here) */
  for (size_t i = 0; i < S->noted_count; i++)
    S->noted[i].release(S->noted[i].box);
  free(S->noted);
  S->noted = NULL;
  S->noted_count = S->noted_capacity = 0;
}
