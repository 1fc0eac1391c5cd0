#!/usr/bin/env bash
# Debian packages the bare-metal test hosts run for real (simcluster hosts): OpenSSH's server, and with
# `--slurm` Slurm's controller and node daemons with MUNGE; python3-apt, which Ansible's apt module needs on a host
# (the role's `package` install source; the hosts run the machine's /usr/bin/python3). Installed with apt when missing (CI runs as root
# on a fresh Debian machine with apt reachable). No service is started here: the hosts start their own
# daemons in their own namespaces, so a policy-rc.d that refuses service starts is in place for the install.
set -euo pipefail
packages=(openssh-server slurmctld slurmd slurm-client munge python3-apt)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "host-packages: ${missing[*]} missing; installing them needs root" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "host-packages: installed ${missing[*]}"
