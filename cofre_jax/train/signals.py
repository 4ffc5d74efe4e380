"""Stopping at a step boundary on SIGTERM/SIGINT, and waiting on a dispatched step
without blocking signal handlers."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import jax


class StopFlag:
    """Turns SIGTERM/SIGINT into a checkpoint-and-exit at the next step boundary.

    Python runs a signal handler only between bytecodes of the main thread, so not
    during a compile, an evaluation or a wait inside XLA. The signal also writes its
    number to a wakeup pipe (`signal.set_wakeup_fd`), and a thread reading that pipe
    says at once that the run is stopping: a silent wait invites a second Ctrl-C.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._announcer = threading.Thread(target=self._announce, daemon=True)
        self._announcer.start()
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def _announce(self) -> None:
        seen = 0
        while True:
            try:
                signals = os.read(self._read_fd, 64)
            except OSError:
                return
            if not signals:  # the write end was closed: training is over
                return
            for signum in signals:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                name = signal.Signals(signum).name
                seen += 1
                if seen == 1:
                    message = (
                        f"{name} received: finishing the step in flight, then saving a "
                        "checkpoint and stopping"
                    )
                else:
                    message = f"{name}: already stopping after the step in flight"
                print(message, file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._write_fd)
        self._announcer.join(timeout=5)
        os.close(self._read_fd)


def wait_for(metrics) -> None:
    """Waits until a dispatched step has run, polling so that signal handlers (which
    Python runs between bytecodes, never inside a blocking call) print at once."""
    leaves = jax.tree_util.tree_leaves(metrics)
    while not all(leaf.is_ready() for leaf in leaves):
        time.sleep(0.002)
