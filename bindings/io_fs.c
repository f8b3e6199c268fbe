/*
 * io_fs.c -- mf.fs.*: files on libuv's thread pool.  Each call is one job
 * (uv_queue_work) that does the whole operation on a worker thread -- open,
 * read, close; write a temporary file then rename it; walk a tree without
 * following links -- so the loop never blocks on a disk and a call costs
 * one round trip.  mf.fs.lines reads its file in chunks of CHUNK bytes,
 * one job each, so a huge file never sits in memory.
 *
 * A job's memory is its own: the data to write is copied, the data read is
 * malloc'd, so an abandoned wait (its run cancelled) leaves a running job
 * nothing of Lua's to touch; a job not yet started is cancelled.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

#define CHUNK (64 * 1024)

typedef enum fs_kind {
  FS_READ,
  FS_WRITE,
  FS_APPEND,
  FS_LIST,
  FS_STAT,
  FS_MKDIR,
  FS_REMOVE,
  FS_RENAME,
  FS_OPEN, /* mf.fs.lines: open for reading */
  FS_CHUNK /* mf.fs.lines: the next chunk */
} fs_kind;

typedef struct fs_op {
  mfl_io_obj obj;
  mfl_io_wait wait;
  uv_work_t req;
  int busy;
  fs_kind kind;
  int flag;    /* parents / recursive */
  int status;  /* 0 or a libuv error (-errno) */
  int missing; /* stat: the path does not exist */
  char *path, *path2;
  char *data; /* write: the bytes; read, chunk: what was read (malloc'd) */
  size_t len;
  char **names; /* list */
  size_t count;
  struct stat st;
  int fd; /* open: the file; chunk: read from it */
} fs_op;

/* {====== Jobs (worker threads: no Lua, no loop) ====== */

static int err(void) { return -errno; }

