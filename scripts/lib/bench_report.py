"""Print the benchmark tables of scripts/bench.

    bench_report.py times CRITERION_DIR PSEC_JSON
        The station's time per operation from criterion's estimates and samples, psec's from
        station/benches/psec_tr31.py, and the ratios between them.
    bench_report.py instructions BENCH_EXECUTABLE
        Instructions per operation, counted by valgrind's callgrind while the criterion
        benchmark runs in profile mode: the inclusive count of the library function divided by
        its number of calls, so criterion's own work is left out.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

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

# The library functions each benchmark calls once per iteration. The combined benchmark calls
# both; its count is their sum per call of the last one.
FUNCTIONS = {
    "aes_dukpt_initial_key": ["station::crypto::dukpt::aes::initial_key"],
    "aes_dukpt_initial_key_and_tr31_d_wrap": [
        "station::crypto::dukpt::aes::initial_key",
        "station::crypto::tr31::wrap",
    ],
    "tr31_d_wrap": ["station::crypto::tr31::wrap"],
    "tr31_d_unwrap": ["station::crypto::tr31::unwrap"],
    "tdes_dukpt_ipek": ["station::crypto::dukpt::tdes::ipek"],
}


def station_ns(criterion_dir, name):
    """Returns the mean and the fastest sample of one benchmark, in ns per operation.

    The fastest sample is the time per iteration of criterion's least disturbed sample, the
    statistic that matches psec's best of 5 repeats: on a shared machine both are the runs that
    other processes slowed least.
    """
    folder = os.path.join(criterion_dir, name, "new")
    with open(os.path.join(folder, "estimates.json")) as file:
        mean = json.load(file)["mean"]["point_estimate"]
    with open(os.path.join(folder, "sample.json")) as file:
        sample = json.load(file)
    fastest = min(time / iterations for time, iterations in zip(sample["times"], sample["iters"]))
    return mean, fastest


def print_times(criterion_dir, psec_json):
    psec = json.loads(psec_json)
    print(f"psec {psec.get('psec_version', 'unknown')}; time per operation: station mean and "
          "fastest sample, psec best of 5 repeats; the ratio compares the fastest runs")
    print(f"{'operation':<40} {'mean':>9} {'fastest':>9} {'psec':>9} {'psec/station':>13} "
          f"{'openemv':>9}")
    for name in BENCHMARKS:
        mean, fastest = station_ns(criterion_dir, name)
        theirs = psec.get(name)
        reference = OPENEMV_NS.get(name)
        psec_text = f"{theirs / 1000:>7.1f}us" if theirs else f"{'-':>9}"
        ratio_text = f"{theirs / fastest:>12.0f}x" if theirs else f"{'-':>13}"
        openemv_text = f"{reference / 1000:>7.2f}us" if reference else f"{'-':>9}"
        print(f"{name:<40} {mean / 1000:>7.3f}us {fastest / 1000:>7.3f}us {psec_text} "
              f"{ratio_text} {openemv_text}")


# callgrind_annotate --tree=calling prints a function's inclusive cost on a line marked `*` and
# each call it makes on a line marked `>` with the call count, both as `FILE:FUNCTION [OBJECT]`.
COST_LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\*\s+\S*?:(\S+)")
CALL_LINE = re.compile(r"^\s*[\d,]+ \(\s*[\d.]+%\)\s+>\s+\S*?:(\S+) \(([\d,]+)x\)")


def count_instructions(executable, name):
    """Runs one benchmark under callgrind and returns instructions per iteration."""
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}", executable,
             "--bench", "--profile-time", "1", f"^{name}$"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
        )
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--tree=calling", output],
            check=True, capture_output=True, text=True,
        ).stdout

    cost, calls = {}, {}
    for line in annotated.splitlines():
        if match := COST_LINE.match(line):
            function, value = match.group(2), int(match.group(1).replace(",", ""))
            cost[function] = max(cost.get(function, 0), value)
        elif match := CALL_LINE.match(line):
            function, count = match.group(1), int(match.group(2).replace(",", ""))
            calls[function] = calls.get(function, 0) + count
    functions = FUNCTIONS[name]
    iterations = calls.get(functions[-1], 0)
    if iterations == 0:
        sys.exit(f"callgrind recorded no call of {functions[-1]} in benchmark {name}")
    return sum(cost.get(function, 0) for function in functions) / iterations


def print_instructions(executable):
    print("instructions per operation (valgrind callgrind)")
    for name in BENCHMARKS:
        print(f"{name:<40} {count_instructions(executable, name):>10,.0f}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "times":
        print_times(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "instructions":
        print_instructions(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
