"""BTYD models with static covariates: design coding, exactness at zero effects, gradients, recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from crmml.data.simulate_covariates import simulate_channel_log
from crmml.errors import DataValidationError
from crmml.models import BetaGeo, ModifiedBetaGeo, ParetoNBD
from crmml.models.beta_geo_covariates import BetaGeoCovariates, ModifiedBetaGeoCovariates
from crmml.models.covariates import CovariateDesign
from crmml.models.pareto_nbd_covariates import ParetoNBDCovariates

PAIRS = [(ParetoNBDCovariates, ParetoNBD, "pareto_nbd"), (BetaGeoCovariates, BetaGeo, "bg_nbd"),
         (ModifiedBetaGeoCovariates, ModifiedBetaGeo, "bg_nbd")]


def _summary(model: str, n: int = 3000, seed: int = 3) -> pd.DataFrame:
    summary = simulate_channel_log(n, model=model, seed=seed).summary
    rng = np.random.default_rng(seed)
    # A numeric attribute with few values (age bands) and a boolean one, unrelated to behaviour.
    return summary.assign(age=rng.choice([25.0, 35.0, 45.0, 60.0], len(summary)), vip=rng.random(len(summary)) < 0.3)


@pytest.fixture(scope="module")
def pareto_data():
    return _summary("pareto_nbd")


@pytest.fixture(scope="module")
def bg_data():
    return _summary("bg_nbd")


def _data(kind, pareto_data, bg_data):
    return pareto_data if kind == "pareto_nbd" else bg_data


# ---------------------------------------------------------------------------------------------------
# The design matrix
def test_design_codes_dummies_against_the_most_frequent_level_and_standardises_numbers():
    frame = pd.DataFrame({"channel": ["web", "ads", "web", "ref", "web", "ads"], "age": [20.0, 30, 40, 50, 60, 70]})
    design = CovariateDesign(["channel", "age"], ["channel"]).fit(frame)
    assert design.columns_ == ["channel=ads", "channel=ref", "age"]
    assert design.attributes_[0].reference == "web"
    assert design.purchase_index_.tolist() == [0, 1, 2] and design.dropout_index_.tolist() == [0, 1]
    z, fallback = design.transform(frame)
    np.testing.assert_array_equal(z[:, :2], [[0, 0], [1, 0], [0, 0], [0, 1], [0, 0], [1, 0]])
    np.testing.assert_allclose(z[:, 2], (frame["age"] - 45) / np.std(frame["age"]))
    assert not fallback.to_numpy().any()
    # Weights count as customers when choosing the reference level.
    weighted = CovariateDesign(["channel"]).fit(frame, sample_weight=[0, 5, 0, 1, 0, 5])
    assert weighted.attributes_[0].reference == "ads"
    explicit = CovariateDesign(["channel"], reference_levels={"channel": "ref"}).fit(frame)
    assert explicit.columns_ == ["channel=ads", "channel=web"]


def test_design_unknown_and_missing_values_fall_back_to_the_reference_and_are_flagged():
    frame = pd.DataFrame({"channel": ["web", "ads", "web"], "age": [20.0, 30.0, 40.0]})
    design = CovariateDesign(["channel", "age"]).fit(frame)
    new = pd.DataFrame({"channel": ["ads", "tv", None, "web"], "age": [30.0, np.nan, 20.0, 40.0]})
    z, fallback = design.transform(new)
    np.testing.assert_array_equal(z[:, 0], [1, 0, 0, 0])
    assert z[1, 1] == 0.0  # the mean, standardised
    assert fallback["channel"].tolist() == [False, True, True, False]
    assert fallback["age"].tolist() == [False, True, False, False]


def test_design_errors_name_the_column():
    frame = pd.DataFrame({"channel": ["web", None], "age": [1.0, 1.0]})
    with pytest.raises(DataValidationError, match="'channel'"):
        CovariateDesign(["channel"]).fit(frame)
    with pytest.raises(DataValidationError, match="'age'.*one value"):
        CovariateDesign(["age"]).fit(frame)
    with pytest.raises(DataValidationError, match="'region'"):
        CovariateDesign(["region"]).fit(frame)
    with pytest.raises(DataValidationError, match="Reference level 'tv'"):
        CovariateDesign(["channel"], reference_levels={"channel": "tv"}).fit(frame.fillna("web"))


# ---------------------------------------------------------------------------------------------------
# Acceptance 1: all coefficients zero is the plain model, to 1e-10
@pytest.mark.parametrize("covariate_model, plain_model, kind", PAIRS)
def test_zero_coefficients_give_the_plain_likelihood_gradient_and_predictions(covariate_model, plain_model, kind,
                                                                               pareto_data, bg_data):
    summary = _data(kind, pareto_data, bg_data)
    plain = plain_model().fit(summary)
    model = covariate_model(["channel", "age"], ["channel", "vip"]).fit(summary)
    k = len(plain.params_)
    # Away from the optimum, where the gradient is not rounding noise.
    theta = np.r_[plain.params_.to_numpy() * [1.2, 0.8, 1.1, 0.9], np.zeros(len(model.params_) - k)]
    value, gradient = model.log_likelihood_and_gradient(theta, summary)
    columns = tuple(summary[c].to_numpy(dtype=float) for c in plain.data_columns)
    weights = np.ones(len(summary))
    expected_value, expected_gradient = plain._weighted_log_likelihood(
        theta[:k], plain._prepare_data(columns, weights), weights)
    assert value == pytest.approx(expected_value, rel=1e-10)
    np.testing.assert_allclose(gradient[:k], expected_gradient, rtol=1e-10, atol=1e-10 * np.abs(expected_gradient).max())

    theta[:k] = plain.params_.to_numpy()
    model.params_ = pd.Series(theta, index=model.params_.index)
    ours = model.predict_horizons(summary, [4.0, 13.0], sums={"clv": ([4.0, 8.0], [1.0, 0.5])})
    theirs = plain.predict_horizons(summary, [4.0, 13.0], sums={"clv": ([4.0, 8.0], [1.0, 0.5])})
    for key, values in theirs.items():
        np.testing.assert_allclose(ours[key], values, rtol=1e-10, atol=1e-14, err_msg=str(key))
    np.testing.assert_allclose(model.probability_alive(summary), plain.probability_alive(summary), rtol=1e-10)
    np.testing.assert_allclose(model.expected_purchases(summary, 10), plain.expected_purchases(summary, 10), rtol=1e-10)
    np.testing.assert_allclose(model.probability_no_purchase(summary, 10), plain.probability_no_purchase(summary, 10),
                               rtol=1e-10)
    np.testing.assert_allclose(model.unconditional_expected_purchases([1.0, 30.0]),
                               plain.unconditional_expected_purchases([1.0, 30.0]), rtol=1e-10)
    # And the fitted model's likelihood is at least the plain one's (it nests it).
    assert model.log_likelihood_ >= plain.log_likelihood_ - 1e-6


@pytest.mark.parametrize("covariate_model, plain_model, kind", PAIRS)
def test_analytic_gradient_matches_finite_differences(covariate_model, plain_model, kind, pareto_data, bg_data):
    summary = _data(kind, pareto_data, bg_data).iloc[:600]
    model = covariate_model(["channel", "age"], ["channel", "vip"]).fit(summary)
    rng = np.random.default_rng(0)
    theta = model.params_.to_numpy() * np.exp(rng.normal(0, 0.1, len(model.params_)))
    k = len(plain_model.param_names)
    theta[k:] += rng.normal(0, 0.2, len(theta) - k) * model._standardised_scale()[k:] ** -1

    def value(point):
        return model.log_likelihood_and_gradient(point, summary)[0]

    def gradient(point):
        return model.log_likelihood_and_gradient(point, summary)[1]

    error = optimize.check_grad(value, gradient, theta, epsilon=1e-7)
    assert error < 1e-4 * np.linalg.norm(gradient(theta))


# ---------------------------------------------------------------------------------------------------
# Fitting
def test_weights_are_duplicated_rows_and_rows_compress_on_z(pareto_data):
    summary = pareto_data.iloc[:800]
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 4, len(summary))
    duplicated = summary.loc[summary.index.repeat(counts)]
    weighted = ParetoNBDCovariates(["channel"], ["channel"]).fit(summary, sample_weight=counts)
    repeated = ParetoNBDCovariates(["channel"], ["channel"]).fit(duplicated)
    np.testing.assert_allclose(weighted.params_, repeated.params_, rtol=1e-6)
    np.testing.assert_allclose(weighted.standard_errors_, repeated.standard_errors_, rtol=1e-4)
    assert weighted.log_likelihood_ == pytest.approx(repeated.log_likelihood_, rel=1e-10)
    assert repeated.n_unique_rows_ == len(summary) and repeated.n_groups_ == 3


def test_numeric_covariates_are_reported_per_original_unit(pareto_data):
    summary = pareto_data.iloc[:1500]
    years = ParetoNBDCovariates(["age"], ["age"]).fit(summary)
    months = ParetoNBDCovariates(["age"], ["age"]).fit(summary.assign(age=summary["age"] * 12))
    assert months.log_likelihood_ == pytest.approx(years.log_likelihood_, rel=1e-9)
    np.testing.assert_allclose(months.params_.iloc[4:] * 12, years.params_.iloc[4:], rtol=1e-5)
    np.testing.assert_allclose(months.params_.iloc[:4], years.params_.iloc[:4], rtol=1e-5)
    table = years.param_table()
    assert table.loc["purchase:age", "covariate"] == "age" and table.loc["purchase:age", "level"] is None


def test_coefficient_penalizer_shrinks_only_the_coefficients(pareto_data):
    summary = pareto_data.iloc[:1500]
    free = ParetoNBDCovariates(["channel"], ["channel"]).fit(summary)
    shrunk = ParetoNBDCovariates(["channel"], ["channel"], coefficient_penalizer=0.5).fit(summary)
    assert np.all(np.abs(shrunk.params_.iloc[4:]) < np.abs(free.params_.iloc[4:]))
    # The baseline is not penalised: with a huge penalty the coefficients vanish and the baseline
    # is the plain model's.
    null = ParetoNBDCovariates(["channel"], ["channel"], coefficient_penalizer=1e6).fit(summary)
    np.testing.assert_allclose(null.params_.iloc[4:], 0.0, atol=1e-5)
    np.testing.assert_allclose(null.params_.iloc[:4], ParetoNBD().fit(summary).params_, rtol=1e-3)


def test_unknown_and_missing_channels_are_scored_at_the_reference_level_and_flagged(pareto_data):
    summary = pareto_data.iloc[:1500]
    model = ParetoNBDCovariates(["channel"], ["channel"]).fit(summary)
    reference = model.design_.attributes_[0].reference
    rows = summary.iloc[:3]
    odd = rows.assign(channel=["tv", None, reference])
    at_reference = rows.assign(channel=reference)
    np.testing.assert_array_equal(model.probability_alive(odd), model.probability_alive(at_reference))
    predicted = model.predict_horizons(odd, [4.0])
    assert predicted["covariate_fallback"].tolist() == [1.0, 1.0, 0.0]
    assert model.covariate_fallback(odd)["channel"].tolist() == [True, True, False]


def test_fit_errors_name_the_column(pareto_data):
    with pytest.raises(DataValidationError, match="'region'"):
        ParetoNBDCovariates(["region"]).fit(pareto_data)
    broken = pareto_data.iloc[:50].copy()
    broken.loc[broken.index[3], "channel"] = None
    with pytest.raises(DataValidationError, match="'channel'"):
        BetaGeoCovariates(["channel"]).fit(broken)


def test_no_covariates_is_the_plain_fit(bg_data):
    model = BetaGeoCovariates().fit(bg_data)
    plain = BetaGeo().fit(bg_data)
    np.testing.assert_allclose(model.params_, plain.params_, rtol=1e-6)
    assert model.log_likelihood_ == pytest.approx(plain.log_likelihood_, rel=1e-10)
    assert list(model.param_table()["process"]) == ["baseline"] * 4


def test_an_unidentified_effect_warns_and_gives_nan_errors(pareto_data):
    # A level held by one customer without repeat purchases: its dropout effect is not identified.
    summary = pareto_data.iloc[:1000].copy()
    lonely = summary.index[(summary["frequency"] == 0)][0]
    summary.loc[lonely, "channel"] = "fax"
    with pytest.warns(UserWarning, match="flat at the optimum"):
        model = ParetoNBDCovariates(["channel"], ["channel"]).fit(summary)
    assert model.standard_errors_.isna().all()
    assert np.all(np.isfinite(model.params_))
    assert np.all(np.isfinite(model.probability_alive(summary)))
    assert np.isnan(model.param_table().loc["dropout:channel=fax", "ratio_lower_95"])


# ---------------------------------------------------------------------------------------------------
# Acceptance 2: known channel effects are recovered within 3 standard errors
TRUTH = {"pareto_nbd": {"purchase:channel=referral": np.log(1.4), "purchase:channel=paid": np.log(0.8),
                        "dropout:channel=referral": np.log(0.5), "dropout:channel=paid": np.log(1.5)},
         "bg_nbd": {"purchase:channel=referral": np.log(1.4), "purchase:channel=paid": np.log(0.8),
                    "dropout:channel=referral": np.log(0.5), "dropout:channel=paid": np.log(1.5)}}


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("kind", ["pareto_nbd", "bg_nbd"])
def test_fitted_rate_ratios_recover_the_simulated_channel_effects(kind, seed):
    summary = simulate_channel_log(8000, model=kind, seed=seed).summary
    model_class = ParetoNBDCovariates if kind == "pareto_nbd" else BetaGeoCovariates
    model = model_class(["channel"], ["channel"], reference_levels={"channel": "web"}).fit(summary)
    table = model.param_table()
    for term, truth in TRUTH[kind].items():
        row = table.loc[term]
        assert abs(row["estimate"] - truth) < 3 * row["standard_error"], (term, row["estimate"], truth)
        assert row["ratio"] == pytest.approx(np.exp(row["estimate"]))
        assert row["ratio_lower_95"] < row["ratio"] < row["ratio_upper_95"]


@pytest.mark.parametrize("covariate_model, plain_model, kind", PAIRS)
def test_grouped_hessian_equals_the_differenced_total_gradient(covariate_model, plain_model, kind, pareto_data,
                                                               bg_data):
    """The Hessian built from each group's k x k Hessian (k + 1 passes) is the one BaseModel would get by
    differencing the total gradient (len(theta) + 1 passes): same optimum, same standard errors."""

    class Differenced(covariate_model):
        def _hessian(self, point, likelihood):
            return self._numeric_hessian(lambda p: self._objective(p, likelihood)[1], point)

    summary = _data(kind, pareto_data, bg_data).iloc[:1500]
    grouped = covariate_model(["channel", "age"], ["channel", "vip"], penalizer=0.01).fit(summary)
    differenced = Differenced(["channel", "age"], ["channel", "vip"], penalizer=0.01).fit(summary)
    np.testing.assert_allclose(grouped.params_, differenced.params_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grouped.standard_errors_, differenced.standard_errors_, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# The simulator
@pytest.mark.parametrize("kind", ["pareto_nbd", "bg_nbd"])
def test_simulated_log_is_seeded_and_its_transactions_match_its_summary(kind):
    first = simulate_channel_log(2000, model=kind, seed=5)
    again = simulate_channel_log(2000, model=kind, seed=5)
    pd.testing.assert_frame_equal(first.transactions, again.transactions)
    pd.testing.assert_frame_equal(first.summary, again.summary)
    summary, log = first.summary, first.transactions
    assert log["customer_id"].is_monotonic_increasing
    per_customer = log.groupby("customer_id")["timestamp"].agg(["count", "min", "max"])
    np.testing.assert_array_equal(per_customer["count"] - 1, summary["frequency"])
    weeks = (per_customer["max"] - per_customer["min"]).dt.total_seconds() / (7 * 86400)
    np.testing.assert_allclose(weeks, summary["recency"], atol=2 / (7 * 86400))
    assert np.all(summary["recency"] <= summary["T"]) and np.all(summary["T"] > 104 - 52)
    # Shares and the effects show in the latent values: referral customers buy more than paid ones
    # (factors 1.4 and 0.8) and leave less (0.5 and 1.5).
    shares = summary["channel"].value_counts(normalize=True)
    assert shares["web"] == pytest.approx(0.5, abs=0.04) and shares["paid"] == pytest.approx(0.2, abs=0.04)
    means = first.customers.groupby("channel")[["lambda_", "dropout_"]].mean()
    assert means.loc["referral", "lambda_"] > means.loc["paid", "lambda_"]
    assert means.loc["referral", "dropout_"] < means.loc["web", "dropout_"] < means.loc["paid", "dropout_"]


def test_simulator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="model"):
        simulate_channel_log(10, model="gamma")
    with pytest.raises(ValueError, match="channels"):
        simulate_channel_log(10, channels={"web": (1.0, -1.0, 1.0)})
    with pytest.raises(ValueError, match="acquisition"):
        simulate_channel_log(10, acquisition=200.0)