static int read_all(fs_op *op) {
  int fd = open(op->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return err();
  struct stat st;
  if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    int rc = S_ISDIR(st.st_mode) ? UV_EISDIR : err();
    close(fd);
    return rc;
  }
  /* The size is a hint: files in /proc say 0, files grow. */
  size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, len = 0;
  char *buf = malloc(cap);
  int rc = buf ? 0 : UV_ENOMEM;
  while (rc == 0) {
    if (len == cap) {
      char *grown = realloc(buf, cap * 2);
      if (!grown) {
        rc = UV_ENOMEM;
        break;
      }
      buf = grown;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      rc = err();
    else if (n == 0)
      break;
    else
      len += (size_t)n;
  }
  close(fd);
  if (rc) {
    free(buf);
    return rc;
  }
  op->data = buf;
  op->len = len;
  return 0;
}

static int write_fd(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return err();
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* A temporary file beside path (so that rename is atomic), created with
 * mode 0666 less the umask, as a new file would be. */
static int open_temp(const char *path, char *tmp, size_t size) {
  static unsigned counter; /* uniqueness only; a race just retries */
  for (int attempt = 0; attempt < 100; attempt++) {
    unsigned n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    snprintf(tmp, size, "%s.mf-tmp-%ld-%u", path, (long)getpid(), n);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST)
      return fd < 0 ? err() : fd;
  }
  return UV_EEXIST;
}

/* Replaces the file atomically: readers see the old content or the new,
 * never a part; the new content is on disk before the rename. */
static int write_atomic(fs_op *op) {
  size_t size = strlen(op->path) + 64;
  char *tmp = malloc(size);
  if (!tmp)
    return UV_ENOMEM;
  int fd = open_temp(op->path, tmp, size);
  if (fd < 0) {
    free(tmp);
    return fd;
  }
  struct stat old;
  int rc = write_fd(fd, op->data, op->len);
  if (rc == 0 && stat(op->path, &old) == 0 && S_ISREG(old.st_mode))
    fchmod(fd, old.st_mode & 07777); /* the file keeps its mode */
  if (rc == 0 && fsync(fd) != 0)
    rc = err();
  if (close(fd) != 0 && rc == 0)
    rc = err();
  if (rc == 0 && rename(tmp, op->path) != 0)
    rc = err();
  if (rc)
    unlink(tmp);
  free(tmp);
  return rc;
}

static int append(fs_op *op) {
  int fd = open(op->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0)
    return err();
  int rc = write_fd(fd, op->data, op->len);
  if (close(fd) != 0 && rc == 0)
    rc = err();
  return rc;
}

static int by_bytes(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list(fs_op *op) {
  DIR *dir = opendir(op->path);
  if (!dir)
    return err();
  size_t cap = 16;
  op->names = malloc(cap * sizeof *op->names);
  int rc = op->names ? 0 : UV_ENOMEM;
  struct dirent *e;
  while (rc == 0) {
    errno = 0;
    if (!(e = readdir(dir))) {
      rc = errno ? err() : 0;
      break;
    }
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
      continue;
    if (op->count == cap) {
      char **grown = realloc(op->names, cap * 2 * sizeof *grown);
      if (!grown) {
        rc = UV_ENOMEM;
        break;
      }
      op->names = grown;
      cap *= 2;
    }
    if (!(op->names[op->count] = strdup(e->d_name)))
      rc = UV_ENOMEM;
    else
      op->count++;
  }
  closedir(dir);
  if (rc == 0)
    qsort(op->names, op->count, sizeof *op->names, by_bytes);
  return rc;
}

static int make_dir(const char *path, int parents) {
  if (mkdir(path, 0777) == 0)
    return 0;
  int e = errno;
  struct stat st;
  if (e == EEXIST && parents)
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : UV_EEXIST;
  if (e != ENOENT || !parents)
    return -e;
  /* A parent is missing: make each one, from the top. */
  char *copy = strdup(path);
  if (!copy)
    return UV_ENOMEM;
  int rc = 0;
  for (char *p = copy + 1; *p && rc == 0; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(copy, 0777) != 0 && errno != EEXIST)
      rc = err();
    *p = '/';
  }
  free(copy);
  if (rc == 0 && mkdir(path, 0777) != 0)
    rc = errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0
                                                                        : err();
  return rc;
}

/* Removes name in the directory dirfd, and all under it: a link is removed,
 * never followed (openat with O_NOFOLLOW). */
static int remove_tree(int dirfd, const char *name, int top) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return errno == ENOENT && !top ? 0 : err();
  if (!S_ISDIR(st.st_mode))
    return unlinkat(dirfd, name, 0) == 0 || (errno == ENOENT && !top) ? 0
                                                                      : err();
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return err();
  DIR *dir = fdopendir(fd);
  if (!dir) {
    int rc = err();
    close(fd);
    return rc;
  }
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(dir)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      rc = remove_tree(fd, e->d_name, 0);
  closedir(dir);
  if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) != 0 &&
      !(errno == ENOENT && !top))
    rc = err();
  return rc;
}

static int remove_path(fs_op *op) {
  if (op->flag)
    return remove_tree(AT_FDCWD, op->path, 1);
  struct stat st;
  if (lstat(op->path, &st) != 0)
    return err();
  if (S_ISDIR(st.st_mode))
    return rmdir(op->path) == 0 ? 0 : err();
  return unlink(op->path) == 0 ? 0 : err();
}

static int open_for_lines(fs_op *op) {
  int fd = open(op->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return err();
  struct stat st;
  if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    int rc = S_ISDIR(st.st_mode) ? UV_EISDIR : err();
    close(fd);
    return rc;
  }
  op->fd = fd;
  return 0;
}

static int read_chunk(fs_op *op) {
  op->data = malloc(CHUNK);
  if (!op->data)
    return UV_ENOMEM;
  ssize_t n;
  do
    n = read(op->fd, op->data, CHUNK);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return err();
  op->len = (size_t)n;
  return 0;
}

static void fs_work(uv_work_t *req) {
  fs_op *op = req->data;
  switch (op->kind) {
  case FS_READ:
    op->status = read_all(op);
    break;
  case FS_WRITE:
    op->status = write_atomic(op);
    break;
  case FS_APPEND:
    op->status = append(op);
    break;
  case FS_LIST:
    op->status = list(op);
    break;
  case FS_STAT:
    if (lstat(op->path, &op->st) != 0) {
      op->status = err();
      op->missing = errno == ENOENT || errno == ENOTDIR;
    }
    break;
  case FS_MKDIR:
    op->status = make_dir(op->path, op->flag);
    break;
  case FS_REMOVE:
    op->status = remove_path(op);
    break;
  case FS_RENAME:
    op->status = rename(op->path, op->path2) == 0 ? 0 : err();
    break;
  case FS_OPEN:
    op->status = open_for_lines(op);
    break;
  case FS_CHUNK:
    op->status = read_chunk(op);
    break;
  }
}

