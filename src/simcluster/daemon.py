"""Entry point of the simulator process that ``simcluster up`` starts in the background."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from migrollout.kube import Connection, KubeClient, KubeError
from simcluster import credential
from simcluster import fleet as fleet_file
from simcluster.sim import images, netns
from simcluster.sim.containers import ContainerRuntime
from simcluster.sim.pod_sandbox import RuntimeConfig
from simcluster.sim.simulator import REAL, SIMULATED, Simulator

log = logging.getLogger("simcluster")


def kubernetes_service(api: KubeClient, timeout: float = 60) -> tuple[str, int]:
    """The ``kubernetes`` Service's address and port: what pods get as KUBERNETES_SERVICE_HOST and _PORT."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            service = api.get("/api/v1/namespaces/default/services/kubernetes", what="read the kubernetes Service")
            port = next((p["port"] for p in service["spec"].get("ports") or [] if p.get("name") == "https"), 443)
            return service["spec"]["clusterIP"], int(port)
        except KubeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def container_runtime(api: KubeClient, state_dir: Path, fleet: fleet_file.Fleet,
                      simulator: list[Simulator]) -> ContainerRuntime:
    server = urlparse(api.host)
    config = RuntimeConfig(
        directory=state_dir / "kubelet", nodes_directory=state_dir / "nodes",
        api_server=(server.hostname or "127.0.0.1", server.port or 443), service=kubernetes_service(api),
        backoff_initial_s=fleet.simulation.restart_backoff_s, backoff_max_s=fleet.simulation.restart_backoff_max_s)
    return ContainerRuntime(api, config, images.local_sources, changed=lambda node: simulator[0].queue.add(node))


def revoke_expired_credentials(state_dir: Path, interval: float = 1.0) -> None:
    """Revoke the exec credential plugin's tokens on time (simcluster.credential): a client that keeps a token
    past its expiry is refused even while no other client runs the plugin. Runs as long as the daemon."""
    while True:
        time.sleep(interval)
        try:
            credential.revoke_expired(state_dir)
        except (credential.CredentialError, OSError) as exc:
            log.warning("revoking expired exec credentials: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simcluster-daemon")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", help="the cluster's state directory (default: the kubeconfig's)")
    parser.add_argument("--fleet")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--status-file", required=True)
    parser.add_argument("--operator", choices=(REAL, SIMULATED), default=SIMULATED,
                        help="who runs the GPU Operator's controller: NVIDIA's (its pod runs for real) or the "
                             "simulation")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet = fleet_file.load(args.fleet)
    if args.nodes:
        fleet = fleet.scaled(args.nodes)
    state_dir = Path(args.state_dir) if args.state_dir else Path(args.kubeconfig).resolve().parent
    api = KubeClient.connect(Connection(kubeconfig=args.kubeconfig), pool_size=args.workers + 8)
    runtime = None
    holder: list[Simulator] = []
    if args.operator == REAL:
        problem = netns.preflight()
        if problem:
            print(f"simcluster: {problem}; start the cluster as root, or with --simulated-operator", file=sys.stderr)
            return 2
        runtime = container_runtime(api, state_dir, fleet, holder)
    simulator = Simulator(api, fleet, Path(args.status_file), workers=args.workers, operator=args.operator,
                          runtime=runtime)
    holder.append(simulator)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stop())
    signal.signal(signal.SIGINT, lambda *_: simulator.stop())
    threading.Thread(target=revoke_expired_credentials, args=(state_dir,), name="credentials", daemon=True).start()
    simulator.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
