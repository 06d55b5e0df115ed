"""A process-pool worker: one job (a JSON line) in on stdin, one result line out.

``python -m retiarii_ir.runtime.experiments.pool_worker THREADS CONTEXT``: CONTEXT is the experiment's ``WorkerContext``
as JSON (the store, the artifacts folder, the code it may import), fixed when the worker starts;
job lines cannot widen it. The worker dies with the process that started it. Its own stdout is
kept for results: anything the user's code prints goes to stderr."""

import json
import os
import sys


def main() -> None:
    from retiarii_ir.runtime.lifetime import die_with_parent

    die_with_parent()
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # prints, from Python or C, land on stderr
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    from retiarii_ir import codegen  # noqa: F401  (imported before "ready", so job timeouts do not pay for it)
    from retiarii_ir import optimizer  # noqa: F401
    from retiarii_ir.errors import first_line
    from retiarii_ir.runtime.experiments.worker import WorkerContext, run_job

    context = WorkerContext.from_json(json.loads(sys.argv[2]))
    channel.write("ready\n")
    channel.flush()
    try:
        for line in sys.stdin:
            if line.strip():
                try:
                    result = run_job(line, context, on_start=lambda: (channel.write("started\n"), channel.flush()))
                except Exception as e:  # noqa: BLE001 - the job as a whole broke: say why, take the next one
                    result = json.dumps({"error": f"the job failed: {type(e).__name__}: {first_line(e)}"})
                channel.write(result + "\n")
                channel.flush()
    except BrokenPipeError:  # the driver closed the pipe: nobody is left to read a result
        os._exit(0)


if __name__ == "__main__":
    main()