/* }====== */

/* {====== Operations (the loop thread) ====== */

static void fs_finalize(mfl_io_obj *obj) {
  fs_op *op = (fs_op *)obj;
  if (op->kind == FS_OPEN && op->fd >= 0)
    close(op->fd); /* opened for a waiter that went away */
  free(op->path);
  free(op->path2);
  free(op->data);
  for (size_t i = 0; i < op->count; i++)
    free(op->names[i]);
  free(op->names);
}

static void fs_stop(fs_op *op) {
  if (op->busy)
    uv_cancel((uv_req_t *)&op->req); /* a job already running finishes */
}

static void fs_shutdown(mfl_io_obj *obj) { fs_stop((fs_op *)obj); }

static void fs_abandon(mfl_io_wait *w) {
  fs_op *op = (fs_op *)((char *)w - offsetof(fs_op, wait));
  fs_stop(op);
  mfl_io_obj_unref(&op->obj);
}

static void fs_done(uv_work_t *req, int status) {
  fs_op *op = req->data;
  op->busy = 0;
  if (status < 0)
    op->status = status; /* cancelled */
  mfl_io_wake(&op->wait);
  mfl_io_obj_unref(&op->obj);
}

static const char *check_path(lua_State *L, int idx, const char *what) {
  size_t len;
  if (lua_type(L, idx) != LUA_TSTRING)
    mfl_raise(L, "UsageError", "%s: path must be a string, got %s", what,
              luaL_typename(L, idx));
  const char *path = lua_tolstring(L, idx, &len);
  if (len == 0 || strlen(path) != len)
    mfl_raise(L, "UsageError",
              "%s: path must be a non-empty string without "
              "zero bytes",
              what);
  return path;
}

/* Whether the options table at idx has flag set to true. */
static int opt_flag(lua_State *L, int idx, const char *flag, const char *what) {
  if (lua_isnoneornil(L, idx))
    return 0;
  if (!lua_istable(L, idx))
    mfl_raise(L, "UsageError", "%s: options must be a table, got %s", what,
              luaL_typename(L, idx));
  lua_getfield(L, idx, flag);
  int on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return on;
}

/* Starts the job; the continuation k gets the op as its context. */
static int start(lua_State *L, mf_run *run, mfl_io *io, fs_op *op,
                 lua_KFunction k) {
  if (!op->obj.finalize)
    op->obj.finalize = fs_finalize;
  op->obj.shutdown = fs_shutdown;
  op->wait.on_abandon = fs_abandon;
  op->req.data = op;
  int rc = uv_queue_work(io->loop, &op->req, fs_work, fs_done);
  if (rc < 0) {
    mfl_io_obj_unref(&op->obj);
    return luaL_error(L, "moonflow: cannot queue a file job: %s",
                      uv_strerror(rc));
  }
  op->busy = 1;
  mfl_io_obj_ref(&op->obj);
  return mfl_io_park(L, run, &op->wait, -1, (lua_KContext)op, k);
}

/* A new op of kind for the call at the top of L (path at index 1). */
static fs_op *new_op(lua_State *L, mf_run **run, mfl_io **io, fs_kind kind,
                     const char *what) {
  mfl_state *S = mfl_state_get(L);
  const char *path = check_path(L, 1, what);
  *run = mfl_io_begin(L, S, what, io);
  fs_op *op = mfl_io_obj_new(*io, sizeof *op);
  if (op && !(op->path = strdup(path))) {
    mfl_io_obj_unref(&op->obj);
    op = NULL;
  }
  if (!op)
    luaL_error(L, "moonflow: out of memory");
  op->kind = kind;
  op->fd = -1;
  return op;
}

/* The outcome: raises the op's error (naming the call and its path), or
 * returns the op for the continuation to read and release. */
static fs_op *outcome(lua_State *L, lua_KContext ctx, const char *what) {
  fs_op *op = (fs_op *)ctx;
  mfl_io_resumed(L, &op->wait);
  if (op->status < 0 && !(op->kind == FS_STAT && op->missing)) {
    int code = op->status;
    lua_pushstring(L, op->path);
    mfl_io_obj_unref(&op->obj);
    mfl_io_push_error(L, code, NULL, what, lua_tostring(L, -1), NULL);
    lua_error(L);
  }
  return op;
}

