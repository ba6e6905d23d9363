"""A real single-node SLURM for tests: munge, slurmctld and slurmd on localhost.

Debian's ``slurm-wlm`` and ``munge`` (see ``.ci/install-slurm.sh``); root only, because the
daemons and ``/etc/slurm/slurm.conf`` need it. ``srun`` inside a batch job (the Snakemake
SLURM plugin runs each rule through one) finds its configuration only at
``/etc/slurm/slurm.conf``, not through ``SLURM_CONF``, so the config is written there, with
a marker line, and removed again by ``stop()``. A ``slurm.conf`` without the marker belongs
to a real installation: ``why_unavailable()`` then says so and the tests skip.

    with LocalSlurm(tmp_dir) as slurm:     # up in a few seconds
        subprocess.run(["sbatch", "-p", slurm.partition, ...])
        slurm.jobs()                       # every job slurmctld still knows (MinJobAge)

Accounting storage is off, so ``sacct`` is disabled: use ``squeue`` (the plugin's
``--slurm-status-command squeue``). Finished jobs stay visible to ``squeue`` for
``MinJobAge`` seconds (600 here, longer than any test).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by uadflows tests/slurm_cluster.py: removed when the test cluster stops"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
REQUIRED_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun", "munged", "munge")
CTLD_PORT, SLURMD_PORT = 6817, 6818


def why_unavailable() -> str | None:
    """Why a local SLURM cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (slurmctld, slurmd and /etc/slurm/slurm.conf)"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}; run .ci/install-slurm.sh)"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        return f"{SLURM_CONF} exists and is not ours: not touching a real SLURM installation"
    for port in (CTLD_PORT, SLURMD_PORT):
        if _port_in_use(port):
            return f"port {port} is in use (another slurmctld/slurmd is running)"
    return None


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


@dataclass(frozen=True)
class SlurmJob:
    """One line of ``squeue --states=all``: what slurmctld recorded for a job."""

    job_id: str
    name: str
    comment: str
    state: str


class LocalSlurm:
    """Start and stop munge (if not already running), slurmctld and slurmd on localhost.

    ``workdir`` holds the state, spool, logs and pid files. The node declares ``cpus``
    CPUs (default: this machine's count; more lets jobs share the cores, as jobs spread
    over a real cluster's nodes would run side by side) and ``mem_mb`` of memory (default
    256 GB, more than the host may have). ``config_overrides`` makes slurmd accept both,
    and memory is not a consumable here (``CR_Core``), so a profile's real-cluster
    ``--mem`` requests are accepted rather than rejected by a small CI machine.
    """

    def __init__(self, workdir: Path, partition: str = "uadtest", cpus: int | None = None,
                 mem_mb: int = 256_000):
        self.workdir = Path(workdir)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.mem_mb = mem_mb
        self._started_munged_pid: int | None = None
        self._conf_written = False
        self._pidfiles = {d: self.workdir / f"{d}.pid" for d in ("slurmctld", "slurmd")}

    # -- life cycle ---------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        reason = why_unavailable()
        if reason:
            raise RuntimeError(f"cannot start a local SLURM: {reason}")
        for sub in ("state", "spool", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(self.slurm_conf())
        self._conf_written = True
        for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", ["-N", self.node])):
            res = _run([daemon, *extra])  # both fork into the background
            if res.returncode != 0:
                self.stop()
                raise RuntimeError(f"{daemon} failed to start: {res.stderr}{self.log_tail()}")
        self._wait_idle(timeout_s)

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this object started, remove our config."""
        if self._pid("slurmctld"):
            _run(["scancel", "--partition", self.partition])
        for daemon in ("slurmd", "slurmctld"):
            self._terminate(self._pid(daemon), daemon)
        if self._conf_written and SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text():
            SLURM_CONF.unlink()
        self._conf_written = False
        if self._started_munged_pid:
            self._terminate(self._started_munged_pid, "munged")
            self._started_munged_pid = None

    def __enter__(self) -> "LocalSlurm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the tests read ------------------------------------------------------------
    def jobs(self) -> list[SlurmJob]:
        """Every job slurmctld still holds, finished ones included (MinJobAge=600)."""
        res = _run(["squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T"])
        if res.returncode != 0:
            raise RuntimeError(f"squeue failed: {res.stderr}")
        return [SlurmJob(*line.split("|", 3)) for line in res.stdout.splitlines() if line.strip()]

    def ctld_log(self) -> str:
        path = self.workdir / "log" / "slurmctld.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("slurmctld", "slurmd"):
            path = self.workdir / "log" / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"\n--- {path} ---\n" + "\n".join(tail))
        return "".join(out)

    def slurm_conf(self) -> str:
        w = self.workdir
        return "\n".join([
            MARKER,
            "ClusterName=uadtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            "AuthType=auth/munge",
            # A requeued job waits cred_expire seconds before it starts again (slurm.conf(5),
            # AuthInfo; 120 by default): 10 is ample for a job launched on this host.
            "AuthInfo=cred_expire=10",
            "CredType=cred/munge",
            f"StateSaveLocation={w}/state",
            f"SlurmdSpoolDir={w}/spool",
            f"SlurmctldPidFile={self._pidfiles['slurmctld']}",
            f"SlurmdPidFile={self._pidfiles['slurmd']}",
            f"SlurmctldLogFile={w}/log/slurmctld.log",
            f"SlurmdLogFile={w}/log/slurmd.log",
            # No cgroups in containers: track processes through /proc, bind nothing.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            # FIFO scheduling runs on every submit and completion: no 30 s backfill wait.
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            # Finished jobs stay in squeue this long: the plugin's squeue status checks and
            # the test's own accounting both need them.
            "MinJobAge=600",
            "ReturnToService=2",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb}"
            " State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    # -- internals ----------------------------------------------------------------------
    def _start_munge(self) -> None:
        if _run(["sh", "-c", "munge -n | unmunge"]).returncode == 0:
            return  # a munged is already serving the default socket: use it, leave it
        uid, gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
        if not MUNGE_KEY.exists():
            res = _run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"])
            if res.returncode != 0:
                raise RuntimeError(f"could not create {MUNGE_KEY}: {res.stderr}")
            os.chown(MUNGE_KEY, uid, gid)
            MUNGE_KEY.chmod(0o400)
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        os.chown(MUNGE_SOCKET_DIR, uid, gid)
        res = _run(["runuser", "-u", "munge", "--", "munged"])
        if res.returncode != 0:
            raise RuntimeError(f"munged failed to start: {res.stderr}")
        pidfile = MUNGE_SOCKET_DIR / "munged.pid"
        self._started_munged_pid = int(pidfile.read_text()) if pidfile.exists() else None

    def _wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            res = _run(["sinfo", "--noheader", "--nodes", self.node, "--format=%t"])
            state = res.stdout.strip()
            if res.returncode == 0 and state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"node {self.node} not idle after {timeout_s:.0f} s (state {state!r})"
                           f"{self.log_tail()}")

    def _pid(self, daemon: str) -> int | None:
        path = self._pidfiles[daemon]
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _terminate(pid: int | None, name: str, timeout_s: float = 15.0) -> None:
        if not pid or not _alive(pid, name):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid, name):
            time.sleep(0.2)
        if _alive(pid, name):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int, name: str) -> bool:
    """True while process ``pid`` runs ``name`` (a reused pid or a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2]
    return comm == name and state != "Z"
