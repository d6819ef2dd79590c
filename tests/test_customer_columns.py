"""A customer table with its own column names (issue 18): mapped once, by options or by the config's
``customer_columns:`` section, recorded in the model, applied where every engine reads the table; the
warnings on the columns training leaves out; and what ``crmml train`` says it used as what.

The oracle of the end-to-end tests is the same table with crmml's column names: mapped, it must give
the same scores, and the columns training leaves out (an email, a text date column) must change
nothing.
"""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmml.cli import main
from crmml.customer_columns import CustomerColumns
from crmml.customer_table import MAX_CATEGORY_LEVELS, training_table
from crmml.errors import CustomerTableWarning, DataValidationError
from crmml.jobs import read_customer_table
from crmml.scorer import SCORE_NUMBERS, Scorer, ScorerConfig

AS_OF = "2025-06-30"
SMALL = (Path(__file__).resolve().parents[1] / "models" / "small.yaml").read_text()
#: crmml's names -> the shop's own
OWN_NAMES = {"customer_id": "user", "acquisition_channel": "channel", "signup_date": "signup",
             "referred_by": "referrer", "cost_to_serve": "cost"}
OPTIONS = ["--table-customer-col", "user", "--channel-col", "channel", "--signup-col", "signup",
           "--referrer-col", "referrer", "--cost-col", "cost"]
MAPPING = """
customer_columns:
  customer: user
  signup_date: signup
  acquisition_channel: channel
  referred_by: referrer
  cost_to_serve: cost
"""
BUNDLE = Path(__file__).parent / "fixtures" / "bundle_0_1_0"


def _own_table(canonical: pd.DataFrame) -> pd.DataFrame:
    """The table under the shop's names, with two columns training must leave out: an email (a
    distinct value per customer) and the last visit's day as text."""
    own = canonical.rename(columns=OWN_NAMES)
    own["email"] = [f"customer{i}@shop.example" for i in range(len(own))]
    own["last_visit"] = (pd.Timestamp("2025-06-01") - pd.to_timedelta(np.arange(len(own)) % 40, unit="D")
                         ).strftime("%Y-%m-%d")
    return own


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    from crmml.data.simulate import simulate_customer_base

    folder = tmp_path_factory.mktemp("customer_columns")
    sim = simulate_customer_base(300, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=8)
    sim.transactions[["customer_id", "timestamp", "amount"]].to_parquet(folder / "log.parquet")
    canonical = sim.customers[["customer_id", "acquisition_channel", "region", "signup_date", "referred_by"]].copy()
    canonical["cost_to_serve"] = np.round(np.random.default_rng(1).uniform(0, 5, len(canonical)), 2)
    canonical.to_csv(folder / "canonical.csv", index=False, date_format="%Y-%m-%d")
    _own_table(canonical).to_csv(folder / "own.csv", index=False, date_format="%Y-%m-%d")
    (folder / "small.yaml").write_text(SMALL)
    (folder / "mapped.yaml").write_text(SMALL + MAPPING)
    return {"folder": folder, "log": folder / "log.parquet", "canonical": folder / "canonical.csv",
            "own": folder / "own.csv", "tracking": f"sqlite:///{folder / 'mlflow.db'}"}


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(shop):
    """Three models on one shop: the canonical table; the shop's table mapped by options; mapped by
    the config. Each scored by ``crmml score`` with the table it was trained on, no options."""
    pytest.importorskip("mlflow")
    runs = {}
    for name, table, extra in (("canonical", "canonical", ["--config", "small.yaml"]),
                               ("options", "own", ["--config", "small.yaml", *OPTIONS]),
                               ("config", "own", ["--config", "mapped.yaml"])):
        extra = [str(shop["folder"] / e) if e.endswith(".yaml") else e for e in extra]
        code, out, err = _run(["train", "--transactions", str(shop["log"]), "--customers", str(shop[table]),
                               "--as-of", AS_OF, "--tracking-uri", shop["tracking"], "--model-name", name,
                               "--promote", "always", "--jobs", "1", *extra])
        assert code == 0, err
        scores = shop["folder"] / f"{name}.parquet"
        code, score_out, err_score = _run(["score", "--model", f"models:/{name}@champion", "--transactions",
                                           str(shop["log"]), "--customers", str(shop[table]), "--as-of", AS_OF,
                                           "--output", str(scores), "--tracking-uri", shop["tracking"], "--jobs", "1"])
        assert code == 0, err_score
        runs[name] = {"out": out, "err": err, "score_out": score_out, "scores": pd.read_parquet(scores)}
    return runs


