"""Running the app under uvicorn, with the checks that must come before a port opens."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.serve.config import ServeConfig
from lmforge.settings import Settings

if TYPE_CHECKING:
    from lmforge.registry import ModelVersion


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: ServeConfig) -> None:
    """Auth off is for local use only; the assistant's FAQ must be readable, the decoders must
    exist; and say so now if the port is taken — all before anything listens."""
    if not config.auth.enabled and not is_loopback(config.host):
        raise LmforgeError(
            f"authentication can be turned off only on a loopback host, not {config.host}",
            "drop --no-auth and create a key with `lmforge keys create`, or bind 127.0.0.1",
        )
    if config.assistant is not None and config.assistant.model is not None:
        check_assistant_ref(config.assistant.model)
    elif config.assistant is not None and config.assistant.faq is not None:
        from lmforge.assistant.faq import load_faq

        load_faq(config.assistant.faq)  # a missing, empty or malformed FAQ: one line, now
    for ref in config.generation.models:
        check_decoder_ref(ref)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            raise LmforgeError(
                f"cannot listen on {config.host}:{config.port} ({exc.strerror})",
                "choose another --port, or stop what is using it",
            ) from exc


def check_decoder_ref(ref: str, settings: Settings | None = None) -> Path:
    """The folder of a decoder: a catalogue decoder (without converting it), a local Hugging
    Face folder, or a registered generation model; anything else fails before start."""
    from lmforge.models.catalogue import CATALOGUE
    from lmforge.registry import Registry

    entry = CATALOGUE.get(ref)
    decoders = ", ".join(e.name for e in CATALOGUE.values() if e.kind == "decoder")
    if entry is not None:
        if entry.kind != "decoder":
            raise ModelNotFoundError(
                f"{ref} is an {entry.kind}, not a decoder", f"generate with one of: {decoders}"
            )
        entry.check_installed()  # an optional model (gemma3-270m) fails here, before start
        return Path(ref)
    folder = Path(ref).expanduser()
    if (folder / "config.json").is_file():
        return folder
    try:
        version = Registry(settings).get(ref)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"unknown decoder '{ref}': not a catalogue decoder, a Hugging Face folder or a "
            "registered generation model",
            f"use one of: {decoders}, a folder with config.json, or a NAME from `lmforge run` "
            "of a generation recipe",
        ) from None
    if version.task != "generation":
        raise ModelNotFoundError(
            f"{version.ref} is a {version.task} model, not a decoder",
            "serve a version registered by a generation recipe",
        )
    return version.path


def check_assistant_ref(ref: str, settings: Settings | None = None) -> ModelVersion:
    """A version registered by an assistant recipe; anything else fails before start."""
    from lmforge.registry import Registry

    version = Registry(settings).get(ref)
    if version.task != "assistant":
        raise ModelNotFoundError(
            f"{version.ref} is a {version.task} model, not an assistant",
            "name a version registered by an assistant recipe (task: assistant)",
        )
    return version


def decoder_folder(ref: str, settings: Settings | None = None) -> Path:
    """The ready-to-load folder of a decoder reference (a catalogue one is converted once)."""
    from lmforge.models.catalogue import CATALOGUE, resolve_base
    from lmforge.settings import get_settings

    found = check_decoder_ref(ref, settings)
    if ref in CATALOGUE:
        return resolve_base(ref, (settings or get_settings()).cache_dir).path
    return found


def run_server(config: ServeConfig, settings: Settings | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting, finish what is queued, and return."""
    import uvicorn

    from lmforge.serve.app import create_app

    check_bind(config)
    app = create_app(config, settings)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        http="httptools",
        loop="auto",  # uvloop where installed
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=int(config.graceful_timeout_s),
        timeout_keep_alive=30,
    )
