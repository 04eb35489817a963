"""Rules: ``allow | ask | deny`` by tool, effect, argument pattern, taint state and named
conditions; the ready profiles (``strict``, ``standard``, ``off``); the config-file format.

A rule matches a call when every field it sets holds; the first matching rule decides.
Rules given to a :class:`~loopwise.policy.Policy` are checked before its profile's.

Config file (TOML, or the same shape as JSON)::

    profile = "strict"
    allow_hosts = ["api.github.com", "*.example.org"]
    write_scope = ["reports/**"]

    [[rules]]
    name = "no-curl-in-shell"
    action = "deny"
    tools = ["run_shell"]
    args = { command = "\\\\b(curl|wget)\\\\b" }
    reason = "no downloads from the shell"
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from ..errors import UsageError
from ..tools import EFFECTS, Effect

__all__ = [
    "CONDITIONS",
    "PROFILES",
    "Action",
    "Rule",
    "When",
    "load_config",
    "profile_rules",
]

Action: TypeAlias = Literal["allow", "ask", "deny"]
When: TypeAlias = Literal["always", "tainted", "clean", "secrets"]
CONDITIONS = (
    "unlisted_destination",
    "unconfigured_destination",
    "carries_secret",
    "unnamed_values",
    "protected_path",
    "no_path",
)
"""Named conditions a rule may require (see :class:`Rule`)."""
_ACTIONS = ("allow", "ask", "deny")
_WHEN = ("always", "tainted", "clean", "secrets")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. ``tools``: name globs (any when empty); ``effects``: any of these (any
    when empty); ``when``: ``always``, ``tainted`` (untrusted content entered the run),
    ``clean`` or ``secrets`` (secret-bearing content was read); ``args``: argument name (or
    ``*`` for any) to a regular expression that must match; ``conditions``, all of:

    - ``unlisted_destination``: a destination is not a host or recipient named by the
      user or allowed (an egress call with no destination counts);
    - ``unconfigured_destination``: a destination is not allowed by the configuration;
    - ``carries_secret``: an argument carries a secret seen in the run (any encoding);
    - ``unnamed_values``: an argument value does not appear in the user's task;
    - ``protected_path``: a path is a dotfile/dot-directory or outside ``write_scope``;
    - ``no_path``: the call names no path (code or a command).
    """

    name: str
    action: Action
    reason: str = ""
    tools: tuple[str, ...] = ()
    effects: frozenset[Effect] = frozenset()
    when: When = "always"
    args: Mapping[str, str] = field(default_factory=dict)
    conditions: tuple[str, ...] = ()
    _patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _check(self)
        patterns = tuple((k, re.compile(v)) for k, v in self.args.items())
        object.__setattr__(self, "_patterns", patterns)
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "effects", frozenset(self.effects))
        object.__setattr__(self, "conditions", tuple(self.conditions))

    def selects(self, tool: str, effects: frozenset[Effect]) -> bool:
        """Whether the rule can apply to this tool at all (name and effects)."""
        if self.tools and not any(fnmatch.fnmatchcase(tool, g) for g in self.tools):
            return False
        return not self.effects or bool(self.effects & effects)

    def args_match(self, args: Mapping[str, Any]) -> bool:
        for key, pattern in self._patterns:
            found = args.values() if key == "*" else [args.get(key)]
            values = [v for v in found if v is not None]
            texts = [v if isinstance(v, str) else json.dumps(v, default=str) for v in values]
            if not any(pattern.search(t) for t in texts):
                return False
        return True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """A rule from config data (the field names above)."""
        known = {"name", "action", "reason", "tools", "effects", "when", "args", "conditions"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(
                f"Unknown policy rule field(s) {unknown}; use some of {sorted(known)}."
            )
        try:
            return cls(
                name=str(data["name"]),
                action=data["action"],
                reason=str(data.get("reason", "")),
                tools=tuple(data.get("tools", ())),
                effects=frozenset(data.get("effects", ())),
                when=data.get("when", "always"),
                args=dict(data.get("args", {})),
                conditions=tuple(data.get("conditions", ())),
            )
        except KeyError as exc:
            raise UsageError(f"A policy rule needs a {exc.args[0]!r} field.") from None


def _check(rule: Rule) -> None:
    where = f"Policy rule {rule.name!r}"
    if rule.action not in _ACTIONS:
        raise UsageError(f"{where}: action must be one of {list(_ACTIONS)}, not {rule.action!r}.")
    if rule.when not in _WHEN:
        raise UsageError(f"{where}: when must be one of {list(_WHEN)}, not {rule.when!r}.")
    bad = sorted({str(e) for e in rule.effects} - set(EFFECTS))
    if bad:
        raise UsageError(f"{where}: unknown effect(s) {bad}; use some of {list(EFFECTS)}.")
    bad = sorted(set(rule.conditions) - set(CONDITIONS))
    if bad:
        raise UsageError(f"{where}: unknown condition(s) {bad}; use some of {list(CONDITIONS)}.")
    for key, pattern in rule.args.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"{where}: the pattern for {key!r} is invalid: {exc}.") from None


