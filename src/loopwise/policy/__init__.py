"""Prompt-injection defence that does not depend on the model obeying.

- :class:`Policy`: deterministic sink rules over provenance (which content entered the
  run, from where), tool effects, egress allow-lists and secrets; profiles ``strict``
  (the default), ``standard`` and ``off``; rules from Python or a TOML/JSON file.
- :class:`PlanThenExecute`: the calls are fixed from the trusted task before untrusted data
  is read; later calls must match the plan.
- :class:`QuarantinedReader`: untrusted tool output never reaches the privileged model; a
  model call with no tools reads it and can only return a typed value.
"""

from .capability import Policy
from .effects import BUILTIN_EFFECTS, BUILTIN_TRUSTED
from .plan import Plan, PlanStep, PlanThenExecute
from .quarantine import QuarantinedReader
from .rules import CONDITIONS, PROFILES, Rule, load_config

__all__ = [
    "BUILTIN_EFFECTS",
    "BUILTIN_TRUSTED",
    "CONDITIONS",
    "PROFILES",
    "Plan",
    "PlanStep",
    "PlanThenExecute",
    "Policy",
    "QuarantinedReader",
    "Rule",
    "load_config",
]
