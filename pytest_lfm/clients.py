"""The clients the fixtures and factories hand to tests: OpenAI (sync and async) on a server's ``/v1`` and httpx on
its root, with no retries (every failure shows) and, when a recording is open, its transport."""

from __future__ import annotations

import httpx
import openai

from pytest_lfm.recording.store import Store

TIMEOUT = 120.0


def openai_client(base_url: str, recording: Store | None = None, nodeid: str = "") -> openai.OpenAI:
    """An OpenAI client on ``base_url``/v1, recording or replaying its exchanges for ``nodeid`` in ``recording``."""
    http = openai.DefaultHttpxClient(transport=recording.transport(nodeid)) if recording else None
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0, timeout=TIMEOUT, http_client=http)


def async_openai_client(base_url: str, recording: Store | None = None, nodeid: str = "") -> openai.AsyncOpenAI:
    """The async twin of ``openai_client``."""
    http = openai.DefaultAsyncHttpxClient(transport=recording.async_transport(nodeid)) if recording else None
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0, timeout=TIMEOUT,
                              http_client=http)


def http_client(base_url: str, recording: Store | None = None, nodeid: str = "") -> httpx.Client:
    """An httpx client on the server's root URL, for the endpoints outside the OpenAI API."""
    transport = recording.transport(nodeid) if recording else None
    return httpx.Client(base_url=base_url, timeout=TIMEOUT, transport=transport)
