"""A real single-node Slurm cluster for the Slurm launcher's tests: Debian's ``munge`` and
``slurm-wlm`` (slurmctld, slurmd and the client commands), started here with their own
files in a temporary folder and stopped by PID.

``munged`` runs with its own key and socket, slurmctld and slurmd (``-D``, in the
foreground) with a minimal ``slurm.conf`` on free ports; every Slurm command of the test
process and of the jobs finds it through ``SLURM_CONF``. There is no accounting daemon:
job states come from ``squeue`` (ended jobs stay listed for ``MinJobAge`` seconds).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The programs a cluster needs: ``apt-get install slurm-wlm munge`` (``.ci/run`` does).
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")


def missing_programs() -> list[str]:
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
             for name in PROGRAMS}
    return [name for name, path in found.items() if path is None]


def _program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    assert path is not None, name
    return path


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


SLURM_CONF = """\
ClusterName=debiasbench-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running cluster: ``env`` holds ``SLURM_CONF`` for subprocesses (also set in this
    process's environment while the cluster runs)."""

    root: Path
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def command(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def jobs(self) -> dict[str, tuple[str, str]]:
        """Every job slurmctld knows (array tasks one by one): id -> (state, reason)."""
        out = self.command("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r")
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return {row[0]: (row[1], row[2]) for row in rows}

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job still queued or running and wait (at most 30 s) until Slurm has
        ended them, since a job's slurmstepd outlives slurmd; then SIGTERM each daemon by
        its PID (slurmd first), SIGKILL those still there after 10 s."""
        if all(process.poll() is None for process in self.processes[1:]) and len(self.processes) == 3:
            try:
                self.command("scancel", "--user", str(os.getuid()), check=False)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(
                        state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")
                        for state, _ in self.jobs().values()):
                    time.sleep(0.5)
            except (RuntimeError, subprocess.SubprocessError):
                pass
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def start_cluster(root: Path, cpus: int = 2, memory_mb: int = 2000, timeout: float = 60.0) -> SlurmCluster:
    """munged, slurmctld and slurmd in ``root``; returns once ``sinfo`` shows the node idle.
    Whatever was started is stopped again when starting fails."""
    import pwd

    root.mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    (root / "spool").mkdir(exist_ok=True)
    munge = root / "munge"
    munge.mkdir(mode=0o700, exist_ok=True)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = munge / "munge.socket"
    ctld_port, slurmd_port = _free_ports(2)
    user = pwd.getpwuid(os.getuid()).pw_name
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(ctld_port=ctld_port, slurmd_port=slurmd_port, user=user, root=root,
                                      munge_socket=munge_socket, cpus=cpus, memory=memory_mb))
    cluster = SlurmCluster(root, conf)
    try:
        cluster.processes.append(subprocess.Popen(
            [_program("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
             f"--pid-file={munge / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
             f"--seed-file={munge / 'munged.seed'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: munge_socket.exists(), timeout, "munged's socket", cluster)
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "localhost"]):
            cluster.processes.append(subprocess.Popen(
                [_program(daemon[0]), *daemon[1:], "-f", str(conf)], env=cluster.env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: cluster.command("sinfo", "-h", "-o", "%t", check=False).strip() == "idle", timeout,
              "the node to be idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for process in cluster.processes:
            if process.poll() is not None:
                args = process.args if isinstance(process.args, list) else [process.args]
                raise RuntimeError(f"{Path(str(args[0])).name} exited with {process.returncode} "
                                   f"while waiting for {what}\n{cluster.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}\n{cluster.logs()}")
        time.sleep(0.5)
