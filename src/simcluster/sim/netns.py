"""A network namespace per pod, and the API server reachable in it at the kubernetes Service address.

Each pod that runs for real gets its own network namespace (like a pod sandbox): only a
loopback device, carrying the pod IP and the ``kubernetes`` Service IP, so fixed ports (the
operator binds :8080 and :8081) never collide with another pod or another cluster on the
machine. Nothing in the namespace routes anywhere else.

The daemon keeps one file descriptor per namespace (the namespace dies with the daemon) and
enters it from a short-lived thread when it needs a socket in it: a socket stays in the
namespace it was created in, so the API forwarder's listener lives in the pod's namespace
while its accept loop and its upstream connections run in the daemon's.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("simcluster.netns")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


class NamespaceError(RuntimeError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise NamespaceError(f"{what} failed: {os.strerror(errno)}"
                             + (" (creating namespaces needs root: CAP_SYS_ADMIN)" if errno == 1 else ""))


def _in_fresh_thread(action: Callable[[], T]) -> T:
    """Run ``action`` in a new thread (it may change its namespaces) and return its result."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(action())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class PodNetwork:
    """One network namespace with its loopback up and the given addresses on it."""

    def __init__(self, fd: int, addresses: tuple[str, ...]):
        self.fd = fd
        self.addresses = addresses

    @classmethod
    def create(cls, addresses: list[str]) -> PodNetwork:
        def make() -> PodNetwork:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                # `ip` runs in this thread's namespace: a child starts in its parent thread's namespaces.
                commands = [["ip", "link", "set", "lo", "up"]]
                commands += [["ip", "address", "add", f"{address}/32", "dev", "lo"] for address in addresses]
                for command in commands:
                    done = subprocess.run(command, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise NamespaceError(f"{' '.join(command)} failed: {done.stderr.strip()}")
            except BaseException:
                os.close(fd)
                raise
            return cls(fd, tuple(addresses))

        try:
            return _in_fresh_thread(make)
        except FileNotFoundError as exc:
            raise NamespaceError(f"cannot configure a pod network: {exc.filename} is not installed") from None

    def call(self, action: Callable[[], T]) -> T:
        """Run ``action`` inside this namespace (sockets it creates stay there)."""
        def inside() -> T:
            _check(_libc.setns(self.fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")
            return action()

        return _in_fresh_thread(inside)

    def listen(self, address: str, port: int) -> socket.socket:
        def bind() -> socket.socket:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((address, port))
            server.listen(64)
            return server

        return self.call(bind)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


class ServiceForwarder:
    """Forwards connections made inside a pod's namespace to an address in the daemon's namespace
    (the API server on 127.0.0.1), as kube-proxy makes the ``kubernetes`` Service reachable."""

    def __init__(self, listener: socket.socket, upstream: tuple[str, int], name: str):
        self.listener = listener
        self.upstream = upstream
        self.name = name
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name=f"forward-{name}", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError as exc:
                log.warning("%s: cannot reach %s:%d: %s", self.name, *self.upstream, exc)
                client.close()
                continue
            with self.lock:
                self.connections.update((client, server))
            finished = [0]
            count_lock = threading.Lock()

            def pump(source: socket.socket, target: socket.socket, client: socket.socket = client,
                     server: socket.socket = server, finished: list[int] = finished,
                     count_lock: threading.Lock = count_lock) -> None:
                _pump(source, target)
                with count_lock:
                    finished[0] += 1
                    if finished[0] < 2:
                        return  # the other direction is still open (a half-closed connection)
                with self.lock:
                    self.connections.difference_update((client, server))
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.close()

            for source, target in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(source, target), daemon=True,
                                 name=f"forward-{self.name}").start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            connections = list(self.connections)
            self.connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


def preflight() -> str:
    """Why containers cannot run here ("" when they can): namespaces need root."""
    if os.geteuid() != 0:
        return "running the GPU Operator's containers needs root (network, mount and PID namespaces)"
    try:
        PodNetwork.create([]).close()
    except NamespaceError as exc:
        return f"cannot create a pod network namespace: {exc}"
    return ""
