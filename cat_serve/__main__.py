"""`cat-serve` / `python -m cat_serve`: CLI -> engine -> app -> uvicorn."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from cat_serve.api.app import create_app
    from cat_serve.config import ServerConfig

    config = ServerConfig.from_args(argv)
    app = create_app(config)  # the engine is built in the app's lifespan, inside uvicorn's loop
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: this guard is required
    sys.exit(main())
