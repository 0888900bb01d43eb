"""Errors of the fault proxy.

::

    HarnessError                    (harness.errors)
    └── ProxyError                  anything the fault proxy refuses or fails to do
        ├── ProxyConfigError        a bad argument: unknown direction, negative delay (also a ValueError)
        └── ProxyTimeoutError       the proxy loop did not answer a control call in time (also a TimeoutError)
"""

from __future__ import annotations

from ..errors import HarnessError

__all__ = ["ProxyConfigError", "ProxyError", "ProxyTimeoutError"]


class ProxyError(HarnessError):
    """The fault proxy could not do what was asked; the message says why and what to do."""


class ProxyConfigError(ProxyError, ValueError):
    """An invalid argument to a toxic, a target or a control call."""


class ProxyTimeoutError(ProxyError, TimeoutError):
    """A control call's deadline passed before the proxy loop ran it."""
