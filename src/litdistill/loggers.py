"""Experiment loggers that never block on the network."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from litdistill.network import reachable

log = logging.getLogger(__name__)


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str = "auto") -> str:
    """Decide ``online`` or ``offline`` without ever waiting on a dead network.

    ``auto`` is online only when ``WANDB_MODE`` does not say otherwise, an API key is
    configured, and the W&B host answers within 3 s (wandb.init would otherwise block for
    about 100 s with a key and no network). Offline runs sync later with ``wandb sync``.
    """
    env = os.environ.get("WANDB_MODE", "").lower()
    if mode == "auto":
        mode = env if env in {"offline", "disabled", "dryrun"} else "auto"
    if mode == "auto":
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        online = _wandb_key_configured() and reachable(host.split("/")[0].split(":")[0])
        mode = "online" if online else "offline"
        if not online:
            log.info("W&B: no API key or no route to W&B, logging offline (wandb sync later)")
    return "offline" if mode == "dryrun" else mode


def wandb_logger(project: str, save_dir: str, name: str | None = None,
                 group: str | None = None, mode: str = "auto", **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger with the run's name and group and a network-safe mode.

    Args:
        project: W&B project.
        save_dir: Folder for the local run files (the job's run dir).
        name: Run name (from the job's overrides).
        group: Group (the sweep or experiment) so jobs of one sweep sit together.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        **kwargs: Passed to :class:`WandbLogger` (tags, entity, ...).
    """
    mode = wandb_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, name=name, group=group,
                       offline=mode == "offline", mode=mode, **kwargs)
