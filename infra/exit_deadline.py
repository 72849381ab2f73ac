"""A bound on how long a process may take to stop once asked to (SIGTERM, Ctrl-C).

Each stage stops gracefully on its own: it finishes or hands back its work, commits, and
leaves its group. Some waits are not ours to bound, though (a Kafka client closing while the
broker is down retried for 60 s), so the first stop signal also arms this deadline: past it,
the process logs why and exits at once. Nothing is lost by that: every stage is
at-least-once or transactional, and what was not committed is done again by the next owner.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from herald.infra.logs import log_stop

log = logging.getLogger(__name__)

EXIT_PAST_DEADLINE = 70  # EX_SOFTWARE: told to stop, did not in time
_armed = threading.Event()


def arm_exit_deadline(seconds: float, reason: str) -> None:
    """From now on the process exits within `seconds`, whatever it waits for; once per process."""
    if _armed.is_set():
        return
    _armed.set()

    def expire() -> None:
        time.sleep(seconds)
        log.error("still running %.0f s after %s: exiting now; what was not committed is redone by "
                  "the next owner", seconds, reason)
        logging.shutdown()
        os._exit(EXIT_PAST_DEADLINE)

    threading.Thread(target=expire, name="exit-deadline", daemon=True).start()


def serve_http(app: Any, stage: str, host: str, port: int, shutdown_timeout_s: float, **options: Any) -> None:
    """uvicorn, whose graceful shutdown (open connections, the app's lifespan) is bounded too.

    The stop line is written when the shutdown is done: uvicorn then raises the signal it
    caught again, so the process ends with it and nothing after `run` is reached."""
    import uvicorn

    class BoundedServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            arm_exit_deadline(shutdown_timeout_s, signal.Signals(sig).name)
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            log_stop(log, stage)

    # Half the deadline for open connections, so the rest of the shutdown still fits in it.
    config = uvicorn.Config(app, host=host, port=port,
                            timeout_graceful_shutdown=max(1, int(shutdown_timeout_s / 2)), **options)
    BoundedServer(config).run()
