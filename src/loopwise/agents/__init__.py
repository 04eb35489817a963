"""Teams of agents: an agent used as a tool, pipelines with a review loop, one shared
budget for the whole tree; and ready recipes (:mod:`loopwise.agents.recipes`)."""

from .as_tool import agent_tool, child_error, run_child
from .budget import TeamBudget
from .pipeline import Pipeline, PipelineResult, ReviewLoop, Stage, review_loop

__all__ = [
    "Pipeline",
    "PipelineResult",
    "ReviewLoop",
    "Stage",
    "TeamBudget",
    "agent_tool",
    "child_error",
    "review_loop",
    "run_child",
]
