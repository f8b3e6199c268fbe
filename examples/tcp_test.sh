#!/bin/sh
# tcp_test.sh -- the example.tcp_server test: starts tcp_server on an
# ephemeral 127.0.0.1 port, loads it with tcp_load (200 connections; every
# answer checked), in engine mode and in --plain mode, and prints the
# engine/plain throughput ratio.  Fails if an answer is wrong or lost, or if
# a server does not exit 0 (a sanitizer report makes it exit non-zero).
# The servers are stopped three ways: SIGTERM when idle, SIGINT with flows
# in flight, and a quit request.  Whatever happens, the server is killed on
# exit.  Usage: sh tcp_test.sh TCP_SERVER TCP_LOAD
set -u
server=$1
load=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcp_test.XXXXXX") || exit 1
pid=
loadpid=

cleanup() {
  for p in $pid $loadpid; do
    kill -KILL "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # exit runs the EXIT trap

fail() {
  echo "tcp_test: FAILED: $*"
  for f in "$tmp"/*.err; do
    [ -s "$f" ] && { echo "--- $f"; cat "$f"; }
  done
  exit 1
}

# start NAME [--plain]: runs the server in the background, sets pid, port.
start() {
  name=$1
  shift
  "$server" "$@" 0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  i=0
  while [ $i -lt 200 ]; do # 20 s at most (a loaded machine, the sanitizers)
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
      "$tmp/$name.out" 2>/dev/null)
    if [ -n "$port" ]; then
      echo "tcp_test: $name server on 127.0.0.1:$port"
      return
    fi
    kill -0 "$pid" 2>/dev/null || fail "$name server did not start"
    sleep 0.1
    i=$((i + 1))
  done
  fail "$name server printed no port"
}

# stopped NAME: waits (20 s at most) for the server to exit; it must exit 0.
stopped() {
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    fail "$1 server did not stop"
  fi
  wait "$pid"
  status=$?
  pid=
  [ $status -eq 0 ] || fail "$1 server exited with status $status"
  grep -h "shutting down" "$tmp/$1.err"
}

# run NAME ARGS...: one load run; its output is kept in NAME.load.
run() {
  name=$1
  shift
  "$load" --port "$port" "$@" >"$tmp/$name.load" 2>"$tmp/$name.load.err"
  status=$?
  cat "$tmp/$name.load"
  [ $status -eq 0 ] || fail "load $name: status $status"
}

rate() { sed -n 's/^tcp_load: \([0-9]*\) requests\/s.*/\1/p' "$tmp/$1.load"; }
cpu() { sed -n 's/.*CPU, \([0-9.]*\) us per request.*/\1/p' "$tmp/$1.err"; }

# Each load ends by itself once every answer is in; --grace is how long it
# waits for the answers still due after --duration before calling them
# lost: generous, so that a loaded machine (or the sanitizers) is not taken
# for lost answers.
GRACE=10

# 1. The engine: 200 connections one request at a time (bad requests and
#    hang-ups with flows running mixed in), then 20 pipelining 16 deep
#    (answers must keep request order); stopped by SIGTERM.
start engine
run engine --clients 200 --requests 25 --duration 3 --grace $GRACE --abandon 20
run engine-pipelined --clients 20 --requests 64 --depth 16 --numbers 20 \
  --duration 2 --grace $GRACE
kill -TERM "$pid"
stopped engine

# 2. The same load in plain C; the load ends it with a quit request.
start plain --plain
run plain --clients 200 --requests 25 --duration 3 --grace $GRACE --abandon 20 --quit
stopped plain

# 3. SIGINT while a load runs: the engine closes with flows in flight.  The
#    load then fails (answers lost); only the server's clean exit counts.
start interrupted
"$load" --port "$port" --clients 200 --requests 1000 --duration 2 --grace 1 \
  >"$tmp/interrupted.load" 2>&1 &
loadpid=$!
sleep 0.5
kill -INT "$pid"
stopped interrupted
wait "$loadpid"
loadpid=
grep -h "requests sent" "$tmp/interrupted.load"

# Requests/s include the load tester's own cost on the same machine; the
# servers' CPU time per request is the engine's cost alone.
e=$(rate engine)
p=$(rate plain)
ec=$(cpu engine)
pc=$(cpu plain)
if [ -z "$e" ] || [ -z "$p" ] || [ -z "$ec" ] || [ -z "$pc" ]; then
  fail "no figures"
fi
awk -v e="$e" -v p="$p" -v ec="$ec" -v pc="$pc" 'BEGIN {
  printf "tcp_test: requests/s: engine %d, plain %d (engine/plain %.2f)\n",
    e, p, e / p
  printf "tcp_test: server CPU per request: engine %.1f us, plain %.1f us " \
    "(engine/plain %.1f)\n", ec, pc, (pc > 0 ? ec / pc : 0) }'
echo "tcp_test: OK"
