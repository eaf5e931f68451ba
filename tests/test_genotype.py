"""Genotype text/JSON round trips and hostile input (cell pictures: test_viz.py)."""

import pytest

from darts_lite import Genotype

DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def test_text_and_json_round_trip():
    g = Genotype.parse(DARTS_V2_TEXT)
    assert g.to_text() == DARTS_V2_TEXT
    assert Genotype.parse(g.to_json()) == g and Genotype.from_dict(g.to_dict()) == g
    old = Genotype.parse(DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)"))
    assert old == g
    assert g.normal[7] == ("dil_conv_3x3", 2) and g.reduce_concat == (2, 3, 4, 5)


@pytest.mark.parametrize(
    "text,where",
    [
        ("__import__('os').system('touch {marker}')", "unexpected character '.'"),
        ("Genotype(normal=open('{marker}', 'w'))", "expected a list or range(...) at position 16, got 'open'"),
        (DARTS_V2_TEXT.replace("'sep_conv_3x3', 0", "'conv_9x9', 0", 1), "normal[0]: unknown op 'conv_9x9'"),
        (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 7)"), "normal[7]: input 7 out of range"),
        (DARTS_V2_TEXT.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('skip_connect', 0)"), "normal: expected"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "[2, 3, 4, 5+1]", 1), "unexpected character '+'"),
        (DARTS_V2_TEXT + "; import os", "unexpected character ';'"),
        ("Genotype(normal=[('sep_conv_3x3', 0)], evil=1)", "unknown field 'evil'"),
        ("{\"normal\": 5}", "normal: expected a list"),
        ("garbage", "expected 'Genotype'"),
        (DARTS_V2_TEXT.replace("], normal_concat", "] normal_concat"), "expected ',' or ')' at position"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "[2, 2, 4, 5]", 1), "normal_concat: a state is listed twice"),
        ("{\"normal\": [[\"sep_conv_3x3\", 0], [\"sep_conv_3x3\", 1]], \"normal_concat\": 5}",
         "normal_concat: expected a list of state indices"),
        ("{\"normal\": [[\"sep_conv_3x3\", 0], [\"sep_conv_3x3\", 1]], \"reduce\": [], \"fixed_reduction\": false}",
         "reduce: empty, but fixed_reduction is false"),
        ("{\"normal\": [[\"sep_conv_3x3\", 0], [\"sep_conv_3x3\", 1]], \"fixed_reduction\": \"false\"}",
         "fixed_reduction: expected true or false"),
        ("{\"normal\": " + "[" * 5000 + "]" * 5000 + "}", "genotype JSON is malformed"),
        (DARTS_V2_TEXT + " " * 200_000, "characters long"),
    ],
)
def test_malformed_or_hostile_text_raises_value_error(text, where, tmp_path):
    marker = tmp_path / "executed"
    with pytest.raises(ValueError) as info:
        Genotype.parse(text.replace("{marker}", str(marker)))
    assert where in str(info.value)
    assert not marker.exists()


def test_fixed_reduction_genotype():
    g = Genotype(normal=Genotype.parse(DARTS_V2_TEXT).normal, fixed_reduction=True)
    assert Genotype.parse(g.to_text()) == g and Genotype.parse(g.to_json()) == g
    assert "reduce=[]" in g.to_text()

