import pytest

from qresafe_exp.data import DatasetNotFoundError, load_records
from qresafe_exp.evals.suites import SUITES


def test_local_copies_parse_with_expected_sizes(data_dir):
    assert len(load_records("advbench", str(data_dir))) == 520
    xstest = load_records("xstest", str(data_dir))
    assert len(xstest) == 450
    assert sum(r["label"] == "safe" for r in xstest) == 250
    pairs = load_records("alpaca_en_demo", str(data_dir))
    assert len(pairs) == 999 and pairs[0]["prompt"] and pairs[0]["response"]


def test_missing_data_dir_names_the_setting_and_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_records("advbench", str(tmp_path / "nowhere"), str(tmp_path))
    assert "QRESAFE_DATA_DIR" in str(err.value) and "does not exist" in str(err.value)


def test_unknown_dataset_lists_allowed(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="Allowed: .*advbench"):
        load_records("advbenchh", None, str(tmp_path))


def test_suite_sample_is_seeded_stable_and_filtered(data_dir):
    suite = SUITES.get("xstest_safe")
    records = load_records(suite.dataset, str(data_dir))
    a, removed = suite.select(records, 64, seed=0)
    b, _ = suite.select(records, 64, seed=0)
    c, _ = suite.select(records, 64, seed=1)
    assert removed == 0
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert len(a) == 64 and all(r["label"] == "safe" for r in a)
    assert len(suite.select(records, None, seed=0)[0]) == 250
