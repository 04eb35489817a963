"""Choosing the default model says why, and the embedded fallback is never chosen silently:
:func:`choose_default_model` tells the caller (the CLI prints the notice on stderr)."""

from __future__ import annotations

import pytest

from figures import figure
from loopwise.errors import UsageError
from loopwise.models import (
    EMBEDDED_FALLBACK_NOTICE,
    ModelChoice,
    choose_default_model,
    default_model,
    embedded_fallback_notice,
    local,
)

KEYS = ("LOOPWISE_MODEL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No model variable or key set; the embedded model counts as installed."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(local, "local_available", lambda: True)
    return monkeypatch


def test_no_key_picks_the_embedded_fallback_and_says_so(bare: pytest.MonkeyPatch) -> None:
    choice = choose_default_model()
    assert choice == ModelChoice("local", "embedded fallback")
    assert choice.embedded_fallback
    assert choice.notice == embedded_fallback_notice() == EMBEDDED_FALLBACK_NOTICE
    assert default_model() == "local"


def test_the_notice_says_what_the_model_is_and_both_ways_out() -> None:
    notice = embedded_fallback_notice()
    assert "\n" not in notice  # one paragraph
    for needed in (
        "SmolLM2-135M",
        "offline",
        "cannot",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "--model",
        "LOOPWISE_MODEL",
    ):
        assert needed in notice, needed


# Each way the fallback could be reached or wrongly reported: (environment, model, source).
CASES = [
    ({}, "local", "embedded fallback"),
    ({"ANTHROPIC_API_KEY": ""}, "local", "embedded fallback"),
    ({"OPENAI_API_KEY": "   "}, "local", "embedded fallback"),  # a blank key is no key
    ({"LOOPWISE_MODEL": " \t"}, "local", "embedded fallback"),
    ({"LOOPWISE_MODEL": "local"}, "local", "LOOPWISE_MODEL"),  # chosen, not a fallback
    ({"ANTHROPIC_API_KEY": "k"}, "anthropic:claude-sonnet-4-6", "ANTHROPIC_API_KEY"),
    ({"OPENAI_API_KEY": "k"}, "openai:gpt-4.1", "OPENAI_API_KEY"),
    ({"OPENAI_API_KEY": "k", "LOOPWISE_MODEL": "ollama:qwen3"}, "ollama:qwen3", "LOOPWISE_MODEL"),
]


@pytest.mark.parametrize(("env", "model", "source"), CASES)
def test_the_choice_names_its_source(
    bare: pytest.MonkeyPatch, env: dict[str, str], model: str, source: str
) -> None:
    for name, value in env.items():
        bare.setenv(name, value)
    choice = choose_default_model()
    assert (choice.model, choice.source) == (model, source)
    assert (choice.notice is not None) == (source == "embedded fallback")
    if env == CASES[-1][0]:
        figure(
            f"default model choice: {len(CASES)} environments tried, the notice given exactly "
            "when the embedded fallback is chosen"
        )


def test_nothing_installed_is_still_one_clear_error(bare: pytest.MonkeyPatch) -> None:
    bare.setattr(local, "local_available", lambda: False)
    with pytest.raises(UsageError, match=r"No model is configured"):
        choose_default_model()
