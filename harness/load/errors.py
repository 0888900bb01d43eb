"""The load tools' exceptions (defined in :mod:`harness.errors`, with every other one).

::

    HarnessError                 (harness.errors)
    └── LoadError                a load run could not be set up or run
        ├── LoadConfigError      a bad scenario parameter, threshold or URL (also a ValueError)
        ├── LoadServerError      the embedded reference server did not start
        └── LoadDependencyError  the 'load' extra is missing (also an ImportError)

A run that starts and then meets bad input (an unreachable URL, a rejected
handshake, a server that closes mid-run) does not raise: it returns a
:class:`~harness.load.results.RunResult` with ``aborted`` set and the
figures gathered so far.  Messages say what was expected, what arrived and
the fix.
"""

from __future__ import annotations

from ..errors import LoadConfigError, LoadDependencyError, LoadError, LoadServerError

__all__ = ["LoadConfigError", "LoadDependencyError", "LoadError", "LoadServerError"]
