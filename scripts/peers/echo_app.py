# The seed app plus POST /echo (a non-idempotent request no proxy may retry), for
# scripts/multi-instance.sh. Same routes as server-cli's demo app.
from echo_routes import add_echo_routes
from seed_app import app

add_echo_routes(app)
