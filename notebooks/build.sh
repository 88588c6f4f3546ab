#!/usr/bin/env bash
# Regenerate notebooks/NAME.ipynb from examples/NAME.py (jupytext percent format, "# %%" cells:
# the script is the one source) and execute it in place, outputs and figures included.
#   bash notebooks/build.sh                          # every example with "# %%" cells, QUICK=1
#   QUICK=0 bash notebooks/build.sh examples/x.py    # one example, full run
# Runs with .venv/bin/python unless PYTHON is set; the kernel works in notebooks/, as in the test.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export QUICK=${QUICK:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset MPLBACKEND
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || mapfile -t scripts < <(grep -l '^# %%' examples/*.py)
for script in "${scripts[@]}"; do
    notebook="notebooks/$(basename "$script" .py).ipynb"
    "$PYTHON" -m jupytext --quiet --to ipynb --set-kernel python3 --output "$notebook" "$script"
    start=$(date +%s)
    "$PYTHON" - "$notebook" <<'PY'
import sys, nbclient, nbformat
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, record_timing=False,
                        resources={"metadata": {"path": "notebooks"}}).execute()
nbformat.write(nb, path)
PY
    echo "$notebook: $(( $(date +%s) - start )) s, $(( $(stat -c %s "$notebook") / 1024 )) KiB"
done
