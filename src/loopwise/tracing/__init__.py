"""OpenTelemetry GenAI traces of runs, as a capability (extra ``loopwise[otel]``).

``Agent(capabilities=[Tracing()])`` writes ``invoke_agent``, ``chat`` and ``execute_tool``
spans to the application's tracer provider (or OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set); nothing is exported by default. Attribute names live in :mod:`.attributes`.
"""

from .capability import Tracing

__all__ = ["Tracing"]
