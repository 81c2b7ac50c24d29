"""A stand-in for ``python -m cat_serve`` in tests of ``cat_serve.process``: it starts an "engine" child
that ignores SIGTERM (as vLLM's EngineCore can during start-up), prints the child's pid, and then

* ``STAND_IN_MODE=slow`` (default): never answers (a start that misses its deadline);
* ``STAND_IN_MODE=exit``: exits 3 at once, leaving the child behind (a start that crashes);
* ``STAND_IN_MODE=healthy``: answers ``GET /health`` with 200 on ``--port``.

Any other arguments (``--engine vllm ...``) are accepted and ignored, so every caller's command line works.
"""

import http.server
import os
import signal
import subprocess
import sys
import time

ENGINE = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> int:
    engine = subprocess.Popen([sys.executable, "-c", ENGINE])
    print(f"engine pid {engine.pid}", flush=True)
    mode = os.environ.get("STAND_IN_MODE", "slow")
    if mode == "exit":
        return 3
    if mode == "healthy":
        port = int(sys.argv[sys.argv.index("--port") + 1])
        http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
