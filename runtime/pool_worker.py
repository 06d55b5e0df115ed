"""A process-pool worker: one job (a JSON line) in on stdin, one result line out.

Its own stdout is kept for results: anything the user's code prints goes to stderr."""

import os
import sys


def main() -> None:
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # prints, from Python or C, land on stderr
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    import codegen  # noqa: F401  (imported before "ready", so job timeouts do not pay for it)
    import optimizer  # noqa: F401
    from runtime.worker import run_job

    channel.write("ready\n")
    channel.flush()
    for line in sys.stdin:
        if line.strip():
            result = run_job(line, on_start=lambda: (channel.write("started\n"), channel.flush()))
            channel.write(result + "\n")
            channel.flush()


if __name__ == "__main__":
    main()
