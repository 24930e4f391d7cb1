"""Cross-check TR-31 key blocks with psec, an independent Python implementation.

The Rust integration test starts this script with a virtual environment's Python and sends one
JSON request per line on stdin:

    {"op": "unwrap", "kbpk": "<hex>", "block": "<key block>"}
    {"op": "wrap", "kbpk": "<hex>", "header": "<header text>", "key": "<hex>"}

and reads one JSON reply per line on stdout:

    {"ok": true, "key": "<hex>", "header": {...}}     for unwrap
    {"ok": true, "block": "<key block>"}               for wrap
    {"ok": false, "error": "<message>"}                when psec rejects the input

Requires the PyPI package psec (`scripts/test` installs it into `.venv`).
"""

import json
import sys

import psec


def unwrap(request):
    header, key = psec.tr31.unwrap(bytes.fromhex(request["kbpk"]), request["block"])
    return {
        "ok": True,
        "key": key.hex().upper(),
        "header": {
            "version": header.version_id,
            "key_usage": header.key_usage,
            "algorithm": header.algorithm,
            "mode_of_use": header.mode_of_use,
            "key_version": header.version_num,
            "exportability": header.exportability,
            "blocks": dict(header.blocks),
        },
    }


def wrap(request):
    block = psec.tr31.wrap(
        bytes.fromhex(request["kbpk"]),
        request["header"],
        bytes.fromhex(request["key"]),
    )
    return {"ok": True, "block": block}


def main():
    operations = {"unwrap": unwrap, "wrap": wrap}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = operations[request["op"]](request)
        except (ValueError, KeyError) as error:
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
