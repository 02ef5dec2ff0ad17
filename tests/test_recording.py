"""Record/replay transports against a tiny stdlib HTTP server that talks like sglang's OpenAI API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from pytest_lfm.recording.exchange import Exchange, RecordingError, canonical_body, node_key
from pytest_lfm.recording.jsonl import read_exchanges, write_exchanges
from pytest_lfm.recording.replay import REPLAY_BASE_URL, ReplayServer
from pytest_lfm.recording.store import Store, UnrecordedRequest, open_store, stale_micro_recording

NODE = "conformance/test_demo.py::test_demo[micro-dense-bfloat16]"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counter = 0
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "/models/micro-dense", "max_model_len": 4096}]})
        elif self.path.startswith("/big"):
            self._send(200, {"blob": "x" * int(self.path.split("=")[1])})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        except ValueError:
            self._send(400, {"object": "error", "message": "JSON decode error", "code": 400})
            return
        if body.get("model") == "slow":  # outlasts a client's short timeout
            time.sleep(1.0)
        if body.get("model") == "nope":
            self._send(400, {"object": "error", "message": "The model `nope` does not exist.", "code": 400})
            return
        with _Handler.lock:
            _Handler.counter += 1
            number = _Handler.counter
        text = f"answer {number}"
        if not body.get("stream"):
            self._send(200, {"id": f"c{number}", "object": "chat.completion", "created": 1, "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        base = {"id": f"c{number}", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
        deltas = [({"role": "assistant", "content": ""}, None), ({"content": "answer"}, None),
                  ({"content": f" {number}"}, None), ({}, "stop")]
        try:
            for delta, finish in deltas:
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                time.sleep(0.01)
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed the stream early

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # 32 concurrent clients connect at once
    daemon_threads = True


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(store: Store, base_url: str, node: str = NODE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0,
                         http_client=openai.DefaultHttpxClient(transport=store.transport(node)))


def _async_client(store: Store, base_url: str, node: str = NODE) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0,
                              http_client=openai.DefaultAsyncHttpxClient(transport=store.async_transport(node)))


def _ask(client: openai.OpenAI, text: str = "hi") -> str:
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content or ""


def _stream(client: openai.OpenAI) -> list[dict[str, Any]]:
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}], stream=True)
    return [chunk.model_dump(exclude_unset=True) for chunk in stream]


def test_record_then_replay_answers_identical_requests_in_recorded_order(tmp_path: Path, server_url: str) -> None:
    store = open_store(tmp_path, "micro-dense-bfloat16", "record")
    with _client(store, server_url) as client:
        recorded = [_ask(client), _ask(client), _ask(client, "other")]
    store.close()
    assert len(set(recorded)) == 3

    replay = open_store(tmp_path, "micro-dense-bfloat16", "replay")
    assert replay.recorded_tests() == {NODE} and len(replay.unused()) == 3
    with _client(replay, REPLAY_BASE_URL) as client:
        assert [_ask(client), _ask(client, "other")] == [recorded[0], recorded[2]]
        assert [ex.occurrence for ex in replay.unused([NODE])] == [1]
        assert _ask(client) == recorded[1]
    assert replay.unused() == []


def test_stream_is_recorded_event_by_event_and_replayed_in_order(tmp_path: Path, server_url: str) -> None:
    store = open_store(tmp_path, "m", "record")
    with _client(store, server_url) as client:
        recorded = _stream(client)
    store.close()
    (exchange,) = read_exchanges(store.root)
    assert exchange.body_format == "sse" and exchange.complete
    assert [e.get("text") for e in exchange.events or []] == [None] * 4 + ["[DONE]"]
    assert exchange.chunks()[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    times = [e["t"] for e in exchange.events or []]
    assert times == sorted(times) and times[-1] >= 0.03  # arrival times, not the end of the stream

    replay = open_store(tmp_path, "m", "replay")
    with _client(replay, REPLAY_BASE_URL) as client:
        assert _stream(client) == recorded
    raw = replay.transport(NODE + "-raw")
    assert isinstance(raw, httpx.BaseTransport)


def test_replayed_stream_arrives_chunk_by_chunk(tmp_path: Path, server_url: str) -> None:
    store = open_store(tmp_path, "m", "record")
    with _client(store, server_url) as client:
        _stream(client)
    store.close()
    replay = open_store(tmp_path, "m", "replay", pace=True)
    body = {"messages": [{"role": "user", "content": "s"}], "model": "m", "stream": True}
    with httpx.Client(transport=replay.transport(NODE)) as http, \
            http.stream("POST", f"{REPLAY_BASE_URL}/v1/chat/completions", json=body) as response:
        arrivals = [(time.perf_counter(), piece) for piece in response.iter_bytes()]
    assert len(arrivals) == 5 and all(p.startswith(b"data: ") and p.endswith(b"\n\n") for _, p in arrivals)
    assert arrivals[-1][0] - arrivals[0][0] >= 0.02  # paced like the recording


def test_concurrent_async_requests_replay_every_recorded_answer(tmp_path: Path, server_url: str) -> None:
    async def run(store: Store, base_url: str) -> list[str]:
        client = _async_client(store, base_url)
        try:
            replies = await asyncio.gather(*(client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "same"}]) for _ in range(32)))
            streams = await asyncio.gather(*(client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "same"}], stream=True) for _ in range(4)))
            streamed = []
            for stream in streams:
                streamed.append("".join([c.choices[0].delta.content or "" async for c in stream]))
            return [r.choices[0].message.content or "" for r in replies] + streamed
        finally:
            await client.close()

    store = open_store(tmp_path, "m", "record")
    recorded = asyncio.run(run(store, server_url))
    store.close()
    assert len(set(recorded)) == 36
    exchanges = read_exchanges(store.root)
    assert sorted(e.occurrence for e in exchanges if e.body_format == "json") == list(range(32))

    replayed = asyncio.run(run(open_store(tmp_path, "m", "replay"), REPLAY_BASE_URL))
    assert sorted(replayed) == sorted(recorded)
    by_occurrence = {e.occurrence: e.body["choices"][0]["message"]["content"] for e in exchanges
                     if e.body_format == "json"}
    assert replayed[:32] == [by_occurrence[i] for i in range(32)]  # the i-th request sent gets the i-th answer


def test_unrecorded_request_fails_the_test_naming_it_and_how_to_re_record(tmp_path: Path, server_url: str) -> None:
    store = open_store(tmp_path, "micro-dense-bfloat16", "record")
    with _client(store, server_url) as client:
        _ask(client, "recorded")
    store.close()
    replay = open_store(tmp_path, "micro-dense-bfloat16", "replay")
    with _client(replay, REPLAY_BASE_URL) as client:
        with pytest.raises(UnrecordedRequest) as caught:  # not wrapped into openai.APIConnectionError
            _ask(client, "changed prompt")
        _ask(client, "recorded")
        with pytest.raises(UnrecordedRequest) as again:
            _ask(client, "recorded")
    message = str(caught.value)
    digest, _ = canonical_body(json.dumps(
        {"messages": [{"role": "user", "content": "changed prompt"}], "model": "m"}).encode())
    for part in (NODE, "POST /v1/chat/completions", digest, "differs in: messages", "changed prompt",
                 f"--lfm-record {tmp_path}", "--lfm-model micro-dense-bfloat16"):
        assert part in message
    assert "1 of them identical" in str(again.value)
    with _client(replay, REPLAY_BASE_URL, node="conformance/test_demo.py::test_new") as client, \
            pytest.raises(UnrecordedRequest, match="no exchange for this test at all"):
        _ask(client)


def test_error_statuses_and_plain_endpoints_replay(tmp_path: Path, server_url: str) -> None:
    store = open_store(tmp_path, "m", "record")
    with _client(store, server_url) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with httpx.Client(base_url=server_url, transport=store.transport(NODE)) as http:
        models = http.get("/v1/models").json()
        missing = http.get("/missing", params={"a": "1"}).status_code
    store.close()
    replay = open_store(tmp_path, "m", "replay")
    with _client(replay, REPLAY_BASE_URL) as client, pytest.raises(openai.BadRequestError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with httpx.Client(base_url=REPLAY_BASE_URL, transport=replay.transport(NODE)) as http:
        assert http.get("/v1/models").json() == models
        assert http.get("/missing", params={"a": "1"}).status_code == missing == 404
        with pytest.raises(UnrecordedRequest, match=r"GET /missing\?a=2"):
            http.get("/missing", params={"a": "2"})


def test_transport_errors_are_recorded_and_raised_again(tmp_path: Path) -> None:
    store = open_store(tmp_path, "m", "record")
    with httpx.Client(transport=store.transport(NODE)) as http, pytest.raises(httpx.ConnectError):
        http.get("http://127.0.0.1:9/health")
    store.close()
    with httpx.Client(transport=open_store(tmp_path, "m", "replay").transport(NODE)) as http, \
            pytest.raises(httpx.ConnectError):
        http.get(f"{REPLAY_BASE_URL}/health")


def test_stream_left_unread_is_saved_as_incomplete(tmp_path: Path, server_url: str) -> None:
    store = open_store(tmp_path, "m", "record")
    with _client(store, server_url) as client:
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}], stream=True)
        next(iter(stream))
        stream.close()
    store.close()
    (exchange,) = read_exchanges(store.root)
    assert not exchange.complete and 1 <= len(exchange.events or []) < 5


def test_cancelled_requests_and_bodies_that_are_not_json_replay_as_recorded(tmp_path: Path, server_url: str) -> None:
    """What conformance/test_cancellation.py and test_bad_requests.py send: a client timeout (replayed as the same
    timeout), a stream closed after its first chunk (replayed up to where it was read) and a body that is not JSON
    (keyed on its bytes)."""

    def send(client: openai.OpenAI, http: httpx.Client) -> tuple[Any, ...]:
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}], timeout=0.2)
        with client.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}],
                                            stream=True) as stream:
            first = next(iter(stream)).model_dump()
        rejected = http.post("/v1/chat/completions", content=b'{"model": ',
                             headers={"content-type": "application/json"})
        return first, rejected.status_code, rejected.json()

    store = open_store(tmp_path, "m", "record")
    with _client(store, server_url) as client, \
            httpx.Client(base_url=server_url, transport=store.transport(NODE)) as http:
        recorded = send(client, http)
    store.close()
    timeout, stream, invalid = sorted(read_exchanges(store.root), key=lambda e: e.seq)
    assert timeout.error is not None and timeout.error["type"] == "ReadTimeout"
    assert not stream.complete and invalid.request == '{"model": '
    replay = open_store(tmp_path, "m", "replay")
    with _client(replay, REPLAY_BASE_URL) as client, \
            httpx.Client(base_url=REPLAY_BASE_URL, transport=replay.transport(NODE)) as http:
        assert send(client, http) == recorded
    assert recorded[1:] == (400, {"object": "error", "message": "JSON decode error", "code": 400})


def test_files_are_split_below_the_size_limit_and_replay_across_parts(tmp_path: Path, server_url: str) -> None:
    limit = 4000
    store = Store(tmp_path / "m", "record", model_id="m", max_file_bytes=limit)
    with httpx.Client(base_url=server_url, transport=store.transport(NODE)) as http:
        bodies = [http.get("/big", params={"n": str(n)}).json() for n in (500, 700, 900, 1100, 10_000)]
    store.close()
    files = sorted(store.root.glob("*.jsonl"))
    assert len(files) >= 3 and all(f.stat().st_size <= limit for f in files)
    assert {f.name for f in files} >= {"conformance__test_demo.jsonl", "conformance__test_demo.2.jsonl"}
    replay = open_store(tmp_path, "m", "replay")
    with httpx.Client(base_url=REPLAY_BASE_URL, transport=replay.transport(NODE)) as http:
        assert [http.get("/big", params={"n": str(n)}).json() for n in (500, 700, 900, 1100, 10_000)] == bodies


def test_re_recording_a_test_replaces_only_its_exchanges(tmp_path: Path, server_url: str) -> None:
    other = "conformance/test_other.py::test_x"
    first = open_store(tmp_path, "m", "record")
    with _client(first, server_url) as a, _client(first, server_url, node=other) as b:
        old, kept = _ask(a), _ask(b)
    first.close()
    second = open_store(tmp_path, "m", "record")
    with _client(second, server_url) as a:
        new = _ask(a)
    second.close()
    assert {e.node for e in read_exchanges(second.root, latest_only=False)} == {NODE, other}
    assert len(read_exchanges(second.root, latest_only=False)) == 2  # compacted
    replay = open_store(tmp_path, "m", "replay")
    with _client(replay, REPLAY_BASE_URL) as a, _client(replay, REPLAY_BASE_URL, node=other) as b:
        assert (_ask(a), _ask(b)) == (new, kept) and new != old


def test_meta_and_replay_server_give_the_recorded_server(tmp_path: Path) -> None:
    store = open_store(tmp_path, "LiquidAI/LFM2-350M-bfloat16", "record")
    store.write_meta(sglang_version="0.5.17", launch_args=["--tool-call-parser", "lfm2"],
                     served_model="LiquidAI/LFM2-350M", gpu="NVIDIA H100 80GB HBM3")
    store.close()
    assert store.root == tmp_path / "LiquidAI--LFM2-350M-bfloat16"
    replay = open_store(tmp_path, "LiquidAI/LFM2-350M-bfloat16", "replay")
    meta = replay.meta()
    assert meta["model_id"] == "LiquidAI/LFM2-350M-bfloat16" and meta["gpu"] == "NVIDIA H100 80GB HBM3"
    server = ReplayServer(replay)
    server.check_alive()
    assert (server.base_url, server.served_model(), server.sglang_version()) == (
        "http://replay.invalid", "LiquidAI/LFM2-350M", "0.5.17")
    assert server.command == ["--tool-call-parser", "lfm2"] and server.startup_seconds is None
    with pytest.raises(RecordingError, match="write_meta needs record mode"):
        replay.write_meta(sglang_version="x", launch_args=[], served_model="y")


def test_a_recording_of_another_micro_recipe_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    from pytest_lfm import micro

    monkeypatch.setenv("LFM_MICRO_CACHE", str(tmp_path / "cache"))
    current = micro.checkpoint_dir("dense")
    for served, stale in ((str(current), False), ("/tmp/lfm-micro/dense-0123456789abcdef", True)):
        store = open_store(tmp_path / served.rsplit("-", 1)[1], "micro-dense", "record")
        store.write_meta(sglang_version="0.5.17", launch_args=[], served_model=served)
        store.close()
        message = stale_micro_recording(open_store(store.root.parent, "micro-dense", "replay"), "dense")
        assert (message is not None) == stale
    assert message and "dense-0123456789abcdef" in message and current.name in message and "--lfm-record" in message


def test_replaying_a_missing_recording_names_what_exists(tmp_path: Path) -> None:
    (tmp_path / "micro-moe-bfloat16").mkdir()
    with pytest.raises(RecordingError, match=r"no recording of micro-dense-bfloat16 .*found: micro-moe-bfloat16"):
        open_store(tmp_path, "micro-dense-bfloat16", "replay")
    (tmp_path / "micro-dense-bfloat16").mkdir()
    with pytest.raises(RecordingError, match=r"meta\.json"):
        open_store(tmp_path, "micro-dense-bfloat16", "replay").meta()


def _png(level: int) -> str:
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    img.putpixel((3, 4), (255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=level)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_request_key_is_canonical_json_with_images_keyed_on_pixels() -> None:
    def body(url: str, order: int) -> bytes:
        message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        fields: dict[str, Any] = {"model": "m", "messages": [message]}
        return json.dumps(fields if order else dict(reversed(fields.items())), indent=order).encode()

    assert _png(1) != _png(9)
    digest, stored = canonical_body(body(_png(1), 0))
    assert canonical_body(body(_png(9), 2))[0] == digest
    assert stored["messages"][0]["content"][0]["image_url"]["url"].startswith("<image RGB 64x48 pixels sha256:")
    other = _png(1).replace("data:image/png", "data:image/x-png")
    assert canonical_body(body(other, 0))[0] == digest  # the pixels, not the label
    long_text = canonical_body(json.dumps({"prompt": "y" * 10_000}).encode())[1]["prompt"]
    assert long_text.startswith("<elided 10000 chars sha256:")


SUITE_CONFTEST = '''
import json, os
import openai, pytest
from pytest_lfm.recording import REPLAY_BASE_URL, ReplayServer, open_store

MODE = os.environ["REC_MODE"]


@pytest.fixture(scope="session")
def store():
    store = open_store(os.environ["REC_DIR"], "micro-dense-bfloat16", MODE)
    if MODE == "record":
        store.write_meta(sglang_version="0.5.17", launch_args=[], served_model="m")
    yield store
    store.close()


@pytest.fixture(scope="session")
def base_url(store):
    return ReplayServer(store).base_url if MODE == "replay" else os.environ["REC_URL"]


@pytest.fixture
def client(request, store, base_url):
    http = openai.DefaultHttpxClient(transport=store.transport(request.node.nodeid))
    with openai.OpenAI(base_url=base_url + "/v1", api_key="EMPTY", max_retries=0, http_client=http) as c:
        yield c


@pytest.fixture
def async_client(request, store, base_url):
    http = openai.DefaultAsyncHttpxClient(transport=store.async_transport(request.node.nodeid))
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="EMPTY", max_retries=0, http_client=http)


@pytest.fixture
def seen(request):
    answers = []
    yield answers
    with open(os.environ["REC_OUT"], "a") as f:
        f.write(json.dumps([request.node.nodeid, answers]) + "\\n")
'''

SUITE = '''
import asyncio, os
import pytest

PROMPT = os.environ.get("REC_PROMPT", "hi")


@pytest.mark.parametrize("times", [2])
def test_repeated(client, seen, times):
    for _ in range(times):
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}])
        seen.append(reply.choices[0].message.content)


def test_concurrent_streams(async_client, seen):
    async def one():
        stream = await async_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "s"}], stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    async def main():
        return await asyncio.gather(*(one() for _ in range(8)))

    seen.extend(sorted(asyncio.run(main())))
'''


def test_a_suite_recorded_in_one_pytest_run_replays_in_another(
    pytester: pytest.Pytester, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("REC_DIR", str(tmp_path / "rec"))
    monkeypatch.setenv("REC_URL", server_url)

    def run(mode: str, out: str) -> pytest.RunResult:
        monkeypatch.setenv("REC_MODE", mode)
        monkeypatch.setenv("REC_OUT", str(tmp_path / out))
        return pytester.runpytest("-p", "no:lfm", "-p", "no:cacheprovider")

    run("record", "recorded.jsonl").assert_outcomes(passed=2)
    run("replay", "replayed.jsonl").assert_outcomes(passed=2)
    recorded = (tmp_path / "recorded.jsonl").read_text().splitlines()
    assert len(recorded) == 2 and recorded == (tmp_path / "replayed.jsonl").read_text().splitlines()

    monkeypatch.setenv("REC_PROMPT", "a changed prompt")
    changed = run("replay", "changed.jsonl")
    changed.assert_outcomes(passed=1, failed=1)
    changed.stdout.fnmatch_lines(["*test_suite.py::test_repeated[[]2[]] sent POST /v1/chat/completions*",
                                  "*re-record on a GPU host: pytest 'test_suite.py::test_repeated[[]2[]]'*"])


def test_loopback_urls_are_keyed_without_their_port() -> None:
    # the vision suite's image server listens on a new port each run: a replay must still find the recorded answer
    def body(port: int, host: str = "127.0.0.1") -> bytes:
        return json.dumps({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"http://{host}:{port}/red.png"}}]}]}).encode()

    assert canonical_body(body(41105))[0] == canonical_body(body(36245))[0]
    assert canonical_body(body(41105))[0] != canonical_body(body(41105, "example.com"))[0]


def test_live_tests_are_deselected_in_replay_and_run_otherwise(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_live="""
        import pytest

        @pytest.mark.lfm_live
        def test_needs_its_own_runtime():
            pass

        def test_answered_from_the_recording():
            pass
    """)
    store = open_store(tmp_path, "micro-dense", "record")
    store.write_meta(sglang_version="0.5.17", launch_args=[], served_model="m")
    replayed = pytester.runpytest("-p", "no:cacheprovider", "--lfm-replay", str(tmp_path))
    replayed.assert_outcomes(passed=1, deselected=1)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


class _SglangHandler(_Handler):
    """Enough of sglang for the plugin's --lfm-base-url: health, server info and micro-dense's served path."""

    def do_GET(self) -> None:
        from pytest_lfm import micro

        if self.path in ("/health", "/health_generate"):
            self._send(200, {})
        elif self.path == "/get_server_info":
            self._send(200, {"version": "0.5.17"})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": str(micro.checkpoint_dir("dense"))}]})
        else:
            super().do_GET()


@pytest.fixture(scope="module")
def sglang_url() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _SglangHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


SERVED = """
import pytest


