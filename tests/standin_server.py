"""A stand-in for an sglang server (stdlib only), for the lifecycle tests.

Takes sglang's --model-path/--host/--port plus behaviour flags:
  --fail-at-start        print an error and exit 3 before listening
  --never-healthy        listen, but answer /health_generate with 503
  --crash-after SECONDS  exit 7 this long after first answering /health_generate with 200 (a crash after a
                         successful start, whatever the client's polling interval)
  --crash-after-requests N  exit 7 after N requests
  --spawn-child          start two sleeping children (one in our process group, one in a new session) and log their pids
  --slow-stop SECONDS    on SIGTERM, exit this long after (a server whose shutdown takes a while, as sglang's can)
  --ignore-sigterm       ignore SIGTERM, logging "standin: ignoring SIGTERM" (stop() must escalate to SIGKILL)
  --models ANSWER        what GET /v1/models answers: ok (a model list, the default), 404, or not-json (200 with
                         a body that is not JSON): a server that is not OpenAI-compatible
Unknown flags are accepted and ignored, as sglang's launch arguments are. STANDIN_ARGS (env) adds flags too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", default="standin-model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-at-start", action="store_true")
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--crash-after", type=float)
    parser.add_argument("--crash-after-requests", type=int)
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--slow-stop", type=float)
    parser.add_argument("--models", choices=("ok", "404", "not-json"), default="ok")
    args, unknown = parser.parse_known_args(sys.argv[1:] + os.environ.get("STANDIN_ARGS", "").split())
    print(f"standin: starting {args.model_path} on {args.host}:{args.port} (ignoring {unknown})", flush=True)
    print(f"standin: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)

    if args.fail_at_start:
        print("ValueError: standin was told to fail at start (--fail-at-start)", flush=True)
        sys.exit(3)
    if args.ignore_sigterm:  # noted in the log, so a test can tell when the stop began
        signal.signal(signal.SIGTERM, lambda signum, frame: print("standin: ignoring SIGTERM", flush=True))
    elif args.slow_stop is not None:
        def stop_later(signum: int, frame: object) -> None:
            print(f"standin: stopping in {args.slow_stop} s", flush=True)
            threading.Timer(args.slow_stop, os._exit, (0,)).start()

        signal.signal(signal.SIGTERM, stop_later)
    if args.spawn_child:
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        grouped = subprocess.Popen(sleeper)
        detached = subprocess.Popen(sleeper, start_new_session=True)
        print(f"standin: child pids {grouped.pid} {detached.pid}", flush=True)

    requests = 0
    crash_timer: list[threading.Timer] = []

    def crash(reason: str) -> None:
        print(f"RuntimeError: standin crashed ({reason})", flush=True)
        os._exit(7)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal requests
            requests += 1
            if args.crash_after_requests is not None and requests > args.crash_after_requests:
                crash(f"after {args.crash_after_requests} requests")
            if self.path in ("/health", "/health_generate"):
                self._send(503 if args.never_healthy else 200, {})
                if args.crash_after is not None and not args.never_healthy and not crash_timer:
                    crash_timer.append(threading.Timer(args.crash_after, crash, (f"after {args.crash_after} s",)))
                    crash_timer[0].start()
            elif self.path == "/v1/models" and args.models == "404":
                self._send(404, {"detail": "Not Found"})
            elif self.path == "/v1/models" and args.models == "not-json":
                self._send_raw(200, b"<html>not an API</html>", "text/html")
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": args.model_path, "object": "model",
                                                             "max_model_len": 4096}]})
            elif self.path == "/get_server_info":
                self._send(200, {"version": "0.0.0-standin", "model_path": args.model_path, "port": args.port,
                                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
            else:
                self._send(404, {"detail": "Not Found"})

        def _send(self, status: int, body: object) -> None:
            self._send_raw(status, json.dumps(body).encode(), "application/json")

        def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *log_args: object) -> None:
            print(f"standin: {format % log_args}", flush=True)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print("standin: ready", flush=True)
    started = time.monotonic()
    try:
        server.serve_forever()
    finally:
        print(f"standin: stopped after {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
