"""Fixtures shared across test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def service_model(tmp_path_factory):
    """A small scorer trained once, registered as crmml-scorer v1 @champion (see service_support)."""
    pytest.importorskip("fastapi")
    from service_support import train_service_model

    return train_service_model(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium for the browser tests (see browser_support)."""
    from browser_support import installed_chromium

    return installed_chromium()
