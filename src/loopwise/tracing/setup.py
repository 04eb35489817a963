"""Which tracer the tracing capability writes to: the one given, the application's global
tracer provider, or OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the application
configured none. Nothing is exported anywhere by default."""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from ..errors import UsageError

__all__ = ["tracer_for"]

_lock = threading.Lock()
_otlp_provider: Any = None


def tracer_for(provider: Any = None) -> Any:
    """An OpenTelemetry tracer named ``loopwise`` (see the module docstring)."""
    try:
        from opentelemetry import trace
    except ImportError:
        raise UsageError("Tracing needs OpenTelemetry: pip install 'loopwise[otel]'.") from None
    from .. import __version__

    if provider is None and _wants_otlp() and _is_default(trace.get_tracer_provider()):
        provider = _otlp()
    source = provider if provider is not None else trace.get_tracer_provider()
    return source.get_tracer("loopwise", __version__)


def _wants_otlp() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _is_default(provider: Any) -> bool:
    """Whether the application configured no tracer provider (the API's proxy or no-op)."""
    name = type(provider).__name__
    return name in ("ProxyTracerProvider", "NoOpTracerProvider")


def _otlp() -> Any:
    """One SDK provider per process exporting over OTLP/HTTP, flushed at exit."""
    global _otlp_provider
    with _lock:
        if _otlp_provider is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
            except ImportError:
                raise UsageError(
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing: "
                    "pip install 'loopwise[otel]'."
                ) from None
            resource = Resource.create(
                {"service.name": os.environ.get("OTEL_SERVICE_NAME", "loopwise")}
            )
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            atexit.register(provider.shutdown)
            _otlp_provider = provider
        return _otlp_provider