/* Each call names itself in its errors: the continuations differ only by
 * that name, so each has its own. */
#define NAMED_DONE(fn, name)                                                   \
  static int fn(lua_State *L, int status, lua_KContext ctx) {                  \
    (void)status;                                                              \
    fs_op *op = outcome(L, ctx, name);                                         \
    mfl_io_obj_unref(&op->obj);                                                \
    return 0;                                                                  \
  }
NAMED_DONE(write_k, "write")
NAMED_DONE(append_k, "append")
NAMED_DONE(mkdir_k, "mkdir")
NAMED_DONE(remove_k, "remove")
NAMED_DONE(rename_k, "rename")

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fs_op *op = outcome(L, ctx, "read");
  lua_pushlstring(L, op->data ? op->data : "", op->len);
  mfl_io_obj_unref(&op->obj);
  return 1;
}

/* core.io.fs_read(path) -> string */
static int l_read(lua_State *L) {
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_READ, "mf.fs.read");
  return start(L, run, io, op, read_k);
}

static int write_common(lua_State *L, fs_kind kind, const char *what,
                        lua_KFunction k) {
  size_t len;
  if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER)
    mfl_raise(L, "UsageError", "%s: data must be a string, got %s", what,
              luaL_typename(L, 2));
  const char *data = lua_tolstring(L, 2, &len);
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, kind, what);
  op->data = malloc(len ? len : 1); /* a copy: the job outlives the string */
  if (!op->data) {
    mfl_io_obj_unref(&op->obj);
    return luaL_error(L, "moonflow: out of memory");
  }
  memcpy(op->data, data, len);
  op->len = len;
  return start(L, run, io, op, k);
}

/* core.io.fs_write(path, data), core.io.fs_append(path, data) */
static int l_write(lua_State *L) {
  return write_common(L, FS_WRITE, "mf.fs.write", write_k);
}
static int l_append(lua_State *L) {
  return write_common(L, FS_APPEND, "mf.fs.append", append_k);
}

static int list_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fs_op *op = outcome(L, ctx, "list");
  lua_createtable(L, (int)op->count, 0);
  for (size_t i = 0; i < op->count; i++) {
    lua_pushstring(L, op->names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  mfl_io_obj_unref(&op->obj);
  return 1;
}

/* core.io.fs_list(dir) -> sorted names */
static int l_list(lua_State *L) {
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_LIST, "mf.fs.list");
  return start(L, run, io, op, list_k);
}

static const char *type_of(mode_t mode) {
  if (S_ISREG(mode))
    return "file";
  if (S_ISDIR(mode))
    return "directory";
  if (S_ISLNK(mode))
    return "link";
  return "other";
}

static int stat_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fs_op *op = outcome(L, ctx, "stat");
  if (op->missing) {
    mfl_io_obj_unref(&op->obj);
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 4);
  lua_pushstring(L, type_of(op->st.st_mode));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)op->st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (lua_Number)op->st.st_mtim.tv_sec +
                        (lua_Number)op->st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)(op->st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  mfl_io_obj_unref(&op->obj);
  return 1;
}

/* core.io.fs_stat(path) -> {type, size, mtime, mode} or nil */
static int l_stat(lua_State *L) {
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_STAT, "mf.fs.stat");
  return start(L, run, io, op, stat_k);
}

/* core.io.fs_mkdir(path, {parents}?) */
static int l_mkdir(lua_State *L) {
  int parents = opt_flag(L, 2, "parents", "mf.fs.mkdir");
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_MKDIR, "mf.fs.mkdir");
  op->flag = parents;
  return start(L, run, io, op, mkdir_k);
}

/* core.io.fs_remove(path, {recursive}?) */
static int l_remove(lua_State *L) {
  int recursive = opt_flag(L, 2, "recursive", "mf.fs.remove");
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_REMOVE, "mf.fs.remove");
  op->flag = recursive;
  return start(L, run, io, op, remove_k);
}

