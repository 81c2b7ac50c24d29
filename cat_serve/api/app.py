"""create_app(config, engine=None): the FastAPI app. No module globals: state lives on app.state."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cat_serve.api.errors import CLIENT_ERRORS, to_api_error
from cat_serve.api.metrics import Metrics
from cat_serve.api.reasoning import ReasoningParser
from cat_serve.api.routes import router
from cat_serve.api.service import ServiceMiddleware, count_tokens, limits_of, record_of
from cat_serve.api.serving import Serving
from cat_serve.config import ServerConfig
from cat_serve.engine import Engine, create_engine, vllm_available
from cat_serve.engine.counting import CountingEngine
from cat_serve.calibration import CalibrationProfile, model_fingerprint, resolve_profile
from cat_serve.engine.dtype import machine_weights_dtype
from cat_serve.models import EMBEDDED, EMBEDDED_NAME, embedded_checkpoint, is_embedded, resolve_model

log = logging.getLogger("cat_serve")


def build_engine(config: ServerConfig) -> Engine:
    path, name = resolve_model(config.model)
    kind = config.engine if config.engine != "auto" else ("vllm" if vllm_available() else "transformers")
    if is_embedded(config.model):  # its weights cached in the served dtype: no per-weight cast warnings
        path = str(embedded_checkpoint(machine_weights_dtype(kind, config.dtype)))
    options = {"max_model_len": config.max_model_len, "dtype": config.dtype}
    if kind == "vllm":
        options.update(kv_cache_gib=config.kv_cache_gib, gpu_memory_utilization=config.gpu_memory_utilization,
                       **config.engine_options())
        if config.reasoning_parser:  # vLLM's engine core reads it too (where structured output starts)
            options["reasoning_parser"] = config.reasoning_parser
    else:
        options.update(device=config.device)
    return create_engine(kind, path, name, **options)


def _local_model_path(model: str) -> str | None:
    try:
        return resolve_model(model)[0]
    except (FileNotFoundError, OSError):
        return None


def load_calibration(config: ServerConfig) -> CalibrationProfile | None:
    """The profile named by ``--calibration`` (see ``calibration.resolve_profile``); a profile
    fitted on other weights is still loaded, with a warning."""
    if config.calibration == "none":
        return None
    model_path = _local_model_path(config.model)
    embedded = config.model in (None, "", EMBEDDED, EMBEDDED_NAME)
    path = resolve_profile(config.calibration, model_path, EMBEDDED_NAME if embedded else "", embedded)
    if path is None:
        return None
    profile = CalibrationProfile.load(path)  # ProfileError stops the server: a named file must load
    fitted = profile.provenance.get("model_fingerprint")
    if fitted and model_path is not None and fitted != model_fingerprint(model_path):
        log.warning("calibration profile %s was fitted on other weights (%s)", path, fitted)
    return profile


def create_app(config: ServerConfig, engine: Engine | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = engine is None
        # an injected engine (tests) gets a profile only when one is named explicitly
        profile = load_calibration(config) if owned or config.calibration != "auto" else None
        eng = build_engine(config) if owned else engine
        # --reasoning-parser: vLLM's parser for this tokenizer (an unknown name or missing markers stop the server)
        reasoning = ReasoningParser(config.reasoning_parser, eng.tokenizer) if config.reasoning_parser else None
        app.state.serving = Serving(CountingEngine(eng, count_tokens), config.default_max_tokens, profile,
                                    reasoning=reasoning)
        if owned:  # /v1/models reports it; cat-eval calibrate records it in a profile's provenance
            app.state.serving.model_fingerprint = model_fingerprint(resolve_model(config.model)[0])
        print(banner(config, eng), flush=True)
        print(f"calibration profile: {profile.path if profile else 'none'}", flush=True)
        try:
            yield
        finally:
            if owned:
                await eng.close()

    app = FastAPI(title="cat-serve", lifespan=lifespan)
    app.include_router(router)
    # service layer: auth, body size, queue, deadlines, request ids, JSON logs, metrics
    app.state.limits = limits_of(config)
    metrics = app.state.metrics = Metrics(lambda: getattr(getattr(app.state, "serving", None), "engine", None))
    app.add_middleware(ServiceMiddleware, config=config, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics():
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype)

    async def _error(request: Request, e: Exception) -> JSONResponse:
        err = to_api_error(e)
        record_of(request).error = err.code or err.type
        return JSONResponse(err.body(), status_code=err.status)

    for cls in CLIENT_ERRORS:  # 4xx: answered inside the middleware, which adds X-Request-Id
        app.add_exception_handler(cls, _error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unhandled error")
        return await _error(request, e)

    return app


def banner(config: ServerConfig, engine: Engine) -> str:
    url = f"http://{config.host}:{config.port}"
    m = engine.model_name
    return f"""
cat-serve ready: {url}/v1  (model {m}, engine {engine.kind}, dtype {getattr(engine, "dtype", "auto")})

  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{m}", "messages": [{{"role": "user", "content": "What is 7*6?"}}], "search": "cat"}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="none"); \\
print(c.chat.completions.create(model="{m}", messages=[{{"role": "user", "content": "What is 7*6?"}}], \\
extra_body={{"search": "cat"}}).choices[0].message.content)'
"""
