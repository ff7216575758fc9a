#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a clean venv, and run the main job's stages
# with the console commands from a temporary directory outside the source tree: the smoke
# sweep, the spectra (+ KL by rank) of the packaged log, the decision table and the report.
# Catches what an editable install hides (package data, entry points, undeclared deps).
#   bash .ci/wheel_check.sh          (used by `tox -e wheel` and .ci/run)
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "== wheel check in $WORK"
# build from a copy of the tree as a fresh clone would have it (tracked + untracked, not ignored),
# so the build leaves no build/ or *.egg-info in the source tree
mkdir -p "$WORK/src"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$SRC" ls-files -z -co --exclude-standard \
    | tar -C "$SRC" --null --no-recursion -T - -cf - | tar -C "$WORK/src" -xf -
else
  cp -a "$SRC"/. "$WORK/src"/
fi
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
ls "$WORK"/dist
"$PY" -m venv "$WORK/venv"
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0   # the pinned CPU wheel first (a bare torch pulls CUDA)
python -m pip install -q "$WORK"/dist/*.whl
python -m pip install -q --no-deps recbole==1.2.1
cd "$WORK"
python - <<'PY'
import pathlib, bench, reports
for m in (bench, reports):
    assert "site-packages" in m.__file__, f"{m.__name__} imported from {m.__file__}, not the wheel"
assert (pathlib.Path(reports.__file__).parent / "templates" / "report.html.j2").is_file()
print("imported from", pathlib.Path(bench.__file__).parent.parent)
PY
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
lifelong-attn-bench --help >/dev/null
lifelong-attn-bench run --preset smoke --out run/bench --no-progress
lifelong-attn-analysis spectrum --data packaged:ml-100k --out run/spectra/ml-100k --kl \
  --kl-users 20 --cache run/cache --quiet
lifelong-attn-analysis decide --spectra run/spectra/ml-100k --bench run/bench --out run/spectra/ml-100k
lifelong-attn-report build --results run/bench --results run/spectra --out run/report
test -s run/report/index.html && test -s run/report/report.pdf
lifelong-attn-bench compare run/bench run/bench --fail-above 1.5 --csv run/compare.csv | tail -n 3
echo "== wheel check passed: $(ls "$WORK"/dist)"
