"""The per-connection message rate limit: a token bucket that costs nothing while full.

``serve(max_messages_per_second=R)`` gives every connection a bucket of
``R`` tokens (one second's worth, so bursts of ``R`` messages are fine),
refilled continuously at ``R`` per second. Each data message, Ping and Pong
takes a token; one that finds the bucket empty breaks the policy, and the
connection is closed with 1008. A connection that stays under the rate is
never slowed down.

A bucket that has refilled carries no information, so the connection drops
it (:meth:`TokenBucket.is_full`) before it parks: a hibernated connection
keeps nothing for the rate limit. Time is whatever clock the caller passes
(Trio's, in the transport), so the arithmetic is tested without one.

This is a *policy* for abusive clients. Fairness between clients does not
depend on it: the reader yields to other tasks on its own budget whether or
not a limit is set (see ``_reader.py``).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """The tokens one connection has left, as of one instant.

    Args:
        rate: Tokens per second; a new bucket starts full (``rate`` tokens).
        now: The current time, in seconds.
    """

    __slots__ = ("_at", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        self._tokens = rate
        self._at = now

    def _level(self, rate: float, now: float) -> float:
        return min(rate, self._tokens + (now - self._at) * rate)

    def take(self, rate: float, now: float) -> bool:
        """Take one token; False (and nothing taken) when fewer than one is left.

        Args:
            rate: Tokens per second (the same for every call on a bucket).
            now: The current time, in seconds, never earlier than before.
        """
        tokens = self._level(rate, now)
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def is_full(self, rate: float, now: float) -> bool:
        """True when the bucket has refilled, so forgetting it changes nothing."""
        return self._level(rate, now) >= rate