@pytest.mark.parametrize("prompt", ["one", "two"])
def test_chat(lfm_client, lfm_model_name, prompt):
    reply = lfm_client.chat.completions.create(model=lfm_model_name, messages=[{"role": "user", "content": prompt}])
    assert reply.choices[0].message.content.startswith("answer ")


def test_sends_nothing_to_this_model(lfm_client):
    pytest.skip("nothing to ask this model")
"""

STREAMED = """
def test_stream(lfm_client, lfm_model_name):
    stream = lfm_client.chat.completions.create(
        model=lfm_model_name, messages=[{"role": "user", "content": "s"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream).startswith("answer ")
"""

XDIST = ("-n", "2")


def _lfm(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The plugin on micro-dense, in a process of its own (xdist workers start there)."""
    pytester.makeini("[pytest]\n")  # the root of the node ids (with the recordings below it, as in a checkout)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lfm-model", "micro-dense", *args)


def test_recordings_made_with_or_without_xdist_replay_with_or_without_it(
    pytester: pytest.Pytester, sglang_url: str,
) -> None:
    pytester.makepyfile(test_served=SERVED)
    expected = {"test_served.py::test_chat[micro-dense-one]", "test_served.py::test_chat[micro-dense-two]"}
    for made, xdist in (("serial", ()), ("xdist", XDIST)):
        recorded = _lfm(pytester, "--lfm-base-url", sglang_url, "--lfm-record", made, *xdist)
        recorded.assert_outcomes(passed=2, skipped=1)
        assert {ex.node for ex in read_exchanges(pytester.path / made / "micro-dense")} == expected, made
    for made in ("serial", "xdist"):
        for xdist in ((), XDIST):
            report = pytester.path / f"report-{made}-{len(xdist)}"
            replayed = _lfm(pytester, "--lfm-replay", made, "--lfm-report", str(report), *xdist)
            replayed.assert_outcomes(passed=2, skipped=1)
            checks = json.loads(next(report.glob("*.json")).read_text())["checks"]
            assert {c["nodeid"] for c in checks} == {*expected, "test_served.py::test_sends_nothing_to_this_model"
                                                     "[micro-dense]"}, (made, xdist)


def test_a_recording_made_under_xdist_by_node_ids_with_its_suffix_replays_without_it(tmp_path: Path) -> None:
    suffixed = f"{NODE}@micro-dense"
    exchange = Exchange(suffixed, 0, "GET", "/v1/models", "", canonical_body(b"")[0], 0, status=200,
                        body={"data": []}, run="r1")
    write_exchanges(tmp_path / "micro-dense-bfloat16", [exchange])
    replay = open_store(tmp_path, "micro-dense-bfloat16", "replay")
    assert replay.recorded_tests() == {NODE} and replay.has_test(NODE) and replay.has_test(suffixed)
    with httpx.Client(base_url=REPLAY_BASE_URL, transport=replay.transport(NODE)) as client:
        assert client.get("/v1/models").json() == {"data": []}


def test_node_key_drops_only_the_xdist_group_suffix() -> None:
    assert node_key("conformance/test_chat.py::test_x[micro-dense-a]@micro-dense") == (
        "conformance/test_chat.py::test_x[micro-dense-a]")
    assert node_key("t.py::test_x@micro-dense_micro-moe") == "t.py::test_x"
    for unchanged in ("t.py::test_x[a@b]", "runs@host/t.py::test_x", "t.py::test_x[micro-dense]"):
        assert node_key(unchanged) == unchanged


def test_a_replay_fails_the_tests_its_recording_lacks(pytester: pytest.Pytester, sglang_url: str) -> None:
    pytester.makepyfile(test_served=SERVED, test_streamed=STREAMED)
    _lfm(pytester, "--lfm-base-url", sglang_url, "--lfm-record", "rec").assert_outcomes(passed=3, skipped=1)
    (pytester.path / "rec" / "micro-dense" / "test_streamed.jsonl").unlink()
    pytester.makepyfile(test_served=SERVED.replace('"two"', '"three"'))  # test_chat[micro-dense-two], renamed

    replayed = _lfm(pytester, "--lfm-replay", "rec", *XDIST)
    replayed.assert_outcomes(passed=1, failed=2, skipped=1)  # the test that sends nothing keeps its own verdict
    replayed.stdout.fnmatch_lines_random([
        "*FAILED test_served.py::test_chat[[]micro-dense-three[]]*", "*FAILED test_streamed.py::test_stream*",
        "*no exchange for this test at all*--lfm-replay-missing skip*"])
    assert replayed.ret == pytest.ExitCode.TESTS_FAILED

    skipped = _lfm(pytester, "--lfm-replay", "rec", "--lfm-replay-missing", "skip", *XDIST)
    skipped.assert_outcomes(passed=1, skipped=3)


def test_a_replay_of_none_of_the_selected_configurations_stops_the_run(pytester: pytest.Pytester,
                                                                        tmp_path: Path) -> None:
    pytester.makepyfile(test_served=SERVED)
    empty = tmp_path / "empty"
    empty.mkdir()
    stopped = _lfm(pytester, "--lfm-replay", str(empty), *XDIST)
    assert stopped.ret == pytest.ExitCode.USAGE_ERROR
    stopped.stderr.fnmatch_lines([f"*--lfm-replay {empty} holds no recording*(micro-dense)*--lfm-record {empty}*"
                                  "--lfm-replay-missing skip*"])

    store = open_store(tmp_path / "other", "micro-moe", "record")
    store.write_meta(sglang_version="0.5.17", launch_args=[], served_model="m")
    other = pytester.runpytest("-p", "no:cacheprovider", "--lfm-model", "micro-dense", "--lfm-replay",
                               str(tmp_path / "other"))
    assert other.ret == pytest.ExitCode.USAGE_ERROR
    other.stderr.fnmatch_lines(["*holds recordings of micro-moe, none of the selected configurations (micro-dense)*"])

    seeded = open_store(tmp_path / "seeded", "micro-dense---enable-deterministic-inference", "record")
    seeded.write_meta(sglang_version="0.5.17", launch_args=[], served_model="m", model="micro-dense", dtype="bfloat16")
    variant = pytester.runpytest("-p", "no:cacheprovider", "--lfm-model", "micro-dense", "--lfm-replay",
                                 str(tmp_path / "seeded"))
    assert variant.ret != pytest.ExitCode.USAGE_ERROR  # a launch variant of the selected model is what it replays
    told = pytester.runpytest("-p", "no:cacheprovider", "--lfm-model", "micro-dense", "--lfm-replay", str(empty),
                              "--lfm-replay-missing", "skip")
    told.assert_outcomes(skipped=3)


def test_replay_missing_takes_fail_or_skip(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--lfm-replay", str(tmp_path), "--lfm-replay-missing", "warn")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*lfm-replay-missing = 'warn' (from command line --lfm-replay-missing) is not fail "
                                 "or skip. Use fail (the default) or skip.*"])
