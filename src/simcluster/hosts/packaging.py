"""A test fixture: NVIDIA's ``nvidia-mig-manager`` package and release archive, made from what simcluster builds
from mig-parted's Go module (``simcluster path mig-parted``, ``simcluster path mig-parted-systemd``), so that the
bare-metal role's ``package`` and ``url`` install sources run for real on the test hosts.

NVIDIA publishes no package this machine can reach; these are stand-ins of the same release's files, laid out
as mig-parted's ``deployments/systemd/packages`` describes (its Debian Makefile and RPM spec): the binary in
``/usr/bin``, the unit and target in ``/lib/systemd/system``, ``nvidia-mig-parted.sh`` in ``/etc/profile.d``,
``override.conf`` (the only conffile) in the unit's drop-in directory, the scripts, hooks files and default
config in ``/etc/nvidia-mig-manager``; after install, ``config.yaml`` and ``hooks.yaml`` link to the shipped
defaults when absent. The package version is the release without its ``v`` and revision 1 (``0.10.0-1``).

- :func:`build_deb`: the ``.deb`` (``dpkg-deb``);
- :func:`apt_repository`: a flat apt repository holding it (``deb [trusted=yes] URL ./``);
- :func:`release_archive`: a ``.tar.gz`` with one top directory, the binary beside the ``deployments/systemd`` files.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

PACKAGE = "nvidia-mig-manager"
# deployments/systemd's files the package ships, where, and with which mode.
PACKAGED = (
    ("nvidia-mig-manager.service", "lib/systemd/system", 0o644),
    ("nvidia-gpu-reset.target", "lib/systemd/system", 0o644),
    ("nvidia-mig-parted.sh", "etc/profile.d", 0o644),
    ("override.conf", "etc/systemd/system/nvidia-mig-manager.service.d", 0o644),
    ("service.sh", "etc/nvidia-mig-manager", 0o755),
    ("utils.sh", "etc/nvidia-mig-manager", 0o644),
    ("hooks.sh", "etc/nvidia-mig-manager", 0o644),
    ("hooks-default.yaml", "etc/nvidia-mig-manager", 0o644),
    ("hooks-minimal.yaml", "etc/nvidia-mig-manager", 0o644),
    ("config-default.yaml", "etc/nvidia-mig-manager", 0o644),
)
# After install: the config and hooks files mig-parted's service reads, as links to the shipped defaults unless
# the site has its own.
POSTINST = """\
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    cd /etc/nvidia-mig-manager
    [ -e config.yaml ] || ln -s config-default.yaml config.yaml
    [ -e hooks.yaml ] || ln -s hooks-default.yaml hooks.yaml
fi
exit 0
"""


class PackagingError(RuntimeError):
    pass


def package_version(release: str) -> str:
    """The package version of a mig-parted release: ``v0.10.0`` -> ``0.10.0-1`` (a ``-`` of a pre-release
    becomes ``~``, which sorts before the release)."""
    return release.removeprefix("v").replace("-", "~") + "-1"


def _architecture() -> str:
    done = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    if done.returncode != 0:
        raise PackagingError(f"dpkg --print-architecture: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def build_deb(out_dir: Path, binary: Path, systemd_dir: Path, release: str) -> Path:
    """``nvidia-mig-manager_<version>_<arch>.deb`` in ``out_dir``."""
    if shutil.which("dpkg-deb") is None:
        raise PackagingError("dpkg-deb is not installed (Debian's dpkg)")
    version, arch = package_version(release), _architecture()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f"{PACKAGE}-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "usr" / "bin").mkdir(parents=True)
    shutil.copyfile(binary, staging / "usr" / "bin" / "nvidia-mig-parted")
    (staging / "usr" / "bin" / "nvidia-mig-parted").chmod(0o755)
    (staging / "var" / "lib" / PACKAGE).mkdir(parents=True)
    for name, where, mode in PACKAGED:
        (staging / where).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(systemd_dir / name, staging / where / name)
        (staging / where / name).chmod(mode)
    control = staging / "DEBIAN"
    control.mkdir()
    size_kib = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file()) // 1024 + 1
    (control / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nSection: utils\nPriority: optional\n"
        f"Maintainer: simcluster test fixture <root@localhost>\nInstalled-Size: {size_kib}\n"
        f"Description: NVIDIA MIG Partition Editor and systemd service (test fixture)\n"
        f" mig-parted {release} and its deployments/systemd files, built by simcluster from the Go module.\n")
    (control / "conffiles").write_text(f"/etc/systemd/system/{PACKAGE}.service.d/override.conf\n")
    (control / "postinst").write_text(POSTINST)
    (control / "postinst").chmod(0o755)
    deb = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
    done = subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(staging), str(deb)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PackagingError(f"dpkg-deb --build: {done.stderr.strip() or done.returncode}")
    shutil.rmtree(staging)
    return deb


def apt_repository(repo_dir: Path, debs: list[Path]) -> Path:
    """A flat apt repository in ``repo_dir`` holding ``debs``: ``Packages`` (and ``.gz``) and ``Release``.
    Unsigned: a source line names it ``deb [trusted=yes] URL ./``."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for deb in debs:
        if deb.parent != repo_dir:
            shutil.copyfile(deb, repo_dir / deb.name)
        done = subprocess.run(["dpkg-deb", "--field", str(repo_dir / deb.name)], capture_output=True, text=True)
        if done.returncode != 0:
            raise PackagingError(f"dpkg-deb --field {deb.name}: {done.stderr.strip() or done.returncode}")
        data = (repo_dir / deb.name).read_bytes()
        entries.append(done.stdout.rstrip("\n") + f"\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    packages = "\n".join(entries).encode()
    (repo_dir / "Packages").write_bytes(packages)
    (repo_dir / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    sums = "".join(f" {hashlib.sha256((repo_dir / name).read_bytes()).hexdigest()} "
                   f"{(repo_dir / name).stat().st_size} {name}\n" for name in ("Packages", "Packages.gz"))
    (repo_dir / "Release").write_text(f"Origin: simcluster\nLabel: simcluster test fixture\nSuite: ./\n"
                                      f"Date: {email.utils.formatdate(usegmt=True)}\n"
                                      f"Architectures: {_architecture()}\nSHA256:\n{sums}")
    return repo_dir


def release_archive(out_dir: Path, binary: Path, systemd_dir: Path, release: str) -> Path:
    """``nvidia-mig-manager-<version>.tar.gz``: one top directory holding ``nvidia-mig-parted`` and the
    ``deployments/systemd`` files (as NVIDIA's release tarballs hold them)."""
    top = f"{PACKAGE}-{package_version(release)}"
    archive = out_dir / f"{top}.tar.gz"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path, mode in [(binary, 0o755), *((systemd_dir / name, mode) for name, _, mode in PACKAGED)]:
            info = tar.gettarinfo(str(path), arcname=f"{top}/{'nvidia-mig-parted' if path == binary else path.name}")
            info.mode, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, "root", "root"
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return archive
