#!/bin/bash
# A tiny workload for the chain tests: counts its runs in $FTSLURM_RUN_DIR/runs and behaves by
# MODE (the first argument):
#   fail-once    exit 1 on run 1, write the finished flag on run 2
#   fail-twice   exit 1 on runs 1 and 2, write the finished flag on run 3
#   always-fail  exit 1
#   fail-varying exit 10+N on runs 1..3 (a different failure each time), finish on run 4
#   raise-varying  runs 1 and 2 raise ValueError("loss is nan at step <100 N>") in Python (the
#                same exception, another message each time), finish on run 3
#   fatal        exit 93 (do not retry)
#   hold         run 1 makes progress (writes $FTSLURM_RUN_DIR/progress every second), ignoring
#                SIGTERM, until it is killed; run 2 finishes
#   finish       write the finished flag
#   kill-once    run 1 repairs sbatch (removes $TEST_SHIM_DIR/broken) and dies of
#                SIGKILL; run 2 finishes
#   wait-file    wait until $FTSLURM_RUN_DIR/go exists (making progress), then finish
#   stop-on-term run 1 makes progress until SIGTERM (the stop the time-limit warning sends),
#                then exits 94 like a launcher that stopped its ranks; run 2 finishes
set -u
mode=$1
count_file="$FTSLURM_RUN_DIR/runs"
n=$(($(cat "$count_file" 2>/dev/null || echo 0) + 1))
echo "$n" >"$count_file"
echo "workload run $n (attempt $FTSLURM_ATTEMPT, mode $mode) on $(hostname)"
finish() { touch "$FAULT_TOL_FINISHED_FLAG_FILE"; exit 0; }
case "$mode" in
  fail-once) [ "$n" -ge 2 ] && finish; exit 1 ;;
  fail-twice) [ "$n" -ge 3 ] && finish; exit 1 ;;
  always-fail) exit 1 ;;
  fail-varying) [ "$n" -ge 4 ] && finish; exit $((10 + n)) ;;
  raise-varying)
    [ "$n" -ge 3 ] && finish
    exec python3 -c "raise ValueError('loss is nan at step $((100 * n))')"
    ;;
  fatal) exit 93 ;;
  finish) finish ;;
  kill-once)
    [ "$n" -ge 2 ] && finish
    rm -f "${TEST_SHIM_DIR:-/nonexistent}/broken"
    kill -KILL $$
    ;;
  wait-file)
    step=0
    until [ -e "$FTSLURM_RUN_DIR/go" ]; do
      step=$((step + 1))
      echo "$step" >"$FTSLURM_RUN_DIR/progress.tmp" && mv "$FTSLURM_RUN_DIR/progress.tmp" "$FTSLURM_RUN_DIR/progress"
      sleep 0.5
    done
    finish
    ;;
  stop-on-term)
    [ "$n" -ge 2 ] && finish
    trap 'echo "workload: stopped by SIGTERM"; exit 94' TERM
    step=0
    while :; do
      step=$((step + 1))
      echo "$step" >"$FTSLURM_RUN_DIR/progress.tmp" && mv "$FTSLURM_RUN_DIR/progress.tmp" "$FTSLURM_RUN_DIR/progress"
      sleep 1 &
      wait $!
    done
    ;;
  hold)
    [ "$n" -ge 2 ] && finish
    trap '' TERM
    touch "$FTSLURM_RUN_DIR/holding"
    step=0
    while :; do
      step=$((step + 1))
      echo "$step" >"$FTSLURM_RUN_DIR/progress.tmp" && mv "$FTSLURM_RUN_DIR/progress.tmp" "$FTSLURM_RUN_DIR/progress"
      sleep 1
    done
    ;;
esac
echo "unknown mode $mode" >&2
exit 2
