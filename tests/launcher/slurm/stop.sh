#!/usr/bin/env bash
# Stop what start.sh started in $SLURM_TEST_STATE: cancel jobs, then the daemons by pid file.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D="${SLURM_TEST_STATE:?set SLURM_TEST_STATE to the directory start.sh used}"
export SLURM_CONF="$D/slurm.conf"
# cancel jobs and let slurmd reap their slurmstepd processes before stopping the daemons
if [ -s "$D/slurmctld.pid" ]; then
  scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
fi
pids=()
for f in "$D/slurmd.pid" "$D/slurmctld.pid"; do
  [ -s "$f" ] && pids+=("$(cat "$f")")
done
[ -e "$D/started-munged" ] && [ -s /run/munge/munged.pid ] && pids+=("$(cat /run/munge/munged.pid)")
[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
for _ in $(seq 100); do   # each daemon needs ~2 s to exit
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 0.1
done
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null; done
rm -f "$D/slurmd.pid" "$D/slurmctld.pid" "$D/started-munged"
exit 0
