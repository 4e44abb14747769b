"""What the project's child processes share."""
from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """In a child (a `preexec_fn`, or right after a fork): SIGTERM when the thread that started it ends, even by
    SIGKILL, so that a killed run leaves no orphan training or stack behind (Linux: prctl PR_SET_PDEATHSIG;
    elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
