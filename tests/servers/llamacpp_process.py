"""A llama.cpp HTTP server (xllamacpp) serving a GGUF model in a process of its own, so a test can
kill it (SIGKILL) and start it again on the same port:

    python -m tests.servers.llamacpp_process --model PATH --port 8123

It prints `READY http://127.0.0.1:PORT` on stdout once the server listens with the model loaded,
then blocks until SIGTERM or SIGINT. Kept small for a shared machine: one compute thread, a small
context split across `--parallel` slots (llama.cpp gives each slot `n_ctx / parallel`), and enough
HTTP threads that a health probe (`GET /v1/models`) never queues behind streaming completions.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="path of the .gguf file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--http-threads", type=int, default=16)
    args = parser.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.port = args.port
    params.hostnames = ["127.0.0.1"]
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_ctx = args.n_ctx
    params.n_parallel = args.parallel
    params.n_threads_http = args.http_threads
    params.warmup = False
    params.verbosity = -1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    address = server.listening_address
    base = address if address.startswith("http") else f"http://{address}"
    print(f"READY {base}", flush=True)
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
