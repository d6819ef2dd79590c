"""``crmml serve``: check the settings and the model URI, then run uvicorn with the app factory."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

from pydantic import ValidationError

from crmml.registry import ModelNotFoundError, resolve_model_uri
from crmml.service.settings import ServiceSettings

__all__ = ["run_server"]


def run_server(*, model=None, tracking_uri=None, host="127.0.0.1", port=8000, workers=None, reload_interval=None,
               access_log=False) -> int:
    """Serve until interrupted; returns the exit code.

    Options given here become ``CRMML_*`` environment variables, so that every worker process
    builds the same :class:`~crmml.service.settings.ServiceSettings`.

    Raises
    ------
    ModelNotFoundError
        When the model URI names no model (checked before any worker starts).
    ValueError
        On invalid settings (naming each variable).
    """
    import uvicorn

    overrides = {"CRMML_MODEL_URI": model, "CRMML_RELOAD_INTERVAL_SECONDS": reload_interval,
                 "CRMML_TRACKING_URI": tracking_uri or os.environ.get("CRMML_TRACKING_URI")
                 or os.environ.get("MLFLOW_TRACKING_URI")}
    for name, value in overrides.items():
        if value is not None:
            os.environ[name] = str(value)
    if not os.environ.get("CRMML_MODEL_URI"):
        raise ValueError("no model: pass --model or set CRMML_MODEL_URI")
    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        problems = "; ".join(f"CRMML_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid settings: {problems}") from None
    n_workers = workers if workers is not None else int(os.environ.get("CRMML_WORKERS", "1"))
    if n_workers < 1:
        raise ValueError(f"--workers must be at least 1; got {n_workers}")
    # MLflow's own retries of an unreachable HTTP registry (~4 minutes per call, twice before the
    # port was bound) are bounded by the settings; every worker inherits them.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.registry_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, settings.registry_timeout_seconds))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    try:
        target = resolve_model_uri(settings.model_uri, tracking_uri=settings.tracking_uri)
        print(f"crmml serve: {settings.model_uri} is {target.describe()}", file=sys.stderr)
    except ModelNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001  (the registry cannot be reached: start not ready, the app retries)
        print(f"crmml serve: warning: cannot reach the registry yet ({exc}); starting not ready", file=sys.stderr)
    metrics_dir = None
    if n_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="crmml-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # /metrics adds up every worker
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.run("crmml.service.app:create_app", factory=True, host=host, port=port, workers=n_workers,
                    access_log=access_log, timeout_graceful_shutdown=10, log_level="info",
                    timeout_keep_alive=settings.keep_alive_seconds,
                    h11_max_incomplete_event_size=64 * 1024)  # (request line and headers: 64 KiB at most)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return 0
