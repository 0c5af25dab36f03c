"""A small real OpenAI-compatible HTTP server with faults on demand, for fault tests.

Run as its own process (``python tests/fault_servers.py --port P ...``) so a test
can kill it with SIGKILL mid-run and start it again on the same port. It serves
``GET /v1/models``, streaming ``POST /v1/chat/completions`` and
``POST /v1/completions``, and ``GET /stats`` (attempts seen per prompt).

The reply to a prompt is :func:`reply_for` of its text, streamed one word per
event, so a test knows every expected output. Faults, chosen by substrings of
the prompt text (the user messages joined, or the plain prompt):

- ``--fail MARKER``: answer HTTP 500 every time;
- ``--slow MARKER``: wait ``--slow-seconds`` before answering;
- ``--word-delay S``: pause between streamed words (keeps requests in flight);
- ``--reply MARKER FILE``: answer with the text of FILE (UTF-8) in one event,
  instead of :func:`reply_for` (hostile outputs: 100,000-deep JSON ...);
- ``--event MARKER DATA``: send ``data: DATA`` (raw, e.g. ``[1,2,3]``) as the
  first event of the stream, then the normal reply.

- ``--raw MARKER FILE``: write the bytes of FILE as the whole HTTP response (status
  line, headers, body: a 429 with an absurd ``Retry-After``, HTML, invalid UTF-8,
  an event cut in half), then close the connection;
- ``--forever MARKER``: stream words without end (until the client goes away);
- ``--stall MARKER``: stream one word, then send nothing more for an hour.

``--replies FILE`` scripts the answers instead: a JSON list of ``[marker, reply]``;
a prompt containing a marker gets that reply (the first marker found), others get
:func:`reply_for`. ``--models-json JSON`` replaces the body of ``GET /v1/models``
(odd shapes: a list, a string ``data``, an integer ``id``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def prompt_text(body: dict) -> str:
    if "messages" in body:
        return "\n".join(m["content"] for m in body["messages"])
    return body["prompt"]


def reply_for(text: str) -> str:
    """The deterministic answer to a prompt: its length in characters."""
    return f"I counted the prompt. The answer is {len(text)}."


def make_handler(args: argparse.Namespace, stats: dict, lock: threading.Lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def log_message(self, *_):  # keep test output quiet
            pass

        def _json(self, status: int, payload: dict) -> None:
            self._raw(status, json.dumps(payload).encode())

        def _raw(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models" and args.models_json is not None:
                self._raw(200, args.models_json.encode())
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": args.model_id, "object": "model"}]})
            elif self.path == "/stats":
                with lock:
                    self._json(200, dict(stats))
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                return self._json(404, {"error": {"message": f"no route {self.path}"}})
            text = prompt_text(body)
            with lock:
                stats["attempts"][text] = stats["attempts"].get(text, 0) + 1
            if any(m in text for m in args.fail):
                return self._json(500, {"error": {"message": "injected failure"}})
            raw = next((f for m, f in args.raw if m in text), None)
            if raw is not None:
                self.close_connection = True
                return self._write_raw(Path(raw).read_bytes())
            if any(m in text for m in args.forever + args.stall):
                return self._endless(chat, stall=any(m in text for m in args.stall))
            if any(m in text for m in args.slow):
                time.sleep(args.slow_seconds)
            replies = [Path(f).read_text(encoding="utf-8") for m, f in args.reply if m in text]
            scripted = next((reply for marker, reply in args.scripted if marker in text), None)
            if replies:
                words = [replies[0]]
            else:
                words = (scripted if scripted is not None else reply_for(text)).split(" ")
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for marker, data in args.event:
                    if marker in text:
                        self.wfile.write(b"data: " + data.encode() + b"\n\n")
                for i, word in enumerate(words):
                    piece = word if i == 0 else " " + word
                    choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                    self._event({"choices": [{**choice, "finish_reason": None}]})
                    time.sleep(args.word_delay)
                last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
                self._event({"choices": [{**last, "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": {"prompt_tokens": len(text.split()),
                                                      "completion_tokens": len(words)}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            with lock:
                stats["served"] += 1

        def _write_raw(self, data: bytes) -> None:
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _endless(self, chat: bool, stall: bool) -> None:
            """Words without end, or one word and then silence, until the client goes away."""
            piece = " word" if stall else " " + "w" * 65535  # as fast as the connection takes it
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self._event({"choices": [{**choice, "finish_reason": None}]})
                deadline = time.monotonic() + 3600
                while time.monotonic() < deadline:
                    if stall:
                        time.sleep(0.5)
                    else:
                        self._event({"choices": [{**choice, "finish_reason": None}]})
            except (BrokenPipeError, ConnectionResetError):
                return

        def _event(self, payload: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-id", default="fault-model")
    parser.add_argument("--fail", action="append", default=[])
    parser.add_argument("--slow", action="append", default=[])
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--word-delay", type=float, default=0.0)
    parser.add_argument("--reply", nargs=2, action="append", default=[], metavar=("MARKER", "FILE"))
    parser.add_argument("--event", nargs=2, action="append", default=[], metavar=("MARKER", "DATA"))
    parser.add_argument("--raw", nargs=2, action="append", default=[], metavar=("MARKER", "FILE"))
    parser.add_argument("--forever", action="append", default=[])
    parser.add_argument("--stall", action="append", default=[])
    parser.add_argument("--models-json", default=None)
    parser.add_argument("--replies", default=None, help="JSON file: a list of [marker, reply]")
    args = parser.parse_args(argv)
    args.scripted = []
    if args.replies:
        with open(args.replies, encoding="utf-8") as f:
            args.scripted = [tuple(pair) for pair in json.load(f)]
    stats: dict = {"attempts": {}, "served": 0}
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args, stats, threading.Lock()))
    server.daemon_threads = True
    print(f"listening on {args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
