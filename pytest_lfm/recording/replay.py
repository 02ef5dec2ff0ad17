"""The stand-in for a server in replay mode: it launches nothing and tells the recorded server's facts."""

from __future__ import annotations

from pytest_lfm.recording.store import Store

REPLAY_BASE_URL = "http://replay.invalid"  # the clients' base URL in replay: never resolved, the transport answers


class ReplayServer:
    """Stands in for ``lfm_server`` in replay mode: no process; the recorded server's name and version."""

    base_url = REPLAY_BASE_URL

    pid = None
    log_path = None

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = f"replay of {store.root}"
        meta = store.meta()
        self.command: list[str] = list(meta.get("launch_args", []))
        startup = meta.get("startup_seconds")
        self.startup_seconds: float | None = float(startup) if startup is not None else None

    def served_model(self) -> str:
        return str(self.store.meta()["served_model"])

    def sglang_version(self) -> str:
        return str(self.store.meta()["sglang_version"])

    def check_alive(self) -> None:
        """Nothing to check: replay has no server process."""

    def is_running(self) -> bool:
        return True

    def log_tail(self, n: int = 50) -> str:
        return f"(replay of {self.store.root}: no server log)"

    def start(self) -> ReplayServer:
        return self

    def stop(self) -> None:
        """Nothing to stop."""

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
