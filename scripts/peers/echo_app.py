# The seed app plus POST /echo (a non-idempotent request no proxy may retry), for
# scripts/multi-instance.sh. Same routes as server-cli's demo app.
from fastapi import Request

from seed_app import app


@app.post("/echo")
async def echo(request: Request):
    return {"len": len(await request.body())}


@app.get("/healthz")
async def healthz():
    return "ok"
