"""A Schema Registry on loopback for tests: the REST API subset confluent-kafka's HTTP client
uses to register, look up and fetch schemas. The gateway talks to it exactly as to a
production registry (``GATEWAY_SCHEMA_REGISTRY__URL``); no registry server runs here."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


class LocalSchemaRegistry:
    def __init__(self) -> None:
        self.schemas: list[dict[str, Any]] = []  # id - 1 -> {"schema", "schemaType"}
        self.subjects: dict[str, list[int]] = {}
        self.available = True
        self.requests = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                registry.requests += 1
                if not registry.available:
                    self._answer(503, {"error_code": 50003, "message": "unavailable"})
                    return
                path = unquote(urlsplit(self.path).path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = registry.handle(method, path, body)
                self._answer(status, answer)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        for existing in self.subjects.get(subject, []):
            if self.schemas[existing - 1]["schema"] == schema:
                return existing
        self.schemas.append({"schema": schema, "schemaType": schema_type})
        schema_id = len(self.schemas)
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id

    def _version(self, subject: str, schema_id: int) -> dict[str, Any]:
        stored = self.schemas[schema_id - 1]
        return {
            "subject": subject,
            "id": schema_id,
            "version": self.subjects[subject].index(schema_id) + 1,
            "schema": stored["schema"],
            **({"schemaType": stored["schemaType"]} if stored["schemaType"] != "AVRO" else {}),
        }

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        not_found = (404, {"error_code": 40401, "message": "not found"})
        if m := re.fullmatch(r"/schemas/ids/(\d+)", path):
            schema_id = int(m[1])
            if not 0 < schema_id <= len(self.schemas):
                return 404, {"error_code": 40403, "message": "Schema not found"}
            stored = self.schemas[schema_id - 1]
            return 200, {k: v for k, v in stored.items() if k != "schemaType" or v != "AVRO"}
        if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            if method != "POST":
                return 200, list(range(1, len(self.subjects.get(m[1], [])) + 1))
            schema_id = self.register(m[1], body["schema"], body.get("schemaType", "AVRO"))
            return 200, {"id": schema_id}
        if m := re.fullmatch(r"/subjects/([^/]+)/versions/latest", path):
            ids = self.subjects.get(m[1])
            return (200, self._version(m[1], ids[-1])) if ids else not_found
        if m := re.fullmatch(r"/subjects/([^/]+)", path):
            for schema_id in self.subjects.get(m[1], []):
                if self.schemas[schema_id - 1]["schema"] == body["schema"]:
                    return 200, self._version(m[1], schema_id)
            return not_found
        return not_found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
