"""A consumer fenced out of its group is built again in the same process, a few times.

With an instance id (static membership, KIP-345) librdkafka treats FENCED_INSTANCE_ID as
fatal: the consumer can do nothing more. Two processes sharing an id get it, as they should,
but so does one alone when its group coordinator moves: a JoinGroup answered by the new
coordinator whose answer never arrived gives the instance id a new member id, and the
consumer's next request under the old one is refused. `herald chaos --scenario
broker-of-three-kill` saw it in one run of two: the email delivery process's consumer of its
request topic was fenced under its own instance id while no other process had that id, it
stopped reading, and 1,617 of 3,400 notifications were never sent. So a fenced stage gets a new consumer
(it rejoins as the instance it is, and its checkpoint's producer, under the same
transactional id, fences the old one) up to `MAX_REJOINS` times in `WINDOW_S`; past that,
another live process under the same id is the likelier cause, and the error is raised for
its supervisor and operator to see.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)
MAX_REJOINS = 3
WINDOW_S = 300.0
T = TypeVar("T")


def fenced(exc: BaseException) -> bool:
    """A fatal consumer error: fenced by an instance id (librdkafka reports it as _FATAL)."""
    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    error: KafkaError = exc.args[0]
    return error.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


def run_rejoining(run_once: Callable[[], T], what: str, stop: threading.Event,
                  clock: Callable[[], float] = time.monotonic) -> T:
    """`run_once()` (which builds its consumer, runs until `stop` and closes it), run again
    after a fencing, up to MAX_REJOINS times within WINDOW_S."""
    rejoined_at: list[float] = []
    while True:
        try:
            return run_once()
        except KafkaException as exc:
            now = clock()
            rejoined_at = [t for t in rejoined_at if now - t < WINDOW_S]
            if not fenced(exc) or stop.is_set() or len(rejoined_at) >= MAX_REJOINS:
                raise
            rejoined_at.append(now)
            log.warning("%s was fenced out of its group (%s); rejoining with a new consumer (%d of %d "
                        "in %.0f s)", what, exc.args[0].str(), len(rejoined_at), MAX_REJOINS, WINDOW_S)
