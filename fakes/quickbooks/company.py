"""A fake company: its objects, and the OAuth grants and tokens the fake issued."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from fakes.server import Response

# --- Companies and their data ----------------------------------------------------------------


@dataclass
class Company:
    realm: str
    name: str
    home_currency: str = "USD"
    multicurrency: bool = False
    next_id: int = 1
    entities: dict[str, dict[str, dict]] = field(default_factory=dict)
    request_ids: dict[str, Response] = field(default_factory=dict)
    # Arrival times (the fake's scaled clock) of accepted API requests, and of batch calls.
    window: deque = field(default_factory=deque)
    batch_window: deque = field(default_factory=deque)
    # Documents a query does not see yet (``FakeQuickBooks.query_lag``).
    unindexed: set = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    max_per_second: int = 0
    max_per_minute: int = 0

    def table(self, entity: str) -> dict[str, dict]:
        return self.entities.setdefault(entity, {})

    def new_id(self) -> str:
        value = str(self.next_id)
        self.next_id += 1
        return value


@dataclass
class _Grant:
    realm: str
    revoked: bool = False


@dataclass
class _Token:
    grant: _Grant
    expires_at: float  # wall-clock seconds
    current: bool = True
