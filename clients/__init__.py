"""Client side of cat-serve: a thin wrapper over the official ``openai`` SDK (no ``cat_serve`` imports)."""

from clients.cat_client import Answer, AsyncCatClient, CatClient, build_request, error_message

__all__ = ["Answer", "AsyncCatClient", "CatClient", "build_request", "error_message"]
