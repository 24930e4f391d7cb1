"""Time psec's TR-31 version D wrap and unwrap on the inputs of station/benches/crypto.rs.

Prints one JSON object mapping each benchmark name to psec's mean time per operation in
nanoseconds. scripts/bench runs this right after `cargo bench`, so both are measured in the
same run on the same machine. Requires psec (scripts/test installs it into .venv).
"""

import json
import sys
import timeit

import psec

KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
HEADER = "D0000B1AX00N0000"
# Any AES-128 key: the time of wrap and unwrap does not depend on its value.
DEVICE_KEY = bytes.fromhex("1273671EA26AC29AFA4D1084127652A1")


def mean_ns(function, seconds=2.0):
    """Runs function repeatedly for about `seconds` and returns the best mean of 5 runs in ns."""
    timer = timeit.Timer(function)
    count, elapsed = timer.autorange()
    count = max(1, int(count * seconds / max(elapsed, 1e-9) / 5))
    best = min(timer.repeat(repeat=5, number=count))
    return best / count * 1e9


def main():
    block = psec.tr31.wrap(KBPK, HEADER, DEVICE_KEY)
    header, key = psec.tr31.unwrap(KBPK, block)
    if key != DEVICE_KEY:
        sys.exit("psec did not return the wrapped key")
    results = {
        "tr31_d_wrap": mean_ns(lambda: psec.tr31.wrap(KBPK, HEADER, DEVICE_KEY)),
        "tr31_d_unwrap": mean_ns(lambda: psec.tr31.unwrap(KBPK, block)),
        "psec_version": getattr(psec, "__version__", "unknown"),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
