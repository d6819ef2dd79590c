"""Per-customer uncertainty columns of the scorer (issue 20, item 3): intervals, P(no purchase), tier probability."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from crmml.customer_model import ModelConfig
from crmml.data.simulate import simulate_customer_base
from crmml.features import btyd_summary, compute_features
from crmml.models.beta_geo_covariates import BetaGeoCovariates
from crmml.scorer import SCORE_COLUMNS, Scorer, ScorerConfig, load_config
from crmml.uncertainty import UNCERTAINTY_NUMBERS, ScoreUncertainty, UncertaintyConfig

CONFIG = ScorerConfig(
    model=ModelConfig(churn_window_days=90, value_horizon_days=180, churn_learners=("logistic",),
                      value_learners=("poisson_glm",), transaction_model="bg_nbd"),
    baseline_models=("bg_nbd",),
    uncertainty=UncertaintyConfig(tier_uncertain_below=0.5),  # (the flag is off by default)
)
AS_OF = pd.Timestamp("2025-06-30")


@pytest.fixture(scope="module")
def base():
    sim = simulate_customer_base(1500, start="2023-01-01", end="2025-09-30", acquisition_end="2025-06-15", seed=11)
    rng = np.random.default_rng(3)
    customers = sim.customers[["customer_id", "acquisition_channel", "region"]].copy()
    customers["cost_to_serve"] = np.where(rng.random(len(customers)) < 0.5, 4.0, np.nan)
    return sim.transactions, customers


@pytest.fixture(scope="module")
def scorer(base):
    transactions, customers = base
    return Scorer(CONFIG).fit(transactions, as_of=AS_OF, customers=customers)


@pytest.fixture(scope="module")
def scores(scorer, base):
    transactions, customers = base
    return scorer.score(transactions, as_of=AS_OF, customers=customers)


def test_columns_are_present_finite_and_in_range(scores):
    assert list(scores.columns) == SCORE_COLUMNS
    assert set(UNCERTAINTY_NUMBERS) | {"tier_uncertain"} <= set(SCORE_COLUMNS)
    for name in UNCERTAINTY_NUMBERS:
        assert np.isfinite(scores[name]).all(), name
    for name in ("p_no_purchase", "tier_probability"):
        assert scores[name].between(0, 1).all(), name
    assert (scores["purchases_lower"] <= scores["purchases_upper"]).all()
    assert (scores["purchases_lower"] == np.round(scores["purchases_lower"])).all()
    assert (0 <= scores["value_lower"]).all() and (scores["value_lower"] <= scores["value_upper"]).all()
    assert (scores["value_lower"] <= scores["predicted_value"]).all()
    # Equal-tailed 80 % intervals: the lower end is 0 exactly when P(X = 0) > 10 %, the upper when >= 90 %.
    p0 = scores["p_no_purchase"]
    assert ((scores["purchases_lower"] == 0) == (p0 > 0.1)).all()
    assert ((scores["purchases_upper"] == 0) == (p0 >= 0.9)).all()
    assert ((scores["value_lower"] == 0) == (p0 >= 0.1)).all()
    assert ((scores["value_upper"] == 0) == (p0 >= 0.9)).all()
    # Customers likely to buy: the point lies in its interval.
    likely = p0 < 0.1
    assert likely.sum() >= 10
    assert (scores.loc[likely, "value_upper"] >= scores.loc[likely, "predicted_value"]).all()
    assert (scores["tier_uncertain"] == (scores["tier_probability"] < 0.5)).all()


def test_p_no_purchase_is_the_models_probability_no_purchase(scorer, scores, base):
    transactions, _ = base
    features = compute_features(transactions, as_of=AS_OF)
    unit = scorer.config.model.time_unit_days
    summary = btyd_summary(features, time_unit_days=unit)
    model = scorer.model_.btyd_.transaction_model
    expected = model.probability_no_purchase(summary, scorer.config.model.value_horizon_days / unit)
    actual = scores.set_index("customer_id").loc[features.index, "p_no_purchase"]
    np.testing.assert_allclose(actual.to_numpy(), np.asarray(expected, dtype=float), rtol=0, atol=1e-10)


def test_value_distribution_matches_a_monte_carlo_of_the_model(scorer, scores, base):
    """The compound (beta-prime) value distribution against draws of the model it stands for: the
    count from the purchase PMF, then the customer's spend rate nu from its Gamma-Gamma posterior and
    k transactions Gamma(p, nu), rescaled to the predicted value."""
    from crmml.models.purchase_distribution import purchase_pmf

    transactions, customers = base
    features = compute_features(transactions, as_of=AS_OF)
    unit = scorer.config.model.time_unit_days
    summary = btyd_summary(features, time_unit_days=unit)
    model, spend = scorer.model_.btyd_.transaction_model, scorer.model_.btyd_.spend_model
    p, q, gamma = (float(v) for v in spend._params())
    indexed = scores.set_index("customer_id")
    repeaters = summary.index[(summary["frequency"] >= 2).to_numpy()]
    rng = np.random.default_rng(0)
    chosen = rng.choice(np.flatnonzero((summary["frequency"] >= 2).to_numpy()), 4, replace=False)
    bounds = scorer.tier_rule_.value_bounds(np.array([0, 1, 2, 3])[
        pd.Categorical(indexed.loc[features.index[chosen], "tier"], categories=["platinum", "gold", "iron", "lead"]).codes],
        None)
    assert len(repeaters)
    pmf = purchase_pmf(model, summary.iloc[chosen], scorer.config.model.value_horizon_days / unit, tail=1e-9)
    n = 400_000
    for j, i in enumerate(chosen):
        row = summary.iloc[i]
        x, m = row["frequency"], row["monetary_value"]
        k = rng.choice(pmf.shape[1], size=n, p=pmf[j] / pmf[j].sum())
        nu = rng.gamma(q + p * x, 1.0 / (gamma + x * m), size=n)
        spent = np.where(k > 0, rng.gamma(np.maximum(p * k, 1e-300), 1.0) / nu, 0.0)
        row_scores = indexed.loc[features.index[i]]
        value = spent / spent.mean() * row_scores["predicted_value"]
        assert np.quantile(value, 0.1) == pytest.approx(row_scores["value_lower"], rel=0.02, abs=1e-9)
        assert np.quantile(value, 0.9) == pytest.approx(row_scores["value_upper"], rel=0.02)
        if np.isnan(row_scores["predicted_profit"]):  # the cost-free bounds computed above apply
            low, low_closed, high, high_closed = (b[j] for b in bounds)
            inside = ((value >= low) if low_closed else (value > low)) & ((value <= high) if high_closed else (value < high))
            assert row_scores["tier_probability"] == pytest.approx(inside.mean(), abs=0.005)


def test_value_bounds_hold_the_value_the_tier_was_assigned_from(scorer, scores, base):
    _, customers = base
    costs = customers.set_index("customer_id")["cost_to_serve"].reindex(scores["customer_id"]).to_numpy()
    codes = pd.Categorical(scores["tier"], categories=["platinum", "gold", "iron", "lead"]).codes
    low, low_closed, high, high_closed = scorer.tier_rule_.value_bounds(codes, costs)
    value = scores["predicted_value"].to_numpy()
    assert np.all(np.where(low_closed, value >= low, value > low))
    assert np.all(np.where(high_closed, value <= high, value < high))


def test_parameter_draws_are_deterministic_and_do_not_depend_on_the_batch(scorer, base, scores):
    transactions, customers = base
    drawn = Scorer(replace(CONFIG, uncertainty=UncertaintyConfig(parameter_draws=4, seed=7)))
    drawn.__dict__.update({k: v for k, v in scorer.__dict__.items() if k not in ("config", "_score_uncertainty")})
    first = drawn.score(transactions, as_of=AS_OF, customers=customers)
    drawn._score_uncertainty = None  # the draws made again from the seed
    again = drawn.score(transactions, as_of=AS_OF, customers=customers)
    pd.testing.assert_frame_equal(first, again)
    assert drawn.score_uncertainty().draws.shape[0] == 4
    assert not np.allclose(first["p_no_purchase"], scores["p_no_purchase"], rtol=1e-6)  # the mixture is not the point
    one = first["customer_id"].iloc[5]
    alone = drawn.score(transactions[transactions["customer_id"] == one], as_of=AS_OF,
                        customers=customers[customers["customer_id"] == one])
    for name in UNCERTAINTY_NUMBERS:
        assert alone[name].iloc[0] == pytest.approx(first.loc[first["customer_id"] == one, name].iloc[0], rel=1e-12)


def test_an_unsupported_transaction_model_gives_null_columns_and_no_flag(scorer, base):
    transactions, customers = base
    degraded = Scorer(CONFIG)
    degraded.__dict__.update({k: v for k, v in scorer.__dict__.items() if k != "_score_uncertainty"})
    degraded._score_uncertainty = ScoreUncertainty(BetaGeoCovariates(), None, 26.0, UncertaintyConfig())
    scores = degraded.score(transactions, as_of=AS_OF, customers=customers)
    assert scores[list(UNCERTAINTY_NUMBERS)].isna().all().all()
    assert not scores["tier_uncertain"].any() and not scores["reasons"].str.contains("tier uncertain").any()
    assert scores["predicted_value"].notna().all()
    assert "no purchase distribution" in degraded.score_uncertainty().reason


@pytest.mark.parametrize(("section", "message"), [
    ({"level": 1.2}, "uncertainty.level must be in"),
    ({"level": "high"}, "uncertainty.level must be a number"),
    ({"tier_uncertain_below": -0.1}, "uncertainty.tier_uncertain_below must be in"),
    ({"parameter_draws": 2.5}, "uncertainty.parameter_draws must be a whole number"),
    ({"parameter_draws": -1}, "uncertainty.parameter_draws must be a whole number"),
    ({"tail": 0.05}, "uncertainty.tail must be in"),
    ({"columns": "yes"}, "uncertainty.columns must be true or false"),
    ({"level": 0.99, "tail": 0.01}, r"must be below \(1 - level\)/4"),
    ({"levels": 0.8}, r"Unknown key\(s\) \['levels'\] in config section 'uncertainty'"),
])
def test_config_errors_name_the_field(section, message):
    with pytest.raises(ValueError, match=message):
        ScorerConfig.from_dict({"uncertainty": section})


def test_config_round_trip_and_yaml(tmp_path):
    assert "uncertainty" not in ScorerConfig().to_dict()  # the default is left out (model ids unchanged)
    config = ScorerConfig.from_dict({"uncertainty": {"level": 0.5, "parameter_draws": 10, "seed": 3}})
    assert config.uncertainty == UncertaintyConfig(level=0.5, parameter_draws=10, seed=3)
    assert ScorerConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "bad.yaml"
    path.write_text("uncertainty:\n  level: 80\n")
    with pytest.raises(ValueError, match=r"bad.yaml: uncertainty.level must be in"):
        load_config(path)


def test_a_bundle_pickled_before_the_section_scores_with_the_defaults(scorer):
    state = scorer.config.__dict__.copy()
    del state["uncertainty"]  # as pickled before issue 20
    old = object.__new__(ScorerConfig)
    object.__setattr__(old, "__dict__", state)
    assert old.uncertainty == UncertaintyConfig()


def test_a_customer_s_columns_do_not_depend_on_who_else_is_scored(scorer, scores, base):
    transactions, customers = base
    some = scores["customer_id"].sample(40, random_state=1).to_numpy()  # more than the tiny-input path's 32
    alone = scorer.score(transactions[transactions["customer_id"].isin(some)], as_of=AS_OF,
                         customers=customers[customers["customer_id"].isin(some)]).set_index("customer_id")
    whole = scores.set_index("customer_id").loc[alone.index]
    for name in UNCERTAINTY_NUMBERS:
        np.testing.assert_allclose(alone[name].to_numpy(), whole[name].to_numpy(), rtol=1e-12, err_msg=name)


def test_the_flag_is_off_by_default_and_the_columns_stay(scorer, scores, base):
    """``tier_uncertain_below`` defaults to 0: the same scorer with the default section flags no one and
    gives no tier-uncertain reason, with the same columns."""
    import copy
    from dataclasses import replace

    transactions, customers = base
    default = copy.copy(scorer)
    default.config = replace(scorer.config, uncertainty=UncertaintyConfig())
    plain = default.score(transactions, as_of=AS_OF, customers=customers)
    assert scores["tier_uncertain"].any() and not plain["tier_uncertain"].any()
    assert not plain["reasons"].str.contains("tier uncertain").any()
    for name in UNCERTAINTY_NUMBERS:
        np.testing.assert_array_equal(plain[name].to_numpy(), scores[name].to_numpy(), err_msg=name)


def test_the_tabulated_beta_cdf_is_within_1e_4_of_scipy():
    from scipy import special

    from crmml.uncertainty import _BetaCdfTable

    table = _BetaCdfTable(6.25, 3.74)  # CDNOW's Gamma-Gamma shapes
    rng = np.random.default_rng(0)
    x, k = rng.integers(0, 40, 5000).astype(float), rng.integers(1, 40, 5000)
    xs, index = np.unique(x, return_inverse=True)
    k_max = np.zeros(len(xs), dtype=np.int64)
    np.maximum.at(k_max, index, k)
    ids = table.base(xs, k_max)[index] + k - 1
    u = special.expit(table.m[ids] + table.s[ids] * rng.uniform(-6, 6, len(ids)))
    value, slope = table.cdf(ids, special.logit(u), density=True)
    exact = special.betainc(6.25 * k, 3.74 + 6.25 * x, u)
    assert np.max(np.abs(value - exact)) < 1e-4
    assert np.all(slope >= 0)
    # The slope is the derivative in logit u (the solver's variable): pdf(u) u (1 - u), here in units of
    # the row's spread s (the table's step is 0.05 s, so the secant is within a few % of the peak).
    a, b = 6.25 * k, 3.74 + 6.25 * x
    exact_slope = np.exp((a - 1) * np.log(u) + (b - 1) * np.log1p(-u) - special.betaln(a, b)) * u * (1 - u)
    assert np.max(np.abs(slope - exact_slope) * table.s[ids]) < 0.01


def test_spread_out_purchase_distributions_keep_their_value_quantiles(scorer):
    """A heavy buyer's count spreads over thousands of values, each below ``tail``: the terms left
    out total at most ``tail``, so the value quantiles are the exact mixture's (they once ran off to
    1e18 when every term below ``tail`` was dropped)."""
    from scipy import special

    from crmml.models.purchase_distribution import purchase_pmf

    model, spend = scorer.model_.btyd_.transaction_model, scorer.model_.btyd_.spend_model
    p, q, _ = (float(v) for v in spend._params())
    uncertainty = scorer.score_uncertainty()
    x, t_x, T = np.array([5.0, 300.0, 1500.0]), np.array([20.0, 20.0, 20.0]), np.array([20.0, 20.0, 20.0])
    value = np.array([100.0, 1000.0, 5000.0])
    none = np.zeros(3)
    columns = uncertainty.evaluate(x, t_x, T, value, none, np.ones(3, bool), np.full(3, np.inf), np.zeros(3, bool))
    summary = pd.DataFrame({"frequency": x, "recency": t_x, "T": T})
    pmf = purchase_pmf(model, summary, uncertainty.horizon, tail=1e-10)
    k = np.arange(pmf.shape[1])
    for i in range(3):
        q_post = q + p * x[i]
        mean_w = (pmf[i] @ k) * p / (q_post - 1.0)
        for name, level in (("value_lower", 0.1), ("value_upper", 0.9)):
            if pmf[i, 0] >= level:  # the atom at 0 holds the level
                assert columns[name][i] == 0
                continue
            w = columns[name][i] / value[i] * mean_w
            cdf = pmf[i, 0] + pmf[i, 1:] @ special.betainc(p * k[1:], q_post, w / (1.0 + w))
            assert cdf == pytest.approx(level, abs=1e-3), (x[i], name)  # table 1e-4; cut, terms left out 1e-4 each
        assert columns["purchases_upper"][i] > columns["purchases_lower"][i] >= 0


def test_histories_beyond_reach_get_null_columns_and_a_reason(scorer, scores, base):
    """A summary whose horizon count reaches past MAX_HORIZON_PURCHASES (here 100,000 repeat purchases in
    70 days: about 370,000 over the horizon, whose columns once took minutes) is NaN with a reason;
    the other customers' columns are those they have alone."""
    from crmml.uncertainty import MAX_HORIZON_PURCHASES

    transactions, customers = base
    summaries = pd.DataFrame({"customer_id": [10**9, 10**9 + 1], "frequency": [100_000, 4],
                              "recency_days": [70.0, 60.0], "age_days": [70.0, 200.0],
                              "monetary_value": [20.0, 30.0]})
    some = scores["customer_id"].iloc[:5].to_numpy()
    scored = scorer.score(transactions[transactions["customer_id"].isin(some)], as_of=AS_OF,
                          customers=customers[customers["customer_id"].isin(some)],
                          summaries=summaries).set_index("customer_id")
    extreme, ordinary = scored.loc[10**9], scored.loc[10**9 + 1]
    assert all(np.isnan(extreme[name]) for name in UNCERTAINTY_NUMBERS)
    assert f"beyond {MAX_HORIZON_PURCHASES:,} purchases" in extreme["reasons"]
    assert np.isfinite(extreme["predicted_value"]) and not extreme["tier_uncertain"]
    assert all(np.isfinite(ordinary[name]) for name in UNCERTAINTY_NUMBERS)
    assert "beyond" not in ordinary["reasons"]
    alone = scorer.score(transactions[transactions["customer_id"].isin(some)], as_of=AS_OF,
                         summaries=summaries.iloc[1:]).set_index("customer_id")
    for name in UNCERTAINTY_NUMBERS:
        assert ordinary[name] == pytest.approx(alone.loc[10**9 + 1, name], rel=1e-12), name
    whole = scores.set_index("customer_id").loc[some]
    for name in UNCERTAINTY_NUMBERS:
        np.testing.assert_allclose(scored.loc[some, name].to_numpy(), whole[name].to_numpy(), rtol=1e-12)


