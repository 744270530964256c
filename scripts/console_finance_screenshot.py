"""The console's Finance view for the README and docs/console.md: docs/img/console-finance.png.

Replays a slice of the built-in Guardian business headlines (default: January to April 2020,
the weeks of the pandemic's first market crash) through a registered three-class model in
LMFORGE_HOME, day by day, with the surge rule judged at each day's end — what
``lmforge app finance-monitor --replay guardian_headlines`` does — then serves that home with
the finance monitor on (auth off, loopback only), opens the Finance view in Debian's headless
chromium at 1280x800, opens the first surge alert's headlines (without one: the most negative
day's) and saves the whole page. Every
figure is what the library computed from the model's labels; nothing is made up.

    LMFORGE_HOME=/path/to/home python scripts/console_finance_screenshot.py \
        [--model finance-sentiment] [--since 2020-01-02] [--until 2020-05-01]
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from datetime import date
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from lmforge.finance import FinanceMonitor
from lmforge.finance.ingest import replay_days
from lmforge.finance.monitor import run_stream
from lmforge.finance.scoring import Scorer
from lmforge.registry import Registry
from lmforge.serve import ServeConfig, create_app
from lmforge.settings import get_settings

# the day of the highest daily negative share, read from the chart's own day columns' titles
WORST_DAY = """[...document.querySelectorAll('rect.fin-hit')]
  .map((r) => [r.dataset.day, parseFloat(r.textContent.split(', ')[1])])
  .sort((a, b) => b[1] - a[1])[0][0]"""


def replay(model: str, since: date, until: date) -> str:
    """Score, store and judge the slice; the model's reference."""
    settings = get_settings()
    days = [(d, rows) for d, rows in replay_days("guardian_headlines") if since <= d < until]
    scorer = Scorer(model, settings)
    monitor = FinanceMonitor(scorer.model, Registry(settings).engine)
    result = run_stream(monitor, scorer, days, "replay:guardian_headlines")
    print(f"{result.headlines} headlines over {len(days)} days, {len(result.fired)} alerts fired")
    return scorer.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="finance-sentiment", help="a three-class classifier")
    parser.add_argument("--since", type=date.fromisoformat, default=date(2020, 1, 2))
    parser.add_argument("--until", type=date.fromisoformat, default=date(2020, 5, 1))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = replay(args.model, args.since, args.until)
    config = ServeConfig.model_validate(
        # a long interval: the server's own judgement (at today's date) has nothing to add
        {"auth": {"enabled": False}, "models": [], "finance": {"model": model, "interval": "1h"}}
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        chromium = shutil.which("chromium")
        assert chromium is not None, "no chromium: apt-get install chromium"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/ui#finance")
            page.wait_for_selector("#fin-chart")
            if page.locator("#fin-alerts li button").count():
                page.click("#fin-alerts li button >> nth=-1")  # the oldest alert
            else:  # no alert in the slice: the most negative day's headlines
                page.select_option("#fin-day", page.evaluate(WORST_DAY))
            page.wait_for_selector("#fin-detail table")
            page.wait_for_timeout(300)
            page.screenshot(path=str(args.out / "console-finance.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main()
