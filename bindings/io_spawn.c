/*
 * io_spawn.c -- starting the programs of mf.exec and the processes
 * runner's workers, and reaping them.
 *
 * Starting: posix_spawn, which glibc makes with clone(CLONE_VM |
 * CLONE_VFORK): no copy of the process's memory map, as the fork of libuv
 * 1.44's uv_spawn makes (several times dearer for a process the size of a
 * Lua state with its engine, more so under the sanitizers; and a fork of a
 * process with threads may hang in the child before its exec, on a lock
 * another thread held at the fork, as ASan's do).  mf.exec's programs
 * lead a new session (POSIX_SPAWN_SETSID: their own process group, so that
 * kill(-pid) reaches their children too).  Every child starts with default
 * signal dispositions and an empty signal mask (moonflow's SIGPIPE ignore
 * is not inherited).
 * A bare name is looked up on the PATH of the program's environment, as
 * execvp does after the environment is replaced.
 *
 * Reaping: one SIGCHLD watcher per Lua state calls waitpid for each of its
 * own children by pid, so that other children of the process -- libuv's,
 * luv's, os.execute's -- are left to whoever started them.  The watcher
 * keeps the loop alive only while a child of its lives that is not weak
 * (an idle worker is weak).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"

extern char **environ;

typedef struct reaper {
  mfl_io_obj obj;
  uv_signal_t sig;
  int open;
  mfl_child *first;
  int strong; /* listed children that keep the loop alive */
} reaper;

/* {====== Reaping ====== */

static void unlink_child(reaper *r, mfl_child *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    r->first = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->reaper = NULL;
  if (!c->weak && --r->strong == 0 && r->open)
    uv_unref((uv_handle_t *)&r->sig);
  mfl_io_obj_unref(&r->obj); /* the child's */
}

void mfl_child_keep_loop(mfl_child *c, int on) {
  reaper *r = c->reaper;
  on = on != 0;
  if (c->weak == !on)
    return;
  c->weak = !on;
  if (!r)
    return;
  r->strong += on ? 1 : -1;
  if (r->open && r->strong == on) /* 0 -> 1 or 1 -> 0 */
    (on ? uv_ref : uv_unref)((uv_handle_t *)&r->sig);
}

static void on_sigchld(uv_signal_t *sig, int signum) {
  (void)signum;
  reaper *r = sig->data;
  mfl_io_obj_ref(&r->obj); /* the last child's unlink must not free it */
  for (mfl_child *c = r->first; c;) {
    mfl_child *next = c->next;
    int status = 0;
    pid_t pid = waitpid(c->pid, &status, WNOHANG);
    if (pid == c->pid || (pid < 0 && errno == ECHILD)) {
      unlink_child(r, c);
      if (pid < 0)
        c->exit_status = -1; /* reaped by someone else: status unknown */
      else if (WIFSIGNALED(status))
        c->term_signal = WTERMSIG(status);
      else
        c->exit_status = WEXITSTATUS(status);
      c->exited = 1;
      c->on_exit(c); /* may free c, never next */
    }
    c = next;
  }
  mfl_io_obj_unref(&r->obj);
}

static void on_reaper_closed(uv_handle_t *handle) {
  mfl_io_obj_unref(&((reaper *)handle->data)->obj);
}

/* The state closes: no more SIGCHLD.  Children still listed hold the
 * reaper until their own shutdown forgets them. */
static void reaper_shutdown(mfl_io_obj *obj) {
  reaper *r = (reaper *)obj;
  if (r->open) {
    r->open = 0;
    uv_close((uv_handle_t *)&r->sig, on_reaper_closed);
  }
  r->obj.io->reaper = NULL;
  mfl_io_obj_unref(&r->obj); /* the state's */
}

static reaper *get_reaper(mfl_io *io) {
  if (io->reaper)
    return io->reaper;
  reaper *r = mfl_io_obj_new(io, sizeof *r);
  if (!r)
    return NULL;
  r->obj.shutdown = reaper_shutdown;
  uv_signal_init(io->loop, &r->sig);
  r->sig.data = r;
  mfl_io_obj_ref(&r->obj); /* the handle's */
  if (uv_signal_start(&r->sig, on_sigchld, SIGCHLD) != 0) {
    uv_close((uv_handle_t *)&r->sig, on_reaper_closed);
    mfl_io_obj_unref(&r->obj);
    return NULL;
  }
  uv_unref((uv_handle_t *)&r->sig);
  r->open = 1;
  io->reaper = r;
  return r;
}

void mfl_child_forget(mfl_child *c) {
  if (c->reaper)
    unlink_child(c->reaper, c);
}

/* }====== */

/* {====== Starting ====== */

/* The value of name in the "NAME=value" strings of env, or NULL. */
static const char *env_get(char **env, const char *name) {
  size_t n = strlen(name);
  for (; env && *env; env++)
    if (!strncmp(*env, name, n) && (*env)[n] == '=')
      return *env + n + 1;
  return NULL;
}

/* The program file for argv[0]: itself when it names a path, else the
 * first executable regular file of that name in PATH's directories (an
 * empty entry is the current directory).  *out is malloc'd.  Returns 0,
 * UV_ENOENT, UV_EACCES (found, not executable) or UV_ENOMEM. */
static int find_program(const char *file, char **env, char **out) {
  if (strchr(file, '/'))
    return (*out = strdup(file)) ? 0 : UV_ENOMEM;
  const char *path = env_get(env ? env : environ, "PATH");
  if (!path)
    path = "/bin:/usr/bin"; /* execvp's default */
  int rc = UV_ENOENT;
  size_t flen = strlen(file);
  while (*path) {
    const char *end = strchr(path, ':');
    size_t dlen = end ? (size_t)(end - path) : strlen(path);
    char *candidate = malloc(dlen + flen + 3);
    if (!candidate)
      return UV_ENOMEM;
    if (dlen == 0)
      memcpy(candidate, ".", 2);
    else {
      memcpy(candidate, path, dlen);
      candidate[dlen] = '\0';
    }
    strcat(candidate, "/");
    strcat(candidate, file);
    struct stat st;
    if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(candidate, X_OK) == 0) {
        *out = candidate;
        return 0;
      }
      rc = UV_EACCES;
    }
    free(candidate);
    path += dlen + (end != NULL);
    if (!end)
      break;
  }
  return rc;
}

int mfl_spawn(mfl_io *io, mfl_child *c, const mfl_spawn_opts *o) {
  reaper *r = get_reaper(io);
  if (!r)
    return UV_ENOMEM;
  char *file;
  int rc = find_program(o->argv[0], o->env, &file);
  if (rc)
    return rc;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  /* First, before descriptors 0-2 are replaced (it may be one of them). */
  if (o->extra_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, o->extra_fd, 3);
  if (o->stdin_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, o->stdin_fd, 0);
  else
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, o->stdout_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, o->stderr_fd, 2);
  if (o->cwd)
    posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, (o->new_session ? POSIX_SPAWN_SETSID : 0) |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int err =
      posix_spawn(&pid, file, &fa, &attr, o->argv, o->env ? o->env : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  free(file);
  if (err)
    return -err;
  c->pid = pid;
  c->reaper = r;
  mfl_io_obj_ref(&r->obj);
  c->prev = NULL;
  c->next = r->first;
  if (r->first)
    r->first->prev = c;
  r->first = c;
  if (!c->weak && r->strong++ == 0)
    uv_ref((uv_handle_t *)&r->sig);
  /* A child that ended before it was listed: its SIGCHLD is handled from
   * the loop, later, and finds it listed now. */
  return 0;
}

/* }====== */
