"""The server under test: kept for existing imports; the code lives in :mod:`harness.serving`."""

from __future__ import annotations

from . import serving as _serving
from .serving import *

__all__ = _serving.__all__
