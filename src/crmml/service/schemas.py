"""Request and response bodies of the scoring service (pydantic), with the OpenAPI examples."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from crmml.data.summary import MAX_ABS_AMOUNT

__all__ = [
    "CustomerIn",
    "CustomerScore",
    "ErrorDetail",
    "ErrorResponse",
    "Health",
    "ModelInfo",
    "ModelRef",
    "RFMSummary",
    "ReloadResult",
    "ScoreRequest",
    "ScoreResponse",
    "Transaction",
]

_INT64 = 2**63
CustomerId = Annotated[StrictInt, Field(ge=-_INT64, lt=_INT64)] | Annotated[str, Field(min_length=1, max_length=200)]
AttributeValue = StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | Annotated[
    str, Field(max_length=1000)] | None
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transaction(_Strict):
    """One purchase (a negative amount is a refund, netted within its day)."""

    timestamp: dt.datetime = Field(description="ISO 8601; without a zone it is UTC. Not after as_of.")
    amount: Finite = Field(gt=-MAX_ABS_AMOUNT, lt=MAX_ABS_AMOUNT,
                           description="Net amount of the purchase (below 9.2e18 in absolute value: amounts "
                                       "are summed exactly in 64-bit units of 1e-10).")


class RFMSummary(_Strict):
    """A customer's purchase history summarised at ``as_of`` (days; the lifetimes definitions)."""

    frequency: Annotated[int, Field(ge=0, le=1_000_000)] = Field(description="Repeat purchase days.")
    recency_days: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = Field(
        description="Days from the first to the last purchase day.")
    age_days: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] = Field(
        description="Days from the first purchase day to as_of.")
    monetary_value: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] = Field(
        0.0, description="Mean amount of the repeat purchase days (0 without repeats).")

    @model_validator(mode="after")
    def _consistent(self) -> RFMSummary:
        if self.age_days < self.recency_days:
            raise ValueError("age_days must be at least recency_days")
        if self.frequency > 0 and self.recency_days <= 0:
            raise ValueError("recency_days must be > 0 when frequency > 0 (repeat purchases are later days)")
        if self.frequency == 0 and self.recency_days > 0:
            raise ValueError("recency_days must be 0 when frequency is 0")
        return self


class CustomerIn(_Strict):
    """A customer to score: its transactions (an empty list for a customer who has not bought yet)
    or an RFM summary, and optional attributes (the model's customer-table columns)."""

    customer_id: CustomerId
    transactions: list[Transaction] | None = Field(None, description="Exactly one of transactions and summary.")
    summary: RFMSummary | None = Field(
        None, description="Scored by the BTYD and spend models only (the learners need purchase days).")
    attributes: dict[Annotated[str, Field(min_length=1, max_length=100)], AttributeValue] = Field(
        default_factory=dict,
        description="Customer-table columns: acquisition_channel, region, signup_date (not after as_of), "
                    "referred_by, n_referrals (give it for every customer or none; otherwise counted among "
                    "this request's customers), cost_to_serve (for predicted_profit). Others are ignored and "
                    "listed in the response.",
    )

    @model_validator(mode="after")
    def _one_history(self) -> CustomerIn:
        if (self.transactions is None) == (self.summary is None):
            raise ValueError("give exactly one of 'transactions' and 'summary'")
        return self


class ScoreRequest(_Strict):
    """Customers to score at one as-of date."""

    as_of: dt.date | None = Field(None, description="The scoring date (its day included); default today (UTC).")
    customers: list[CustomerIn] = Field(min_length=1, description="Distinct customer ids.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "as_of": "2025-06-30",
        "customers": [
            {"customer_id": "c-1001",
             "transactions": [{"timestamp": "2025-01-03T10:15:00Z", "amount": 25.0},
                              {"timestamp": "2025-05-01", "amount": 40.0}],
             "attributes": {"acquisition_channel": "search", "region": "north", "signup_date": "2024-12-30"}},
            {"customer_id": "c-1002",
             "summary": {"frequency": 3, "recency_days": 120, "age_days": 400, "monetary_value": 25.0}},
        ],
    }]})


class ModelRef(BaseModel):
    """The model that answered."""

    name: str | None
    version: str | None
    alias: str | None
    uri: str
    model_version: str = Field(description="The scorer's own version label (as in batch scores).")


class CustomerScore(BaseModel):
    """The scorer's fields for one customer (see crmml.scorer.SCORE_COLUMNS)."""

    customer_id: CustomerId
    input: Literal["transactions", "summary"]
    expected_purchases: float | None
    p_alive: float | None
    churn_probability: float | None
    predicted_value: float | None
    predicted_profit: float | None = Field(description="null without cost_to_serve.")
    tier: str
    at_risk: bool
    high_value_at_risk: bool
    lapsed: bool
    new: bool
    flags: list[str]
    reasons: list[str]


class ScoreResponse(BaseModel):
    model: ModelRef
    as_of: dt.date
    n_customers: int
    missing_attributes: list[str] = Field(description="Model attributes no customer gave: scored as unknown.")
    ignored_attributes: list[str] = Field(description="Attributes given that the model does not use.")
    customers: list[CustomerScore]


class ModelInfo(BaseModel):
    """What is being served."""

    model: ModelRef
    trained_as_of: dt.date
    loaded_at: dt.datetime
    n_training_customers: int
    data_fingerprint: dict
    attribute_columns: list[str]
    backtest: dict | None
    tiers: dict
    flags: dict
    models: dict


class ReloadResult(BaseModel):
    reloaded: bool = Field(description="True when a new version was loaded and swapped in.")
    model: ModelRef
    message: str


class Health(BaseModel):
    status: Literal["ok", "not ready"]
    model_version: str | None = None
    detail: str | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error: a one-line ``detail`` and, for invalid input, the fields at fault."""

    detail: str
    errors: list[ErrorDetail] = Field(default_factory=list)
