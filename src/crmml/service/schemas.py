"""Request and response bodies of the scoring service (pydantic), with the OpenAPI examples."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from crmml.data.summary import MAX_ABS_AMOUNT
from crmml.flags import FLAGS
from crmml.pyramid import TIERS

__all__ = [
    "FIRST_DATE",
    "LAST_DATE",
    "Attributes",
    "CustomerIn",
    "CustomerScore",
    "ErrorDetail",
    "ErrorResponse",
    "Health",
    "Horizons",
    "ModelInfo",
    "ModelRef",
    "RFMSummary",
    "ReloadResult",
    "ScoreRequest",
    "ScoreResponse",
    "Transaction",
]

_INT64 = 2**63
#: The dates a request may name (``as_of``, ``signup_date``, every timestamp once converted to UTC):
#: wide enough for any real purchase history, narrow enough that every date the scorer derives
#: from them (``as_of`` + 1 day, nanosecond timestamps, horizons) is representable.
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2200, 12, 31)
_RANGE = f"between {FIRST_DATE} and {LAST_DATE}"
_SPAN_DAYS = (LAST_DATE - FIRST_DATE).days + 1  # the longest history in range


def _iso_text(value):
    """Dates and timestamps are ISO 8601 text in JSON (a number is not a date)."""
    if isinstance(value, (str, dt.date)):
        return value
    raise ValueError("must be an ISO 8601 date or timestamp (text)")


def _utc_in_range(stamp: dt.datetime) -> dt.datetime:
    try:
        utc = stamp if stamp.tzinfo is None else stamp.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:  # (its UTC time is before year 1 or after 9999)
        utc = None
    if utc is None or not FIRST_DATE <= utc.date() <= LAST_DATE:
        raise ValueError(f"must be {_RANGE} (in UTC)")
    return stamp


def _iso_date_in_range(value: str) -> str:
    """A ``signup_date``: an ISO 8601 date (or timestamp: its UTC date) in range, as ``YYYY-MM-DD``."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 date, such as 2025-01-31") from None
        day = _utc_in_range(stamp).astimezone(dt.UTC).date() if stamp.tzinfo is not None else stamp.date()
    if not FIRST_DATE <= day <= LAST_DATE:
        raise ValueError(f"must be {_RANGE}")
    return day.isoformat()


Day = Annotated[dt.date, BeforeValidator(_iso_text), Field(ge=FIRST_DATE, le=LAST_DATE)]
Timestamp = Annotated[dt.datetime, BeforeValidator(_iso_text), AfterValidator(_utc_in_range)]


def _number(*, ge: float, below: float):
    """A JSON number (never a boolean or text) ``ge <= x < below``, as a float; one error per field."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if not ((isinstance(value, int) or math.isfinite(value)) and ge <= value < below):  # (ints of any size)
            raise ValueError(f"must be a finite number >= {ge:g} and below {below:.4g}")
        return float(value)

    return Annotated[float, PlainValidator(check), WithJsonSchema(
        {"type": "number", "minimum": ge, "exclusiveMaximum": below})]

CustomerId = Annotated[StrictInt, Field(ge=-_INT64, lt=_INT64)] | Annotated[str, Field(min_length=1, max_length=200)]


def _attribute_value(value):
    """Any other attribute: null, a boolean, text (up to 1,000 characters) or a finite number below
    MAX_ABS_AMOUNT in absolute value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if (isinstance(value, int) or math.isfinite(value)) and abs(value) < MAX_ABS_AMOUNT:  # (ints of any size)
            return value
        raise ValueError(f"must be a finite number below {MAX_ABS_AMOUNT:.4g} in absolute value")
    if isinstance(value, str):
        if len(value) <= 1000:
            return value
        raise ValueError("must be at most 1000 characters")
    raise ValueError("must be a number, text, a boolean or null")


AttributeValue = Annotated[object, PlainValidator(_attribute_value), WithJsonSchema({"anyOf": [
    {"type": "boolean"}, {"type": "number", "exclusiveMinimum": -MAX_ABS_AMOUNT, "exclusiveMaximum": MAX_ABS_AMOUNT},
    {"type": "string", "maxLength": 1000}, {"type": "null"}]})]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transaction(_Strict):
    """One purchase (a negative amount is a refund, netted within its day)."""

    timestamp: Timestamp = Field(description=f"ISO 8601; without a zone it is UTC. Not after as_of; {_RANGE} "
                                             "in UTC.")
    amount: Finite = Field(gt=-MAX_ABS_AMOUNT, lt=MAX_ABS_AMOUNT,
                           description="Net amount of the purchase (below 9.2e18 in absolute value: amounts "
                                       "are summed exactly in 64-bit units of 1e-10).")