def test_the_beta_cdf_table_starts_afresh_past_its_size_with_the_same_numbers(scorer):
    from crmml.uncertainty import ScoreUncertainty

    fresh = ScoreUncertainty(scorer.model_.btyd_.transaction_model, scorer.model_.btyd_.spend_model,
                             scorer.score_uncertainty().horizon, scorer.config.uncertainty)
    fresh.table.ROWS_KEPT = 50  # (the instance's, not the class's)
    x, t_x, T = np.array([2.0, 40.0, 300.0]), np.array([10.0, 18.0, 20.0]), np.full(3, 20.0)
    args = (np.full(3, 500.0), np.zeros(3), np.ones(3, bool), np.full(3, np.inf), np.zeros(3, bool))
    first = fresh.evaluate(x, t_x, T, *args)
    grown = len(fresh.table.m)
    again = fresh.evaluate(x[::-1], t_x[::-1], T[::-1], *args)
    assert grown > 50 and len(fresh.table.m) <= grown  # started afresh, then made what it needed
    for name in UNCERTAINTY_NUMBERS:
        np.testing.assert_allclose(first[name], again[name][::-1], rtol=1e-12, err_msg=name)


def test_beyond_reach_is_the_upper_count_past_the_cap(scorer):
    """The shortcut (no row with x up to ``x_within_reach`` is checked) gives what checking every row gives."""
    from crmml.models.purchase_distribution import _upper_counts
    from crmml.uncertainty import MAX_HORIZON_PURCHASES

    uncertainty = scorer.score_uncertainty()
    edge = uncertainty.x_within_reach
    assert 0 < edge < 10**6
    x = np.concatenate([np.arange(0, 3 * edge, max(1.0, edge // 50)), [edge, edge + 1, 10**5, 10**7]])
    x, T = np.repeat(x, 4), np.tile([0.0, 1.0, 30.0, 400.0], len(x))
    direct = _upper_counts(uncertainty.draws, x, T, uncertainty.horizon, uncertainty.config.tail) > MAX_HORIZON_PURCHASES
    np.testing.assert_array_equal(uncertainty.beyond_reach(x, T), direct)
    assert direct.any() and not direct.all() and not direct[x <= edge].any()


def test_columns_false_leaves_them_empty_and_the_rest_as_it_was(scorer, scores, base):
    """``uncertainty.columns: false``: NaN columns, no flag, no uncertainty reason, every other column
    identical, and the scorer's summary says why."""
    import copy

    transactions, customers = base
    off = copy.copy(scorer)
    off.config = replace(scorer.config, uncertainty=UncertaintyConfig(columns=False, tier_uncertain_below=0.5))
    off._score_uncertainty = None
    plain = off.score(transactions, as_of=AS_OF, customers=customers)
    for name in UNCERTAINTY_NUMBERS:
        assert plain[name].isna().all(), name
    assert not plain["tier_uncertain"].any() and scores["tier_uncertain"].any()
    assert not plain["reasons"].str.contains("tier uncertain").any()
    for name in set(SCORE_COLUMNS) - set(UNCERTAINTY_NUMBERS) - {"tier_uncertain", "reasons", "flags"}:
        assert plain[name].equals(scores[name]), name
    others = scores["flags"].map(lambda flags: ";".join(f for f in flags.split(";") if f != "tier_uncertain"))
    assert plain["flags"].tolist() == others.tolist()
    assert off.summary()["uncertainty"]["unavailable"] == "turned off (uncertainty.columns: false)"
    assert ScorerConfig.from_dict(off.config.to_dict()).uncertainty.columns is False
