"""Stop training cleanly when the scheduler says so.

SLURM signals a job before it takes the node away: SIGTERM when the job is pre-empted,
requeued (``scontrol requeue``) or cancelled, followed by SIGKILL ``KillWait`` seconds later
(30 s by default); and, when the job asked for it with ``sbatch --signal=USR1@<seconds>``,
SIGUSR1 that many seconds before its time limit. Training catches both, finishes the epoch
it is in, writes a checkpoint and exits with 128 + the signal's number, so the job's next
start (SLURM's requeue, Snakemake's retry, or the same command run again) resumes from it
instead of from the last periodic checkpoint. docs/slurm.md has the profile's side.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(RuntimeError):
    """Training stopped on a signal after writing its checkpoint; rerun to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's code for "ended by this signal"


class StopRequest:
    """While active, SIGTERM and SIGUSR1 set ``signum`` instead of ending the process; the
    training loop reads it between epochs. Outside the main thread (where Python cannot
    install handlers) it is inert and signals keep their default action."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        print(f"received {signal.Signals(signum).name}: stopping after this epoch", flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
