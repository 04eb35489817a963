"""The :class:`Policy` capability: provenance-aware sink rules checked before every call.

Per run it keeps what the user named (the trusted task: hosts, recipients, values), the
secrets the run has seen, and the taint the core records; each call is classified (its
effects, destinations, paths) and the first matching rule decides. A child run (an agent
used as a tool) inherits the parent's allow-list and taint: its task was written by a
model and names nothing on the user's behalf.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..capabilities import Allow, Ask, Capability, Deny, ToolCall, Verdict
from ..events import PolicyDecision
from ..messages import SystemMessage, ToolResultPart
from ..run import RunContext
from ..tools import Effect
from .effects import destinations, effects_of, leaves, paths
from .egress import AllowList, hosts_named, named
from .rules import Rule, When, load_config, profile_rules
from .secrets import SecretTracker, env_secrets, is_secret_path, secret_values

__all__ = ["Policy"]

_META = "loopwise.policy"
_CONSEQUENTIAL: frozenset[Effect] = frozenset({"egress", "external", "irreversible"})
_MAX_TRUSTED = 20_000


@dataclass(slots=True)
class _RunPolicy:
    """What the policy knows about one run."""

    run: RunContext
    trusted: str
    allow: AllowList
    secrets: SecretTracker
    secret_sources: list[str] = field(default_factory=list)

    @property
    def tainted(self) -> bool:
        return self.run.state.tainted

    def holds(self, when: When) -> bool:
        if when == "always":
            return True
        if when == "tainted":
            return self.tainted
        if when == "clean":
            return not self.tainted
        return bool(self.secret_sources)


class Policy(Capability):
    """Deterministic sink rules over provenance (see :mod:`loopwise.policy`).

    ``profile``: ``strict`` (default), ``standard`` or ``off``; ``rules`` are checked first;
    ``allow_hosts`` (``*.example.com`` for subdomains) and ``allow_recipients`` widen the
    egress allow-list beyond what the task names; ``write_scope`` (globs) bounds writes after
    untrusted content; ``secrets`` are values that must never leave (with
    ``env_secrets`` this process's secret-looking environment values too); ``effects`` sets
    tools' effects by name; ``undeclared`` is what a tool with none declared may do.
    """

    name = "policy"

    def __init__(
        self,
        profile: str = "strict",
        *,
        rules: Sequence[Rule] = (),
        allow_hosts: Iterable[str] = (),
        allow_recipients: Iterable[str] = (),
        write_scope: Iterable[str] = (),
        secrets: Iterable[str] = (),
        env_secrets: bool = True,
        effects: Mapping[str, Iterable[Effect]] | None = None,
        undeclared: Iterable[Effect] = ("external",),
    ):
        self.profile = profile
        self.rules: tuple[Rule, ...] = (*rules, *profile_rules(profile))
        self.allow_hosts = tuple(allow_hosts)
        self.allow_recipients = tuple(allow_recipients)
        self.write_scope = tuple(write_scope)
        self.secrets = tuple(secrets)
        self.env_secrets = env_secrets
        self.effects = {k: frozenset(v) for k, v in (effects or {}).items()}
        self.undeclared: frozenset[Effect] = frozenset(undeclared)
        self._runs: dict[str, _RunPolicy] = {}
        self._children: dict[str, _RunPolicy] = {}
        self._selected: dict[tuple[str, frozenset[Effect]], tuple[Rule, ...]] = {}

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any]) -> Policy:
        """A policy from a TOML/JSON file or its data (see :mod:`loopwise.policy.rules`)."""
        options = load_config(source)
        return cls(options.pop("profile", "strict"), **options)

    # -- the run's lifecycle -----------------------------------------------------------------

    async def start(self, run: RunContext) -> None:
        inherited = self._children.pop(run.run_id, None)
        if inherited is not None:
            state = _RunPolicy(
                run, inherited.trusted, inherited.allow, inherited.secrets,
                list(inherited.secret_sources),
            )  # fmt: skip
            if inherited.tainted:
                run.taint(f"parent:{inherited.run.run_id}")
        else:
            state = self._fresh(run)
        self._runs[run.run_id] = state

    def _fresh(self, run: RunContext) -> _RunPolicy:
        saved = run.metadata.get(_META)
        resumed = run.state.steps > 0
        if resumed and isinstance(saved, dict) and saved.get("run") == run.run_id:
            trusted = str(saved.get("trusted", ""))
            sources = [str(s) for s in saved.get("secret_sources", ())]
        elif resumed:  # resumed without its saved facts: nothing counts as named, be careful
            trusted, sources = "", (["unknown:resumed"] if run.state.tainted else [])
        else:
            system = [m.content for m in run.state.messages if isinstance(m, SystemMessage)]
            trusted = "\n".join([*system, run.input_text])[:_MAX_TRUSTED].lower()
            sources = []
        allow = AllowList(
            [*self.allow_hosts, *self.allow_recipients], hosts_named(trusted) if trusted else ()
        )
        tracker = SecretTracker(self.secrets)
        if self.env_secrets:
            tracker.add(env_secrets())
        return _RunPolicy(run, trusted, allow, tracker, sources)

    async def end(self, run: RunContext) -> None:
        state = self._runs.pop(run.run_id, None)
        if state is not None and run.state.parent_run_id is None:
            run.metadata[_META] = {
                "run": run.run_id,
                "trusted": state.trusted,
                "secret_sources": state.secret_sources,
            }

    def for_child(self, run_id: str) -> Capability | None:
        parent = self._runs.get(run_id.rsplit(".", 1)[0])
        if parent is not None:
            self._children[run_id] = parent
        return self

    # -- deciding calls ------------------------------------------------------------------------

    def _rules_for(self, tool: str, effects: frozenset[Effect]) -> tuple[Rule, ...]:
        key = (tool, effects)
        found = self._selected.get(key)
        if found is None:
            found = self._selected[key] = tuple(r for r in self.rules if r.selects(tool, effects))
        return found

    async def before_tool(self, run: RunContext, call: ToolCall) -> Verdict | None:
        state = self._runs.get(run.run_id)
        if state is None or not self.rules:
            return None
        effects = effects_of(call.tool, self.effects, self.undeclared)
        for rule in self._rules_for(call.name, effects):
            if not state.holds(rule.when) or not rule.args_match(call.args):
                continue
            detail = self._conditions(state, rule, call.args)
            if detail is None:
                continue
            return self._verdict(run, state, call, rule, detail)
        if state.tainted and effects & _CONSEQUENTIAL:
            self._emit(run, state, call, "allow", "listed", "its destinations and values "
                       "were named by the user or allowed")  # fmt: skip
        return None

    def _conditions(self, state: _RunPolicy, rule: Rule, args: Mapping[str, Any]) -> str | None:
        """The rule's conditions on these arguments: ``None`` when one fails, else what held."""
        found: list[str] = []
        for name in rule.conditions:
            why = _CHECKS[name](self, state, args)
            if why is None:
                return None
            found.append(why)
        return "; ".join(w for w in found if w)

    def _verdict(
        self, run: RunContext, state: _RunPolicy, call: ToolCall, rule: Rule, detail: str
    ) -> Verdict:
        reason = f"policy rule {rule.name!r}: {rule.reason or rule.action}"
        if detail:
            reason += f" ({detail})"
        if rule.when in ("tainted", "secrets") and state.run.state.untrusted:
            sources = ", ".join(state.run.state.untrusted[-3:])
            reason += f"; untrusted content came from {sources}"
        self._emit(run, state, call, rule.action, rule.name, reason)
        if rule.action == "deny":
            return Deny(reason)
        if rule.action == "ask":
            return Ask(reason)
        return Allow()

    def _emit(
        self, run: RunContext, state: _RunPolicy, call: ToolCall, action: Any, rule: str, why: str
    ) -> None:
        run.emit(
            PolicyDecision(
                run_id=run.run_id,
                step=run.state.steps,
                call_id=call.id,
                name=call.name,
                action=action,
                rule=rule,
                reason=why,
                taint=list(state.run.state.untrusted[-10:]),
            )
        )

    # -- conditions: each returns None when it does not hold, else a detail ("" for none) ---

    def _unlisted(self, state: _RunPolicy, args: Mapping[str, Any]) -> str | None:
        found = destinations(args)
        if not found:
            return "the call names no destination that can be checked"
        for d in found:
            why = state.allow.refused(d, state.trusted)
            if why:
                return why
        return None

    def _unconfigured(self, state: _RunPolicy, args: Mapping[str, Any]) -> str | None:
        found = destinations(args)
        if not found:
            return "the call names no destination that can be checked"
        for d in found:
            why = state.allow.refused(d, state.trusted, configured_only=True)
            if why:
                return why
        return None

    def _secret(self, state: _RunPolicy, args: Mapping[str, Any]) -> str | None:
        return state.secrets.carried(leaves(args))

    def _unnamed(self, state: _RunPolicy, args: Mapping[str, Any]) -> str | None:
        for value in leaves(list(args.values())):
            if not named(value, state.trusted):
                shown = value if len(value) <= 60 else value[:57] + "..."
                return f"{shown!r} does not appear in the user's task"
        return None

    def _protected(self, state: _RunPolicy, args: Mapping[str, Any]) -> str | None:
        for p in paths(args):
            norm = posixpath.normpath(p.replace("\\", "/")).lstrip("/")
            if any(part.startswith(".") and part not in (".", "..") for part in norm.split("/")):
                return f"{p!r} is a dotfile or inside a dot-directory"
            if norm.startswith("..") or p.startswith(("/", "~")):
                return f"{p!r} is outside the workspace"
            if self.write_scope and not any(fnmatch.fnmatch(norm, g) for g in self.write_scope):
                return f"{p!r} is outside the write scope"
        return None

    def _no_path(self, state: _RunPolicy, args: Mapping[str, Any]) -> str | None:
        return None if paths(args) else ""

    # -- after a call: what secrets entered the run ---------------------------------------------

    async def after_tool(
        self, run: RunContext, call: ToolCall, result: ToolResultPart
    ) -> ToolResultPart | None:
        state = self._runs.get(run.run_id)
        if state is None or result.is_error or not self.rules:
            return None
        named_secret = any(is_secret_path(t) for t in leaves(call.args))
        values = secret_values(result.content, from_secret_file=named_secret)
        if named_secret or values:
            state.secrets.add(values)
            state.secret_sources.append(f"tool:{call.name}:{call.id}")
        return None

    # -- for tools that follow redirects ----------------------------------------------------

    def check_egress(self, run_id: str, url: str) -> str | None:
        """Why a further request of run ``run_id`` to ``url`` (a redirect) is refused, or
        ``None``; the same egress rules as a call, without recording anything."""
        state = self._runs.get(run_id)
        if state is None:
            return None
        carried = state.secrets.carried([url], record=False)
        if carried:
            return f"the URL carries {carried}"
        if state.secret_sources and self.profile != "off":
            why = state.allow.refused(url, state.trusted, configured_only=True)
            if why:
                return why
        if state.tainted and self.profile != "off":
            return state.allow.refused(url, state.trusted)
        return None


_CHECKS = {
    "unlisted_destination": Policy._unlisted,
    "unconfigured_destination": Policy._unconfigured,
    "carries_secret": Policy._secret,
    "unnamed_values": Policy._unnamed,
    "protected_path": Policy._protected,
    "no_path": Policy._no_path,
}
