"""The naive baseline for serve_load.py: FastAPI running transformers' fp32 pipeline() per request.

What a user gets by wrapping a Hugging Face pipeline in a FastAPI route: a sync endpoint (so
FastAPI runs each request in its thread pool), no batching, torch fp32 eager.

    .venv/bin/python benchmarks/naive_server.py ~/.lmforge/registry/sentiment-en/v1 --port 8001
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    text: str


def build(folder: Path) -> FastAPI:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), device="cpu")
    app = FastAPI()

    @app.post("/predict")
    def predict(item: Item) -> Any:
        return classify(item.text, truncation=True, max_length=64)[0]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(build(args.folder), host="127.0.0.1", port=args.port, log_level="warning")
