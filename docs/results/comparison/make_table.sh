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
  local pattern
  case $2 in
    plain) pattern='eval.seed=*+eval.n_tasks=100+eval.figures=false-*';;
    none) pattern='eval.seed=*+inner.n_updates=0+eval.n_tasks=100+eval.figures=false-*';;
    init) pattern='eval.seed=*+eval.reinit=_em__+eval.n_tasks=100+eval.figures=false-*';;
  esac
  shopt -s nullglob
  local dirs=($1/evaluations/$pattern)
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
eprop-l2l table "${rows[@]}" --reference "e-prop 2" --metric mse_cart_after --out "$out"
