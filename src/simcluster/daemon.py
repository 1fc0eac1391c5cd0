"""Entry point of the simulator process that ``simcluster up`` starts in the background."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from migrollout.kube import Connection, KubeClient
from simcluster import fleet as fleet_file
from simcluster.sim.simulator import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simcluster-daemon")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--fleet")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--status-file", required=True)
    parser.add_argument("--install-operator", action="store_true")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet = fleet_file.load(args.fleet)
    if args.nodes:
        fleet = fleet.scaled(args.nodes)
    api = KubeClient.connect(Connection(kubeconfig=args.kubeconfig), pool_size=args.workers + 8)
    simulator = Simulator(api, fleet, Path(args.status_file), workers=args.workers)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stop())
    signal.signal(signal.SIGINT, lambda *_: simulator.stop())
    simulator.run(install_operator=args.install_operator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
