"""Named network conditions for ``faults.profile(name)``: data, each with its source.

Latency is applied per direction (half the round-trip time each way) and
bandwidth per direction, by the fault proxy on the page's WebSocket.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "NetworkProfile"]


@dataclass(frozen=True)
class NetworkProfile:
    """A network condition: per-direction latency, jitter and bandwidth, and where it comes from."""

    name: str
    latency_ms: float
    jitter_ms: float
    down_kbps: float
    up_kbps: float
    source: str


PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        NetworkProfile(
            name="3g",
            latency_ms=281.25,
            jitter_ms=0,
            down_kbps=1440,
            up_kbps=675,
            source=(
                "Chrome DevTools' 'Fast 3G' throttling preset: 1.6 Mbit/s down and 750 kbit/s up, "
                "each times 0.9, and 562.5 ms round trip (150 ms x 3.75), split over both directions"
            ),
        ),
        NetworkProfile(
            name="slow-3g",
            latency_ms=1000,
            jitter_ms=0,
            down_kbps=400,
            up_kbps=400,
            source=(
                "Chrome DevTools' 'Slow 3G' throttling preset: 500 kbit/s each way times 0.8, "
                "2000 ms round trip (400 ms x 5), split over both directions"
            ),
        ),
        NetworkProfile(
            name="satellite",
            latency_ms=300,
            jitter_ms=20,
            down_kbps=10_000,
            up_kbps=2_000,
            source=(
                "a geostationary link: about 240 ms of propagation each way (35,786 km up and down "
                "at the speed of light) plus ground processing, rounded to 300 ms; bandwidth "
                "illustrative of consumer plans"
            ),
        ),
        NetworkProfile(
            name="flaky-wifi",
            latency_ms=30,
            jitter_ms=60,
            down_kbps=5_000,
            up_kbps=2_000,
            source=(
                "illustrative, not measured: a congested 2.4 GHz link whose delay varies by more "
                "than its mean (jitter 60 ms around 30 ms each way)"
            ),
        ),
    )
}
