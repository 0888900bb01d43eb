"""The backoff formula and the seeded random source, run in the browser (store.js exports them)."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.conftest import LiveServer


def _store_module(page: Page, browser_server: LiveServer) -> None:
    page.goto(f"{browser_server.http_url}/static/styles.css")  # same origin, no client running


def test_delays_double_from_the_base_up_to_the_cap(page: Page, browser_server: LiveServer) -> None:
    _store_module(page, browser_server)
    delays = page.evaluate(
        """async () => {
          const { backoffDelay } = await import('/static/store.js');
          return [0, 1, 2, 3, 4, 5, 6, 20].map((n) => backoffDelay(n, { baseMs: 1000, capMs: 30000, jitter: 'none' }));
        }"""
    )
    assert delays == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]


def test_jitter_stays_in_bounds_and_a_seed_replays_it(page: Page, browser_server: LiveServer) -> None:
    _store_module(page, browser_server)
    result = page.evaluate(
        """async () => {
          const { backoffDelay, createRandom } = await import('/static/store.js');
          const run = (seed, jitter) => {
            const random = createRandom(seed);
            return Array.from({ length: 8 }, (_, n) => backoffDelay(n, { baseMs: 1000, capMs: 30000, jitter }, random.next));
          };
          return { full: run(42, 'full'), fullAgain: run(42, 'full'), other: run(43, 'full'), equal: run(42, 'equal') };
        }"""
    )
    ceilings = [min(1000 * 2**n, 30000) for n in range(8)]
    assert result["full"] == result["fullAgain"], "the same seed must replay the same delays"
    assert result["full"] != result["other"]
    assert all(0 <= d <= c for d, c in zip(result["full"], ceilings, strict=True))
    assert all(c / 2 <= d <= c for d, c in zip(result["equal"], ceilings, strict=True))
