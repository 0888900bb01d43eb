"""Fault injection at every depth.

- :mod:`harness.faults.facade`: :class:`Faults`, the one fault API of a test's page
  (``ws_helper.faults``, the ``ws_faults`` fixture), and :class:`FaultHandle`;
- :mod:`harness.faults.messages`: message-depth decisions (pure rules the frame journal applies);
- :mod:`harness.faults.controller`: server-depth decisions (pure, keyed by client id), applied by
  :class:`harness.asgi.FaultMiddleware` or by the fault proxy.
"""

from __future__ import annotations

from .facade import Depth, FaultHandle, Faults

__all__ = ["Depth", "FaultHandle", "Faults"]
