#!/usr/bin/env bash
# Start munged (unless one runs) + slurmctld + slurmd on this host, as root, state in $SLURM_TEST_STATE.
# Used by the `slurm_cluster` fixture in tests/launcher/conftest.py; stop.sh undoes it.
# Needs: apt-get install -y --no-install-recommends slurm-wlm munge
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D="${SLURM_TEST_STATE:?set SLURM_TEST_STATE to a fresh directory}"
CTLD_PORT="${SLURM_TEST_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_TEST_SLURMD_PORT:-6818}"
CLUSTER="${SLURM_TEST_CLUSTER:-polarshpc}"
mkdir -p "$D/ctld" "$D/slurmd" /run/munge
chown munge:munge /run/munge; chmod 755 /run/munge
sed -e "s#@D@#$D#g" -e "s#@CLUSTER@#$CLUSTER#" -e "s#@CTLD_PORT@#$CTLD_PORT#" -e "s#@SLURMD_PORT@#$SLURMD_PORT#" \
  "$HERE/slurm.conf.in" > "$D/slurm.conf"
export SLURM_CONF="$D/slurm.conf"
# munge: reuse a running daemon; else start one and remember that we did (stop.sh stops it then)
if ! munge -n >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged
  touch "$D/started-munged"
fi
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF" -N localhost
# the node must be idle before the first srun
for _ in $(seq 150); do
  st=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
  [[ "$st" == idle* ]] && exit 0
  sleep 0.1
done
echo "slurm node did not become idle: $(sinfo -N 2>&1)" >&2
exit 1
