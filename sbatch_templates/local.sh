#!/bin/bash
# Rendered by `ftslurm submit --backend local` (launcher: $launcher): the launch on this machine.
set -euo pipefail

# Environment of the job: ftslurm's variables, then the spec's `env:`.
{{ environment }}

# The local backend sends the warning signal to this script before the time limit: stop the launch.
launch_pids=()
# shellcheck disable=SC2317  # (runs from the trap below)
forward_stop() {
  echo "ftslurm: warning signal received; asking the launch to stop" >&2
  if ((${#launch_pids[@]})); then kill -TERM "${launch_pids[@]}" 2>/dev/null || true; fi
}
warned=0  # the end hook tells a stop for the time limit from a failure
trap 'warned=1; forward_stop' {{ warning_signal }}

{{ chain_start }}

{{ chain_end }}

{{ setup }}

$launch

# Wait for the launch; a trapped signal interrupts `wait`, so wait again until it exits.
status=0
for pid in "${launch_pids[@]}"; do
  while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  if [ "$status" -eq 0 ]; then status=$rc; fi
done

exit "$status"
