/*
 * repl.h -- the interactive loop of the moonflow program (repl.c).
 */
#ifndef MF_REPL_H
#define MF_REPL_H

#include <lua.h>

/* Reads chunks from standard input and runs each as a run, while the
 * engine's loop keeps going, until the input ends and every run is final.
 * Returns the exit status. */
int mf_repl_run(lua_State *L);

/* Ctrl-C: stops the wait of the chunk running now (its runs go on), or
 * drops the line being typed.  Returns 0 when no REPL is reading. */
int mf_repl_interrupt(void);

#endif
