"""A plain ASGI app that leaks memory on purpose, for --limit-max-memory with uvicorn as
external workers: every request keeps `kib` KiB (query string, default 64)."""
from urllib.parse import parse_qs

leaked = []
BODY = b'{"Hello":"World"}'


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    kib = int(parse_qs(scope["query_string"].decode()).get("kib", ["64"])[0])
    leaked.append(b"x" * (kib << 10))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})
