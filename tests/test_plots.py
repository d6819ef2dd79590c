"""Diagnostic plots: each writes a PNG, has the expected axes, lines and labels, and leaves nothing open."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

import matplotlib.pyplot as plt  # noqa: E402

from crmml.plots import (  # noqa: E402
    plot_calibration_by_frequency,
    plot_calibration_curve,
    plot_cumulative_tracking,
    plot_gains,
    plot_roc_pr,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.fixture(scope="module")
def churn():
    rng = np.random.default_rng(0)
    n = 400
    p_good = rng.beta(2, 5, size=n)
    y = (rng.random(n) < p_good).astype(int)
    return y, {"good": p_good, "noise": rng.random(n)}


@pytest.fixture(scope="module")
def value():
    rng = np.random.default_rng(1)
    predicted = rng.gamma(2.0, 30.0, size=300)
    actual = predicted * rng.lognormal(0, 0.7, size=300)
    return actual, {"model": predicted, "flat": np.ones(300)}


def test_plot_calibration_by_frequency(tmp_path):
    rng = np.random.default_rng(2)
    frequency = rng.poisson(2.0, size=500)
    frame = pd.DataFrame(
        {"frequency_cal": frequency, "predicted": 0.8 * frequency + 0.1, "actual": rng.poisson(0.8 * frequency + 0.1)}
    )
    path = tmp_path / "freq.png"
    fig = plot_calibration_by_frequency(frame, "predicted", "actual", "frequency_cal", max_frequency=5, path=path)
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2
    assert legend_texts(ax) == ["Model", "Actual"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4", "5+"]
    pooled = frame.loc[frame["frequency_cal"] >= 5, "predicted"].mean()
    assert ax.get_lines()[0].get_ydata()[-1] == pytest.approx(pooled)
    assert ax.get_xlabel() and ax.get_ylabel()


def test_plot_calibration_by_frequency_missing_column():
    frame = pd.DataFrame({"f": [0, 1], "p": [0.1, 0.2]})
    with pytest.raises(ValueError, match="Required column actual missing"):
        plot_calibration_by_frequency(frame, "p", "actual", "f")


def test_plot_cumulative_tracking(tmp_path):
    times = np.arange(78)
    actual = np.cumsum(np.random.default_rng(3).poisson(30, size=78))
    predicted = np.cumsum(np.full(78, 30.0))
    path = tmp_path / "tracking.png"
    fig = plot_cumulative_tracking(times, predicted, actual, calibration_end=39, path=path)
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 3  # actual, model, calibration-end line
    assert legend_texts(ax) == ["Actual", "Model", "End of calibration"]
    without = plot_cumulative_tracking(pd.date_range("2024-01-01", periods=78, freq="W"), predicted, actual)
    assert len(without.axes[0].get_lines()) == 2


def test_plot_cumulative_tracking_length_mismatch():
    with pytest.raises(ValueError, match="'actual_cumulative'.*same length"):
        plot_cumulative_tracking([0, 1, 2], [1.0, 2.0, 3.0], [1.0, 2.0])


def test_plot_roc_pr(tmp_path, churn):
    y, scores = churn
    path = tmp_path / "roc_pr.png"
    fig = plot_roc_pr(y, scores, path=path)
    assert_png(path)
    ax_roc, ax_pr = fig.axes
    assert len(ax_roc.get_lines()) == 3  # two models + chance diagonal
    assert len(ax_pr.get_lines()) == 3  # two models + base-rate line
    assert legend_texts(ax_roc)[0].startswith("good (AUC")
    assert legend_texts(ax_pr)[1].startswith("noise (AP")
    assert ax_roc.get_title() == "ROC" and ax_pr.get_title() == "Precision-recall"


def test_plot_roc_pr_bad_scores(churn):
    y, scores = churn
    with pytest.raises(ValueError, match="'scores'"):
        plot_roc_pr(y, {})
    with pytest.raises(ValueError, match="'p'.*NaN"):
        plot_roc_pr(y, {"bad": np.full(len(y), np.nan)})


def test_plot_calibration_curve(tmp_path, churn):
    y, scores = churn
    path = tmp_path / "calibration.png"
    fig = plot_calibration_curve(y, scores, n_bins=5, path=path)
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 3  # diagonal + two models
    assert legend_texts(ax) == ["Perfectly calibrated", "good", "noise"]
    assert len(ax.get_lines()[1].get_xdata()) == 5


def test_plot_gains(tmp_path, value):
    actual, predicted = value
    path = tmp_path / "gains.png"
    fig = plot_gains(actual, predicted, path=path)
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 4  # two models, perfect, random
    assert legend_texts(ax) == ["model", "flat", "Perfect", "Random"]
    model_curve = ax.get_lines()[0].get_ydata()
    assert model_curve[0] == 0 and model_curve[-1] == pytest.approx(1.0)
    assert np.all(ax.get_lines()[2].get_ydata() >= model_curve - 1e-12)


def test_plot_gains_needs_positive_total():
    with pytest.raises(ValueError, match="'actual'.*positive total"):
        plot_gains([0.0, 0.0], {"m": [1.0, 2.0]})


def test_returned_figure_without_path_is_not_registered_with_pyplot(churn):
    y, scores = churn
    fig = plot_roc_pr(y, scores)
    assert plt.get_fignums() == []
    assert fig.canvas.get_width_height()[0] > 0


# --------------------------------------------------------------------------------------------------
# Purchase-distribution charts (crmml.plots_intervals)


def _coverage_table() -> pd.DataFrame:
    from crmml.holdout_intervals import interval_coverage

    rng = np.random.default_rng(4)
    n = 600
    frame = pd.DataFrame({"pit": rng.uniform(size=n)})
    for name in ("50", "80", "90", "95"):
        frame[f"covered_{name}"] = rng.uniform(size=n) < float(name) / 100 + 0.03
        frame[f"interval_mass_{name}"] = float(name) / 100 + 0.03
    return interval_coverage(frame, np.where(np.arange(n) < 400, "0", "1").astype(object)), frame["pit"]


def test_plot_interval_calibration(tmp_path):
    from crmml.plots_intervals import plot_interval_calibration

    coverage, pit = _coverage_table()
    path = tmp_path / "coverage.png"
    fig = plot_interval_calibration(coverage, pit, path=path)
    assert_png(path)
    ax_coverage, ax_pit = fig.axes
    # the diagonal and one line per group (all, 0, 1); two marker sets for the integer intervals
    assert len(ax_coverage.get_lines()) == 4 and len(ax_coverage.collections) == 2
    assert legend_texts(ax_coverage)[:4] == ["calibrated", "all customers (600)", "frequency 0 (400)",
                                             "frequency 1 (200)"]
    heights = [p.get_height() for p in ax_pit.patches if p.get_width() == pytest.approx(0.1)]
    assert len(heights) == 10 and sum(heights) == pytest.approx(100.0)


def test_plot_interval_calibration_bad_inputs():
    from crmml.errors import DataValidationError
    from crmml.plots_intervals import plot_interval_calibration

    coverage, pit = _coverage_table()
    with pytest.raises(DataValidationError, match="Required column randomized missing"):
        plot_interval_calibration(coverage.drop(columns="randomized"), pit)
    with pytest.raises(ValueError, match="pit must be a non-empty array of values in \\[0, 1\\]"):
        plot_interval_calibration(coverage, np.array([0.2, 1.5]))


def test_plot_purchase_fan(tmp_path):
    from crmml.plots_intervals import plot_purchase_fan

    days = pd.date_range("2024-07-01", periods=26, freq="W")
    expected = np.arange(1, 27) * 10.0
    sd = np.sqrt(expected)
    bands = {"95 %": (expected - 2 * sd, expected + 2 * sd), "80 %": (expected - 1.3 * sd, expected + 1.3 * sd)}
    path = tmp_path / "fan.png"
    fig = plot_purchase_fan(days, expected, expected + 3, bands, path=path)
    assert_png(path)
    (ax,) = fig.axes
    assert legend_texts(ax) == ["95 % band", "80 % band", "Model (mean)", "Actual"]
    assert len(ax.collections) == 2
    with pytest.raises(ValueError, match="band '80 %' must have one lower and one upper value per time point"):
        plot_purchase_fan(days, expected, expected, {"80 %": (expected[:3], expected[:3])})
    with pytest.raises(ValueError, match="equally long"):
        plot_purchase_fan(days, expected, expected[:5], bands)