/* core.io.fs_rename(from, to) */
static int l_rename(lua_State *L) {
  const char *to = check_path(L, 2, "mf.fs.rename");
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_RENAME, "mf.fs.rename");
  if (!(op->path2 = strdup(to))) {
    mfl_io_obj_unref(&op->obj);
    return luaL_error(L, "moonflow: out of memory");
  }
  return start(L, run, io, op, rename_k);
}

/* }====== */

/* {====== mf.fs.lines ====== */

/* The reader behind a lines iterator: its file, what was read and not
 * yet returned.  Closed at the end of the file, by the for loop's closing
 * value, by the collector, or when the run that opened it ends. */
typedef struct lines {
  mfl_io_obj obj;
  mf_resource res;
  int fd;
  int inflight; /* a chunk job reads fd: close waits for it */
  int closed;
  int eof;
  char *buf;
  size_t start, len, cap; /* unread: buf[start .. start + len) */
  size_t scanned;         /* bytes of it known to hold no newline */
  char *path;
} lines;

typedef struct lines_box {
  lines *l;
  mfl_state *S; /* (mfl_note_box) */
} lines_box;

static void lines_close(lines *l) {
  if (l->closed)
    return;
  l->closed = 1;
  mf_resource_detach(&l->res);
  if (!l->inflight && l->fd >= 0) {
    close(l->fd);
    l->fd = -1;
  }
  free(l->buf);
  l->buf = NULL;
  l->start = l->len = l->cap = l->scanned = 0;
}

static void lines_finalize(mfl_io_obj *obj) {
  lines *l = (lines *)obj;
  lines_close(l);
  if (l->fd >= 0)
    close(l->fd);
  free(l->path);
}

static void lines_shutdown(mfl_io_obj *obj) { lines_close((lines *)obj); }

static void lines_resource_close(mf_resource *res) {
  lines_close((lines *)((char *)res - offsetof(lines, res)));
}

/* A chunk job for this reader: it holds the reader until it is done. */
typedef struct chunk_op {
  fs_op base;
  lines *l;
} chunk_op;

static void chunk_finalize(mfl_io_obj *obj) {
  chunk_op *op = (chunk_op *)obj;
  lines *l = op->l;
  l->inflight = 0;
  if (l->closed && l->fd >= 0) {
    close(l->fd);
    l->fd = -1;
  }
  fs_finalize(obj);
  mfl_io_obj_unref(&l->obj);
}

/* Pops a line (or the last piece) off the buffer onto L; 0 when a whole
 * line is not there yet and the file goes on. */
static int pop_line(lua_State *L, lines *l) {
  char *p = l->buf + l->start;
  char *nl = l->len > l->scanned
                 ? memchr(p + l->scanned, '\n', l->len - l->scanned)
                 : NULL;
  if (!nl) {
    l->scanned = l->len;
    if (!l->eof)
      return 0;
    if (l->len == 0) {
      lines_close(l);
      lua_pushnil(L);
      return 1;
    }
    lua_pushlstring(L, p, l->len);
    l->start = l->len = l->scanned = 0;
    return 1;
  }
  size_t n = (size_t)(nl - p);
  lua_pushlstring(L, p, n);
  l->start += n + 1;
  l->len -= n + 1;
  l->scanned = 0;
  return 1;
}

/* Appends a chunk, moving the unread part to the front first. */
static int append_chunk(lines *l, const char *data, size_t n) {
  if (l->start > 0 && l->len > 0)
    memmove(l->buf, l->buf + l->start, l->len);
  l->start = 0;
  if (l->len + n > l->cap) {
    size_t cap = l->cap ? l->cap : CHUNK;
    while (cap < l->len + n)
      cap *= 2;
    char *grown = realloc(l->buf, cap);
    if (!grown)
      return UV_ENOMEM;
    l->buf = grown;
    l->cap = cap;
  }
  memcpy(l->buf + l->len, data, n);
  l->len += n;
  return 0;
}

static int lines_next(lua_State *L);

/* Stack: (the iterator's arguments); upvalues: the state, the box */
static int lines_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  chunk_op *op = (chunk_op *)ctx;
  lines *l = op->l;
  mfl_io_resumed(L, &op->base.wait);
  int code = op->base.status;
  if (code == 0 && !l->closed) {
    if (op->base.len == 0)
      l->eof = 1;
    else
      code = append_chunk(l, op->base.data, op->base.len);
  }
  mfl_io_obj_unref(&op->base.obj);
  if (code < 0) {
    lua_pushstring(L, l->path);
    lines_close(l);
    return mfl_io_raise(L, code, "read", lua_tostring(L, -1));
  }
  return lines_next(L);
}

