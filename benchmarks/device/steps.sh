# Sourced by the verify_*.sh scripts: the packages under /tmp/site on the path, $out for logs,
# $gpus, and `step NAME COMMAND...`, which runs, tees to $out/NAME.log and reports the status
# (a failed step does not stop the script, so one run shows everything).
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PATH="/tmp/site/bin:$PATH"
out="${OUT:-/tmp/verify-out}"
mkdir -p "$out"
gpus=$(nvidia-smi -L | wc -l)

step() {
  local name=$1
  shift
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name exit ${PIPESTATUS[0]}"
}
