"""Every exception the harness raises.

::

    HarnessError
    ├── BrowserNotFoundError        no Chromium to drive
    ├── ServerStartError            the server under test did not come up
    ├── ConfigurationError          a bad option, ini key, marker, fixture override or fault
    ├── WaitTimeoutError            a wait's deadline passed (also an AssertionError)
    ├── ProtocolClientError         the server refused a ws_client operation (client.py)
    ├── FaultControlError           the /__harness API refused a request (control.py)
    └── ProxyError                  the fault proxy failed (proxy/errors.py), with
        ├── ProxyConfigError        a bad toxic, direction or target
        └── ProxyTimeoutError       a proxy control call or wait missed its deadline

Messages say what was expected, what was found, and the likely fix.
"""

from __future__ import annotations

__all__ = [
    "BrowserNotFoundError",
    "ConfigurationError",
    "HarnessError",
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