def _by_customer(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.drop(columns="model_version").sort_values("customer_id").reset_index(drop=True)


@pytest.mark.parametrize("mapped_by", ["options", "config"])
def test_a_mapped_table_scores_as_the_canonical_table(trained, mapped_by):
    """The same customers, numbers, tiers, flags and reasons (cost to serve included: the lead tier)."""
    expected, actual = _by_customer(trained["canonical"]["scores"]), _by_customer(trained[mapped_by]["scores"])
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-12)
    assert expected["predicted_profit"].notna().all()  # the mapped cost column was used


def test_train_says_which_table_column_is_used_as_what(trained, shop):
    from crmml.registry import load_scorer

    expected = ("customer table: customer id = 'user', sign-up date = 'signup', channel = 'channel', "
                "referrer = 'referrer', region = 'region', cost to serve = 'cost'")
    for name in ("options", "config"):
        assert expected in trained[name]["out"] and expected in trained[name]["score_out"], name
    features = ("customer attributes: features tenure_days ('signup'), has_referrer ('referrer'), n_referrals "
                "('referrer'), acquisition_channel ('channel'), region; ignored 'email' (text with 300 distinct "
                "values, more than 50), 'last_visit' (text of dates, not mapped as signup_date)")
    assert features in trained["options"]["out"]
    assert ("customer table: customer id = 'customer_id', sign-up date = 'signup_date', channel = "
            "'acquisition_channel'") in trained["canonical"]["out"]
    summary = load_scorer("models:/options/1", tracking_uri=shop["tracking"]).summary()
    assert summary["config"]["customer_columns"]["customer"] == "user"
    assert summary["customer_table"]["features"]["acquisition_channel"] == "channel"
    assert set(summary["customer_table"]["ignored"]) == {"email", "last_visit"}
    assert "customer_columns" not in load_scorer("models:/canonical/1", tracking_uri=shop["tracking"]).summary()[
        "config"]  # a canonical table's model is described as before


def test_train_warns_on_each_column_it_leaves_out(trained):
    lines = trained["options"]["err"].strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("crmml train: warning: ") for line in lines)
    email, visit = lines
    assert "'email'" in email and "300 distinct values" in email and "at most 50 levels" in email
    assert "'last_visit'" in visit and "--signup-col last_visit" in visit
    assert "warning" not in trained["canonical"]["err"]


