"""systemd notifications without a dependency: READY=1, WATCHDOG=1, STATUS=..., STOPPING=1 over NOTIFY_SOCKET.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) to a ``Type=notify`` service
and ``WATCHDOG_USEC`` when ``WatchdogSec=`` is set. ``Notifier`` sends datagrams there; outside systemd (no
variable) every call is a no-op, so the app never needs to know how it was started. ``Watchdog`` pings at half
the watchdog interval, but only while the caller keeps calling ``alive()`` (the frame loop does, once per
frame), so a hung pipeline stops the pings and systemd restarts the service.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to ``NOTIFY_SOCKET`` (or ``address``); no-op when there is none."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            if address[0] not in "/@":
                log.warning("ignoring NOTIFY_SOCKET=%r: not a unix socket path", address)
                self.address = ""
                return
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the frame loop: a receiver that does not read (its queue holds ~10 datagrams) would
            # otherwise hang sendto(); a message that does not fit is dropped (the next ping follows soon)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, state: str) -> bool:
        """Send one state string (e.g. "READY=1" or "STATUS=scoring"); True when it was sent."""
        if self._sock is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(state.encode("utf-8"), target)
            return True
        except BlockingIOError:
            log.debug("sd_notify %r to %s dropped: the receiver's queue is full", state, self.address)
            return False
        except OSError as e:  # systemd gone: never fatal for the app
            log.warning("sd_notify %r to %s failed: %s", state, self.address, e)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds (systemd's advice), or None when no watchdog is configured.

    ``WATCHDOG_PID``, when set, must be this process (otherwise the watchdog is meant for another one).
    """
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Call ``alive()`` from the work loop; it sends WATCHDOG=1 at most every ``interval_s`` seconds."""

    def __init__(self, notifier: Notifier, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.interval_s = watchdog_interval_s() if interval_s is None else interval_s
        self._clock = clock
        self._last = float("-inf")
        self.pings = 0

    def alive(self) -> None:
        if not self.interval_s or not self.notifier.enabled:
            return
        now = self._clock()
        if now - self._last >= self.interval_s:
            if self.notifier.watchdog():
                self.pings += 1
            self._last = now
