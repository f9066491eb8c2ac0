"""The reference service (Starlette on uvicorn): the API, webhooks, CORS, rate limits, metrics
and tracing of the audited platform, with fault switches."""

from opsready_stack.service.part import ServicePart

__all__ = ["ServicePart"]