class RFMSummary(_Strict):
    """A customer's purchase history summarised at ``as_of`` (days; the lifetimes definitions)."""

    frequency: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = Field(description="Repeat purchase days.")
    recency_days: Annotated[Finite, Field(ge=0, le=_SPAN_DAYS)] = Field(
        description="Days from the first to the last purchase day.")
    age_days: Annotated[Finite, Field(ge=0, le=_SPAN_DAYS)] = Field(
        description="Days from the first purchase day to as_of.")
    monetary_value: Annotated[Finite, Field(ge=0, le=1e12)] = Field(
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


class Attributes(BaseModel):
    """A customer's attributes: the ones with a meaning typed here, any other column a number, text,
    boolean or null. Validated as a model (so that errors name the attribute), handed on as a dict."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[Annotated[str, Field(min_length=1, max_length=100)], AttributeValue]

    signup_date: Annotated[str, AfterValidator(_iso_date_in_range)] | None = Field(
        None, description=f"ISO 8601 date, {_RANGE}, not after as_of.")
    cost_to_serve: _number(ge=0, below=MAX_ABS_AMOUNT) | None = Field(
        None, description="Cost of serving the customer over the value horizon (>= 0).")
    n_referrals: _number(ge=0, below=1e9) | None = Field(None, description="Customers referred.")
    referred_by: CustomerId | None = Field(None, description="The referrer's customer_id.")

    def as_dict(self) -> dict:
        """The attributes given (not the defaults of those left out), by name."""
        given = {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}
        return {**given, **(self.__pydantic_extra__ or {})}


class CustomerIn(_Strict):
    """A customer to score: its transactions (an empty list for a customer who has not bought yet)
    or an RFM summary, and optional attributes (the model's customer-table columns)."""

    customer_id: CustomerId
    transactions: list[Transaction] | None = Field(None, description="Exactly one of transactions and summary.")
    summary: RFMSummary | None = Field(
        None, description="Scored by the BTYD and spend models only (the learners need purchase days).")
    attributes: Annotated[Attributes, AfterValidator(Attributes.as_dict)] = Field(
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

    as_of: Day | None = Field(None, description=f"The scoring date (its day included), {_RANGE}; default "
                                                "today (UTC).")
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

    name: str | None = Field(description="Registered model name (null for a local bundle).")
    version: str | None = Field(description="Registry version number (null for a local bundle).")
    alias: str | None = Field(description="The registry alias the service follows, if any.")
    uri: str = Field(description="The model URI the service was started with.")
    model_version: str = Field(
        description="The version serving, the same text as the X-Model-Version header: <name>/<version> of "
                    "the registry version loaded (even if the model was trained under another label), the "
                    "model's own label (local-<id>) for a local bundle.")


class Horizons(BaseModel):
    """The windows the scores are about, in days after ``as_of`` (the served model's settings)."""

    churn_window_days: int = Field(description="churn_probability is about this many days after as_of.")
    value_horizon_days: int = Field(
        description="expected_purchases, predicted_value and predicted_profit cover this many days after as_of.")


#: The unit of the value fields, named by the answer's own fields.
_VALUE = ("in the answer's `currency`, over the `horizons.value_horizon_days` days after as_of, discounted "
          "to as_of at `annual_discount_rate` per year")

Tier = Literal[TIERS]  # (the enum of the schema: platinum, gold, iron, lead)
Flag = Literal[FLAGS]


class CustomerScore(BaseModel):
    """The scorer's fields for one customer (see crmml.scorer.SCORE_COLUMNS). Numbers are null when the
    model cannot predict them."""

    customer_id: CustomerId = Field(description="As sent.")
    input: Literal["transactions", "summary"] = Field(
        description="How the customer was sent. 'summary': scored by the BTYD and spend models only.")
    expected_purchases: float | None = Field(
        description="Expected number of purchase days in the `horizons.value_horizon_days` days after as_of "
                    "(a count, not discounted).")
    p_alive: float | None = Field(
        description="Probability (0 to 1) that the customer is still active at as_of (the BTYD model's P(alive)).")
    churn_probability: float | None = Field(
        description="Probability (0 to 1) of no purchase in the `horizons.churn_window_days` days after as_of.")
    predicted_value: float | None = Field(description=f"Predicted spend, {_VALUE}.")
    predicted_profit: float | None = Field(
        description="margin x predicted_value - cost to serve (the cost over the value horizon, not discounted), "
                    "in the answer's `currency`; null without a cost to serve (the customer's cost_to_serve "
                    "attribute or the model's configured cost).")
    p_no_purchase: float | None = Field(
        description="Probability (0 to 1) of no purchase in the `horizons.value_horizon_days` days after as_of, "
                    "from the purchase distribution (null when the model has none).")
    purchases_lower: float | None = Field(
        description="Lower end of the interval of purchases over the value horizon holding the model's interval "
                    "level (GET /v1/model, `uncertainty.level`, default 80 %: the 10th percentile of the count).")
    purchases_upper: float | None = Field(
        description="Upper end of that interval (the 90th percentile of the count at 80 %).")
    value_lower: float | None = Field(
        description=f"Lower end of the interval of the customer's value ({_VALUE}): its 10th percentile at the "
                    "default 80 %. The value distribution has mean predicted_value; null without a spend model.")
    value_upper: float | None = Field(description="Upper end of that interval (the 90th percentile at 80 %).")
    tier_probability: float | None = Field(
        description="Probability (0 to 1) that the customer's value over the value horizon falls in the range of "
                    "the tier assigned (its cut points, and margin and cost to serve for lead).")
    tier: Tier = Field(
        description="Customer-pyramid tier, top down: platinum, gold, iron, lead (lead: unprofitable, or without "
                    "cost data the lowest predicted values). Cut points are amounts of predicted value learned at "
                    "training (GET /v1/model, `tiers`).")
    at_risk: bool = Field(description="Not lapsed and churn_probability above the model's at-risk threshold.")
    high_value_at_risk: bool = Field(description="Platinum or gold and at risk: the win-back list.")
    lapsed: bool = Field(
        description="No purchase for longer than a multiple of the customer's own mean gap between purchase days "
                    "(a one-time buyer: the training population's median gap).")
    new: bool = Field(description="Too little history to judge: no purchase yet, or a recent first purchase.")
    tier_uncertain: bool = Field(
        description="tier_probability is below the model's level (`uncertainty.tier_uncertain_below`; 0, off, by default).")
    flags: list[Flag] = Field(description="The names of the flags that are true, in this order: "
                                          + ", ".join(FLAGS) + ".")
    reasons: list[str] = Field(description="Why the tier and flags, one sentence each (text for people).")
    unknown_categories: dict[str, str | float | bool] = Field(
        default_factory=dict,
        description="Attributes whose value (as sent) the model never saw in training, by attribute name, "
                    "e.g. {\"acquisition_channel\": \"tiktok\"}: scored as an unknown value. Empty when none "
                    "(and always for customers sent as a summary, whom the attributes do not score).")


class ScoreResponse(BaseModel):
    """The scores and what they mean: the date, the horizons, the discount rate and the currency."""

    model: ModelRef = Field(description="The model that answered; its model_version is the X-Model-Version header.")
    as_of: dt.date = Field(description="The date scored at (its day included): the horizons start the day after.")
    horizons: Horizons = Field(description="The windows of churn_probability and of the value fields, in days.")
    annual_discount_rate: float = Field(
        description="predicted_value (and so the value in predicted_profit) is discounted to as_of at this rate "
                    "per year (0.10 = 10 %; 0: not discounted), with the timing of the expected purchases.")
    currency: str = Field(
        description="The currency of predicted_value and predicted_profit: the training data's amounts, "
                    "never converted. The label of the model's config (currency:), or CRMML_CURRENCY when the operator sets "
                    "it; 'unspecified' when neither does.")
    n_customers: int = Field(description="Customers scored (all of the request's, in its order).")
    missing_attributes: list[str] = Field(description="Model attributes no customer gave: scored as unknown.")
    ignored_attributes: list[str] = Field(description="Attributes given that the model does not use.")
    customers: list[CustomerScore] = Field(description="One row per customer, in the request's order.")


class ModelInfo(BaseModel):
    """What is being served."""

    model: ModelRef
    trained_as_of: dt.date
    horizons: Horizons
    annual_discount_rate: float = Field(description="The discount rate of predicted value, per year.")
    currency: str = Field(description="The currency label of the answers (CRMML_CURRENCY, else the model "
                                            "config's currency:, else 'unspecified').")
    loaded_at: dt.datetime
    n_training_customers: int
    data_fingerprint: dict
    attribute_columns: list[str]
    backtest: dict | None
    tiers: dict
    flags: dict
    uncertainty: dict = Field(
        default_factory=dict,
        description="How the intervals and tier_probability are made: `columns` (false: not made), `level` "
                    "(interval level), `tier_uncertain_below`, `parameter_draws`, `seed`, `tail`, and "
                    "`unavailable` (why the columns are null, or null).")
    models: dict
    channel_effects: list[dict] = Field(
        default_factory=list,
        description="The acquisition channel's effect on the purchase rate and on dropout, per channel against "
                    "the most frequent one: rate ratio with its 95 % interval and the channel's customers (the "
                    "transaction model refitted with the channel as a covariate at training; empty without "
                    "a channel column or with one channel).")


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
