"""Screenshots of the web console's views for the README and docs/console.md.

Serves LMFORGE_HOME's registered models (auth off, loopback only) with the debian_faq
assistant, sends real traffic through the HTTP API — predictions of English and Chinese
reviews, feedback on some, questions to the assistant — then opens each view in Debian's
headless chromium and saves it to docs/img/console-VIEW.png (1280x800, and the playground at
phone width). Nothing here is made up: every figure on the pages is what the server computed.
The page's own texts are English: the machine that made docs/img has no CJK font, so Chinese
would show as boxes in the images (it is shown correctly wherever such a font is installed, and
the browser tests check the Chinese text itself).

    LMFORGE_HOME=/path/to/home python scripts/console_screenshots.py [--model sentiment-en]
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from playwright.sync_api import sync_playwright

from lmforge.serve import ServeConfig, create_app

REVIEWS = [
    "A wonderful, moving film with a superb cast.",
    "Dull, predictable and far too long.",
    "I loved every minute of it.",
    "The plot makes no sense and the acting is wooden.",
    "Charming, clever and beautifully shot.",
    "A complete waste of two hours.",
    "这部电影太精彩了，演员的表演非常出色。",
    "剧情拖沓，看得我昏昏欲睡。",
    "Not bad, but the ending was a letdown.",
    "One of the best films I have seen this year.",
]
QUESTIONS = ["How do I upgrade Debian?", "What is the weather on Mars?"]


def start(config: ServeConfig) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def traffic(url: str, model: str, rounds: int) -> None:
    """Predictions spread over a minute or two (the monitor's windows), feedback on a third."""
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(rounds):
            texts = REVIEWS[i % 3 :: 3]
            answer = client.post("/v1/predict", json={"model": model, "inputs": texts})
            answer.raise_for_status()
            for k, p in enumerate(answer.json()["predictions"]):
                if (i + k) % 3 == 0:
                    client.post(
                        "/v1/feedback",
                        json={"prediction_id": p["prediction_id"], "correct": k != 1},
                    ).raise_for_status()
            time.sleep(1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sentiment-en", help="a registered classifier")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--rounds", type=int, default=30, help="prediction requests sent")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = ServeConfig.model_validate(
        {
            "auth": {"enabled": False},
            "models": [args.model],
            "limits": {"rate_per_second": None},
            "assistant": {"faq": "debian_faq"},
            "prediction_log": {"flush_seconds": 0.2},
            "explain": {"timeout_s": 600},  # a loaded machine: the first one spawns a worker
        }
    )
    server, url = start(config)
    try:
        traffic(url, args.model, args.rounds)
        chromium = shutil.which("chromium")
        assert chromium is not None, "no chromium: apt-get install chromium"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/ui#models")
            page.wait_for_selector("article.model button.link")
            page.click("article.model button.link")
            page.wait_for_selector("article.model .detail table")
            page.wait_for_timeout(300)
            page.screenshot(path=str(args.out / "console-models.png"))
            page.goto(f"{url}/ui#monitor")
            page.wait_for_selector(".charts svg")
            page.select_option("#monitor-period", "900:30")  # the traffic just sent, close up
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "console-monitor.png"))
            page.goto(f"{url}/ui#playground")
            page.fill("#play-text", "Charming and clever, but the ending was a letdown.")
            page.click("#play-go")
            page.wait_for_selector("#play-heat .word", timeout=600_000)
            page.click("#fb-correct")
            page.wait_for_selector(".feedback-status.ok")
            page.screenshot(path=str(args.out / "console-playground.png"))
            page.goto(f"{url}/ui#assistant")
            for i, question in enumerate(QUESTIONS):
                page.fill("#chat-input", question)
                page.press("#chat-input", "Enter")
                page.wait_for_selector(f"#chat-log .msg.bot >> nth={i} >> p", timeout=600_000)
            page.screenshot(path=str(args.out / "console-assistant.png"))
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(f"{url}/ui#playground")
            page.fill("#play-text", "One of the best films I have seen this year.")
            page.click("#play-go")
            page.wait_for_selector("#play-heat .word", timeout=600_000)
            page.screenshot(path=str(args.out / "console-phone.png"))
            browser.close()
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main()
