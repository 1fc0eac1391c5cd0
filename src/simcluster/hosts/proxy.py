"""SSH's ProxyCommand for the test hosts: ``python -m simcluster.hosts.proxy HUB_PID ADDRESS PORT``.

Connects to ADDRESS:PORT from inside the hosts' hub network namespace (``/proc/HUB_PID/ns/net``) and
copies bytes between that connection and stdin/stdout. So the control host reaches the hosts' sshd
without any address or route in the machine's own network namespace. Standard library only (it starts
once per SSH master connection).
"""

from __future__ import annotations

import ctypes
import os
import selectors
import socket
import sys

CLONE_NEWNET = 0x40000000


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m simcluster.hosts.proxy HUB_PID ADDRESS PORT", file=sys.stderr)
        return 2
    hub, address, port = argv
    try:
        fd = os.open(f"/proc/{int(hub)}/ns/net", os.O_RDONLY)
    except (OSError, ValueError):
        print(f"simcluster hosts: the hosts' network (process {hub}) is gone: run `simcluster hosts up`",
              file=sys.stderr)
        return 255
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        print(f"simcluster hosts: cannot enter the hosts' network: {os.strerror(ctypes.get_errno())}",
              file=sys.stderr)
        return 255
    os.close(fd)
    try:
        connection = socket.create_connection((address, int(port)), timeout=10)
    except OSError as exc:
        print(f"simcluster hosts: cannot reach {address}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 255
    connection.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "in")
    selector.register(connection, selectors.EVENT_READ, "net")
    open_inputs = 2
    while open_inputs:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(0, 65536)
                if not data:
                    selector.unregister(0)
                    open_inputs -= 1
                    connection.shutdown(socket.SHUT_WR)
                else:
                    connection.sendall(data)
            else:
                data = connection.recv(65536)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
