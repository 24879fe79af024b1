from qresafe_exp.evals.degeneration import degeneration_signals
from qresafe_exp.schema import DegenerationConfig

CFG = DegenerationConfig()


def test_fluent_answer_is_not_degenerate():
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    assert not degeneration_signals(text, CFG)["degenerate"]


def test_loops_are_degenerate():
    text = "I am going to the store " * 20
    signals = degeneration_signals(text, CFG)
    assert signals["degenerate"] and "repetition" in signals["reasons"]


def test_symbol_soup_and_empty_are_degenerate():
    assert "non_words" in degeneration_signals("#$%^ 1234 ((( ))) ;;; 9876 @@ !! 0000", CFG)["reasons"]
    assert "empty" in degeneration_signals("   ", CFG)["reasons"]
