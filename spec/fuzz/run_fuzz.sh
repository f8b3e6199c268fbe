#!/bin/sh
# spec/fuzz/run_fuzz.sh: runs the API fuzzer in child processes, in batches,
# for a bounded time, and fails on what only the outside can see: a signal,
# a hang (the `timeout` command), an AddressSanitizer, LeakSanitizer or
# UndefinedBehaviorSanitizer report on stderr, a non-zero exit -- and on the
# fuzzer's own VIOLATION lines.
#
#   spec/fuzz/run_fuzz.sh [options] -- COMMAND...
#     COMMAND runs the fuzzer, e.g. `lua5.4 spec/fuzz/api_fuzz.lua` or
#     `build/moonflow spec/fuzz/api_fuzz.lua`, with any fuzzer options
#     (--only, --without); the driver adds --seed, --seconds, --abandon.
#   --seconds N      start batches for N seconds in all (default 20)
#   --batch N        each batch fuzzes N seconds (default 6)
#   --hang N         a batch still running N seconds past its budget hangs
#                    (default 120)
#   --seed N         the first batch's seed (default: the time); then +1
#   --abandon-every N  every Nth batch ends its process in the middle of a
#                    case, runs still going (modes in turn: return, exit,
#                    error, exit-in-run); 0: never (default 3)
#   --abandon-modes M,M  the modes to take in turn (default: all four)
#   --keep-going     go on after a failing batch (for long runs)
#   --logs DIR       keep each failing batch's stdout and stderr there
# Environment: FUZZ_LD_PRELOAD is given to the fuzzer as LD_PRELOAD (the
# sanitizer runtime for stock lua5.4), and to nothing else.  MOONFLOW_HOME
# is set to the driver's temporary directory: the program's store of
# fuzzed runs lasts one driver run.
# Exit status: 0 when every batch passed, 1 otherwise.
set -u

seconds=20 batch=6 hang=120 seed="" abandon_every=3 keep_going=0 logs=""
modes="return exit error exit-in-run"
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --hang) hang=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --abandon-every) abandon_every=$2; shift 2 ;;
    --abandon-modes) modes=$(echo "$2" | tr , " "); shift 2 ;;
    --keep-going) keep_going=1; shift ;;
    --logs) logs=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "run_fuzz.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "run_fuzz.sh: no fuzzer command (after --)" >&2; exit 2; }
[ -n "$seed" ] || seed=$(date +%s)
[ -z "$logs" ] || mkdir -p "$logs"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/run_fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM # (the EXIT trap cleans up; a trap alone goes on)
out=$tmp/out err=$tmp/err hung=$tmp/hung
# where the fuzzer's file actions go (removed with $tmp, also after a
# batch that ended in the middle)
FUZZ_TMPDIR=$tmp
export FUZZ_TMPDIR
# The program records its runs by default: into this driver's own store,
# never the user's (~/.moonflow grew by gigabytes of fuzzed runs)
MOONFLOW_HOME=$tmp/home
export MOONFLOW_HOME

# The processes under $1 (the fuzzer under `timeout`, its children): each
# thread's state and kernel wait, and the fuzzer's stacks when gdb is here.
children() { cat /proc/"$1"/task/*/children 2>/dev/null; }
describe_tree() {
  for p in $(children "$1"); do
    echo "process $p: $(tr '\0' ' ' </proc/"$p"/cmdline | cut -c1-120)"
    for t in /proc/"$p"/task/*; do
      echo "  thread ${t##*/} $(cat "$t"/comm) $(cut -d')' -f2 "$t"/stat | cut -d' ' -f2)" \
        "wchan=$(cat "$t"/wchan 2>/dev/null) syscall=$(cut -d' ' -f1 "$t"/syscall 2>/dev/null)"
    done
    for c in $(children "$p"); do
      echo "  child $c: $(tr '\0' ' ' </proc/"$c"/cmdline | cut -c1-120)" \
        "$(cut -d')' -f2 /proc/"$c"/stat | cut -d' ' -f2) wchan=$(cat /proc/"$c"/wchan 2>/dev/null)"
    done
    if command -v gdb >/dev/null 2>&1; then
      gdb -p "$p" -batch -nx -ex "thread apply all bt 30" 2>/dev/null |
        grep -E "^(Thread|#)" | head -200
    fi
  done
}

start=$(date +%s)
batches=0 failures=0 calls=0 cases=0
nmodes=$(echo $modes | wc -w)

