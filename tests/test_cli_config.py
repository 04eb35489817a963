"""Models, keys and the user config file, through the real ``loopwise`` command."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cli_daily_support import Cli, agent, one_line
from figures import figure


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def write_config(cli: Cli, text: str) -> Path:
    folder = cli.cwd / "config"
    folder.mkdir(exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text)
    return path


def stored_options(cli: Cli) -> dict[str, object]:
    (spec,) = cli.query("select spec from loopwise_runs order by created_at desc limit 1")[0]
    return dict(json.loads(spec)["options"])


def test_config_fills_what_no_flag_or_variable_sets(cli: Cli) -> None:
    write_config(
        cli,
        'model = "test:from-config"\n'
        "[budget]\nsteps = 7\ntokens = 5000\n"
        '[agents."daily_agents:echo"]\nbudget = { steps = 3 }\n',
    )
    done = cli("run", "hi", agent("echo"))
    assert done.returncode == 0, done.stderr
    options = stored_options(cli)
    assert options["max_steps"] == 3 and options["budget_tokens"] is None  # agent table only
    assert options["model"] is None  # the agent's own model
    done = cli("run", "hi", agent("echo"), "--max-steps", "9")
    assert stored_options(cli)["max_steps"] == 9  # flag > config
    shown = json.loads(cli("config", "show").stdout)
    assert shown["model"] == "test:from-config" and shown["budget"]["steps"] == 7


def test_model_precedence_flag_env_config(cli: Cli) -> None:
    write_config(cli, 'model = "nope:from-config"\n')
    by_config = cli("run", "hi")
    assert "nope" in one_line(by_config, 2)  # the config's model was used
    by_env = cli("run", "hi", LOOPWISE_MODEL="nope:from-env")
    assert "from-env" in one_line(by_env, 2) and "from-config" not in by_env.stderr
    by_flag = cli("run", "hi", "--model", "nope:from-flag", LOOPWISE_MODEL="nope:from-env")
    assert "from-flag" in one_line(by_flag, 2)
    listed = cli("models", "--json", LOOPWISE_MODEL="")
    assert json.loads(listed.stdout)["default"] == "nope:from-config"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model = ", "not valid TOML"),
        ("colour = 'red'\n", "unknown setting"),
        ("model = 3\n", "must be a string"),
        ("tools = 'files'\n", "list of strings"),
        ("[budget]\ndollars = 1\n", "budget takes"),
        ("[agents]\nx = 1\n", "must be a table"),
        ("[mcp.servers.a]\nfoo = 1\n", "needs a command or a url"),
    ],
)
def test_a_bad_config_file_is_one_line_exit_2(cli: Cli, text: str, message: str) -> None:
    path = write_config(cli, text)
    line = one_line(cli("run", "hi", agent("echo")), 2)
    assert message in line and (str(path) in line or "config file" in line)


def test_keys_set_uses_a_0600_file_and_never_leaks_the_key(cli: Cli) -> None:
    canary = "sk-ant-canary-" + "7" * 24
    done = cli("keys", "set", "anthropic", input=canary + "\n")
    assert done.returncode == 0, done.stderr
    assert canary not in done.stdout + done.stderr
    path = cli.cwd / "config" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    listed = cli("keys", "list")
    assert "anthropic" in listed.stdout and "file" in listed.stdout and canary not in listed.stdout
    models = cli("models", "--json")
    data = json.loads(models.stdout)
    assert data["default"] == "anthropic:claude-sonnet-4-6"
    assert data["default_source"] == "ANTHROPIC_API_KEY"
    assert canary not in models.stdout
    run = cli("run", "hi", agent("echo"), "--json")  # the key is exported, not recorded
    assert run.returncode == 0, run.stderr
    leaks = sum(
        canary in part
        for part in (run.stdout, run.stderr, cli.database.read_bytes().decode(errors="replace"))
    )
    assert leaks == 0
    figure(f"CLI keys: canary key in output, models, run record: {leaks} found")
    assert cli("keys", "delete", "anthropic").stdout.startswith("deleted")
    assert "anthropic" not in json.loads(path.read_text())


@pytest.mark.parametrize("key", ["", "   ", "a b", "sk-\x1b[2J", "sk-\x00x"])
def test_keys_set_refuses_bad_keys(cli: Cli, key: str) -> None:
    assert "key" in one_line(cli("keys", "set", "openai", input=key + "\n"), 2)


def test_keys_file_readable_by_others_is_not_used(cli: Cli) -> None:
    cli("keys", "set", "openai", input="sk-test-123\n")
    path = cli.cwd / "config" / "credentials.json"
    os.chmod(path, 0o644)
    listed = cli("models", "--json")
    assert json.loads(listed.stdout)["providers"][1]["key"] is None
    assert "readable by others" in cli("run", "hi", agent("echo")).stderr


def test_unknown_provider_for_keys(cli: Cli) -> None:
    assert "takes no key" in one_line(cli("keys", "set", "ollama", input="x\n"), 2)


def test_models_lists_providers_and_the_embedded_model(cli: Cli) -> None:
    shown = cli("models")
    assert shown.returncode == 0, shown.stderr
    for name in ("anthropic", "openai", "ollama", "vllm", "llamacpp", "local"):
        assert name in shown.stdout
    assert "default: none" in shown.stdout  # no key, no embedded weights in this env


def test_git_tools_left_out_with_a_note_on_a_non_git_workspace(cli: Cli) -> None:
    done = cli("run", "hi", agent("echo"), "--tools", "git")
    assert done.returncode == 0, done.stderr
    assert "note: the git tools are left out" in done.stderr
    named = cli("run", "hi", agent("echo"), "--tools", f"git={cli.cwd}")
    assert "not a usable git repository" in one_line(named, 2)


def test_embedded_fallback_notice_once_and_a_broken_model_is_one_line(cli: Cli) -> None:
    fake = cli.cwd / "fake.gguf"
    fake.write_text("not a model")
    done = cli("run", "What is 17*23?", LOOPWISE_LOCAL_MODEL=str(fake))
    assert done.returncode == 1
    assert done.stderr.count("embedded fallback") == 1 and done.stderr.startswith("note: ")
    assert "Traceback" not in done.stderr and "│" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: ValueError: ")
    assert cli.query("select status from loopwise_runs") == [("failed",)]
    chosen = cli("run", "hi", agent("echo"), LOOPWISE_LOCAL_MODEL=str(fake))
    assert chosen.returncode == 0 and "embedded fallback" not in chosen.stderr
