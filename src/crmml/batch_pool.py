"""The machinery behind :func:`crmml.batch.score_in_partitions`: its work folder and its worker processes.

Work folder
    A hidden folder next to the output (``.<output name>.XXXXXXXX/``) holds the partial scores, the
    customer-table copy and an owner file naming the process that made it. A run that is killed
    cannot remove it; the next run for the same output removes every such folder whose owner file
    is older than the run and whose owner process is gone (:func:`remove_stale_work_folders`).
    Folders without an owner file (not made by this code) are never touched.

Worker processes
    With ``jobs > 1`` the partitions are scored by this process and a
    :class:`concurrent.futures.ProcessPoolExecutor` of ``jobs - 1`` worker processes started with
    ``spawn`` (no DuckDB connection or thread state is inherited), started before the customers are
    counted so that their imports overlap it. Each worker receives the scoring callable once,
    through its initializer (it must be picklable), and then one small task per partition; the
    workers take partitions from the first on, this process from the last on (it is ready while
    the workers still import). DuckDB's threads and memory limit are split evenly between the ``jobs``
    processes (:func:`worker_resources`); the scoring itself (pandas, scikit-learn) takes memory
    per process, so peak memory grows with ``jobs`` x the partition size.

Two jobs side by side
    :func:`side_by_side` runs one callable in a single worker process while this process runs
    another (``crmml train --jobs``: the backtest's model beside the shipped model), each with half
    of the cores; the worker's warnings are raised again here.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import re
import shutil
import tempfile
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

from crmml.data.transactions import duckdb_session

__all__ = ["OWNER_FILE", "PartitionRunner", "check_picklable", "default_jobs", "partition_count", "partition_runner",
           "remove_stale_work_folders", "side_by_side", "work_folder", "worker_resources"]

#: The file in a work folder that names its owner process: ``<pid> <start time>``.
OWNER_FILE = "crmml-owner.txt"
_THREADS_VARIABLE, _MEMORY_VARIABLE = "CRMML_DUCKDB_THREADS", "CRMML_DUCKDB_MEMORY_LIMIT"
_UNITS = {"": 1, "B": 1, "BYTES": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def default_jobs() -> int:
    """The cores this process may run on (``len(os.sched_getaffinity(0))`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# Work folder
# --------------------------------------------------------------------------------------------------


def _work_prefix(output: Path) -> str:
    return f".{output.name}."


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or '' when unknown:
    with the pid, it tells a live owner from a later process that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name in parentheses may hold spaces


def _owner_is_gone(pid: int, started: str) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except OSError:
        return False
    now = _start_time(pid)
    return bool(started and now and now != started)  # the pid was reused by a later process


def remove_stale_work_folders(output: Path, *, before: float) -> list[Path]:
    """Remove the work folders a killed run for ``output`` left behind; return them.

    A folder is removed when its name starts with ``.<output name>.``, it holds an owner file
    written before ``before`` (a :func:`time.time` value) and the process named there is gone.
    """
    removed = []
    for folder in output.parent.glob(f"{_glob_escape(_work_prefix(output))}*"):
        owner = folder / OWNER_FILE
        try:
            if not folder.is_dir() or folder.is_symlink() or owner.stat().st_mtime >= before:
                continue
            pid_text, _, started = owner.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):  # no owner file (not ours), or unreadable: leave it
            continue
        if _owner_is_gone(pid, started.strip()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


@contextmanager
def work_folder(output: Path) -> Iterator[Path]:
    """A fresh work folder next to ``output`` with an owner file, removed on exit; stale folders of
    earlier killed runs for the same output are removed first."""
    started = time.time()
    remove_stale_work_folders(output, before=started)
    with tempfile.TemporaryDirectory(prefix=_work_prefix(output), dir=output.parent) as folder:
        folder = Path(folder)
        (folder / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        yield folder


# --------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------


def _bytes(size: str) -> int:
    """Bytes of a DuckDB size as DuckDB shows it (``'18.8 GiB'``, ``'512.0 MiB'``)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", size)
    if match is None or match[2].upper() not in _UNITS:
        raise ValueError(f"Unexpected DuckDB memory size {size!r}.")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def worker_resources(jobs: int) -> dict[str, str]:
    """Environment for each of ``jobs`` workers: DuckDB threads and memory limit split evenly.

    The totals are what one :func:`~crmml.data.transactions.duckdb_session` gets in this process
    (``CRMML_DUCKDB_THREADS`` / ``CRMML_DUCKDB_MEMORY_LIMIT``, else DuckDB's thread count and 25 %
    of the memory); each worker gets ``max(1, threads // jobs)`` threads and ``limit / jobs``.
    """
    with duckdb_session() as con:
        limit, threads = con.sql("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()[0]
    per_worker = max(1, _bytes(limit) // jobs)
    return {_THREADS_VARIABLE: str(max(1, int(threads) // jobs)), _MEMORY_VARIABLE: f"{per_worker}B"}


_WORKER: dict = {}


def _start_worker(environment: dict[str, str], callback: Callable) -> None:
    os.environ.update(environment)
    _WORKER["callback"] = callback


def _warm_up() -> int:
    return os.getpid()


def _run_in_worker(function: Callable, index: int, arguments: tuple):
    return function(index, _WORKER["callback"], *arguments)


def side_by_side(first: Callable, second: Callable, *, jobs: int) -> tuple:
    """``(first(), second())``, at the same time when ``jobs > 1``.

    ``first`` (picklable) runs in one ``spawn`` worker process while ``second`` runs here; each side
    gets half of ``jobs`` for its OpenMP threads (scikit-learn's boosting, whose results do not
    depend on them) and half of this process's DuckDB threads and memory. BLAS threads are left
    alone: a different count changes the last bits of the linear models' Newton steps, and the
    results must not depend on ``jobs``. Warnings ``first`` raises in the worker are raised again here when it finishes (under
    this process's warning filters), and so is its exception.
    """
    if jobs < 2:
        return first(), second()
    check_picklable(first, "the side-by-side job")
    from threadpoolctl import threadpool_limits

    threads = max(1, jobs // 2)
    environment = worker_resources(2)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker,
                             initargs=(environment, None)) as pool:
        future = pool.submit(_call_recording_warnings, first, threads)
        # this process's DuckDB sessions take the other half
        with _environment(environment), threadpool_limits(threads, user_api="openmp"):
            second_result = second()
        first_result, caught = future.result()
    for message, category, filename, lineno in caught:
        _warn_again(message, category, filename, lineno)
    return first_result, second_result


def _call_recording_warnings(function: Callable, threads: int):
    """``function()`` with ``threads`` OpenMP threads, and the warnings it raised."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(record=True) as caught, threadpool_limits(threads, user_api="openmp"):
        warnings.simplefilter("always")
        result = function()
    return result, [(str(w.message), w.category, w.filename, w.lineno) for w in caught]


def _warn_again(message: str, category: type[Warning], filename: str, lineno: int) -> None:
    """Raise a worker's warning here, as if from its original line (module filters apply)."""
    module = next((name for name, loaded in list(sys.modules.items())
                   if getattr(loaded, "__file__", None) == filename), "crmml")
    registry = vars(sys.modules[module]).setdefault("__warningregistry__", {}) if module in sys.modules else None
    warnings.warn_explicit(message, category, filename, lineno, module=module, registry=registry)


def check_picklable(value, what: str) -> None:
    """Raise a TypeError naming ``what`` when ``value`` cannot be sent to a worker process."""
    try:
        pickle.dumps(value)
    except Exception as exc:  # pickle raises PicklingError, AttributeError, TypeError, ...
        raise TypeError(
            f"{what} must be picklable to run with jobs > 1 (a module-level function or an object of a "
            f"module-level class, not a lambda or a nested function): {exc}"
        ) from exc


class PartitionRunner:
    """Runs ``function(index, callback, *arguments)`` for every partition, here or in workers.

    Use :func:`partition_runner` to make one. With ``jobs > 1`` its worker processes are started
    (and import what ``callback`` needs) as soon as it is made, while the caller is still counting
    customers; ``callback`` is pickled to each worker once, through the pool's initializer.
    """

    def __init__(self, callback: Callable, pool: ProcessPoolExecutor | None, resources: dict[str, str] | None = None,
                 workers: int = 0):
        self.callback, self.pool, self.resources, self.workers = callback, pool, resources or {}, workers

    def run(self, function: Callable, arguments: tuple, count: int,
            progress: Callable[[int, int], object] | None = None) -> Iterator:
        """The results for ``index`` in ``0 .. count - 1``, yielded in index order.

        Without workers (``jobs == 1``) or with one partition the calls run here, one after the
        other. Otherwise the workers take the partitions from the first on, and this process,
        whenever it is not waiting for the next result in order, takes the last one no worker has
        started (with a worker's share of DuckDB's threads and memory), so every process scores
        while the workers start. Results are yielded as soon as every earlier one is in.
        ``progress(done, count)`` is called as partitions finish (in any order). On an error the
        pending partitions are cancelled, the running ones finish, and it is raised.
        """
        if self.pool is None or count == 1:
            for index in range(count):
                result = function(index, self.callback, *arguments)
                if progress is not None:
                    progress(index + 1, count)
                yield result
            return
        stopped = False
        lock = threading.Lock()
        unassigned = deque(range(count))  # the workers take from the left, this process from the right
        futures: dict[int, object] = {}

        def submit_next(_=None) -> None:  # (also a done-callback: a finished task hands on the next)
            with lock:
                if stopped or not unassigned:
                    return
                index = unassigned.popleft()
                futures[index] = future = self.pool.submit(_run_in_worker, function, index, arguments)
            future.add_done_callback(submit_next)  # (runs in the pool's thread, or here if already done)

        try:
            for _ in range(self.workers + 1):  # each worker busy, one more queued (as the pool queues)
                submit_next()
            finished: dict[int, object] = {}

            def record(index: int, result) -> None:
                finished[index] = result
                if progress is not None:
                    progress(len(finished) + next_index, count)

            next_index = 0
            while next_index < count:
                with lock:
                    done = sorted(i for i, future in futures.items() if future.done())
                for index in done:
                    record(index, futures.pop(index).result())  # a worker's error is raised here
                if next_index in finished:
                    yield finished.pop(next_index)
                    next_index += 1
                    continue
                with lock:
                    taken = unassigned.pop() if unassigned else None
                if taken is not None:
                    with _environment(self.resources):
                        record(taken, function(taken, self.callback, *arguments))
                    continue
                with lock:
                    running = list(futures.values())
                wait(running, return_when=FIRST_COMPLETED)
        except BaseException:
            with lock:
                stopped = True
            self.pool.shutdown(wait=True, cancel_futures=True)
            raise


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block, restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def partition_runner(callback: Callable, jobs: int) -> Iterator[PartitionRunner]:
    """A :class:`PartitionRunner` for ``jobs`` processes: this one and ``jobs - 1`` workers (none
    for ``jobs == 1``), shut down on exit (after the running partitions finish)."""
    if jobs == 1:
        yield PartitionRunner(callback, None)
        return
    check_picklable(callback, "score_partition")
    context = multiprocessing.get_context("spawn")
    resources = worker_resources(jobs)
    with ProcessPoolExecutor(jobs - 1, mp_context=context, initializer=_start_worker,
                             initargs=(resources, callback)) as pool:
        for _ in range(jobs - 1):  # start the workers now: they import while the caller counts
            pool.submit(_warm_up)
        try:
            yield PartitionRunner(callback, pool, resources, jobs - 1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def partition_count(customers: int, per_partition: int, *, most: int, fewest_customers: int) -> int:
    """``ceil(customers / per_partition)`` partitions, at least 1, at most ``most`` and at most one per
    ``fewest_customers`` customers (see :func:`crmml.batch.score_in_partitions`)."""
    wanted = math.ceil(customers / per_partition)
    return max(1, min(wanted, most, math.ceil(customers / fewest_customers)))
