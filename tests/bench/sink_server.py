"""The uploads' baseline: a tiny Tornado server that receives a body and discards it.

Run as `python tests/bench/sink_server.py PORT`. It costs what receiving the bytes costs
(HTTP parsing, the socket reads, one handler call per chunk) and nothing else, so the
appliance's upload figures can be read as a multiple of it.
"""

from __future__ import annotations

import asyncio
import json
import sys

import tornado.web
from tornado.httpserver import HTTPServer


@tornado.web.stream_request_body
class SinkHandler(tornado.web.RequestHandler):
    received = 0

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)

    def post(self) -> None:
        self.set_status(201)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"received": self.received}))

    def get(self) -> None:
        self.finish("ok")


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/.*", SinkHandler)])
    server = HTTPServer(
        app, max_body_size=64 * 1024 * 1024, idle_connection_timeout=60, body_timeout=120
    )
    server.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
