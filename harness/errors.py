"""Every exception the harness raises.

::

    HarnessError
    ├── BrowserNotFoundError        no Chromium to drive
    ├── ServerStartError            the server under test did not come up
    ├── ConfigurationError          a bad option, ini key, marker, fixture override or fault
    ├── WaitTimeoutError            a wait's deadline passed (also an AssertionError)
    ├── ProtocolClientError         the app refused a ws_client connection or operation
    ├── FaultControlError           a server-depth shim refused a request (``status``: its HTTP status)
    ├── ProxyError                  the fault proxy failed, with
    │   ├── ProxyConfigError        a bad toxic, direction or target (also a ValueError)
    │   └── ProxyTimeoutError       a proxy control call or wait missed its deadline (also a TimeoutError)
    └── LoadError                   a load run could not be set up or run (harness.load)
        ├── LoadConfigError         a bad scenario parameter, threshold, ramp or URL (also a ValueError)
        ├── LoadServerError         the embedded reference server did not start
        └── LoadDependencyError     the 'load' extra (Locust, websocket-client) is missing (also an ImportError)

A load run that starts and then meets bad input (an unreachable URL, a
rejected handshake, a server that closes mid-run) does not raise: it returns
a ``RunResult`` with ``aborted`` set and the figures gathered so far.

Messages say what was expected, what was found, and the likely fix.
"""

from __future__ import annotations

__all__ = [
    "BrowserNotFoundError",
    "ConfigurationError",
    "FaultControlError",
    "HarnessError",
    "LoadConfigError",
    "LoadDependencyError",
    "LoadError",
    "LoadServerError",
    "ProtocolClientError",
    "ProxyConfigError",
    "ProxyError",
    "ProxyTimeoutError",
    "ServerStartError",
    "WaitTimeoutError",
]


class HarnessError(Exception):
    """Base class of every harness error."""


class BrowserNotFoundError(HarnessError):
    """No Chromium could be found or launched."""

    @classmethod
    def none_found(cls) -> BrowserNotFoundError:
        return cls(
            "no Chromium found: neither Playwright's own browser nor a system Chromium "
            "(/usr/bin/chromium, chromium-browser, google-chrome). Fix it with one of: "
            "`python -m playwright install chromium` (needs network access to Playwright's CDN), "
            "or `apt-get install chromium` (Debian/Ubuntu), "
            "or set NOVA_WS_CHROMIUM=/path/to/chromium"
        )


class ServerStartError(HarnessError):
    """The server under test failed to start; the message carries its last log lines."""


class ConfigurationError(HarnessError):
    """An option, ini key, marker or fixture override is invalid."""


class WaitTimeoutError(HarnessError, AssertionError):
    """A wait's deadline passed; the message shows what was expected and what was seen."""


class ProtocolClientError(HarnessError):
    """The server refused the connection, answered an operation with an ``error`` frame, or closed the socket."""


class FaultControlError(HarnessError):
    """A server-depth fault shim refused a request (wrong token, unknown client, no live socket, bad value).

    ``status`` is the HTTP status of the answer (409: the client has no open
    socket; 422: a bad value), also for the fault proxy, which answers alike.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProxyError(HarnessError):
    """The fault proxy could not do what was asked; the message says why and what to do."""


class ProxyConfigError(ProxyError, ValueError):
    """An invalid argument to a toxic, a target or a control call."""


class ProxyTimeoutError(ProxyError, TimeoutError):
    """A control call's deadline passed before the proxy loop ran it."""


class LoadError(HarnessError):
    """A load run could not be set up or run."""


class LoadConfigError(LoadError, ValueError):
    """A scenario parameter, threshold expression, ramp or URL is invalid; the message names the rule."""


class LoadServerError(LoadError):
    """The embedded reference server did not start; the message carries its last output lines."""


class LoadDependencyError(LoadError, ImportError):
    """An optional dependency of the load tools is missing; the message names the extra to install."""