echo "run_fuzz: $* -- seeds from $seed, ${seconds}s in ${batch}s batches"
while [ $(( $(date +%s) - start )) -lt "$seconds" ]; do
  batches=$((batches + 1))
  abandon=""
  if [ "$abandon_every" -gt 0 ] && [ $((batches % abandon_every)) -eq 0 ]; then
    n=$(( (seed + batches / abandon_every) % nmodes + 1 ))
    abandon=$(echo $modes | cut -d' ' -f$n)
  fi
  # (the mode is one word: the unquoted expansion gives two arguments)
  rm -f "$hung"
  if [ -n "${FUZZ_LD_PRELOAD:-}" ]; then
    timeout -k 10 $((batch + hang)) env LD_PRELOAD="$FUZZ_LD_PRELOAD" "$@" \
      --seed "$seed" --seconds "$batch" ${abandon:+--abandon $abandon} >"$out" 2>"$err" &
  else
    timeout -k 10 $((batch + hang)) "$@" \
      --seed "$seed" --seconds "$batch" ${abandon:+--abandon $abandon} >"$out" 2>"$err" &
  fi
  timeout_pid=$!
  # A batch about to be called hung is looked at first: where its threads
  # wait.  (Its own files: a process left holding ctest's output would be
  # waited for.)
  (
    sleep $((batch + hang - 3)) & sleeper=$!
    trap 'kill $sleeper 2>/dev/null; exit 0' TERM
    wait $sleeper && describe_tree "$timeout_pid" >"$hung" 2>&1
  ) </dev/null >/dev/null 2>&1 &
  watcher=$!
  wait $timeout_pid
  rc=$?
  kill $watcher 2>/dev/null
  wait $watcher 2>/dev/null

  problem=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    problem="HANG (no end $((batch + hang))s after start)"
  elif [ $rc -gt 128 ]; then
    problem="SIGNAL $((rc - 128))"
  fi
  if grep -q -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|Undefined|Leak)Sanitizer" "$err"; then
    problem="${problem:+$problem; }SANITIZER REPORT"
  fi
  if grep -q -E "^(VIOLATION|FUZZ-FAIL)" "$out"; then
    problem="${problem:+$problem; }VIOLATIONS"
  fi
  if [ -z "$problem" ]; then
    if [ -n "$abandon" ]; then
      # Ended in the middle: exit 0 (state closed) or 1 (an error, or the
      # program reporting the runs it had to cancel).
      if ! grep -q "^ABANDON" "$out"; then problem="ENDED BEFORE ABANDONING (exit $rc)"
      elif [ $rc -ne 0 ] && [ $rc -ne 1 ]; then problem="EXIT $rc after abandoning"
      elif grep -q "still here after the run called os.exit" "$out"; then
        problem="os.exit(0, true) inside a run returned"
      fi
    elif [ $rc -ne 0 ]; then problem="EXIT $rc"
    elif ! grep -q "^SUMMARY" "$out"; then problem="NO SUMMARY"
    fi
  fi
  c=$(sed -n 's/^SUMMARY .* cases=\([0-9]*\) calls=\([0-9]*\).*/\1 \2/p' "$out" | tail -1)
  # (a batch that died has no summary: its last case line counts)
  [ -n "$c" ] || c=$(sed -n 's/^case \([0-9]*\) calls \([0-9]*\)$/\1 \2/p' "$out" | tail -1)
  if [ -n "$c" ]; then
    cases=$((cases + ${c% *})); calls=$((calls + ${c#* }))
  fi
  last_case=$(grep "^case " "$out" | tail -1 | cut -d' ' -f2)
  if [ -n "$problem" ]; then
    failures=$((failures + 1))
    echo "FAIL batch $batches seed=$seed ${abandon:+abandon=$abandon }last case=${last_case:-?}: $problem"
    # (with --abandon, the fuzzer abandons the case after the --cases it ran)
    replay_cases=${last_case:-1}
    [ -z "$abandon" ] || [ -z "$last_case" ] || replay_cases=$((last_case - 1))
    echo "  replay: $* --seed $seed --cases $replay_cases --keep-going${abandon:+ --abandon $abandon}"
    echo "  alone:  $* --seed $seed --case ${last_case:-1}"
    grep -E "^(VIOLATION|FUZZ-FAIL)" "$out" | head -10 | sed 's/^/  /'
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      echo "  its output ended with:"; tail -n 4 "$out" | sed 's/^/    /'
      [ ! -s "$hung" ] || sed 's/^/  /' "$hung"
    fi
    grep -E -A12 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$err" | head -30 | sed 's/^/  /'
    if [ -n "$logs" ]; then
      cp "$out" "$logs/seed$seed.out"; cp "$err" "$logs/seed$seed.err"
    fi
    [ $keep_going -eq 1 ] || break
  else
    echo "ok   batch $batches seed=$seed ${abandon:+abandon=$abandon }cases to ${last_case:-?}"
  fi
  seed=$((seed + 1))
done
echo "run_fuzz: $batches batches, $cases cases, $calls calls, $failures failing, $(( $(date +%s) - start ))s"
[ $failures -eq 0 ]
