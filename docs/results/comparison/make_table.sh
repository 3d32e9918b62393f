#!/bin/bash
# Regenerates docs/results/comparison/table.{md,csv} from the committed evaluation directories:
#   bash docs/results/comparison/make_table.sh [OUT]      (OUT defaults to a new docs/results/comparison/table-<date>)
# Rows whose runs are not committed yet are left out (named on stderr).
set -euo pipefail
cd "$(dirname "$0")/../../.."
C=docs/results/comparison
out=${1:-$C/table-$(date +%Y%m%d-%H%M%S)}

# evaluations RUN_GLOB KIND: the evaluation directories of the matching runs, comma-separated
#   KIND: plain (one update) | none (inner.n_updates=0) | init (error module at its initialisation)
evaluations() {
  local kind dirs=() seed
  case $2 in
    plain) kind='';;
    none) kind='+inner.n_updates=0';;
    init) kind='+eval.reinit=_em__';;
  esac
  shopt -s nullglob
  for seed in 12345 2026; do  # the two held-out movement sets
    dirs+=($1/evaluations/eval.seed=$seed$kind+eval.n_tasks=100+eval.figures=false-*)
  done
  (IFS=,; echo "${dirs[*]}")
}

rows=()
add() {  # add LABEL RUN_GLOB KIND
  local dirs; dirs=$(evaluations "$2" "$3")
  if [ -n "$dirs" ]; then rows+=("$1=$dirs"); else echo "not committed yet: $1 ($2)" >&2; fi
}
add "e-prop 2" "docs/results/eprop2_budget45/seed*" plain
add "e-prop 2 + produced hand path" "$C/eprop2_path/seed*" plain
add "e-prop 1, learned B, Cartesian error" "$C/eprop1_hand/seed*" plain
add "e-prop 1, Jᵀ, Cartesian error" "$C/eprop1_jt/seed*" plain
add "MAML, Cartesian" "$C/maml_hand/seed*" plain
add "no inner update (e-prop 2 runs)" "docs/results/eprop2_budget45/seed*" none
add "error module at initialisation (e-prop 2 runs)" "docs/results/eprop2_budget45/seed*" init
add "oracle: e-prop 1, learned B, motor targets" "$C/oracle_eprop1/seed*" plain
add "oracle: MAML, motor targets" "$C/oracle_maml/seed*" plain
cli=eprop-l2l; [ -x .venv/bin/eprop-l2l ] && cli=.venv/bin/eprop-l2l  # the checkout's venv (make venv) if there
$cli table "${rows[@]}" --reference "e-prop 2" --metric mse_cart_after --out "$out"
