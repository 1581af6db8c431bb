"""Health and metrics endpoints of the bridge; health reports its role too."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar, MediaType, get
from litestar.response import Response

from tidings.shared.metrics import metrics


def bridge_health_app(
    status: Callable[[], dict[str, object]], ready: Callable[[], bool]
) -> Litestar:
    """App serving `/healthz` and `/readyz` with the bridge's status, and `/metrics`.

    The status names the role (`connecting`, `standby` or `leader`), the feed of
    the leader (`listen` or `poll`) and the count of changes it stored.
    """

    @get("/healthz", media_type=MediaType.JSON)
    async def healthz() -> dict[str, object]:
        return {"status": "ok", **status()}

    @get("/readyz", media_type=MediaType.JSON)
    async def readyz() -> Response[dict[str, object]]:
        if ready():
            return Response({"status": "ready", **status()})
        return Response({"status": "not ready", **status()}, status_code=503)

    return Litestar(
        [healthz, readyz, metrics], openapi_config=None, logging_config=None
    )
