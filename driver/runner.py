"""Serve several channels at once: one thread per socket, one shared model.

Every worker connects to its address (retrying while i-PI starts, if asked) and runs the client
loop. The process ends when every socket has ended: status 0 if each ended on EXIT or was closed by
the server between messages (ASE's server closes without EXIT), 1 as soon as one fails (the other
sockets are then closed, so that i-PI sees the driver go), 130 on Ctrl-C or SIGTERM. A socket
that is still in a model call when the others are done (after a failure or an interrupt, the
evaluation of a large structure) is not waited for: the process then ends at once.
"""

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

from .channels import Channel, StructureError
from .client import InitError, serve
from .protocol import Address, Connection, Disconnected, ProtocolError, connect
from .species import Species, SpeciesError

log = logging.getLogger("pet-driver")

EXPECTED_ERRORS = (StructureError, SpeciesError, InitError, ProtocolError, Disconnected, ConnectionError)
"""Errors with a message meant for the user (no traceback)."""

STOP_SECONDS = 5.0
"""After a failure or an interrupt, how long the other sockets get to close."""


@dataclass
class Task:
    """A channel to serve on an address."""

    channel: Channel
    address: Address


class Worker(threading.Thread):
    """Connects to one address and answers i-PI there; reports (worker, ending, error) to ``events``."""

    def __init__(self, task: Task, species: Species, timeout: float, retry: bool, events: queue.Queue):
        super().__init__(name=f"socket {task.address}", daemon=True)
        self.task, self.species = task, species
        self.timeout, self.retry = timeout, retry
        self.events = events
        self.connection: Optional[Connection] = None
        self.stopping = False
        self.connected_seconds = 0.0

    def run(self) -> None:
        ending, failure = None, None
        try:
            sock = connect(self.task.address, self.timeout, self.retry, stopped=lambda: self.stopping)
            self.connection = Connection(sock, self.task.address)
            if self.stopping:
                self.connection.stop_sending()
            log.info("%s: connected, serving channel %s", self.task.address, self.task.channel.mode)
            connected = time.perf_counter()
            try:
                ending = serve(self.connection, self.task.channel, self.species)
            finally:
                self.connected_seconds = time.perf_counter() - connected
        except BaseException as error:  # reported to the main thread, which decides
            failure = error
        finally:
            if self.connection is not None:
                self.connection.finish()
            self.events.put((self, ending, failure))

    def stop(self) -> None:
        """Ask the worker to end: i-PI sees this client go and closes the socket."""
        self.stopping = True
        if self.connection is not None:
            self.connection.stop_sending()


def report(worker: Worker) -> None:
    """Log what ``worker``'s channel did on its socket (at the end of the socket)."""
    channel = worker.task.channel
    per_structure = 1000 * channel.seconds / max(channel.structures, 1)
    log.info("channel %s on %s: %d requests, %d structures, %.3f s in the model (%.1f ms per "
             "structure), %.3f s connected, %d neighbour lists built", channel.mode, worker.task.address,
             channel.requests, channel.structures, channel.seconds, per_structure, worker.connected_seconds,
             channel.graphs.rebuilds)


def describe(error: BaseException) -> str:
    """One line for ``error``: its message for expected errors, type and message otherwise."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    return f"internal error: {type(error).__name__}: {error}"


def run(tasks: List[Task], species: Species, timeout: float = 60.0, retry: bool = False) -> int:
    """Serve ``tasks`` until i-PI is done with all of them; the process exit status."""
    events: queue.Queue = queue.Queue()
    workers = [Worker(t, species, timeout, retry, events) for t in tasks]
    for worker in workers:
        worker.start()
    status, stopping, remaining = 0, False, len(workers)
    reported = set()
    deadline = None  # once stopping: how long to wait for the other workers
    try:
        while remaining:
            try:
                worker, ending, error = events.get(timeout=0.2)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("%d socket(s) did not close in time: leaving", remaining)
                    break
                continue
            remaining -= 1
            report(worker)
            reported.add(worker)
            where = f"{worker.task.address} ({worker.task.channel.mode})"
            if error is not None:
                if stopping:
                    continue
                log.error("%s: %s", where, describe(error))
                log.debug("details", exc_info=error)
                status, stopping = 1, True
                deadline = time.monotonic() + STOP_SECONDS
                for other in workers:
                    other.stop()
            elif ending.how == "exit":
                log.info("%s: i-PI sent EXIT", where)
            else:
                log.warning("%s: the server closed the connection between messages, without EXIT", where)
    except KeyboardInterrupt:
        with signals_ignored():  # a second Ctrl-C must not cut the clean-up (Python's exit aborted)
            log.error("interrupted: closing the sockets")
            for worker in workers:
                worker.stop()
            for worker in workers:
                worker.join(STOP_SECONDS / len(workers))
            for worker in workers:
                if worker not in reported:
                    report(worker)
            status = 130
            if any(worker.is_alive() for worker in workers):
                leave(status)
    for worker in reported:
        worker.join()  # past its last report: ends at once
    if any(worker.is_alive() for worker in workers):
        leave(status)
    return status


@contextlib.contextmanager
def signals_ignored():
    """Ctrl-C and SIGTERM ignored inside the block (a clean-up that must run to its end), their
    handlers restored after it. Main thread only."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def leave(status: int) -> None:
    """End the process now with ``status``, leaving behind the workers that have not ended (in a
    model call, or waiting on a socket that i-PI keeps open): the interpreter's normal exit would
    abort (status 134, "terminate called without an active exception") when it tears torch down
    under a thread still computing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
