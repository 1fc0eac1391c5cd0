"""The test fixture's nvidia-mig-manager package, apt repository and release archive (simcluster.hosts.packaging),
made from small stand-in files here: the layout of mig-parted's deployments/systemd/packages, read back with dpkg."""

import gzip
import hashlib
import shutil
import subprocess
import tarfile

import pytest

from simcluster.hosts import packaging

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")


@pytest.fixture
def release(tmp_path):
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    for name, _, _ in packaging.PACKAGED:
        (systemd / name).write_text(f"# {name}\n")
    binary = tmp_path / "nvidia-mig-parted"
    binary.write_text("#!/bin/sh\necho nvidia-mig-parted version v0.10.0\n")
    return binary, systemd


def test_the_package_version_drops_the_v_and_adds_revision_1():
    assert packaging.package_version("v0.10.0") == "0.10.0-1"
    assert packaging.package_version("v0.11.0-rc.1") == "0.11.0~rc.1-1"


def test_the_deb_puts_files_where_nvidias_package_does(tmp_path, release):
    (tmp_path / "out").mkdir()
    deb = packaging.build_deb(tmp_path / "out", *release, "v0.10.0")
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {line.split()[0] + " " + line.split()[-1] for line in listing.splitlines()}
    assert "-rwxr-xr-x ./usr/bin/nvidia-mig-parted" in entries
    assert "-rw-r--r-- ./lib/systemd/system/nvidia-mig-manager.service" in entries
    assert "-rwxr-xr-x ./etc/nvidia-mig-manager/service.sh" in entries
    assert "-rw-r--r-- ./etc/systemd/system/nvidia-mig-manager.service.d/override.conf" in entries
    field = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Version"], capture_output=True, text=True,
                           check=True).stdout
    assert field.splitlines() == ["Package: nvidia-mig-manager", "Version: 0.10.0-1"]
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True)
    assert (control / "conffiles").read_text() == "/etc/systemd/system/nvidia-mig-manager.service.d/override.conf\n"
    assert "ln -s config-default.yaml config.yaml" in (control / "postinst").read_text()


def test_the_apt_repository_indexes_the_deb_by_its_checksum(tmp_path, release):
    (tmp_path / "out").mkdir()
    deb = packaging.build_deb(tmp_path / "out", *release, "v0.10.0")
    repo = packaging.apt_repository(tmp_path / "repo", [deb])
    index = (repo / "Packages").read_text()
    assert "Package: nvidia-mig-manager\nVersion: 0.10.0-1\n" in index
    assert f"Filename: ./{deb.name}\n" in index
    assert f"SHA256: {hashlib.sha256(deb.read_bytes()).hexdigest()}\n" in index
    assert gzip.decompress((repo / "Packages.gz").read_bytes()).decode() == index
    release_file = (repo / "Release").read_text()
    assert f" {hashlib.sha256(index.encode()).hexdigest()} {len(index.encode())} Packages\n" in release_file


def test_the_release_archive_holds_one_top_directory(tmp_path, release):
    archive = packaging.release_archive(tmp_path / "out", *release, "v0.10.0")
    with tarfile.open(archive) as tar:
        members = {member.name: member.mode for member in tar.getmembers()}
    top = "nvidia-mig-manager-0.10.0-1"
    assert members[f"{top}/nvidia-mig-parted"] == 0o755
    assert members[f"{top}/service.sh"] == 0o755
    assert members[f"{top}/nvidia-mig-manager.service"] == 0o644
    assert {name.split("/")[0] for name in members} == {top}
