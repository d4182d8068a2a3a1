"""The smallest plain ASGI app: 17 bytes of JSON at `/`, for throughput next to the peers;
`/10k` answers 10 KB, and POST `/echo` reads the whole body and answers its length (the
benchmark's larger responses and request bodies)."""

BODY = b'{"Hello":"World"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"17")]
TEN_KB = b"x" * 10240
TEN_KB_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"10240")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        length = 0
        more = True
        while more:
            message = await receive()
            length += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b'{"len":%d}' % length
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/10k":
        await send({"type": "http.response.start", "status": 200, "headers": TEN_KB_HEADERS})
        await send({"type": "http.response.body", "body": TEN_KB})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
