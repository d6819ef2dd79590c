"""The served model: loaded at start-up, checked, and swapped when its registry alias moves.

:class:`ModelHolder` keeps one :class:`ServedModel` at a time. A request takes the current one at
its start and keeps it to the end, so a reload never changes a model under a request; a new
model is swapped in (one attribute assignment) only after it has answered the self-check. When
the registry cannot be reached the loaded model goes on serving and the failure is counted.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from crmml.defaults import UNSPECIFIED_CURRENCY
from crmml.errors import first_line
from crmml.registry import ModelNotFoundError, ModelTarget, load_target, resolve_model_uri
from crmml.scorer import Scorer
from crmml.service.schemas import ModelRef
from crmml.service.scoring import check_answer, score_request, self_check_request
from crmml.service.settings import ServiceSettings

__all__ = ["ModelHolder", "RegistryUnavailableError", "SelfCheckError", "ServedModel", "serving_version"]

log = logging.getLogger("crmml.service")


class RegistryUnavailableError(RuntimeError):
    """The registry could not be asked (down, unreachable, or broken)."""


class SelfCheckError(RuntimeError):
    """The model loaded but failed its self-check (it is not swapped in)."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded scorer, where it came from, and the currency label of its answers."""

    scorer: Scorer
    ref: ModelRef
    loaded_at: dt.datetime
    currency: str = UNSPECIFIED_CURRENCY

    @property
    def version(self) -> str:
        """The version serving: the ``X-Model-Version`` header and the body's ``model.model_version``."""
        return self.ref.model_version

    @cached_property
    def model_json(self) -> dict:
        """``ref`` as JSON-ready data, built once (every response carries it)."""
        return self.ref.model_dump()

    @cached_property
    def units(self) -> dict:
        """What the numbers of every answer mean: ``horizons``, ``annual_discount_rate``, ``currency``."""
        config = self.scorer.config
        return {
            "horizons": {"churn_window_days": config.model.churn_window_days,
                         "value_horizon_days": config.model.value_horizon_days},
            "annual_discount_rate": config.annual_discount_rate,
            "currency": self.currency,
        }


def serving_version(target: ModelTarget, scorer: Scorer) -> str:
    """``<name>/<version>`` of the registry version loaded, else the scorer's own label (a local bundle).

    The scorer's label is fixed when it is registered, so a version created from another version's
    artifacts (or an alias moved to it) would otherwise answer with the label it was trained under.
    """
    return f"{target.name}/{target.version}" if target.version is not None else scorer.model_version


class ModelHolder:
    """The current model, its loading and reloading (thread-safe; one reload at a time)."""

    def __init__(self, settings: ServiceSettings, on_change=None):
        self.settings = settings
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self._on_change = on_change or (lambda old, new: None)
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def reload(self) -> tuple[bool, str]:
        """Load the model the URI names now, if it is not the one served; ``(swapped, message)``.

        Raises
        ------
        ModelNotFoundError
            The URI names no model (the served one, if any, stays).
        RegistryUnavailableError
            The registry could not be asked (the served one, if any, stays).
        """
        with self._lock:
            uri, tracking = self.settings.model_uri, self.settings.tracking_uri
            if uri.startswith("models:"):  # (a local bundle asks no registry)
                _check_registry_file(tracking)
            try:
                target = resolve_model_uri(uri, tracking_uri=tracking)
            except ModelNotFoundError:
                raise
            except Exception as exc:  # connection refused, timeouts, a broken database: keep serving
                raise RegistryUnavailableError(f"the registry at {tracking} cannot be reached: "
                                               f"{first_line(exc)}") from exc
            old = self.current
            if old is not None and target.version is not None and old.ref.version == target.version:
                return False, f"{uri} still names version {target.version}"
            try:
                scorer = load_target(target, tracking_uri=tracking)
            except ModelNotFoundError:
                raise
            except Exception as exc:
                raise RegistryUnavailableError(f"the model could not be downloaded from {tracking}: "
                                               f"{first_line(exc)}") from exc
            ref = ModelRef(name=target.name, version=target.version, alias=target.alias, uri=uri,
                           model_version=serving_version(target, scorer))
            try:
                check_answer(score_request(scorer, self_check_request(scorer), None))
            except Exception as exc:
                raise SelfCheckError(f"{target.describe()} failed its self-check: {first_line(exc)}") from exc
            self.current = ServedModel(scorer, ref, dt.datetime.now(dt.UTC),
                                       self.settings.currency or scorer.config.currency)
            _settle_memory()
            self.last_error = None
            self._on_change(old, self.current)
            previous = "nothing" if old is None else f"version {old.ref.version or old.ref.model_version}"
            message = f"now serving {target.describe()} (was {previous})"
            log.info(message)
            return True, message


def _check_registry_file(tracking_uri: str) -> None:
    """A SQLite registry whose file was moved or emptied under the service: MLflow's open engine
    would go on answering from the old file (or create an empty one), so the outage is never seen."""
    prefix = "sqlite:///"
    if not tracking_uri or not tracking_uri.startswith(prefix):
        return
    path = Path(tracking_uri[len(prefix):])
    if not path.is_file() or path.stat().st_size == 0:
        raise RegistryUnavailableError(f"the registry database {path} is missing or empty")


def _settle_memory() -> None:
    """Collect once, then move everything alive (the model, the libraries) out of the collector's
    reach (``gc.freeze``): a full collection then walks only the objects of requests in flight,
    instead of pausing a request for ~200 ms to walk the whole model every few hundred requests.
    Unfrozen first, so that a replaced model can be freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()

