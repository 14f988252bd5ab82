"""The contract of a sink."""

from __future__ import annotations

from events.envelope import Envelope


class SinkUnavailable(Exception):
    """The sink did not take the batch (down, timed out, refused): the relay keeps the batch and
    tries again with backoff."""


class Sink:
    name = "sink"
    # A transactional sink writes to our own database: it runs inside the transaction that marks
    # the batch published, so it takes each event exactly once. Others run before it, and a
    # batch they took may be offered again if that transaction fails (at least once).
    transactional = False

    def publish(self, events: list[Envelope]) -> None:
        """Take every event of the batch, in order, or raise ``SinkUnavailable``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (the relay is stopping)."""
