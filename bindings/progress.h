/*
 * progress.h -- the moonflow program's live status lines (progress.c).
 */
#ifndef MF_PROGRESS_H
#define MF_PROGRESS_H

#include <lua.h>

/* Starts drawing status lines for top-level flows on stderr, and wraps
 * print and io.write so that they erase them first. */
void mf_progress_start(lua_State *L);
/* Erases the status lines (before other output). */
void mf_progress_erase(void);
/* Erases them and stops; the timer is closed with the loop's next turn. */
void mf_progress_stop(void);

#endif
