"""Defaults shared by the command line, the registry and the service, importable without MLflow.

The MLflow tracking URI is written here once: :mod:`crmml.cli`, :mod:`crmml.registry` and
:class:`crmml.service.settings.ServiceSettings` take it from here.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_MODEL_NAME", "DEFAULT_TRACKING_URI", "UNSPECIFIED_CURRENCY",
           "tracking_uri_or_default"]

#: MLflow's tracking and registry store when none is given: a SQLite file ``mlflow.db`` in the
#: *working directory* (a relative path), so a command run from another folder finds no registry
#: there. Pass ``--tracking-uri`` (or set ``MLFLOW_TRACKING_URI``) to use one registry from anywhere.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "crmml"
DEFAULT_MODEL_NAME = "crmml-scorer"
#: The currency label of amounts when the config names none (a label, never a conversion).
UNSPECIFIED_CURRENCY = "unspecified"


def tracking_uri_or_default(uri: str | None = None) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
