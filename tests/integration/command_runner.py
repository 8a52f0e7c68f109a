"""Run many command lines of the integrations' commands, each in a process of its own, quickly.

Starting a command costs seconds of imports (torch, transformers). This
runner imports the commands' modules once, then forks one child per command
line: each child is a real process (its own exit status, stdout and stderr,
killed by a signal if it crashes) that runs the module as ``python -m
MODULE ARGS`` would, an uncaught exception printing its traceback and
giving status 1.

    python -m tests.integration.command_runner < cases.json > results.json

``cases.json``: ``[{"module": "integrations.uniter.evaluate", "argv": [...]}, ...]``;
``results.json``: one ``{"status", "stdout", "stderr"}`` per case, in order; a
child killed by signal ``S`` has status ``-S``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import traceback

#: seconds a case may run before SIGALRM ends it
CASE_TIMEOUT = 120


def _child(module: str, argv: list[str], out: str, err: str) -> None:
    """In the forked child: run ``module.main(argv)`` like ``python -m`` would, then exit."""
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    signal.alarm(CASE_TIMEOUT)
    sys.argv = [module, *argv]
    try:
        status = importlib.import_module(module).main(argv)
    except SystemExit as exc:
        status = exc.code
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        status = 1
    if status is not None and not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


def run_case(module: str, argv: list[str], scratch: str) -> dict:
    """One case in a forked child: its status, stdout and stderr."""
    out, err = os.path.join(scratch, "out"), os.path.join(scratch, "err")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _child(module, argv, out, err)
        finally:
            os._exit(70)
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    with open(out, encoding="utf-8", errors="replace") as o, open(err, encoding="utf-8", errors="replace") as e:
        return {"status": status, "stdout": o.read(), "stderr": e.read()}


def main() -> int:
    cases = json.load(sys.stdin)
    for module in {case["module"] for case in cases}:
        importlib.import_module(module)
    with tempfile.TemporaryDirectory() as scratch:
        results = [run_case(case["module"], case["argv"], scratch) for case in cases]
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
