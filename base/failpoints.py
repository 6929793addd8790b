"""Failpoints: named places where a test can make the process die as `kill -9` would, to prove
that what comes after a crash at exactly that place recovers (DESIGN invariant 1 and 2).

Armed by the environment, read once when the process starts::

    AGENT_FAILPOINT=intent:after agent approve ...   # dies just after a call's intent is recorded

Unarmed (always, outside such tests), `reached` is one comparison. The places:

- `intent:before`  an approved or side-effecting call is about to record its intent
- `intent:after`   it has recorded its intent, and has not started
- `deploy:started` a deploy's new container has started, before its health check and take-over
- `result:after`   a call's result has been recorded
"""

from __future__ import annotations

import os
import signal

ARMED = os.environ.get("AGENT_FAILPOINT") or None


def reached(name: str) -> None:
    """Die here, at once and with no clean-up, if this failpoint is the one armed."""
    if ARMED is not None and name == ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
