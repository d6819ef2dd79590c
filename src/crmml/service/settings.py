"""The service's configuration, read from ``CRMML_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crmml.defaults import DEFAULT_TRACKING_URI

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Everything an operator sets; each field is the environment variable ``CRMML_<NAME>``.

    Attributes
    ----------
    model_uri : str
        ``models:/<name>@<alias>``, ``models:/<name>/<version>``, a local bundle folder or an MLflow
        model folder.
    tracking_uri : str
        The MLflow tracking and registry server (``sqlite:///mlflow.db``, ``http://mlflow:5000``).
    api_key : SecretStr, optional
        When set, every route but ``/health/live`` and ``/health/ready`` needs it in ``X-API-Key``,
        and the OpenAPI schema and docs pages are off. Set but empty is refused.
    max_customers_per_request, max_transactions_per_customer, max_attributes_per_customer : int
        Request limits (HTTP 422 above them).
    max_body_bytes : int
        Largest request body (HTTP 413 above it, before it is read).
    max_in_flight : int
        Requests one worker process scores or queues at once; more are answered 503 at once with
        ``Retry-After``, so latency stays bounded under overload.
    batch_max_customers : int
        Requests queued while a batch is scored are scored together next, up to this many
        customers in one call (a larger request is scored alone).
    reload_interval_seconds : float
        Poll the registry for a moved alias every so many seconds (0: only on ``POST /v1/admin/reload``).
    load_retry_seconds : float
        When the registry cannot be reached at start-up, retry the first load this often.
    body_timeout_seconds : float
        A request body must arrive whole within this many seconds of its headers (HTTP 408 and the
        connection closed otherwise); a request counts against ``max_in_flight`` only once its
        body is in, so slow senders cannot fill the worker.
    registry_retries, registry_timeout_seconds : int, float
        Bound every call to an HTTP registry: so many retries (MLflow's
        ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, with backoff: ~4 minutes per call) and a
        timeout per attempt (``MLFLOW_HTTP_REQUEST_TIMEOUT``, default 120 s). ``crmml serve`` sets
        them unless they are set already.
    keep_alive_seconds : int
        An idle keep-alive connection is closed after this many seconds (uvicorn's
        ``timeout_keep_alive``).
    currency : str or None
        The currency of the training data's amounts (``EUR``, ``USD``, ...), a label returned with
        every answer (``currency``) and by ``GET /v1/model``: the model learns amounts as given and
        converts nothing. Default: the model's own label (its config's ``currency:``, itself
        ``unspecified`` unless set at training).
    """

    model_config = SettingsConfigDict(env_prefix="CRMML_", extra="ignore", protected_namespaces=())

    model_uri: str = Field(min_length=1)
    tracking_uri: str = DEFAULT_TRACKING_URI
    api_key: SecretStr | None = None
    max_customers_per_request: int = Field(1000, ge=1)
    max_transactions_per_customer: int = Field(10_000, ge=1)
    max_attributes_per_customer: int = Field(50, ge=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_in_flight: int = Field(32, ge=1)
    batch_max_customers: int = Field(500, ge=1)
    reload_interval_seconds: float = Field(0.0, ge=0)
    load_retry_seconds: float = Field(5.0, gt=0)
    body_timeout_seconds: float = Field(10.0, gt=0)
    currency: str | None = Field(None, min_length=1, max_length=20, pattern=r"^\S(.*\S)?$")

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("is set but empty, which would turn authentication off; unset it for a service "
                             "without a key, or give the key")
        return key
    keep_alive_seconds: int = Field(5, ge=1)
    registry_retries: int = Field(2, ge=0)
    registry_timeout_seconds: float = Field(10.0, gt=0)