/* The iterator: the next line, or nil at the end (the file is closed). */
static int lines_next(lua_State *L) {
  lines_box *box = lua_touserdata(L, lua_upvalueindex(2));
  lines *l = box->l;
  if (!l || l->closed) {
    lua_pushnil(L);
    return 1;
  }
  if (pop_line(L, l))
    return 1;
  mfl_state *S = mfl_state_get(L);
  mfl_io *io;
  mf_run *run = mfl_io_begin(L, S, "mf.fs.lines", &io);
  chunk_op *op = mfl_io_obj_new(io, sizeof *op);
  if (!op)
    return luaL_error(L, "moonflow: out of memory");
  op->base.kind = FS_CHUNK;
  op->base.fd = l->fd;
  op->l = l;
  mfl_io_obj_ref(&l->obj);
  l->inflight = 1;
  op->base.obj.finalize = chunk_finalize;
  /* The reader's path names the errors: no copy of it in the job. */
  return start(L, run, io, &op->base, lines_k);
}

static void release_lines_box(void *p) {
  lines_box *box = p;
  if (box->l) {
    lines_close(box->l);
    mfl_io_obj_unref(&box->l->obj);
    box->l = NULL;
  }
}

static int lines_gc(lua_State *L) {
  lines_box *box = lua_touserdata(L, 1);
  mfl_forget_box(box->S, box);
  release_lines_box(box);
  return 0;
}

static int lines_close_method(lua_State *L) {
  lines_box *box = luaL_checkudata(L, 1, "moonflow.lines");
  if (box->l)
    lines_close(box->l);
  return 0;
}

static int open_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fs_op *op = outcome(L, ctx, "open");
  mfl_state *S = mfl_state_get(L);
  lines_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->l = NULL;
  box->S = S;
  luaL_setmetatable(L, "moonflow.lines");
  mfl_note_box(L, S, box, release_lines_box);
  lines *l = mfl_io_obj_new(op->obj.io, sizeof *l);
  if (!l) {
    mfl_io_obj_unref(&op->obj);
    return luaL_error(L, "moonflow: out of memory");
  }
  l->obj.finalize = lines_finalize;
  l->obj.shutdown = lines_shutdown;
  l->res.close = lines_resource_close;
  l->fd = op->fd;
  op->fd = -1;
  l->path = op->path;
  op->path = NULL;
  box->l = l;
  mfl_io_obj_unref(&op->obj);
  mfl_io_attach(S, &l->res);
  /* for line in mf.fs.lines(p): the iterator, no state, no control, and
   * the reader as the closing value (a break closes the file). */
  int ud = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mfl_key_state); /* see mfl_state_get */
  lua_pushvalue(L, ud);
  lua_pushcclosure(L, lines_next, 2);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushvalue(L, ud);
  return 4;
}

/* core.io.fs_lines(path) -> iterator, nil, nil, closer */
static int l_lines(lua_State *L) {
  mf_run *run;
  mfl_io *io;
  fs_op *op = new_op(L, &run, &io, FS_OPEN, "mf.fs.lines");
  return start(L, run, io, op, open_k);
}

/* }====== */

static const luaL_Reg fs_functions[] = {
    {"fs_read", l_read},     {"fs_write", l_write},
    {"fs_append", l_append}, {"fs_list", l_list},
    {"fs_stat", l_stat},     {"fs_mkdir", l_mkdir},
    {"fs_remove", l_remove}, {"fs_rename", l_rename},
    {"fs_lines", l_lines},   {NULL, NULL}};

void mfl_open_io_fs(lua_State *L) {
  if (luaL_newmetatable(L, "moonflow.lines")) {
    lua_pushcfunction(L, lines_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lines_close_method);
    lua_setfield(L, -2, "__close");
    lua_newtable(L);
    lua_pushcfunction(L, lines_close_method);
    lua_setfield(L, -2, "close");
    lua_setfield(L, -2, "__index");
    mfl_protect_mt(L);
  }
  lua_pop(L, 1);
  mfl_setfuncs(L, fs_functions);
}