def test_a_missing_mapped_column_exits_2_naming_it_and_the_file(trained, shop, tmp_path, capsys):
    tracking = f"sqlite:///{tmp_path / 'new.db'}"
    common = ["--transactions", str(shop["log"]), "--as-of", AS_OF]
    assert main(["train", *common, "--customers", str(shop["own"]), "--tracking-uri", tracking, *OPTIONS,
                 "--signup-col", "sign_up_day"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'sign_up_day'" in err and "own.csv" in err and "signup_date" in err
    assert not (tmp_path / "new.db").exists()
    score = ["score", "--model", "models:/options@champion", *common, "--output", str(tmp_path / "s.parquet"),
             "--tracking-uri", shop["tracking"]]
    assert main([*score, "--customers", str(shop["canonical"])]) == 2  # the model's mapping wants 'user'
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'user'" in err and "canonical.csv" in err
    both = tmp_path / "both.csv"
    pd.read_csv(shop["own"]).assign(acquisition_channel="email").to_csv(both, index=False)
    assert main([*score, "--customers", str(both)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'acquisition_channel' besides 'channel'" in err and "both.csv" in err
    assert main([*score, "--signup-col", "signup"]) == 2
    assert "--signup-col describe the customer table: they need --customers" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


def test_the_report_has_channels_when_the_channel_is_mapped(trained, shop, tmp_path, capsys):
    """From the training tables alone, and from the shop's table read with the model's mapping."""
    for extra in ([], ["--transactions", str(shop["log"]), "--customers", str(shop["own"])]):
        output = tmp_path / "report.html"
        assert main(["report", "--model", "models:/options@champion", "--output", str(output),
                     "--tracking-uri", shop["tracking"], *extra]) == 0
        html = output.read_text()
        assert "Value by acquisition channel" in html
        assert "no customer table with an acquisition_channel column" not in html
    assert "customer table: customer id = 'user'" in capsys.readouterr().out


def test_every_command_that_reads_a_customer_table_takes_the_table_options():
    from crmml.cli import _build_parser

    parser = _build_parser()
    common = ["--transactions", "x.csv", "--customers", "c.csv", *OPTIONS, "--region-col", "area"]
    for argv in (["train", *common, "--as-of", AS_OF],
                 ["score", *common, "--as-of", AS_OF, "--model", "m", "--output", "s.parquet"],
                 ["report", *common, "--model", "m", "--output", "r.html"],
                 ["backtest", *common, "--cutoff", "2025-01-01"]):
        args = parser.parse_args(argv)
        assert (args.table_customer_col, args.signup_col, args.channel_col, args.referrer_col, args.region_col,
                args.cost_col) == ("user", "signup", "channel", "referrer", "area", "cost"), argv[0]
    with pytest.raises(SystemExit):  # the summary reads no customer table
        parser.parse_args(["summary", "--transactions", "x.csv", "--output", "s.csv", "--signup-col", "s"])


# --------------------------------------------------------------------------------------------------
# The rule of the columns training leaves out (crmml.customer_table.training_table)
# --------------------------------------------------------------------------------------------------


def _left_out(table: pd.DataFrame) -> tuple[dict, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept, left_out = training_table(table)
    assert list(kept.columns) == [c for c in table.columns if c not in left_out]
    return left_out, [str(w.message) for w in caught if issubclass(w.category, CustomerTableWarning)]


def test_no_warning_on_ordinary_columns():
    n = 400
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "customer_id": [f"c{i:04d}" for i in range(n)],  # text ids with a value each: the id, not an attribute
        "signup_date": pd.date_range("2023-01-01", periods=n).strftime("%Y-%m-%d"),  # mapped: dates are fine
        "referred_by": [f"c{i:04d}" if i % 3 else None for i in range(n)],
        "acquisition_channel": rng.choice(["email", "search", "referral"], n),
        "region": pd.Categorical(rng.choice(["north", "south"], n)),
        "plan": rng.choice([f"plan-{k}" for k in range(MAX_CATEGORY_LEVELS)], n),  # 50 levels: at the limit
        "birth_year": rng.integers(1960, 2000, n).astype(str),  # numbers as text are not dates
        "cohort": rng.choice(["Jan", "May", "Dec"], n),  # month names are not dates
        "age": rng.integers(18, 90, n),
        "vip": rng.random(n) < 0.1,
        "cost_to_serve": rng.uniform(0, 3, n),
    })
    assert _left_out(table) == ({}, [])


def test_high_cardinality_text_and_unmapped_dates_are_left_out_with_a_warning():
    n = 300
    table = pd.DataFrame({
        "customer_id": np.arange(n),
        "email": [f"u{i}@x.example" for i in range(n)],
        "city": pd.Categorical([f"city {i % 60}" for i in range(n)]),
        "signup": pd.date_range("2021-01-01", periods=n).strftime("%d/%m/%Y"),  # the sign-up date, unmapped
        "last_order": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),  # typed dates
        "region": ["north"] * n,
    })
    left_out, messages = _left_out(table)
    assert left_out == {"email": "text with 300 distinct values, more than 50",
                        "city": "text with 60 distinct values, more than 50",
                        "signup": "text of dates, not mapped as signup_date",
                        "last_order": "dates, not mapped as signup_date"}
    assert len(messages) == 4
    assert "'email'" in messages[0] and "300 one-hot features" in messages[0]
    assert "'signup'" in messages[2] and "100% of its values parse as dates" in messages[2]
    assert "customer_columns: {signup_date: signup}" in messages[2] and "--signup-col signup" in messages[2]


# --------------------------------------------------------------------------------------------------
# The mapping itself, and every engine reading a mapped table
# --------------------------------------------------------------------------------------------------


def test_the_config_section_and_its_errors():
    config = ScorerConfig.from_dict({"customer_columns": {"customer": "user", "signup_date": "signup"}})
    assert config.customer_columns == CustomerColumns(customer="user", signup_date="signup")
    assert config.to_dict()["customer_columns"]["signup_date"] == "signup"
    assert "customer_columns" not in ScorerConfig().to_dict()  # the default: model ids as before
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['channel'\] in config section 'customer_columns'"):
        ScorerConfig.from_dict({"customer_columns": {"channel": "x"}})
    with pytest.raises(ValueError, match="maps the column 'src' to both acquisition_channel and region"):
        CustomerColumns(acquisition_channel="src", region="src")
    with pytest.raises(ValueError, match="to both customer and signup_date"):
        CustomerColumns(signup_date="customer_id")
    # a mapped column may bear another role's default name: that role then has no column
    assert CustomerColumns(signup_date="region").renames(["customer_id", "region"], "t") == {"region": "signup_date"}


@pytest.fixture(scope="module")
def bundle():
    """The release-0.1.0 bundle (trained on a canonical table with every role), 80 customers of its data."""
    log = pd.read_csv(BUNDLE / "transactions.csv", parse_dates=["timestamp"])
    ids = log["customer_id"].drop_duplicates().to_numpy()[:80]
    log = log[log["customer_id"].isin(ids) & (log["timestamp"] < "2025-07-01")].reset_index(drop=True)
    table = pd.read_csv(BUNDLE / "customers.csv")
    return Scorer.load(BUNDLE), log, table[table["customer_id"].isin(ids)].reset_index(drop=True)


def test_the_pandas_and_duckdb_engines_read_a_mapped_table_as_the_canonical_one(bundle, tmp_path):
    from crmml.batch import score_in_partitions

    scorer, log, table = bundle
    expected = _by_customer(scorer.score(log, as_of=AS_OF, customers=table))
    table.rename(columns=OWN_NAMES).to_csv(tmp_path / "own.csv", index=False)
    mapping = CustomerColumns.from_dict({role: OWN_NAMES.get(canonical, canonical)
                                         for role, canonical in CustomerColumns().to_dict().items()})
    own = read_customer_table(tmp_path / "own.csv", mapping)
    pd.testing.assert_frame_equal(_by_customer(scorer.score(log, as_of=AS_OF, customers=own)), expected)
    log.to_csv(tmp_path / "log.csv", index=False)
    score_in_partitions(tmp_path / "log.csv", as_of=AS_OF, output=tmp_path / "scores.parquet",
                        customers=tmp_path / "own.csv", customers_per_partition=50, customer_columns=mapping,
                        score_partition=lambda part, rows: scorer.score(part, as_of=AS_OF, customers=rows))
    batch = _by_customer(pd.read_parquet(tmp_path / "scores.parquet"))
    for name in SCORE_NUMBERS:
        np.testing.assert_allclose(batch[name], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert batch["reasons"].tolist() == expected["reasons"].tolist()
    table.to_csv(tmp_path / "canonical.csv", index=False)
    with pytest.raises(DataValidationError, match=r"Column 'channel', mapped as acquisition_channel .* is missing "
                                                  r"from the customer table '.*canonical\.csv'") as caught:
        score_in_partitions(tmp_path / "log.csv", as_of=AS_OF, output=tmp_path / "x.parquet",
                            customers=tmp_path / "canonical.csv",
                            customer_columns=CustomerColumns(acquisition_channel="channel"),
                            score_partition=lambda part, rows: scorer.score(part, as_of=AS_OF, customers=rows))
    assert caught.value.column == "channel"


@pytest.mark.slow
def test_the_spark_engine_reads_a_mapped_table_as_the_canonical_one(bundle, tmp_path):
    spark_api = pytest.importorskip("crmml.spark")
    from spark_support import TEST_CONF

    from crmml.spark.jobs import score_job_spark

    scorer, log, table = bundle
    expected = _by_customer(scorer.score(log, as_of=AS_OF, customers=table))
    log.to_csv(tmp_path / "log.csv", index=False)
    table.rename(columns=OWN_NAMES).to_csv(tmp_path / "own.csv", index=False)
    session = spark_api.spark_session("local[2]", conf=TEST_CONF)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
            score_job_spark(model=scorer, transactions=tmp_path / "log.csv", customers=tmp_path / "own.csv",
                            as_of=AS_OF, output=tmp_path / "scores.parquet", session=session,
                            customer_columns={"customer": "user", "acquisition_channel": "channel",
                                              "signup_date": "signup", "referred_by": "referrer",
                                              "cost_to_serve": "cost"})
    finally:
        session.stop()
    actual = _by_customer(pd.read_parquet(tmp_path / "scores.parquet"))
    for name in SCORE_NUMBERS:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
