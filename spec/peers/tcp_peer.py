#!/usr/bin/env python3
"""TCP peers for moonflow's network specs, on 127.0.0.1.

  tcp_peer.py echo      an echo server (every byte back, until EOF)
  tcp_peer.py full      a listening socket that never accepts, its accept
                        queue full: a new connection's SYN is dropped, so
                        connecting to it times out
Prints "PORT <n>" when ready."""
import select
import socket
import sys
import threading
import time


def echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


def serve_echo():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    print("PORT %d" % srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def serve_full():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    addr = srv.getsockname()
    fillers = []
    # Connect until a connection stays unanswered: the queue is full then.
    while True:
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(addr)
        fillers.append(c)
        _, writable, _ = select.select([], [c], [], 0.5)
        if not writable:
            break
    print("PORT %d" % addr[1], flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    {"echo": serve_echo, "full": serve_full}[sys.argv[1]]()