_SEND: frozenset[Effect] = frozenset({"egress", "external"})
_ACT: frozenset[Effect] = frozenset({"external", "irreversible"})


def _profile(strict: bool) -> tuple[Rule, ...]:
    gate: Action = "deny" if strict else "ask"
    rules = [
        Rule(
            "secrets-never-leave",
            "deny",
            "its arguments carry a secret read in this run; secrets never leave",
            effects=_SEND,
            conditions=("carries_secret",),
        ),
        Rule(
            "no-egress-after-secrets",
            gate,
            "secret-bearing content was read in this run; data may only go to hosts "
            "configured in the policy",
            effects=frozenset({"egress"}),
            when="secrets",
            conditions=("unconfigured_destination",),
        ),
        Rule(
            "egress-only-to-named-hosts",
            gate,
            "after untrusted content, data may only go to hosts and recipients the user named "
            "or the policy allows",
            effects=frozenset({"egress"}),
            when="tainted",
            conditions=("unlisted_destination",),
        ),
        Rule(
            "consequential-only-with-user-values",
            gate,
            "after untrusted content, an external or irreversible action may only use values "
            "the user gave",
            effects=_ACT,
            when="tainted",
            conditions=("unnamed_values",),
        ),
        Rule(
            "irreversible-after-untrusted-asks",
            "ask",
            "after untrusted content, an irreversible action needs a human's approval",
            effects=frozenset({"irreversible"}),
            when="tainted",
        ),
        Rule(
            "no-protected-writes",
            gate,
            "after untrusted content, writes stay out of dotfiles and inside the write scope",
            effects=frozenset({"write"}),
            when="tainted",
            conditions=("protected_path",),
        ),
    ]
    if strict:
        rules.append(
            Rule(
                "code-after-untrusted-asks",
                "ask",
                "after untrusted content, code or a command written by the model would run",
                effects=frozenset({"write"}),
                when="tainted",
                conditions=("no_path",),
            )
        )
    return tuple(rules)


PROFILES: dict[str, tuple[Rule, ...]] = {
    "strict": _profile(strict=True),
    "standard": _profile(strict=False),
    "off": (),
}


def profile_rules(name: str) -> tuple[Rule, ...]:
    """The rules of a ready profile."""
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(
            f"Unknown policy profile {name!r}; use one of {sorted(PROFILES)}."
        ) from None


def load_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Policy options from a TOML or JSON file (or its data): ``profile``, ``rules`` and the
    keyword arguments of :class:`~loopwise.policy.Policy`."""
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"Cannot read the policy file {str(path)!r}: {exc.strerror}."
            ) from None
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"The policy file {str(path)!r} is not valid: {exc}.") from None
    if not isinstance(data, dict):
        raise UsageError("A policy configuration must be an object of options.")
    rules = data.get("rules", [])
    if not isinstance(rules, Sequence) or isinstance(rules, str):
        raise UsageError("The policy option 'rules' must be a list of rules.")
    data["rules"] = [Rule.from_dict(r) if isinstance(r, Mapping) else r for r in rules]
    return data
