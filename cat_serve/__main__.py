"""`cat-serve` / `python -m cat_serve`: CLI -> engine -> app -> uvicorn."""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from cat_serve.api.app import create_app
    from cat_serve.config import ServerConfig
    from cat_serve.process import reap_descendants_on_exit

    config = ServerConfig.from_args(argv)
    # the vLLM engine's processes do not notice this one's death: killed outright, it takes them with it
    reap_descendants_on_exit()
    _request_log()
    app = create_app(config)  # the engine is built in the app's lifespan, inside uvicorn's loop
    # uvicorn re-raises a caught SIGTERM once its graceful shutdown is done; this handler, restored by
    # then, turns that into a clean exit 0 (the default action would kill the process: status -15)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # SIGTERM/SIGINT: uvicorn stops accepting, waits for in-flight requests up to the grace period, then
    # cancels them (their engine requests are aborted), then the lifespan closes the engine
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=config.shutdown_grace_s)
    return 0


def _request_log() -> None:
    """One JSON line per request (cat_serve/api/service.py) on stdout, instead of uvicorn's access log."""
    import logging

    log = logging.getLogger("cat_serve.requests")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


if __name__ == "__main__":  # vLLM spawns its engine process: this guard is required
    sys.exit(main())
