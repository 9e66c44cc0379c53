"""Preemption: a SIGTERM during training stops it at the next step boundary, after a checkpoint.

Preemptible and spot VMs (Cloud TPU, GCE) and SLURM (when it preempts a job, and before its
time limit with `#SBATCH --signal=TERM@SECONDS`) send SIGTERM some seconds before they kill a
job. While `loop.train` runs, a SIGTERM is a notice: the loop saves a checkpoint at the next
step boundary and raises `Preempted`; `python -m tsasr.run` exits with EXIT_CODE, and the same
command resumes from that checkpoint, bit for bit. A second SIGTERM acts as it would without
this (the process ends at once). Outside training SIGTERM keeps its default action: a killed
data stage resumes from the chunks it finished.

Multi-process runs: the checkpoint is written by all processes together, so all must stop at
the same step, whichever of them got the signal. JAX's preemption sync manager (started by
jax.distributed.initialize, which catches SIGTERM itself) agrees that step; `reached` asks it
at every step. This module imports no JAX.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

log = logging.getLogger(__name__)

# 128 + SIGTERM, what a shell reports for a process SIGTERM ended: the run did not finish, it is
# neither a success (0) nor an error (1, 2), and a job script can requeue on it (tsasr.launch's).
EXIT_CODE = 128 + signal.SIGTERM


class Preempted(Exception):
    """Training stopped on a preemption notice after saving its state at `step`."""

    def __init__(self, step: int):
        super().__init__(f"preempted: SIGTERM received, checkpoint saved at step {step}")
        self.step = step


class Notice:
    """Between `start()` and `stop()`, SIGTERM is recorded instead of ending the process, and
    `reached(step)` says whether to stop after `step` steps (on every process alike)."""

    def __init__(self):
        self.received = False
        self._previous = None  # the handler before ours (None: one set outside Python)
        self._installed = False
        self._multi_process = False

    def start(self) -> None:
        jax = sys.modules.get("jax")
        self._multi_process = jax is not None and jax.process_count() > 1
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def _handle(self, signum, frame) -> None:
        self.received = True
        signal.signal(signal.SIGTERM, self._restored())  # a second SIGTERM ends the process
        log.warning("SIGTERM: saving a checkpoint at the next step boundary, then stopping")

    def _restored(self):
        return signal.SIG_DFL if self._previous is None else self._previous

    def reached(self, step: int) -> bool:
        if not self._multi_process:
            return self.received
        from jax.experimental import multihost_utils  # only multi-process runs get here, JAX loaded

        try:
            self.received = self.received or multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
            return False
        return self.received

    def stop(self) -> None:
        if self._installed and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._restored())
        self._installed = False
