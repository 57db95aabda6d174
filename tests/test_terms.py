"""Typed term options (issue 19): every option is a declared field, every value is checked
when the objective is built, and what needs the models' configs is checked before weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import BertConfig

from litdistill.conf import CONF_DIR
from litdistill.errors import ConfigError
from litdistill.objective import Objective
from litdistill.terms import (
    AttentionTerm,
    HiddenTerm,
    PatientTerm,
    RelationTerm,
    check_terms,
    make_term,
)
from litdistill.train import train

PRESETS = sorted(p for p in Path(CONF_DIR, "distill").glob("*.yaml")
                 if not p.stem.endswith("_general"))
GENERAL = sorted(Path(CONF_DIR, "distill").glob("*_general.yaml"))
TINY_PAIR = ["teacher=tiny", "teacher.num_layers=4", "teacher.hidden=48", "student=tiny"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_as_dict_is_the_preset_as_written(path):
    """results.json's ``distill`` entry is a contract: for every shipped preset it stays
    the preset's own keys and values (as the untyped objective wrote them), byte for byte."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    objective = instantiate(OmegaConf.load(path))
    expected = {k: v for k, v in raw.items() if not k.startswith("_")}
    assert json.dumps(objective.as_dict()) == json.dumps(expected)


@pytest.mark.parametrize("path", GENERAL, ids=lambda p: p.stem)
def test_general_presets_record_every_option_and_rebuild_from_it(path):
    """A general run's ``distill`` entry holds every option (terms with their defaults), and
    building the objective from it gives the same objective."""
    from litdistill.general import GeneralObjective

    objective = instantiate(OmegaConf.load(path))
    written = json.loads(json.dumps(objective.as_dict()))
    assert set(written) == {"kind", "terms", "temperature", "alpha_kd", "alpha_mlm",
                            "mlm_probability"}
    assert GeneralObjective(**written).as_dict() == written


def test_terms_are_typed():
    objective = instantiate(OmegaConf.load(Path(CONF_DIR, "distill", "tinybert.yaml")))
    hidden, attention = objective.terms["hidden"], objective.terms["attention"]
    assert isinstance(hidden, HiddenTerm) and hidden.projection == "shared"
    assert isinstance(attention, AttentionTerm) and attention.kind == "scores"
    assert objective.weights(None, 0.0).terms == {"embedding": 1.0, "hidden": 1.0,
                                                  "attention": 1.0}
    # Defaults where a preset leaves an option out: PKD skips, the others map uniformly.
    assert make_term("patient", {}) == PatientTerm(weight=1.0, mapping="skip")
    assert make_term("hidden", {"weight": 2}).as_dict() == {
        "weight": 2.0, "mapping": "uniform", "projection": "shared"}
    assert make_term("hidden", {"mapping": [1, 3]}).mapping == (1, 3)


@pytest.mark.parametrize("terms,message", [
    ({"hidden": {"wieght": 2}}, r"distill.terms.hidden: unknown option 'wieght'; valid: "
                                r"weight, mapping, projection$"),
    ({"cosine": {"mapping": "uniform"}}, r"distill.terms.cosine: unknown option 'mapping'; "
                                         r"valid: weight$"),
    ({"hidden": {"projection": "per_layr"}}, r"distill.terms.hidden.projection='per_layr': "
                                             r"must be one of shared, per_layer"),
    ({"attention": {"kind": "mxe"}}, r"distill.terms.attention.kind='mxe': must be one of "
                                     r"mse, kl, scores"),
    ({"patient": {"mapping": "lst"}}, r"distill.terms.patient.mapping='lst'"),
    ({"hidden": {"mapping": [1, -2]}}, r"distill.terms.hidden.mapping=\[1, -2\]"),
    ({"relation": {"relation_heads": 0}}, r"relation_heads=0: must be an integer >= 1"),
    ({"relation": {"relation_heads": "four"}}, r"relation_heads='four'"),
    ({"hidden": {"weight": -1}}, r"distill.terms.hidden.weight=-1.0: loss weights must be"),
    ({"hidden": {"weight": "heavy"}}, r"distill.terms.hidden.weight='heavy' is not a number"),
    ({"hiden": {}}, r"unknown distillation terms \['hiden'\]"),
    ({"hidden": 3}, r"distill.terms.hidden must be a mapping of options"),
])
def test_bad_term_options_fail_when_built(terms, message):
    with pytest.raises(ConfigError, match=message):
        Objective(terms=terms)


def _bert(layers: int, hidden: int, heads: int) -> BertConfig:
    return BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads)


def test_model_checks_need_only_configs():
    student, teacher = _bert(2, 32, 2), _bert(4, 48, 4)
    check_terms({"relation": RelationTerm(relation_heads=8)}, student, teacher)  # 32, 48 / 8
    with pytest.raises(ConfigError, match=r"relation_heads=4: .*student's hidden size 30 is "
                                          r"not divisible"):
        check_terms({"relation": RelationTerm()}, _bert(2, 30, 2), teacher)  # teacher's 4
    with pytest.raises(ConfigError, match=r"relation_heads=5: the student's hidden size 32"):
        check_terms({"relation": RelationTerm(relation_heads=5)}, student, teacher)
    with pytest.raises(ConfigError, match="compares heads one to one"):
        check_terms({"attention": AttentionTerm()}, student, teacher)
    with pytest.raises(ConfigError, match="maps to the embeddings"):
        check_terms({"attention": AttentionTerm(mapping=(0, 0))}, _bert(2, 32, 4), teacher)
    with pytest.raises(ConfigError, match=r"distill.terms.hidden: explicit layer mapping"):
        check_terms({"hidden": HiddenTerm(mapping=(1, 2, 3))}, student, teacher)


@pytest.mark.parametrize("overrides,message", [
    (["distill=tinybert", "+distill.terms.hidden.wieght=2"], "unknown option 'wieght'"),
    (["distill=tinybert", "distill.terms.hidden.projection=per_layr"], "per_layr"),
    (["distill=tinybert", "distill.terms.attention.kind=mxe"], "attention.kind='mxe'"),
    (["distill=minilm", "distill.terms.relation.relation_heads=5"],
     "hidden size 32 is not divisible"),
    (["distill=pkd", "distill.terms.patient.mapping=[1,2,3]"], "explicit layer mapping"),
])
def test_bad_terms_fail_before_weights(make_cfg, tmp_path, no_weights, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*TINY_PAIR, *overrides))
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_tinybert_4l_from_a_6_layer_teacher_validates():
    """Issue 20's pair (``distill=tinybert student=tinybert_4l`` from MiniLM-L6, 6 x 384, 12
    heads) stopped on "6 layers must be a multiple of 4"; now layers 1.5, 3, 4.5, 6 round to
    2, 3, 5, 6 for both mapped terms, with one shared 312 -> 384 projection."""
    from litdistill.intermediate import IntermediateTerms

    objective = instantiate(OmegaConf.load(Path(CONF_DIR, "distill", "tinybert.yaml")))
    student, teacher = _bert(4, 312, 12), _bert(6, 384, 12)
    check_terms(objective.terms, student, teacher)
    terms = IntermediateTerms(objective.terms, student, teacher)
    assert terms.maps == {"hidden": [(1, 2), (2, 3), (3, 5), (4, 6)],
                          "attention": [(1, 2), (2, 3), (3, 5), (4, 6)]}
    assert list(terms.proj) == ["shared"] and terms.proj["shared"].weight.shape == (384, 312)
