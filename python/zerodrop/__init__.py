"""zerodrop: serve ASGI apps (FastAPI, Starlette) on workers that drop no request.

The commands are native: ``server-cli`` (the server) and ``shutdown-harness`` (the proof),
installed in this environment's ``bin``. This module only finds them, for
``python -m zerodrop``.
"""

import os
import sys
import sysconfig

__all__ = ["find_command"]


def find_command(name: str) -> str:
    """The path of an installed command of this package (``server-cli``, ``shutdown-harness``)."""
    scripts = sysconfig.get_path("scripts")
    candidates = [os.path.join(scripts, name)]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        candidates.append(os.path.join(sysconfig.get_path("scripts", user_scheme), name))
    candidates.append(os.path.join(os.path.dirname(sys.executable), name))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"zerodrop: {name} is not installed next to {sys.executable}")
