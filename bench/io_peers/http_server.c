/*
 * http_server.c -- the HTTP server bench/io.lua's clients fetch from: a
 * keep-alive responder on epoll, in C, so that the clients, not the
 * server, are what is measured.  Every request (up to its blank line; no
 * body expected) gets the same 200 response with a 12-byte body.
 * Prints "PORT <n>".  Built by bench/io.lua with cc -O2.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536
static const char response[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 12\r\n\r\nhello world\n";

typedef struct conn {
  char buf[8192];
  size_t len;
} conn;
static conn *conns[MAX_FD];

static void drop(int ep, int fd) {
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  free(conns[fd]);
  conns[fd] = NULL;
}

/* Answers every whole request in the buffer. */
static int serve(int fd, conn *c) {
  char out[64 * (sizeof response - 1)];
  size_t olen = 0, start = 0;
  for (;;) {
    char *end = memmem(c->buf + start, c->len - start, "\r\n\r\n", 4);
    if (!end)
      break;
    start = (size_t)(end - c->buf) + 4;
    if (olen + sizeof response - 1 > sizeof out) {
      if (write(fd, out, olen) != (ssize_t)olen)
        return -1;
      olen = 0;
    }
    memcpy(out + olen, response, sizeof response - 1);
    olen += sizeof response - 1;
  }
  memmove(c->buf, c->buf + start, c->len - start);
  c->len -= start;
  if (olen && write(fd, out, olen) != (ssize_t)olen)
    return -1; /* a client that does not read: dropped */
  return c->len == sizeof c->buf ? -1 : 0;
}

int main(void) {
  int srv = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof addr;
  if (bind(srv, (struct sockaddr *)&addr, sizeof addr) || listen(srv, 1024) ||
      getsockname(srv, (struct sockaddr *)&addr, &alen))
    return perror("listen"), 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = srv};
  epoll_ctl(ep, EPOLL_CTL_ADD, srv, &ev);
  printf("PORT %d\n", ntohs(addr.sin_port));
  fflush(stdout);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == srv) {
        int c;
        while ((c = accept4(srv, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= MAX_FD || !(conns[c] = calloc(1, sizeof(conn)))) {
            close(c);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      conn *c = conns[fd];
      ssize_t r = read(fd, c->buf + c->len, sizeof c->buf - c->len);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
          continue;
        drop(ep, fd);
        continue;
      }
      c->len += (size_t)r;
      if (serve(fd, c) < 0)
        drop(ep, fd);
    }
  }
}
