"""Errors: those meant for the model (retry) are kept apart from those meant for the developer."""

from __future__ import annotations

__all__ = [
    "LoopwiseError",
    "ModelError",
    "ModelRetry",
    "UsageError",
]


class LoopwiseError(Exception):
    """Base class of every error loopwise raises on purpose."""


class UsageError(LoopwiseError):
    """The developer used the API wrongly: a bad argument, a missing key or extra."""


class ModelError(LoopwiseError):
    """A model request failed and retrying will not help (or retries ran out).

    ``status`` is the HTTP status when the provider answered, ``retryable`` whether the
    failure was transient (and retries were exhausted).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ModelRetry(Exception):
    """Raise inside a tool to send ``message`` back to the model so it can try again.

    Unlike other exceptions it is shown without the exception type: it is an instruction
    from the tool to the model, not a crash.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
