"""A FastAPI app for the lifecycle runs of server-cli's ASGI workers
(`scripts/lifecycle-runs.sh 20 fastapi`): the seed's route without its 10 s shutdown hook
(with a HUP every 2 s, every old worker would still be draining at the end of a run),
`?kib=N` to keep N KiB per request (for --limit-max-memory), POST /echo and /healthz."""
from fastapi import FastAPI

from echo_routes import add_echo_routes

app = add_echo_routes(FastAPI())
leaked = []


@app.get("/")
async def root(kib: int = 0):
    if kib:
        leaked.append(b"x" * (kib << 10))
    return {"Hello": "World"}
