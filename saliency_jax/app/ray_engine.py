"""The folder job on Ray: batches of images spread over actors, on this machine or a cluster.

:func:`saliency_jax.explain_paths` with ``engine="ray"`` runs here. A :class:`RayEngine`
connects to Ray (``address=None``: a Ray instance started inside this process; ``"auto"`` or
``"HOST:PORT"``: a running cluster) and :meth:`RayEngine.run` explains a list of
:class:`~saliency_jax.app.worker.Item`:

* **Workers** are Ray actors, one per CPU of the cluster by default (one per GPU share with
  ``gpus_per_worker``). Each holds a :class:`~saliency_jax.app.worker.BatchWorker`: the model
  is shipped once through Ray's object store (``ray.put`` of the driver's
  :class:`~saliency_jax.model.checkpoint.LoadedModel`, weights as numpy), so every actor uses
  exactly the model the sidecars record, also one built in memory, and no node needs the
  checkpoint on its disk; only the output folder must be a path every node sees. Every batch is
  padded to the same size, so each method compiles once per actor. Each actor runs XLA with as
  many intra-op threads as the CPUs it reserved (one by default), so workers do not
  oversubscribe the cores.
* **Scheduling** is a driver loop over ``ray.wait`` (no queue or RPC server of our own): every
  actor has two batches at a time and runs them in two threads, so one computes while the other
  writes (as the local engine overlaps them), and each image's
  :class:`~saliency_jax.app.worker.Outcome` is reported when its batch returns. An engine kept
  open runs a later :meth:`RayEngine.run` with the same output folder, settings, batch size and
  model on the same warm actors.
* **Faults.** An actor whose process dies (killed, out of memory, node lost) is restarted by Ray
  (up to :data:`MAX_RESTARTS` times) and its unfinished batches are redone; a batch whose
  worker died :data:`MAX_ATTEMPTS` times is reported as failed images instead of retried
  forever. Redoing is safe: every file is written atomically and the sidecar last, so a
  half-done batch leaves only complete files, and the driver reports each image once. An
  unreadable input is a ``"failed"`` outcome (as in the local engine), never an error. Any
  other exception in a worker (a write error, a bug) stops the run and is raised here as its
  original type, with the worker's traceback chained.

Ray is the optional extra ``saliency-jax[ray]``; this module imports it only when a
:class:`RayEngine` is entered, and nothing else in the package imports it.

Example:
    >>> from saliency_jax.app import explain
    >>> r = explain.explain_paths(["photos/"], "heatmaps/", engine="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

from saliency_jax.app.worker import BatchWorker, Item, Outcome

__all__ = ["MAX_RESTARTS", "MAX_ATTEMPTS", "QUEUE_DEPTH", "RESTART_TIMEOUT_S", "CONNECT_TIMEOUT_S", "RayEngine", "check_address",
           "import_ray"]

#: How many times Ray restarts a worker whose process died.
MAX_RESTARTS = 3
#: How many times a batch is tried on workers that die under it before its images fail.
MAX_ATTEMPTS = 3
#: Batches on each worker at once (run in as many threads: one computes while another writes).
QUEUE_DEPTH = 2
#: Seconds to wait for Ray to restart a worker whose process died before giving it up.
RESTART_TIMEOUT_S = 300.0
#: Seconds to wait for a TCP connection to a cluster's address before giving up.
CONNECT_TIMEOUT_S = 5.0

_STARTED_LOCAL = []  # non-empty once this process started a Ray instance of its own (see RayEngine.__enter__)

_ADDRESS_HELP = "None (a Ray instance in this process), 'auto' (the running cluster) or 'HOST:PORT'"


def import_ray():
    """The ``ray`` module, or an ImportError that says how to install it.

    Example:
        >>> import_ray().__name__  # doctest: +SKIP
        'ray'
    """
    try:
        import ray
    except ImportError as err:
        raise ImportError('engine="ray" needs Ray, the optional extra: pip install "saliency-jax[ray]"') from err
    return ray


def check_address(address: str | None) -> tuple[str, int] | None:
    """Check a Ray address and, for ``HOST:PORT``, that something accepts connections there.

    Args:
        address: ``None``, ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` (Ray Client).

    Returns:
        ``(host, port)`` for an explicit address, ``None`` for ``None`` and ``"auto"``.

    Raises:
        TypeError, ValueError: not an address (naming ``address`` and its value).
        ConnectionError: nothing accepts TCP connections at ``HOST:PORT`` within
            :data:`CONNECT_TIMEOUT_S` seconds, or the host is unknown.

    Example:
        >>> check_address(None) is None, check_address("auto") is None
        (True, True)
        >>> check_address("localhost:http")
        Traceback (most recent call last):
        ...
        ValueError: `address` (='localhost:http') must be None (a Ray instance in this process), 'auto' (the running cluster) or 'HOST:PORT'; the port must be an integer in [1, 65535]
    """
    if address is None or address == "auto":
        return None
    if not isinstance(address, str):
        raise TypeError(f"`address` (={address!r}) must be {_ADDRESS_HELP}")
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"`address` (={address!r}) must be {_ADDRESS_HELP}; the port must be an integer in [1, 65535]")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConnectionError(
            f"`address` (={address!r}): cannot connect to {host}:{port} ({err}); is a Ray cluster running there "
            "(`ray start --head --port=PORT`)?") from err
    return host, int(port)


class _Worker:
    """The actor's body (made a Ray actor class by :meth:`RayEngine.run`): one BatchWorker.

    The model comes with each call, as an object-store reference nested in a list (so Ray
    passes the reference, not the value), and is fetched once per process: a restarted actor
    fetches it again on its first call, and Ray holds no constructor argument to restore.
    """

    def __init__(self, out, info, batch_size: int, threads: int, rank: int, pin: bool, gpus: float):
        if pin:  # this actor's own cores, on a machine with one worker per core block
            avail = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {avail[(rank * threads + k) % len(avail)] for k in range(threads)})
        flags = f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} intra_op_parallelism_threads={threads}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()  # before JAX's backend starts
        if 0 < gpus < 1:  # actors sharing a GPU: each takes its share of its memory, not JAX's default 75 %
            os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 * gpus:.2f}")
        self.args, self.worker, self.lock = (out, info, batch_size), None, threading.Lock()

    def run(self, items, model: list):
        with self.lock:
            if self.worker is None:  # the first call loads the model and compiles, alone
                import jax
                import ray

                loaded = ray.get(model[0])
                loaded = dataclasses.replace(loaded, params=jax.device_put(loaded.params))  # on the device once
                out, info, batch_size = self.args
                self.worker = BatchWorker(out, info, loaded, batch_size)
                return self.worker.run(items)
        return self.worker.run(items)  # two calls at once: one computes while the other writes

    def pid(self) -> int:
        return os.getpid()


class RayEngine:
    """A connection to Ray that runs the folder job's batches on actors (a context manager).

    Args:
        address: ``None`` starts a Ray instance inside this process (as many CPUs as this
            process may use; no dashboard) and shuts it down on leaving; ``"auto"`` joins the
            running cluster (``RAY_ADDRESS`` or the one ``ray start`` began on this machine);
            ``"HOST:PORT"`` joins the cluster whose head listens there. On leaving, a cluster
            joined is only disconnected from (it keeps running). If Ray is already initialized
            in this process, ``address=None`` uses that instance and leaves it as it was.
        workers: actors per :meth:`run` (default: one per CPU of the cluster, or with
            ``gpus_per_worker`` as many as the cluster's GPUs hold; never more than batches).
        gpus_per_worker: GPUs each actor reserves (``0``/``None``: none; ``0.5``: two per GPU).
        pin_cpus: pin each actor to its own cores of its machine (actor ``i`` on cores
            ``i·t … i·t + t − 1`` of those it may use, ``t`` its CPUs); for measurements on one
            machine.

    Attributes:
        stats: counts of the last :meth:`run`: ``workers``, ``batches``, ``redone`` (batches
            run again after their worker died) and ``deaths`` (worker processes lost).

    Raises:
        ImportError: Ray is not installed (on entering).
        ValueError, TypeError, ConnectionError: a bad or unreachable ``address`` (on entering,
            before anything is read).
        RuntimeError: ``address`` names a cluster, and this process already started a Ray
            instance of its own (Ray 2.60 then cancels the creation of every actor on the
            cluster); run the job in a new process.

    Example:
        >>> with RayEngine(workers=2) as engine:                                   # doctest: +SKIP
        ...     engine.run(items, out=out, info=info, loaded=model, batch_size=8, on_outcome=print)
    """

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None,
                 *, pin_cpus: bool = False):
        self.address, self.workers, self.gpus = address, workers, float(gpus_per_worker or 0.0)
        self.pin_cpus = bool(pin_cpus)
        self.stats: dict[str, int] = {}
        self._ray, self._started, self._actors, self._model, self._key = None, False, [], None, (None,) * 4

    # ------------------------------------------------------------------ connection

    def __enter__(self) -> "RayEngine":
        check_address(self.address)  # format and reachability first: fails fast, before Ray starts
        ray = import_ray()
        if ray.is_initialized():
            if self.address is not None:
                raise RuntimeError(f"`address` (={self.address!r}): Ray is already initialized in this process; "
                                   "call ray.shutdown() first, or pass address=None to use that instance")
        elif self.address is not None and _STARTED_LOCAL:
            # Ray 2.60 cancels every actor creation on a cluster joined after this process ran its own instance
            raise RuntimeError(f"`address` (={self.address!r}): this process already ran a Ray instance of its own "
                               "(address=None), and Ray then cannot start workers on a cluster from it; run the "
                               "job on the cluster in a new process (e.g. the `saliency-jax` command)")
        else:
            self._init(ray)
        self._ray = ray
        return self

    def _init(self, ray) -> None:
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        with warnings.catch_warnings():  # Ray forks and execs its processes; JAX warns about any fork
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if self.address is None:
                ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, **quiet)
                _STARTED_LOCAL.append(True)
            else:
                try:
                    ray.init(address=self.address, **quiet)
                except ConnectionError as err:
                    hint = ("" if os.environ.get("RAY_AUTH_MODE") else "; a cluster that `ray start` began with token "
                            "authentication (Ray's default) also needs RAY_AUTH_MODE=token here and its token "
                            "(~/.ray/auth_token or RAY_AUTH_TOKEN)")
                    raise ConnectionError(f"`address` (={self.address!r}): no Ray cluster to join ({err}){hint}") from err
        self._started = True  # ray.shutdown() stops an instance started here, and only disconnects from a cluster

    def __exit__(self, *exc) -> None:
        self._stop_actors()
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._started = False

    def _stop_actors(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:  # already gone  # noqa: BLE001
                pass
        self._actors, self._model, self._key = [], None, (None,) * 4

    def worker_pids(self) -> list[int]:
        """The process id of each live worker of the running :meth:`run` (for monitoring and tests)."""
        refs = [a.pid.options(concurrency_group="control").remote() for a in self._actors]
        return list(self._ray.get(refs))

    # ------------------------------------------------------------------ the run

    def run(self, items: Sequence[Item], *, out: str | os.PathLike, info, loaded, batch_size: int,
            on_outcome: Callable[[Outcome], None]) -> None:
        """Explain ``items`` on actors, ``batch_size`` per call; ``on_outcome`` once per item.

        Args:
            items: the images to explain.
            out: the output folder (a path every node sees).
            info: the run's :class:`~saliency_jax.app.sidecar.RunInfo`.
            loaded: the :class:`~saliency_jax.model.checkpoint.LoadedModel`.
            batch_size: images per model call.
            on_outcome: called in this thread with each item's outcome, as batches return.

        Raises:
            The original exception of a worker that failed other than by dying (e.g.
            ``OSError`` writing an output); ``RuntimeError`` when every worker died for good.
        """
        if self._ray is None:
            raise RuntimeError("RayEngine.run needs the engine entered: `with RayEngine(...) as engine:`")
        batches = [tuple(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
        self.stats = {"workers": len(self._actors), "batches": len(batches), "redone": 0, "deaths": 0}
        if not batches:
            return
        key = self._key
        if not (self._actors and key[0] == Path(out) and key[1] == info and key[2] == batch_size and key[3] is loaded):
            self._stop_actors()
            self._start_actors(len(batches), Path(out), info, loaded, batch_size)
            self._key = (Path(out), info, batch_size, loaded)
        try:
            self._drive(batches, on_outcome)
        except BaseException:
            self._stop_actors()
            raise

    def _sizes(self, n_batches: int) -> tuple[int, float, int]:
        """(actors, CPUs each reserves, XLA threads each) for the cluster's resources."""
        ray = self._ray
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        workers = self.workers
        if workers is None:
            workers = int(gpus // self.gpus) if self.gpus else int(cpus)
            if workers < 1:
                raise ValueError(f"`gpus_per_worker` (={self.gpus!r}) is more than the cluster's GPUs ({gpus:g})"
                                 if self.gpus else f"the Ray cluster has no CPU to run a worker on ({total})")
        if self.gpus and workers * self.gpus > gpus:
            raise ValueError(f"`workers` (={workers}) × `gpus_per_worker` (={self.gpus:g}) is more than the "
                             f"cluster's GPUs ({gpus:g})")
        workers = max(1, min(workers, n_batches))
        node_cpus = max([n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [0])
        each = cpus / workers if workers > cpus else float(min(math.floor(cpus / workers), node_cpus))
        return workers, each, max(1, math.floor(each))

    def _start_actors(self, n_batches: int, out: Path, info, loaded, batch_size: int) -> None:
        ray = self._ray
        workers, cpus, threads = self._sizes(n_batches)
        import jax  # the weights go into the object store as numpy: no device in the driver's pickle

        # Held here for the whole run: a restarted actor reads it again.
        self._model = ray.put(dataclasses.replace(loaded, params=jax.device_get(loaded.params)))
        actor_cls = ray.remote(concurrency_groups={"control": 1})(_Worker).options(
            num_cpus=cpus, num_gpus=self.gpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
            max_concurrency=QUEUE_DEPTH)
        self._actors = [actor_cls.remote(out, info, batch_size, threads, rank, self.pin_cpus, self.gpus)
                        for rank in range(workers)]
        self.stats["workers"] = workers

    def _drive(self, batches: list[tuple[Item, ...]], on_outcome: Callable[[Outcome], None]) -> None:
        """Keep every actor's queue full; report outcomes; redo the batches of workers that died."""
        ray = self._ray
        todo = collections.deque(range(len(batches)))
        attempts = [0] * len(batches)
        alive = list(range(len(self._actors)))
        load = collections.Counter()
        in_flight: dict = {}  # ref -> (actor, batch, submission number)
        recovered = collections.defaultdict(lambda: -1)  # actor -> last submission made before its last recovery
        pids: dict[int, int] = {}
        reported: set[str] = set()
        seq = 0
        while todo or in_flight:
            for a in sorted(alive, key=load.__getitem__):  # fill the emptiest queues first
                while load[a] < QUEUE_DEPTH and todo:
                    b = todo.popleft()
                    attempts[b] += 1
                    in_flight[self._actors[a].run.remote(batches[b], [self._model])] = (a, b, seq)
                    load[a] += 1
                    seq += 1
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            a, b, s = in_flight.pop(ref)
            load[a] -= 1
            try:
                outcomes = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # raised by our code in the worker: not retried
                raise _unwrap(err)
            except ray.exceptions.RayActorError as err:  # the worker's process died (or is unreachable)
                if s > recovered[a]:  # not a batch already known lost with that process
                    if not self._recover(a, pids):
                        alive.remove(a)
                        if not alive:
                            raise RuntimeError(f"every Ray worker died for good; last: {_first_line(err)}") from err
                    recovered[a] = seq - 1
                if attempts[b] < MAX_ATTEMPTS:
                    todo.appendleft(b)
                    self.stats["redone"] += 1
                    continue
                outcomes = [Outcome(str(item.path), "failed", f"its worker died {attempts[b]} times while explaining "
                                    f"its batch (last: {_first_line(err)})") for item in batches[b]]
            for outcome in outcomes:
                if outcome.path not in reported:
                    reported.add(outcome.path)
                    on_outcome(outcome)

    def _recover(self, a: int, pids: dict[int, int]) -> bool:
        """Wait until actor ``a`` answers again (Ray restarted it); ``False`` if it is dead for good."""
        ray = self._ray
        try:
            pid = ray.get(self._actors[a].pid.options(concurrency_group="control").remote(), timeout=RESTART_TIMEOUT_S)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            self.stats["deaths"] += 1
            return False
        if pids.get(a) != pid:  # a new process: one death (a lost call to the same process is no death)
            self.stats["deaths"] += 1
            pids[a] = pid
        return True


def _unwrap(err: BaseException) -> BaseException:
    """The worker's own exception inside a ``RayTaskError`` (its remote traceback chained)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        cause.__cause__ = err
        return cause
    return err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
