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
        # sparse cells (FairDARTS): `none` leaves an edge out; triples (op, node, input) list the kept edges
        ("Genotype(normal=[('none', 0), ('none', 1), ('sep_conv_3x3', 2), ('skip_connect', 0)], normal_concat=[2, 3], "
         "reduce=[], reduce_concat=[])", "normal[2]: reads state 2, which has no op"),
        ("Genotype(normal=[('none', 0), ('none', 1), ('sep_conv_3x3', 1), ('skip_connect', 0)], normal_concat=[2, 3], "
         "reduce=[], reduce_concat=[])", "normal_concat: state 2 has no op (both its pairs are none)"),
        ("Genotype(normal=[('none', 0), ('none', 1)], normal_concat=[0], reduce=[], reduce_concat=[])",
         "normal: every edge is left out"),
        ("Genotype(normal=[('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 1)], normal_concat=[2])",
         "mixes (op, input) pairs and (op, node, input) triples"),
        ("Genotype(normal=[('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 2, 1), ('skip_connect', 2, 1)], normal_concat=[2])",
         "normal node 2 keeps 3 edges; a DARTS cell takes at most two per node"),
        ("Genotype(normal=[('sep_conv_3x3', 1, 0)], normal_concat=[2])", "normal[0] ('sep_conv_3x3', 1, 0): node 1 out of "
         "range 2..2"),
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
        ("", "genotype text is empty"),  # was an IndexError from the parser's error path
        (" \n\t", "genotype text is empty"),
        ("(", "unexpected character '(' at position 0"),
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



@pytest.mark.parametrize(
    "text,where",
    [
        # forms a Python reader accepts and the genotype does not: each node type outside the whitelist
        (DARTS_V2_TEXT.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', True)", 1), "expected an integer at position 34"),
        (DARTS_V2_TEXT.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0.0)", 1), "expected an integer"),
        (DARTS_V2_TEXT.replace("('sep_conv_3x3', 0)", "(b'sep_conv_3x3', 0)", 1), "expected an op name in quotes"),
        (DARTS_V2_TEXT.replace("('sep_conv_3x3', 0)", "(f'sep_conv_3x3', 0)", 1), "expected an op name in quotes"),
        (DARTS_V2_TEXT.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', -1)", 1), "normal[0]: input -1 out of range"),
        (DARTS_V2_TEXT.replace("Genotype(", "Genotype(*x, ", 1), "key=value arguments only"),
        (DARTS_V2_TEXT.replace("Genotype(", "Genotype(**x, ", 1), "'**' at position 9"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "[c for c in (2, 3, 4, 5)]", 1), "expected a list or range(...)"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "(2, 3, 4, 5)", 1), "expected a list or range(...)"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6, 1)", 1), "expected range(a, b)"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(0, 10**6)", 1), "unexpected character '*'"),
        (DARTS_V2_TEXT.replace("normal=", "normal=[], normal=", 1), "field 'normal' given twice"),
        (DARTS_V2_TEXT + " if True else 0", "expected 'Genotype' at position 0"),
        ("(lambda: 0)()", "expected 'Genotype'"),
        ("Genotype(normal=" + "[" * 300, "too many nested parentheses"),
        ("-" * 99_000 + "1", "nested too deeply"),
        ("Genotype(normal=[('\u00e9', 0)], x=1)", "unknown field 'x' at position 28"),  # positions count characters
        ("Genotype(normal=[('sep_conv_3x3', 0)]\x00)", "null bytes"),
    ],
)
def test_python_forms_outside_the_genotype_grammar_are_rejected(text, where):
    with pytest.raises(ValueError) as info:
        Genotype.parse(text)
    assert where in str(info.value)


def test_layout_freedoms_of_the_text_format_are_accepted():
    g = Genotype.parse(DARTS_V2_TEXT)
    multiline = DARTS_V2_TEXT.replace("Genotype(", "Genotype(\n    # searched on CIFAR-10\n    ").replace("], ", "],\n    ")
    as_lists = DARTS_V2_TEXT.replace("('", "['").replace(")", "]").replace("Genotype[", "Genotype(")[:-1] + ")"
    trailing_commas = DARTS_V2_TEXT.replace("0)", "0,)").replace("])", "],)")
    for text in (multiline, as_lists, trailing_commas):
        assert Genotype.parse(text) == g, text
