"""Record the suites' HTTP traffic with a server, and replay it with no server.

Recording sits at the httpx transport of the clients the fixtures build (``lfm_client``, ``lfm_async_client``,
``lfm_http``). The modules, each using only those before it:

- :mod:`~pytest_lfm.recording.sse`: server-sent event streams, parsed and written back;
- :mod:`~pytest_lfm.recording.exchange`: one request and its response, and the key replay matches requests on;
- :mod:`~pytest_lfm.recording.jsonl`: the JSON lines files a recording is stored in;
- :mod:`~pytest_lfm.recording.transports`: the httpx transports that record and replay;
- :mod:`~pytest_lfm.recording.store`: one configuration's recording, in record or replay mode;
- :mod:`~pytest_lfm.recording.replay`: the stand-in for the server under replay.
"""

from pytest_lfm.recording.exchange import Exchange, RecordingError, canonical_body, node_key
from pytest_lfm.recording.jsonl import read_exchanges, write_exchanges
from pytest_lfm.recording.replay import REPLAY_BASE_URL, ReplayServer
from pytest_lfm.recording.store import (
    Store,
    UnrecordedRequest,
    open_store,
    stale_micro_recording,
    store_id,
    unreplayable,
)

__all__ = [
    "REPLAY_BASE_URL",
    "Exchange",
    "RecordingError",
    "ReplayServer",
    "Store",
    "UnrecordedRequest",
    "canonical_body",
    "node_key",
    "open_store",
    "read_exchanges",
    "stale_micro_recording",
    "store_id",
    "unreplayable",
    "write_exchanges",
]
