"""Console entry points of every command (pyproject.toml), importing nothing heavy themselves.

A console script imports its ``main`` before calling it: for every command that import includes
torch's (seconds), and a Ctrl-C during it printed a Python traceback (or, inside a C extension's
import, some other error). These entry points import the command with Ctrl-C ending the process at
once (nothing has started yet), then run it with its own handling: an interrupt at any moment is
one line, ``PROG: interrupted``, with exit status 130. (``pet/__init__.py`` imports the network
lazily, so that importing this module costs nothing.)
"""

import importlib
import os
import signal
import sys

INTERRUPTED = 130
"""The exit status after Ctrl-C (128 + SIGINT)."""


def pet_train() -> int:
    """The pet-train command (:func:`pet.train.main`): its exit status."""
    return _run("pet.train", "pet-train")


def pet_eval() -> int:
    """The pet-eval command (:func:`pet.evaluate.main`): its exit status."""
    return _run("pet.evaluate", "pet-eval")


def pet_analyze() -> int:
    """The pet-analyze command (:func:`analysis.cli.main`): its exit status."""
    return _run("analysis.cli", "pet-analyze")


def pet_driver() -> int:
    """The pet-driver command (:func:`driver.cli.main`): its exit status."""
    return _run("driver.cli", "pet-driver")


def pet_run() -> int:
    """The pet-run command (:func:`driver.launcher.main`): its exit status."""
    return _run("driver.launcher", "pet-run")


def _run(module: str, prog: str) -> int:
    """``module.main()``, imported here: its exit status, 130 if interrupted on the way (Ctrl-C or
    SIGTERM while importing ends the process at once)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if previous[sig] is default:  # not when the shell has the signal ignored
            signal.signal(sig, lambda signum, frame: _leave(prog))
    main = importlib.import_module(module).main
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED


def _leave(prog: str) -> None:
    """End the process at once, with one line and status 130 (a Ctrl-C while importing)."""
    os.write(sys.stderr.fileno(), f"{prog}: interrupted\n".encode())
    os._exit(INTERRUPTED)
