"""Print the benchmark table: the station's mean time per operation from criterion's estimates,
psec's from station/benches/psec_tr31.py, and the ratios between them.

Usage: bench_report.py CRITERION_DIR PSEC_JSON
"""

import json
import os
import sys

# Per-operation times of the fastest open implementation measured on this kind of machine
# (openemv, in C), as published with the performance targets; not measured by this script.
OPENEMV_NS = {
    "aes_dukpt_initial_key": 100,
    "tr31_d_wrap": 8000,
    "tr31_d_unwrap": 1900,
    "tdes_dukpt_ipek": 1000,
}

BENCHMARKS = [
    "aes_dukpt_initial_key",
    "aes_dukpt_initial_key_and_tr31_d_wrap",
    "tr31_d_wrap",
    "tr31_d_unwrap",
    "tdes_dukpt_ipek",
]


def station_ns(criterion_dir, name):
    path = os.path.join(criterion_dir, name, "new", "estimates.json")
    with open(path) as file:
        return json.load(file)["mean"]["point_estimate"]


def main():
    criterion_dir, psec_json = sys.argv[1], sys.argv[2]
    psec = json.loads(psec_json)
    print(f"psec {psec.get('psec_version', 'unknown')}; times are means per operation")
    print(f"{'operation':<40} {'station':>10} {'psec':>10} {'psec/station':>13} {'openemv':>9}")
    for name in BENCHMARKS:
        ours = station_ns(criterion_dir, name)
        theirs = psec.get(name)
        reference = OPENEMV_NS.get(name)
        psec_text = f"{theirs / 1000:>8.1f}us" if theirs else f"{'-':>10}"
        ratio_text = f"{theirs / ours:>12.0f}x" if theirs else f"{'-':>13}"
        openemv_text = f"{reference / 1000:>7.2f}us" if reference else f"{'-':>9}"
        print(f"{name:<40} {ours / 1000:>8.3f}us {psec_text} {ratio_text} {openemv_text}")


if __name__ == "__main__":
    main()
