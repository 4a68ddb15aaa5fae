"""The test plan: one spelling of every result key, the headline set named, and a study's plan checked at load."""

import pytest

from raylm.config import ConfigError, StudyConfig, load_config
from raylm.evaluation.plan import TestPlan, result_key, study_plan

SMOKE = "experiments/smoke.yaml"


def test_every_result_key_is_test_set_protocol_metric():
    assert result_key("afw", "nme") == "test_afw/nme"  # landmarks, the model alone: no suffix
    assert result_key("afw", "nme_ci95_low") == "test_afw/nme_ci95_low"
    assert result_key("afw", "fr@0.10", "jitter") == "test_afw_jitter/fr@0.10"
    assert result_key("real", "missed", "detector") == "test_real_detector/missed"


def test_the_headline_is_the_first_test_set_unless_named_and_the_report_says_which():
    assert TestPlan(("lfpw", "afw")).lead == "lfpw"
    assert "the first of data.tests" in TestPlan(("lfpw", "afw")).lead_note()
    assert TestPlan(("lfpw", "afw"), headline="afw").lead == "afw"
    assert TestPlan(("lfpw", "afw"), headline="afw").lead_note() == "`afw` (search.test_set)"


def test_a_study_plans_every_test_set_and_names_a_wrong_headline_or_none_at_all():
    study = load_config(StudyConfig, SMOKE, ["data.tests.held=builtin:realistic?n=40&seed=11"])
    plan = study_plan(study)
    assert plan.sets == ("real", "held") and plan.lead == "real" and plan.protocols[:2] == ("landmarks", "jitter")
    with pytest.raises(ConfigError, match=r"smoke.yaml: search.test_set 'afw' is not a name in data.tests \(real\)"):
        load_config(StudyConfig, SMOKE, ["search.test_set=afw"])
    untested = load_config(StudyConfig, SMOKE, ["data.tests={}"])  # a benchmark's study needs none
    with pytest.raises(ConfigError, match=r"^data.tests is empty: a study tests each cell's best model"):
        study_plan(untested)  # what run_study asks before Ray starts
