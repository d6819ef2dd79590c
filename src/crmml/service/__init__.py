"""The scoring service: a FastAPI app over :class:`crmml.scorer.Scorer` (``crmml serve``).

Importing this package imports FastAPI, not MLflow; :func:`create_app` builds an app and its
lifespan loads the model.
"""

from crmml.service.app import create_app
from crmml.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
