#!/usr/bin/env bash
# Installs what tests/test_slurm.py needs for its real single-node SLURM: Debian's slurm-wlm
# (slurmctld, slurmd, sbatch/squeue/srun) and munge. Root only (CI runs as root); the test
# itself writes slurm.conf, creates a munge key if none exists and starts/stops the daemons.
# Without this script the SLURM test skips, with the reason.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo ".ci/install-slurm.sh: must run as root (apt-get); the SLURM test needs root too" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo ".ci/install-slurm.sh: needs a Debian/Ubuntu system (apt-get)" >&2
    exit 1
fi

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    echo "SLURM already installed: $(slurmctld -V)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# slurm-wlm pulls slurmctld, slurmd and slurm-client; the packages' own start-up is not used
# (no systemd in CI containers): the test starts the daemons with its own configuration.
apt-get install -y -qq --no-install-recommends slurm-wlm munge
echo "installed: $(slurmctld -V), munge $(munged -V 2>&1 | head -n1)"
