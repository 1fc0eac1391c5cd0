"""The bare-metal role's install sources on test hosts of this module's own (two A100 hosts, no Slurm): NVIDIA's
``nvidia-mig-manager`` package from an apt repository (``mig_hosts_install_source: package``) and a release
archive at a URL (``url``). Package and archive are test fixtures made from what simcluster builds from
mig-parted's module (:mod:`simcluster.hosts.packaging`), served over HTTP from the host set's own hub address.
Judged on each host: dpkg's record and files, ``nvidia-mig-parted --version`` run there, the GPU state, the dpkg
log of a re-run; and on the machine: its own /usr and dpkg database are untouched (the hosts' /usr is an overlay).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simcluster import nvml, upstream
from simcluster.hosts import deployment, hostset, packaging

REPO = Path(__file__).resolve().parents[2]
FLEET = """\
pools:
  - name: a100-80gb
    count: 2
    gpu: A100-SXM4-80GB
    gpus_per_node: 1
"""
PACKAGE_HOST, URL_HOST = "a100-80gb-1", "a100-80gb-2"
PORT = 8080  # in the host set's own network namespace (its hub), which nothing else listens in
MACHINE_DIRS = (Path("/usr/bin"), Path("/usr/lib/systemd/system"), Path("/etc/nvidia-mig-manager"))


def machine_listing() -> dict[str, list[str]]:
    return {str(path): sorted(os.listdir(path)) if path.is_dir() else [] for path in MACHINE_DIRS}


class Site:
    """The module's hosts, the fixture package and archive, and the HTTP server the hosts fetch them from."""

    def __init__(self, view, served: Path, archive: Path):
        self.view = view
        self.base_url = f"http://{hostset.HUB_ADDRESS}:{PORT}"
        self.archive_url = f"{self.base_url}/{archive.relative_to(served)}"
        self.archive_sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        self.version = packaging.package_version(upstream.MIG_PARTED_VERSION)
        self.config_file = str(deployment.systemd_dir() / "config-default.yaml")

    def run(self, host: str, **variables: str) -> subprocess.CompletedProcess[str]:
        extra = {"mig_config": "all-1g.10gb", "mig_hosts_config_file": self.config_file, **variables}
        return subprocess.run(self.view.playbook_command("-l", host, "-e", json.dumps(extra)), capture_output=True,
                              text=True, env=self.view.ansible_env(), timeout=600, cwd=REPO)

    def package_vars(self, **more: str) -> dict[str, str]:
        return {"mig_hosts_install_source": "package", "mig_hosts_package_version": self.version,
                "mig_hosts_package_repository": f"deb [trusted=yes] {self.base_url}/apt ./", **more}

    def url_vars(self, **more: str) -> dict[str, str]:
        return {"mig_hosts_install_source": "url", "mig_hosts_url": self.archive_url,
                "mig_hosts_url_checksum": f"sha256:{self.archive_sha256}", **more}


