"""``lmforge serve``'s switches applied over a server config."""

from __future__ import annotations

from lmforge.serve.config import AssistantConfig, ServeConfig, with_command_line


def test_no_switch_keeps_the_config() -> None:
    config = ServeConfig()
    assert with_command_line(config) == config


def test_switches_turn_auth_off_and_add_decoders() -> None:
    config = ServeConfig.model_validate({"generation": {"models": ["smollm2-135m-instruct"]}})
    changed = with_command_line(config, no_auth=True, decoders=["gemma3-270m"])
    assert not changed.auth.enabled
    assert changed.generation.models == ["smollm2-135m-instruct", "gemma3-270m"]
    assert config.auth.enabled and config.generation.models == ["smollm2-135m-instruct"]


def test_assistant_takes_the_faqs_place_keeping_its_generation_settings() -> None:
    config = ServeConfig.model_validate(
        {
            "generation": {"models": ["smollm2-135m-instruct"]},
            "assistant": {"faq": "debian_faq", "generate": True, "generate_max_tokens": 64},
        }
    )
    section = with_command_line(config, assistant="helpdesk:production").assistant
    assert section == AssistantConfig(
        model="helpdesk:production", generate=True, generate_max_tokens=64
    )
    bare = with_command_line(ServeConfig(), assistant="helpdesk").assistant
    assert bare == AssistantConfig(model="helpdesk", generate=False, generate_max_tokens=160)
