#!/usr/bin/env bash
# Debian packages the system tests use: a real Slurm (slurm-wlm + munge), iproute2 for the
# two-host network-namespace tests and graphviz for `engine.explain(lf, format="png")`.
# Without root the tests that need them skip with a reason.
set -euo pipefail
need=()
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || [ -x /usr/sbin/munged ] || need+=(munge)
command -v ip >/dev/null || need+=(iproute2)
command -v dot >/dev/null || need+=(graphviz)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot install ${need[*]}; the tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
