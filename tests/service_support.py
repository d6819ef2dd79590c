"""What the service tests share: a small trained and registered model, a loopback server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crmml.data.simulate import simulate_customer_base
from crmml.scorer import Scorer, ScorerConfig

AS_OF = "2025-06-30"
CONFIG = {
    "model": {"churn_window_days": 90, "value_horizon_days": 180, "transaction_model": "bg_nbd",
              "churn_learners": ["logistic"], "value_learners": ["poisson_glm"]},
    "baseline_models": [],
}
ATTRIBUTES = ["acquisition_channel", "region", "signup_date", "referred_by"]


@dataclass
class ServiceModel:
    """A scorer trained on a simulated base and registered as crmml-scorer v1 @champion."""

    folder: Path
    scorer: Scorer
    transactions: pd.DataFrame
    customers: pd.DataFrame
    tracking_uri: str
    db_path: Path

    def register_again(self) -> str:
        """Register the same scorer as a new version and move @champion to it; the new version."""
        from crmml.registry import log_and_register

        record = log_and_register(self.scorer, transactions=None, customers=None, tracking_uri=self.tracking_uri,
                                  model_name="crmml-scorer", promote="always")
        return str(record.version)

    def request_customers(self, ids, *, attributes: bool = True) -> list[dict]:
        """The /v1/score customers of ``ids`` from the simulated data (rows up to AS_OF)."""
        rows = self.transactions[self.transactions["timestamp"] <= pd.Timestamp(AS_OF) + pd.Timedelta(days=1)]
        table = self.customers.set_index("customer_id")
        out = []
        for customer_id in ids:
            mine = rows[rows["customer_id"] == customer_id]
            entry = {"customer_id": int(customer_id), "transactions": [
                {"timestamp": t.isoformat(), "amount": float(a)} for t, a in zip(mine["timestamp"], mine["amount"],
                                                                                   strict=True)]}
            if attributes:
                attrs = table.loc[customer_id]
                entry["attributes"] = {
                    "acquisition_channel": attrs["acquisition_channel"], "region": attrs["region"],
                    "signup_date": str(pd.Timestamp(attrs["signup_date"]).date()),
                    "referred_by": None if pd.isna(attrs["referred_by"]) else int(attrs["referred_by"]),
                }
            out.append(entry)
        return out


def train_service_model(folder: Path) -> ServiceModel:
    from crmml.registry import log_and_register

    sim = simulate_customer_base(1000, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=11)
    customers = sim.customers[["customer_id", *ATTRIBUTES]]
    scorer = Scorer(ScorerConfig.from_dict(CONFIG)).fit(sim.transactions, as_of=AS_OF, customers=customers)
    db_path = folder / "mlflow.db"
    tracking = f"sqlite:///{db_path}"
    log_and_register(scorer, transactions=sim.transactions, customers=customers, tracking_uri=tracking,
                     model_name="crmml-scorer", promote="always")
    scorer = Scorer.load(scorer.save(folder / "bundle"))
    return ServiceModel(folder, scorer, sim.transactions, customers, tracking, db_path)


class ServerThread:
    """A uvicorn server for ``app`` on 127.0.0.1 (a free port) in a daemon thread; stops on exit."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_settings(model: ServiceModel, **changes):
    """Service settings for the registered test model (``changes`` override fields)."""
    from crmml.service.settings import ServiceSettings

    values = {"model_uri": "models:/crmml-scorer@champion", "tracking_uri": model.tracking_uri, **changes}
    return ServiceSettings(**values)
