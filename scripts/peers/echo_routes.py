"""POST /echo (a non-idempotent request no proxy may retry) and GET /healthz, added to a
FastAPI app by echo_app.py and fastapi_app.py."""
from fastapi import FastAPI, Request


def add_echo_routes(app: FastAPI) -> FastAPI:
    """Adds the two routes to `app` and returns it."""

    @app.post("/echo")
    async def echo(request: Request):
        return {"len": len(await request.body())}

    @app.get("/healthz")
    async def healthz():
        return "ok"

    return app
