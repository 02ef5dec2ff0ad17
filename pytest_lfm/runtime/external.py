"""A server someone else started (``--lfm-base-url``), with the surface of one the plugin launches."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import httpx

from pytest_lfm.errors import ExternalServerError, ServerCrashedError
from pytest_lfm.runtime.server import HEALTH_PATH, LOG_TAIL_LINES, HttpRuntime


class ExternalServer(HttpRuntime):
    """A server started elsewhere (``--lfm-base-url``): the same surface as SglangServer; start/stop do nothing.

    It is checked once, when first used (verify(): reachable, healthy, OpenAI-compatible); health() is asked again
    only to explain a failure: sglang's health endpoints take a second or more each."""

    log_path: Path | None = None
    startup_seconds: float | None = None
    pid: int | None = None

    def __init__(self, base_url: str) -> None:
        url = base_url.rstrip("/")
        self.base_url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.command: list[str] = []
        self._verified = False

    def __repr__(self) -> str:
        return f"ExternalServer({self.base_url})"

    def health(self) -> str | None:
        """None when GET /health or /health_generate answers 200, else what went wrong."""
        problems = []
        for path in ("/health", HEALTH_PATH):
            try:
                status = httpx.get(f"{self.base_url}{path}", timeout=30).status_code
            except httpx.HTTPError as exc:
                problems.append(f"GET {path}: {type(exc).__name__}: {exc}")
                continue
            if status == 200:
                return None
            problems.append(f"GET {path}: HTTP {status}")
        return "; ".join(problems)

    def verify(self) -> None:
        """Once: the server answers its health endpoint and GET /v1/models lists a model (OpenAI-compatible);
        ExternalServerError says what came back and what to do."""
        if self._verified:
            return
        fix = ("Pass the URL of a running sglang server (`sglang serve --model-path ... --port N`, then "
               "--lfm-base-url http://HOST:N), or leave --lfm-base-url out to let pytest-lfm launch one.")
        problem = self.health()
        if problem is not None:
            raise ExternalServerError(f"the server at {self.base_url} (--lfm-base-url) is not usable: {problem}. "
                                      + fix, base_url=self.base_url)
        url = f"{self.base_url}/v1/models"
        try:
            response = httpx.get(url, timeout=30)
            data = response.json() if response.status_code == 200 else None
            model = data["data"][0]["id"] if isinstance(data, dict) else None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            model, response_text = None, f"{type(exc).__name__}: {exc}"
        else:
            response_text = f"HTTP {response.status_code}: {response.text[:200]!r}"
        if not isinstance(model, str):
            raise ExternalServerError(
                f"the server at {self.base_url} (--lfm-base-url) is healthy but not OpenAI-compatible: GET {url} "
                f"gave {response_text}, not a model list (`{{\"data\": [{{\"id\": ...}}]}}`). " + fix,
                base_url=self.base_url)
        self._served_model = model
        self._verified = True

    def start(self) -> ExternalServer:
        self.verify()
        return self

    def stop(self) -> None:
        return None

    def is_running(self) -> bool:
        return self.health() is None

    def check_alive(self) -> None:
        """Verify the server when first used; afterwards free (a failing test asks health() for its report)."""
        try:
            self.verify()
        except ExternalServerError as exc:
            raise ServerCrashedError(str(exc)) from None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        return f"(no log: {self.base_url} was started outside pytest-lfm)"

    def __enter__(self) -> ExternalServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None