def changed(output: str, host: str) -> int:
    found = re.search(rf"^{re.escape(host)}\s*:.*\bchanged=(\d+)", output, re.MULTILINE)
    assert found, output[-3000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def machine_before() -> dict[str, list[str]]:
    return machine_listing()


@pytest.fixture(scope="module")
def site(start_hosts, tmp_path_factory: pytest.TempPathFactory, machine_before) -> Iterator[Site]:
    view = start_hosts(FLEET)
    served = tmp_path_factory.mktemp("served")
    built = upstream.build()
    deb = packaging.build_deb(served, built.mig_parted, deployment.systemd_dir(), upstream.MIG_PARTED_VERSION)
    packaging.apt_repository(served / "apt", [deb])
    archive = packaging.release_archive(served / "releases", built.mig_parted, deployment.systemd_dir(),
                                        upstream.MIG_PARTED_VERSION)
    hub = json.loads((view.state / "run.json").read_text())["hub"]
    server = subprocess.Popen(["nsenter", f"--net=/proc/{hub}/ns/net", "python3", "-m", "http.server", str(PORT),
                               "--bind", hostset.HUB_ADDRESS, "--directory", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        probe = f"python3 -c 'import urllib.request; urllib.request.urlopen(\"http://{hostset.HUB_ADDRESS}:{PORT}/\")'"
        while view.ssh(PACKAGE_HOST, probe, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the fixture's HTTP server does not answer the hosts"
            time.sleep(0.3)
        yield Site(view, served, archive)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def test_bad_install_source_input_is_refused_before_any_host_is_read(site):
    cases = [
        (site.package_vars(mig_hosts_package_version=""), "set mig_hosts_package_version"),
        (site.url_vars(mig_hosts_url_checksum=""), "set mig_hosts_url_checksum"),
        (site.package_vars(mig_hosts_config_file=""), "set mig_hosts_config_file"),
        ({"mig_hosts_install_source": "tarball"}, "mig_hosts_install_source must be one of: files, package, url"),
    ]
    for variables, message in cases:
        done = site.run(URL_HOST, **variables)
        assert done.returncode != 0 and message in done.stdout, done.stdout[-3000:]
        assert "Read the host's GPUs" not in done.stdout, done.stdout[-3000:]
    # Nothing reached the host: no MIG manager, no package source, no rollout record, MIG still off.
    for path in ("etc/nvidia-mig-manager", "etc/apt/sources.list.d/nvidia-mig-manager.list", "var/lib/mig-rollout"):
        assert not (site.view.root(URL_HOST) / path).exists(), path
    assert [gpu["mig"]["current"] for gpu in nvml.load(site.view.root(URL_HOST) / "gpu" / "state.json")["gpus"]] == [
        nvml.MIG_DISABLED]


def test_package_source_installs_nvidia_mig_manager_from_an_apt_repository(site, machine_before):
    done = site.run(PACKAGE_HOST, **site.package_vars())
    assert done.returncode == 0, done.stdout[-4000:]
    ssh = site.view.ssh
    assert ssh(PACKAGE_HOST, "dpkg-query -W -f '${Status} ${Version}' nvidia-mig-manager").stdout == (
        f"install ok installed {site.version}")
    owned = set(ssh(PACKAGE_HOST, "dpkg -L nvidia-mig-manager").stdout.split())
    assert {"/usr/bin/nvidia-mig-parted", "/lib/systemd/system/nvidia-mig-manager.service",
            "/etc/nvidia-mig-manager/service.sh"} <= owned
    assert ssh(PACKAGE_HOST, "/usr/bin/nvidia-mig-parted --version").stdout.split()[-1] == upstream.MIG_PARTED_VERSION
    assert ssh(PACKAGE_HOST, "test ! -e /usr/local/bin/nvidia-mig-parted", check=False).returncode == 0
    # The role's own files beside the package's: the site's config (a file, not the package's link), the hooks,
    # the persisted selection, the enabled boot-time service; mig-parted partitioned the GPU.
    root = site.view.root(PACKAGE_HOST)
    assert not (root / "etc" / "nvidia-mig-manager" / "config.yaml").is_symlink()
    assert "MIG_PARTED_SELECTED_CONFIG=all-1g.10gb" in (
        root / "etc" / "systemd" / "system" / "nvidia-mig-manager.service.d" / "override.conf").read_text()
    assert (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "nvidia-mig-manager.service").is_symlink()
    assert nvml.mig_layout(nvml.load(root / "gpu" / "state.json")) == [{"1g.10gb": 7}]
    # The package landed in the host's own /usr (its overlay), not the machine's.
    assert (root / "overlay" / "usr" / "upper" / "bin" / "nvidia-mig-parted").is_file()
    assert machine_listing() == machine_before
    assert subprocess.run(["dpkg-query", "-W", "nvidia-mig-manager"], capture_output=True).returncode != 0

    again = site.run(PACKAGE_HOST, **site.package_vars())
    assert again.returncode == 0 and changed(again.stdout, PACKAGE_HOST) == 0, again.stdout[-4000:]
    log = ssh(PACKAGE_HOST, "grep -c ' install nvidia-mig-manager' /var/log/dpkg.log").stdout.strip()
    assert log == "1", log  # installed once: the re-run's plan found it installed


def test_url_source_installs_the_release_archive(site, machine_before):
    done = site.run(URL_HOST, **site.url_vars())
    assert done.returncode == 0, done.stdout[-4000:]
    ssh = site.view.ssh
    assert ssh(URL_HOST, "/usr/local/bin/nvidia-mig-parted --version").stdout.split()[-1] == upstream.MIG_PARTED_VERSION
    root = site.view.root(URL_HOST)
    for path in ("usr-local/lib/systemd/system/nvidia-mig-manager.service", "etc/nvidia-mig-manager/service.sh",
                 "etc/nvidia-mig-manager/hooks.yaml", "etc/systemd/system/nvidia-mig-manager.service.d/override.conf"):
        assert (root / path).is_file(), path
    cached = root / "var" / "cache" / "nvidia-mig-manager" / site.archive_sha256[:16]
    assert hashlib.sha256(next(cached.glob("*.tar.gz")).read_bytes()).hexdigest() == site.archive_sha256
    assert nvml.mig_layout(nvml.load(root / "gpu" / "state.json")) == [{"1g.10gb": 7}]
    assert ssh(URL_HOST, "dpkg-query -W nvidia-mig-manager", check=False).returncode != 0
    assert machine_listing() == machine_before

    stamp = (root / "usr-local" / "bin" / "nvidia-mig-parted").stat().st_mtime_ns
    again = site.run(URL_HOST, **site.url_vars())
    assert again.returncode == 0 and changed(again.stdout, URL_HOST) == 0, again.stdout[-4000:]
    assert (root / "usr-local" / "bin" / "nvidia-mig-parted").stat().st_mtime_ns == stamp
