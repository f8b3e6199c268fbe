/*
 * heap.c -- an allocator for many small blocks of a few sizes: the Lua
 * states moonflow makes (its lua_Alloc contract is Lua's), and a host's.
 *
 * A run's Lua objects are many and small and are made and freed by the
 * million: a cheaper allocator made a chain of tasks (W3 of
 * bench/compare.lua) about a tenth faster.  The caller gives a block's size
 * when it frees it (as Lua does), so small blocks need no header: they
 * come from pages of MF_HEAP_PAGE bytes, aligned to their size, each page
 * cut into blocks of one size class (16-byte steps up to
 * MF_HEAP_SMALL_MAX).  A page's header, at its start, holds the blocks
 * given back (a free list through their first bytes) and the part never
 * handed out (blocks are cut from it as they are asked for, so a new page
 * is touched only as it fills).  Allocating pops a block from the first
 * page of its class that has room; freeing pushes it on its page's list,
 * found by masking the address.
 *
 * Memory goes back: a page whose last block is freed is kept for reuse
 * (up to EMPTY_KEEP pages, so a size that comes and goes does not make
 * and free a page each time) or returned to malloc.  What a page cannot
 * give back is its blocks still in use: at worst a page per size class
 * with one live block.
 *
 * Bigger blocks are malloc's, up to MF_HEAP_HUGE_MIN bytes; huger ones (a
 * big map's tables) are mappings of their own in whole 2 MB steps, which
 * the kernel is asked to back with huge pages (MADV_HUGEPAGE): their first
 * touch is then a fault per 2 MB, not per 4 KB; they grow by mremap,
 * which moves their pages rather than copying them.  Doubling a table of a
 * million slots touched 16 MB of fresh memory at once: 4,096 faults, 20 to
 * 30 ms on this project's virtual machines, longer than a time slice.
 * Under AddressSanitizer every block gets a
 * poisoned red zone after it, free blocks and uncut parts are poisoned,
 * and a freed block is zeroed (so that the leak checker does not take a
 * stale pointer in it for a live one).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mremap */
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "heap.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define REDZONE 16
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define REDZONE 0
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CLASS_STEP 16
#define CLASSES (MF_HEAP_SMALL_MAX / CLASS_STEP)
#define EMPTY_KEEP 2 /* empty pages kept for reuse */

typedef struct page {
  struct page *prev, *next;   /* in its class's list of pages with room */
  struct page *older, *newer; /* in the heap's list of all its pages */
  void *free;                 /* blocks given back */
  char *fresh, *end;          /* [fresh, end): blocks never handed out */
  unsigned used;              /* blocks handed out */
  unsigned block;             /* the size of its blocks */
  int listed;                 /* in its class's list */
  struct region *region;      /* where its memory comes from */
} page;

/* The blocks start after the header, aligned as malloc's are. */
#define HEADER ((sizeof(page) + CLASS_STEP - 1) / CLASS_STEP * CLASS_STEP)

struct mf_heap {
  page *room[CLASSES]; /* by class: pages with a block to give */
  page *empty;         /* empty pages kept (linked through next) */
  page *newest;        /* every page, empty or not */
  size_t empty_count, pages, blocks, bytes;
  struct region *regions; /* where pages come from */
  int empty_regions;      /* regions with no page handed out (kept) */
  size_t regions_made;
  size_t huge_first;          /* the first regions backed by huge pages */
  size_t huge_from;           /* and those from this one on */
  int empty_regions_kept;     /* at most, when a huge region empties */
  unsigned char *region_bits; /* a bit per 2 MiB of address space: the
                                 heap's regions (mf_heap_holds) */
  char *spares[MF__HEAP_SPARES_MAX]; /* regions made ahead of need */
  int spare_count;
  int tended; /* regions are made ahead for it (it was asked) */
  int misses; /* regions it mapped itself for want of one made ahead */
};

static int is_small(size_t n) { return n + REDZONE <= MF_HEAP_SMALL_MAX; }

/* {====== Huge blocks ====== */

#define HUGE_STEP ((size_t)2 << 20) /* the size of a huge page */

#if defined(__SANITIZE_ADDRESS__) || !defined(MADV_HUGEPAGE)
/* malloc's, for the sanitizer to check them */
static int is_huge(size_t n) { return (void)n, 0; }
static void *huge_alloc(size_t n) { return malloc(n); }
static void huge_free(void *b, size_t n) { (void)n, free(b); }
static void *huge_resize(void *b, size_t osize, size_t nsize) {
  (void)osize;
  return realloc(b, nsize);
}
#else
static int is_huge(size_t n) { return n >= MF_HEAP_HUGE_MIN; }

