"""``make bench``: every benchmark in this folder, one after another (each prints its own ratios).

Run on a quiet machine: the scripts time real work on all cores and compare against a peer run side
by side (keras-hub's BERT, Model Garden's data prep), so other load skews every number.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_data_prep.py",
    "bench_extract.py",
    "bench_model.py",
    "bench_scaling.py",
    "bench_squad.py",
    "bench_resume.py",
    "bench_packing.py",
    "bench_grad_clip.py",
]

if __name__ == "__main__":
    failed = []
    for name in SCRIPTS:
        print(f"\n===== {name} =====", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1 if failed else 0)
