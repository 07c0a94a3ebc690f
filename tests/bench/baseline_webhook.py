"""The stack's ceiling for the webhook benchmark: a bare aiohttp TLS endpoint that answers every POST with the same
"allowed" AdmissionReview. Run as `python -m tests.bench.baseline_webhook PORT CERT_DIR`."""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path

from aiohttp import web

ANSWER = json.dumps(
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "fixed", "allowed": True}}
).encode()


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


def main() -> None:
    port, cert_dir = int(sys.argv[1]), Path(sys.argv[2])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/{path:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, access_log=None, print=None)


if __name__ == "__main__":
    main()