static size_t huge_size(size_t n) {
  return (n + HUGE_STEP - 1) / HUGE_STEP * HUGE_STEP;
}

/* size bytes of address space aligned to a huge page, mapped with prot: a
 * bigger mapping is made and its ends cut off. */
static char *huge_map(size_t size, int prot) {
  char *raw =
      mmap(NULL, size + HUGE_STEP, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return NULL;
  char *b = (char *)(((uintptr_t)raw + HUGE_STEP - 1) & ~(HUGE_STEP - 1));
  if (b > raw)
    munmap(raw, (size_t)(b - raw));
  if (raw + HUGE_STEP > b)
    munmap(b + size, (size_t)(raw + HUGE_STEP - b));
  return b;
}

static void *huge_alloc(size_t n) {
  size_t size = huge_size(n);
  char *b = huge_map(size, PROT_READ | PROT_WRITE);
  if (b)
    madvise(b, size, MADV_HUGEPAGE); /* a hint: without, 4 KB pages */
  return b;
}

static void huge_free(void *b, size_t n) { munmap(b, huge_size(n)); }

/* A huge block resized: its pages move to a new aligned place with room
 * (mremap moves page tables, no byte is copied, and the pages already
 * touched are not touched again), or its tail goes.  A table's doubling
 * then touches only its new half. */
static void *huge_resize(void *b, size_t osize, size_t nsize) {
  size_t old = huge_size(osize), size = huge_size(nsize);
  if (size <= old) {
    if (size < old)
      munmap((char *)b + size, old - size);
    return b;
  }
  char *spot = huge_map(size, PROT_NONE);
  if (!spot)
    return NULL;
  void *moved = mremap(b, old, size, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
  if (moved == MAP_FAILED) {
    munmap(spot, size);
    return NULL;
  }
  madvise(moved, size, MADV_HUGEPAGE);
  return moved;
}
#endif

/* }====== */

/* {====== Regions ======
 * A page's memory comes from a region of REGION_SIZE bytes, mapped once
 * and cut into pages.  A page from posix_memalign cost glibc an mmap and
 * a munmap of its own (an aligned block past its mmap threshold, which an
 * aligned chunk's free does not raise): in a process with threads every
 * munmap is a TLB shootdown on every CPU, and a run that parks takes a
 * new coroutine, so 10,000 sleeping runs made and dropped 186 pages that
 * way, a tenth of their time in the kernel.  A region is unmapped when
 * its last page comes back, but for one kept for the next.  A heap's
 * third and later regions are backed by huge pages: on this project's
 * machines a first touch costs more than the allocator, and 10,000
 * sleeping runs took 0.77-0.79 of the time, a chain of 100,000 0.85-0.87
 * (against posix_memalign's pages). */

#define REGION_SIZE ((size_t)2 << 20)
/* Empty regions kept, at most, when a huge one empties, in a heap set by
 * mf_heap_huge_regions: making one again costs a huge page's first touch,
 * up to 4 ms here, and a big map's run records made and dropped 66 regions
 * that way for a peak of about 10.  (Other heaps keep one.) */
#define EMPTY_HUGE_REGIONS_KEEP 8
#define REGION_PAGES ((unsigned)(REGION_SIZE / MF_HEAP_PAGE))

typedef struct region {
  struct region *next; /* in the heap's list */
  char *base;
  void *free_pages; /* pages given back (linked through their first bytes) */
  unsigned fresh;   /* pages never handed out, at the region's end */
  unsigned used;    /* pages handed out */
  int huge;         /* backed by huge pages */
} region;

#if defined(__SANITIZE_ADDRESS__) || !defined(MADV_HUGEPAGE)
/* malloc's, for the sanitizer to see them */
static void *page_memory(mf_heap *h, region **from) {
  (void)h;
  void *memory;
  *from = NULL;
  return posix_memalign(&memory, MF_HEAP_PAGE, MF_HEAP_PAGE) ? NULL : memory;
}

static void page_memory_free(mf_heap *h, void *memory, region *from) {
  (void)h, (void)from;
  free(memory);
}

static void regions_free(mf_heap *h) { (void)h; }

int mf__heap_regions_wanted(mf_heap *h) { return (void)h, 0; }
void *mf__heap_region_new(void) { return NULL; }
void mf__heap_region_free(void *region) { (void)region; }
void mf__heap_region_give(mf_heap *h, void *region) { (void)h, (void)region; }

/* (Pages are malloc's here: a walk of them, slow but only for tests.) */
int mf_heap_holds(const mf_heap *h, const void *block) {
  const char *b = block;
  for (const page *p = h->newest; p; p = p->older)
    if (b >= (const char *)p && b < (const char *)p + MF_HEAP_PAGE)
      return 1;
  return 0;
}
#else
/* {====== Which memory is the heap's ======
 * A bit per 2 MiB of the 47-bit address space a process's mappings live
 * in (8 MiB of address space, mapped without reserve: only the few pages
 * around the heap's regions are ever touched), set while a region is the
 * heap's.  So mf_heap_holds is a shift and a load: the module tells the
 * blocks a state's old allocator gave from the heap's at every free. */

#define ADDRESS_BITS 47
#define REGION_SHIFT 21
#define REGION_BITS_SIZE ((size_t)1 << (ADDRESS_BITS - REGION_SHIFT - 3))

static int region_bits_open(mf_heap *h) {
  if (h->region_bits)
    return 0;
  void *bits = mmap(NULL, REGION_BITS_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (bits == MAP_FAILED)
    return -1;
  h->region_bits = bits;
  return 0;
}

static void region_mark(mf_heap *h, const char *base, int held) {
  uintptr_t n = (uintptr_t)base >> REGION_SHIFT;
  unsigned char bit = (unsigned char)(1u << (n & 7));
  if (held)
    h->region_bits[n >> 3] |= bit;
  else
    h->region_bits[n >> 3] &= (unsigned char)~bit;
}

int mf_heap_holds(const mf_heap *h, const void *block) {
  uintptr_t n = (uintptr_t)block >> REGION_SHIFT;
  return h->region_bits &&
         n < ((uintptr_t)1 << (ADDRESS_BITS - REGION_SHIFT)) &&
         (h->region_bits[n >> 3] >> (n & 7) & 1);
}

/* }====== */

static void region_unmap(mf_heap *h, region *r) {
  region **link = &h->regions;
  while (*link != r)
    link = &(*link)->next;
  *link = r->next;
  region_mark(h, r->base, 0);
  munmap(r->base, REGION_SIZE);
  free(r);
}

static void *page_memory(mf_heap *h, region **from) {
  region *r = h->regions;
  while (r && !r->free_pages && !r->fresh)
    r = r->next;
  if (!r) {
    if (region_bits_open(h) != 0 || !(r = malloc(sizeof *r)))
      return NULL;
    int spare = h->spare_count > 0;
    h->misses += h->tended && !spare && h->regions_made > 0;
    r->base = spare ? h->spares[--h->spare_count]
                    : huge_map(REGION_SIZE, PROT_READ | PROT_WRITE);
    if (r->base && (uintptr_t)r->base >> ADDRESS_BITS) {
      munmap(r->base, REGION_SIZE); /* (never, without a hint to mmap) */
      r->base = NULL;
    }
    if (!r->base) {
      free(r);
      return NULL;
    }
    region_mark(h, r->base, 1);
    /* A heap past its first two regions is a big one: its regions are backed
     * by huge pages (a fault per 2 MiB).  A small heap (a threads-runner
     * worker's) keeps 4 KiB pages, touched as used, unless its owner knows
     * better (mf_heap_huge_regions). */
    size_t made = h->regions_made++;
    r->huge = spare || made < h->huge_first || made >= h->huge_from;
    if (r->huge && !spare)
      madvise(r->base, REGION_SIZE, MADV_HUGEPAGE);
    r->free_pages = NULL;
    r->fresh = REGION_PAGES;
    r->used = 0;
    r->next = h->regions;
    h->regions = r;
    h->empty_regions++;
  }
  void *memory = r->free_pages;
  if (memory)
    memcpy(&r->free_pages, memory, sizeof(void *));
  else
    memory = r->base + (size_t)(REGION_PAGES - r->fresh--) * MF_HEAP_PAGE;
  if (r->used++ == 0)
    h->empty_regions--;
  *from = r;
  return memory;
}

static void page_memory_free(mf_heap *h, void *memory, region *r) {
  memcpy(memory, &r->free_pages, sizeof(void *));
  r->free_pages = memory;
  if (--r->used > 0)
    return;
  if (h->empty_regions >= (r->huge ? h->empty_regions_kept : 1))
    region_unmap(h, r);
  else
    h->empty_regions++;
}

/* {====== Regions made ahead ======
 * A huge page's first touch costs up to 4 ms at once on this project's
 * virtual machines (the host backs it 4 KiB at a time), too long for the
 * middle of a scheduler pass.  The engine has its records' heap's next
 * regions made and touched on libuv's thread pool (engine.c), backed by
 * huge pages, while the current one fills; a region the heap needs before
 * one is ready it maps itself, with 4 KiB pages (mf_heap_huge_regions says
 * which: the engine's first only), whose faults come one page at a time.
 * One spare is wanted once the newest region has handed out a quarter of
 * its pages; once the heap had to map one itself (it grows in bursts: a
 * chain of 100,000 runs makes 16 regions in 20 ms), MF__HEAP_SPARES_MAX,
 * made side by side (their faults are mostly the host's time). */

int mf__heap_regions_wanted(mf_heap *h) {
  h->tended = 1;
  if (!h->regions ||
      (!h->misses && h->regions->fresh > REGION_PAGES - REGION_PAGES / 4))
    return 0;
  return (h->misses ? MF__HEAP_SPARES_MAX : 1) - h->spare_count;
}

/* (Any thread: it touches nothing of a heap.) */
void *mf__heap_region_new(void) {
  char *base = huge_map(REGION_SIZE, PROT_READ | PROT_WRITE);
  if (!base)
    return NULL;
  madvise(base, REGION_SIZE, MADV_HUGEPAGE);
  for (size_t at = 0; at < REGION_SIZE; at += 4096)
    ((volatile char *)base)[at] = 0; /* (one fault per huge page) */
  return base;
}

void mf__heap_region_free(void *region) {
  if (region)
    munmap(region, REGION_SIZE);
}

void mf__heap_region_give(mf_heap *h, void *region) {
  if (!region)
    return;
  if (h->spare_count == MF__HEAP_SPARES_MAX ||
      (uintptr_t)region >> ADDRESS_BITS)
    mf__heap_region_free(region);
  else
    h->spares[h->spare_count++] = region;
}

/* }====== */

static void regions_free(mf_heap *h) {
  while (h->spare_count > 0)
    mf__heap_region_free(h->spares[--h->spare_count]);
  while (h->regions)
    region_unmap(h, h->regions);
  if (h->region_bits)
    munmap(h->region_bits, REGION_BITS_SIZE);
}
#endif

/* }====== */

/* 0 for blocks of 16 bytes, 1 for 32, ... */
static unsigned class_of(size_t n) {
  return (unsigned)((n + REDZONE - 1) / CLASS_STEP);
}

static page *page_of(const void *block) {
  return (page *)((uintptr_t)block & ~(uintptr_t)(MF_HEAP_PAGE - 1));
}

/* {====== Pages ====== */

static void list(mf_heap *h, page *p) {
  page **head = &h->room[p->block / CLASS_STEP - 1];
  p->prev = NULL;
  p->next = *head;
  if (*head)
    (*head)->prev = p;
  *head = p;
  p->listed = 1;
}

static void unlist(mf_heap *h, page *p) {
  if (p->prev)
    p->prev->next = p->next;
  else
    h->room[p->block / CLASS_STEP - 1] = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->listed = 0;
}

static page *page_new(mf_heap *h, unsigned class) {
  page *p = h->empty;
  if (p) {
    h->empty = p->next;
    h->empty_count--;
  } else {
    region *from;
    p = page_memory(h, &from);
    if (!p)
      return NULL;
    p->region = from;
    p->older = h->newest;
    p->newer = NULL;
    if (h->newest)
      h->newest->newer = p;
    h->newest = p;
    h->pages++;
  }
  p->free = NULL;
  p->fresh = (char *)p + HEADER;
  p->end = (char *)p + MF_HEAP_PAGE;
  p->used = 0;
  p->block = (class + 1) * CLASS_STEP;
  POISON(p->fresh, (size_t)(p->end - p->fresh));
  list(h, p);
  return p;
}

static void page_free(mf_heap *h, page *p) {
  if (p->older)
    p->older->newer = p->newer;
  if (p->newer)
    p->newer->older = p->older;
  else
    h->newest = p->older;
  h->pages--;
  UNPOISON(p, MF_HEAP_PAGE);
  page_memory_free(h, p, p->region);
}

/* Its last block was freed: kept for reuse, or given back. */
static void page_retire(mf_heap *h, page *p) {
  if (p->listed)
    unlist(h, p);
  if (h->empty_count < EMPTY_KEEP) {
    p->next = h->empty;
    h->empty = p;
    h->empty_count++;
  } else {
    page_free(h, p);
  }
}

/* }====== */

/* {====== Blocks ====== */

static void *small_alloc(mf_heap *h, size_t n) {
  unsigned class = class_of(n);
  page *p = h->room[class];
  if (!p && !(p = page_new(h, class)))
    return NULL;
  char *b = p->free;
  if (b) {
    UNPOISON(b, sizeof(void *));
    p->free = *(void **)b;
  } else {
    b = p->fresh;
    p->fresh += p->block;
  }
  UNPOISON(b, n);
  p->used++;
  if (!p->free && p->fresh + p->block > p->end)
    unlist(h, p); /* full */
  h->blocks++;
  h->bytes += n;
  return b;
}

static void small_free(mf_heap *h, void *b, size_t n) {
  page *p = page_of(b);
#if defined(__SANITIZE_ADDRESS__)
  memset(b, 0, n);
  UNPOISON(b, sizeof(void *));
#endif
  *(void **)b = p->free;
  p->free = b;
  POISON(b, p->block);
  h->blocks--;
  h->bytes -= n;
  if (--p->used == 0)
    page_retire(h, p);
  else if (!p->listed)
    list(h, p);
}

static void release(mf_heap *h, void *b, size_t n) {
  if (is_small(n))
    small_free(h, b, n);
  else if (is_huge(n))
    huge_free(b, n);
  else
    free(b);
}

static void *alloc(mf_heap *h, size_t n) {
  return is_small(n)  ? small_alloc(h, n)
         : is_huge(n) ? huge_alloc(n)
                      : malloc(n);
}

void *mf_heap_realloc(void *heap, void *ptr, size_t osize, size_t nsize) {
  mf_heap *h = heap;
  if (!ptr) { /* (osize says what kind of object it is for) */
    if (nsize == 0)
      return NULL;
    return alloc(h, nsize);
  }
  if (nsize == 0) {
    release(h, ptr, osize);
    return NULL;
  }
  int small = is_small(nsize);
  if (is_small(osize)) {
    if (small && class_of(nsize) + 1 == page_of(ptr)->block / CLASS_STEP) {
      UNPOISON(ptr, nsize); /* its own block still fits */
      POISON((char *)ptr + nsize, page_of(ptr)->block - nsize);
      h->bytes += nsize - osize;
      return ptr;
    }
  } else if (!small && !is_huge(osize) && !is_huge(nsize)) {
    return realloc(ptr, nsize);
  } else if (is_huge(osize) && is_huge(nsize)) {
    return huge_resize(ptr, osize, nsize);
  }
  void *moved = alloc(h, nsize);
  if (!moved) {
    if (small && is_small(osize) && nsize < osize) { /* it still fits */
      POISON((char *)ptr + nsize, osize - nsize);
      h->bytes -= osize - nsize;
      return ptr;
    }
    return NULL;
  }
  memcpy(moved, ptr, osize < nsize ? osize : nsize);
  release(h, ptr, osize);
  return moved;
}

/* }====== */

#define HUGE_FROM 2 /* by default, the regions from the third are huge */

mf_heap *mf_heap_new(void) {
  mf_heap *h = calloc(1, sizeof(mf_heap));
  if (h) {
    h->huge_from = HUGE_FROM;
    h->empty_regions_kept = 1;
  }
  return h;
}

void mf_heap_huge_regions(mf_heap *h, unsigned first, unsigned from) {
  h->huge_first = first;
  h->huge_from = from;
  h->empty_regions_kept = EMPTY_HUGE_REGIONS_KEEP;
}

void mf_heap_get_stats(const mf_heap *h, mf_heap_stats *stats) {
  stats->pages = h->pages;
  stats->empty_pages = h->empty_count;
  stats->small_blocks = h->blocks;
  stats->small_bytes = h->bytes;
  stats->regions = 0;
  for (const region *r = h->regions; r; r = r->next)
    stats->regions++;
}

/* Every page goes, blocks in use or not. */
void mf_heap_delete(mf_heap *h) {
  if (!h)
    return;
  while (h->newest)
    page_free(h, h->newest);
  regions_free(h);
  free(h);
}
