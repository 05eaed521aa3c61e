"""Independent passes of a model evaluation run side by side in threads, on a CPU.

A rotation average is many independent forward and backward passes (chunks of rotated copies).
On a CPU torch splits each operation of one pass over its threads (intra-op parallelism), and
every operation ends with the threads waiting for each other: for a 64-molecule water box on two
cores one raw evaluation runs only ~1.6 times faster on two threads than on one. Whole passes, one
per worker thread with its share of the threads, keep the cores busy without those waits
(docs/performance.md, section 2b). Memory grows with the workers: each holds its own pass.

Torch's thread count is per thread (OpenMP), so each worker sets its own and the caller's is left
as it was; grad mode is per thread too, and each worker takes the caller's.
"""

import threading
from typing import Callable, List, Optional, Sequence, TypeVar

import torch

Result = TypeVar("Result")


def automatic_workers(device: torch.device) -> int:
    """Worker threads for the passes of one evaluation on ``device``: one per torch thread on a
    CPU (``torch.get_num_threads()``, pet-driver's ``--threads``), one on a GPU (whose batched
    passes already fill it)."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def run_side_by_side(tasks: Sequence[Callable[[], Result]], workers: int) -> List[Result]:
    """The results of ``tasks`` (callables without arguments), in their order.

    With ``workers`` > 1 (and more than one task) the tasks are dealt round-robin to that many
    daemon threads, each running its tasks in order with ``torch.get_num_threads() // workers``
    (at least one) intra-op threads and the caller's grad mode; otherwise they run here, one after
    the other. The first exception of a task is raised here, after every worker has stopped.
    """
    workers = min(int(workers), len(tasks))
    if workers <= 1:
        return [task() for task in tasks]
    threads_each = max(1, torch.get_num_threads() // workers)
    grad_enabled = torch.is_grad_enabled()
    results: List[Optional[Result]] = [None] * len(tasks)
    errors: List[BaseException] = []

    def work(first: int) -> None:
        torch.get_num_threads()  # torch's first call in a thread sets its count: before ours
        torch.set_num_threads(threads_each)
        try:
            with torch.set_grad_enabled(grad_enabled):
                for index in range(first, len(tasks), workers):
                    if errors:
                        return
                    results[index] = tasks[index]()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller
            errors.append(error)

    caller_threads = torch.get_num_threads()
    threads = [threading.Thread(target=work, args=(first,), daemon=True) for first in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    torch.set_num_threads(caller_threads)  # what a new thread starts with: the caller's count again
    if errors:
        raise errors[0]
    return results
