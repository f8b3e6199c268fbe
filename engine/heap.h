/*
 * heap.h -- the heap's internals the engine uses (the heap itself is
 * public: moonflow.h): regions made ahead of need for its records' heap,
 * off the loop thread (heap.c, "Regions made ahead").
 */
#ifndef MF_HEAP_H
#define MF_HEAP_H

#include "moonflow.h"

#ifndef MF_INTERNAL
#define MF_INTERNAL __attribute__((visibility("hidden")))
#endif

#define MF__HEAP_SPARES_MAX 2 /* regions made ahead, at most */

/* How many more regions made ahead the heap would take now (0 or more). */
MF_INTERNAL int mf__heap_regions_wanted(mf_heap *h);
/* A region made and touched, backed by huge pages; NULL when out of
 * memory.  Any thread: it touches no heap. */
MF_INTERNAL void *mf__heap_region_new(void);
/* Unmaps a region of mf__heap_region_new (NULL: nothing).  Any thread. */
MF_INTERNAL void mf__heap_region_free(void *region);
/* Hands a region of mf__heap_region_new (or NULL) to the heap, which maps
 * no region of its own while it has one; freed when it has enough. */
MF_INTERNAL void mf__heap_region_give(mf_heap *h, void *region);

#endif
