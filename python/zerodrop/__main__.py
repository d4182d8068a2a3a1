"""``python -m zerodrop [ARGS]`` runs ``server-cli ARGS``; ``python -m zerodrop harness
[ARGS]`` runs ``shutdown-harness ARGS``. The process becomes the native command (exec), so
no Python stays in the server's parent process."""

import os
import sys

from zerodrop import find_command


def main() -> None:
    """Replaces this process with the command the arguments ask for."""
    args = sys.argv[1:]
    name = "server-cli"
    if args[:1] == ["harness"]:
        name, args = "shutdown-harness", args[1:]
    try:
        command = find_command(name)
    except FileNotFoundError as error:
        sys.exit(str(error))
    os.execv(command, [name, *args])


if __name__ == "__main__":
    main()
