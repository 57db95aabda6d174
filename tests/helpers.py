"""Test-only callbacks injected into runs through the config's ``_target_``."""

import lightning as L


class CrashAfterSteps(L.Callback):
    """Raise once ``trainer.global_step`` reaches ``steps``: a simulated interruption."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.steps:
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class KillAtStep(L.Callback):
    """SIGKILL the process once ``trainer.global_step`` reaches ``step``: a run killed from
    outside (no exception, no cleanup, no results.json update)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
