"""Errors of the fault proxy (defined in :mod:`harness.errors`, with every harness error).

::

    HarnessError                    (harness.errors)
    └── ProxyError                  anything the fault proxy refuses or fails to do
        ├── ProxyConfigError        a bad argument: unknown direction, negative delay (also a ValueError)
        └── ProxyTimeoutError       the proxy loop did not answer a control call in time (also a TimeoutError)
"""

from __future__ import annotations

from ..errors import ProxyConfigError, ProxyError, ProxyTimeoutError

__all__ = ["ProxyConfigError", "ProxyError", "ProxyTimeoutError"]
