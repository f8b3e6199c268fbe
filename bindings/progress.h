/*
 * progress.h -- the moonflow program's live status lines (progress.c).
 */
#ifndef MF_PROGRESS_H
#define MF_PROGRESS_H

#include <lua.h>
#include <stddef.h>

/* Starts drawing status lines for top-level flows on stderr, and wraps
 * print and io.write so that they erase them first. */
void mf_progress_start(lua_State *L);
/* Erases the status lines (before other output). */
void mf_progress_erase(void);
/* Erases them and stops; the timer is closed with the loop's next turn. */
void mf_progress_stop(void);

/* Pushes "a-1, b-1, main and 7 more": the names of the runs that are not
 * final, oldest first, at most max of them; returns how many there are. */
size_t mf_progress_push_live(lua_State *L, size_t max);

#endif
