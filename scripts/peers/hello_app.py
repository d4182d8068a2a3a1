"""The smallest plain ASGI app: 17 bytes of JSON, for throughput next to the peers."""

BODY = b'{"Hello":"World"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"17")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
