"""Run a function over many items in worker processes (feature extraction, synthesis).

Workers are spawned (not forked: the parent may hold torch/OpenMP threads) with BLAS
limited to one thread each, so N workers use N cores. Results arrive as they finish.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from edgeasc.errors import EdgeascError

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def imap(fn: Callable[[Any], Any], items: Sequence[Any] | Iterable[Any], workers: int,
         initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[Any]:
    """fn over items; in-process when workers <= 1, else in a spawned pool (unordered).
    A worker that dies (killed, SIGBUS on a full disk, out of memory) raises WorkerDied at
    once: multiprocessing.Pool would wait for its result forever."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})  # inherited by the spawned workers
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                               initargs=initargs)
    try:
        futures = [pool.submit(fn, item) for item in items]
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                raise WorkerDied("a worker process died (killed, out of memory, or a full disk under a "
                                 "memory-mapped file); nothing it was writing was kept") from None
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class WorkerDied(EdgeascError):
    exit_code = 1


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]
