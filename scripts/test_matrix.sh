#!/usr/bin/env bash
# The suite as other machines run it: once per setting below, each a full pytest run (about 13
# minutes on 2 cores), then one line per setting with pytest's counts. A test that passes here but
# fails under one of them depends on this CPU's kernels (CONTRIBUTING.md, "Tests on any machine").
#   ONEDNN_MAX_CPU_ISA=AVX2   oneDNN as on a CPU without AVX-512 (an AMD EPYC, an older Xeon)
#   TF_ENABLE_ONEDNN_OPTS=0   TensorFlow's own Eigen kernels instead of oneDNN's
#   COOPHASH_KERNEL=generic   the Hamming index's portable C path (no AVX2 / AVX-512)
#   COOPHASH_KERNEL=avx2      its AVX2 path (what an AMD EPYC gets)
# Usage: bash scripts/test_matrix.sh [SETTING ...] [-- PYTEST ARGS]; SETTING is one of the four
# above (default: all). Each run's log: test-matrix/<setting>.log (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
settings=()
pytest_args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; pytest_args=("$@"); break; fi
  settings+=("$1"); shift
done
[ ${#settings[@]} -gt 0 ] || settings=(ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=0 COOPHASH_KERNEL=generic COOPHASH_KERNEL=avx2)
bash scripts/setup.sh
mkdir -p test-matrix
summary=()
status=0
for setting in "${settings[@]}"; do
  case "$setting" in
    ONEDNN_MAX_CPU_ISA=AVX2 | TF_ENABLE_ONEDNN_OPTS=0 | COOPHASH_KERNEL=generic | COOPHASH_KERNEL=avx2) ;;
    *) echo "unknown setting $setting (see the top of $0)" >&2; exit 2 ;;
  esac
  log="test-matrix/${setting//=/-}.log"
  echo "== $setting: .venv/bin/python -m pytest -q -rs tests ${pytest_args[*]:-} > $log"
  rc=0
  env "$setting" .venv/bin/python -m pytest -q -rs tests ${pytest_args[@]+"${pytest_args[@]}"} >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || status=1
  summary+=("$setting: $(grep -E '^=*.*(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 | tr -d '=' | xargs) (exit $rc)")
done
printf '%s\n' "${summary[@]}" | tee test-matrix/summary.txt
exit $status
