"""Network facts decided fast, so nothing waits minutes on a dead connection."""

from __future__ import annotations

import os
import socket


def offline() -> bool:
    """True when the user (or CI) told Hugging Face libraries not to touch the network."""
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").lower() in {"1", "true", "yes"} for f in flags)


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host:443`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
