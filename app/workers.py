"""`quanda serve --workers N`: N server processes on one port, peers through the store.

Each worker is a whole server (its own store connection, hub, jobs, event loop) — what several servers on one
database already are (README, "Running several servers"): a change made through one reaches the tabs of every
other through the store's fact bus, answers and runs are held under leases, and the streams are read from the
store. Each worker listens on its own socket bound with SO_REUSEPORT to the same address, and the kernel spreads
new connections over them; a tab stays with the worker that accepted it.

This process (the supervisor) applies the migrations once, checks that nothing listens on the port, holds it
(bound without listening, so no connection is queued on it and no other program can take it meanwhile), starts the workers (spawned: a
fresh interpreter each), restarts a worker that dies, and on SIGTERM or SIGINT passes SIGTERM to every worker
(each stops as `quanda serve` does: requests in flight get their grace, then jobs are stopped and marked) and
waits for them, killing one that takes longer than STOP_TIMEOUT_S.

Prometheus: with several workers a scrape of `/-/metrics` reaches one of them. Unless PROMETHEUS_MULTIPROC_DIR is
set, the supervisor makes a temporary folder for prometheus-client's multiprocess mode (each worker's
`/-/metrics` then shows the sum over the workers; gauges over the live ones) and removes it at the end.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from typing import Any, Callable

log = logging.getLogger("quanda.workers")

STOP_TIMEOUT_S = 15.0  # the grace of requests in flight (serve.SHUTDOWN_GRACE_S) and the jobs' stopping
RESTART_PAUSE_S = 1.0  # between a worker's death and its replacement (a worker that cannot start is not spun)


def check_free(host: str, port: int) -> None:
    """OSError when something listens on the port — another `quanda serve --workers` too, whose SO_REUSEPORT
    sockets would otherwise take ours in and share the connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind((host, port))


def reuseport_socket(host: str, port: int, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
        sock.set_inheritable(True)
    return sock


def worker(index: int, settings: Any, make_app: Callable[[Any], Any], log_options: dict[str, Any]) -> None:
    """One worker process: the app on its own SO_REUSEPORT socket, until SIGTERM or SIGINT."""
    import uvicorn

    from quanda import logs
    from quanda.serve import freeze_startup, server_options

    logs.setup(settings.log_format)
    the_app = make_app(settings)
    freeze_startup()
    sock = reuseport_socket(settings.host, settings.port, listen=True)
    config = uvicorn.Config(the_app, host=settings.host, port=settings.port, log_level="info",
                            **server_options(settings), **log_options)
    logging.getLogger("quanda.workers").info("worker %d (pid %d) serving", index, os.getpid())
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    def __init__(self, settings: Any, make_app: Callable[[Any], Any], log_options: dict[str, Any]):
        self.settings, self.make_app, self.log_options = settings, make_app, log_options
        self.count, self.host, self.port = settings.workers, settings.host, settings.port
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, Any] = {}
        self.stopping = threading.Event()

    def start(self, index: int) -> None:
        process = self.context.Process(target=worker, args=(index, self.settings, self.make_app, self.log_options),
                                       name=f"quanda-worker-{index}")
        process.start()
        self.workers[index] = process

    def stop(self, signum: int, _frame: Any) -> None:
        log.info("stopping %d workers (%s)", len(self.workers), signal.Signals(signum).name)
        self.stopping.set()

    def run(self) -> int:
        check_free(self.host, self.port)
        holder = reuseport_socket(self.host, self.port, listen=False)  # the port is ours from here
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.stop)
        try:
            for index in range(self.count):
                self.start(index)
            log.info("serving http://%s:%d with %d workers", self.host, self.port, self.count)
            while not self.stopping.wait(0.5):  # a worker's death is seen within half a second
                for index, process in list(self.workers.items()):
                    if not process.is_alive() and not self.stopping.is_set():
                        log.error("worker %d (pid %s) exited with %s: starting another", index, process.pid,
                                  process.exitcode)
                        mark_dead(process.pid)
                        if self.stopping.wait(RESTART_PAUSE_S):
                            break
                        self.start(index)
        finally:
            self.stop_all()
            holder.close()
        return 0

    def stop_all(self) -> None:
        for process in self.workers.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for index, process in self.workers.items():
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                log.error("worker %d did not stop within %g s: killed", index, STOP_TIMEOUT_S)
                process.kill()
                process.join()
            mark_dead(process.pid)
        log.info("every worker stopped")


def mark_dead(pid: int | None) -> None:
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve_workers(settings: Any, log_options: dict[str, Any], make_app: Callable[[Any], Any] | None = None) -> int:
    """Run `settings.workers` workers of `make_app(settings)` (default: `create_app`; a module-level function: each
    worker imports it) until SIGTERM/SIGINT; the exit status."""
    if make_app is None:
        from quanda.server import create_app as make_app
    made = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quanda-metrics-")
    try:
        return Supervisor(settings, make_app, log_options).run()
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
