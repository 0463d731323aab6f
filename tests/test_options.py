"""The option vocabulary: no coercion, one message template, defaults from signatures, generated docs."""

import math
from pathlib import Path

import pytest

from descend import options as O
from descend.errors import UserError
from descend.options import reference

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(("constraint", "good", "bad"), [
    (O.integer(1), [1, 7], ["1", True, 2.0, 0, None]),
    (O.number(0, 1, closed="left"), [0, 0.5, 0.999], [1, 1.0, -0.1, "0.5", False, math.nan, math.inf]),
    (O.number(0, closed="right"), [1e-9, 3], [0, -1, math.inf]),
    (O.Boolean(), [True, False], [0, 1, "true", None]),
    (O.OneOf("l2", "decoupled"), ["l2"], ["L2", 2, None]),
    (O.Text(max_length=1), [",", ";"], ["", "ab", 3]),
    (O.Patterns(), [["a.*"], ("b",), "c"], [3, ["a", 1]]),
    (O.ListOf(O.integer(1), min_length=1), [[1, 2], (3,)], [[], [0], "12", [1.0]]),
    (O.ListOf(O.number(), length=2, increasing=True), [[0, 1.5]], [[1, 0], [0, 0], [0, 1, 2]]),
    (O.Optional(O.integer(0)), [None, 0], [-1, "0"]),
    (O.Either(O.number(0, 1), O.Boolean()), [0.5, True], ["yes", 2]),
])
def test_constraints_accept_and_refuse_without_coercion(constraint, good, bad):
    for value in good:
        assert constraint.check(value)[0], value
    for value in bad:
        assert not constraint.check(value)[0], value


def test_values_come_back_in_canonical_form():
    assert O.integer().check(3)[1] == 3 and isinstance(O.number().check(3)[1], float)
    assert O.ListOf(O.number()).check((1, 2))[1] == [1.0, 2.0]
    assert O.Patterns().check("x")[1] == ["x"]


@pytest.mark.parametrize(("constraint", "words"), [
    (O.number(0, 1, closed="left"), "a number in [0, 1)"),
    (O.number(0, closed="right"), "a number > 0"),
    (O.integer(2), "an integer >= 2"),
    (O.OneOf("a", "b"), "one of 'a', 'b'"),
    (O.ListOf(O.integer(1), min_length=1), "a non-empty list of integers >= 1"),
    (O.ListOf(O.number(), length=2, increasing=True), "a list of 2 numbers, strictly increasing"),
    (O.Optional(O.integer(1), "none (inferred)"), "an integer >= 1 or none (inferred)"),
])
def test_allowed_reads_as_the_end_of_a_sentence(constraint, words):
    assert constraint.allowed() == words


TABLE = (O.Option("lr", O.number(0), 0.01, "η"), O.Option("mode", O.OneOf("l2", "decoupled"), "l2"),
         O.Option("p", O.number(0, closed="right"), O.REQUIRED))


def test_validate_fills_defaults_and_refuses_with_one_template():
    assert O.validate("thing", TABLE, {"p": 2}) == {"lr": 0.01, "mode": "l2", "p": 2.0}
    with pytest.raises(UserError) as err:
        O.validate("thing", TABLE, {"lr": "0.1", "p": 1})
    assert str(err.value) == "thing: option 'lr' must be a number >= 0; got '0.1'."
    with pytest.raises(UserError) as err:
        O.validate("thing", TABLE, {"rate": 1})
    assert str(err.value) == "thing: unknown option 'rate'; valid options: lr, mode, p."
    with pytest.raises(UserError, match="thing: option 'p' is required: give a number > 0."):
        O.validate("thing", TABLE, {})


def test_declare_takes_the_defaults_from_the_signature_and_checks_every_call():
    @O.declare("f", O.Option("n", O.integer(1), doc="count"), O.Option("mode", O.OneOf("a", "b")))
    def f(x, *, n: int = 3, mode: str = "a"):
        return x, n, mode

    assert [(o.name, o.default) for o in f.options] == [("n", 3), ("mode", "a")]
    assert f("anything") == ("anything", 3, "a")
    with pytest.raises(UserError, match="f: option 'n' must be an integer >= 1; got 0."):
        f(None, n=0)
    with pytest.raises(UserError, match="f: unknown option 'm'; valid options: n, mode."):
        f(None, m="b")
    with pytest.raises(TypeError, match="no parameter 'k'"):
        O.declare("g", O.Option("k", O.integer()))(f)


def test_describe_and_markdown_list_every_option():
    text = O.describe(TABLE, "thing")
    assert text.splitlines()[0] == "thing:" and "a number >= 0" in text and "required" in text
    md = O.markdown([("thing", TABLE)])
    assert "| `mode` | `\"l2\"` | one of 'l2', 'decoupled' |  |" in md


def test_every_part_has_describe():
    import descend

    for text in (descend.optim.describe(), descend.schedules.describe(), descend.regularization.describe(),
                 descend.data.augment.describe(), descend.models.describe(), descend.data.describe(),
                 reference.describe_all()):
        assert text.count("default") >= 5


def test_readme_option_reference_matches_the_tables():
    current = reference.region(README.read_text())
    assert current, f"README.md lost its {reference.START} ... {reference.END} region"
    assert current == reference.reference_markdown(), (
        f"README.md's option reference is out of date with the option tables; run: {reference.COMMAND}")


def test_write_replaces_only_the_region(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{reference.START}\nold\n{reference.END}\nafter\n")
    assert reference.write(readme) is True
    text = readme.read_text()
    assert text.startswith("# x\nbefore\n") and text.endswith("\nafter\n")
    assert reference.region(text) == reference.reference_markdown()
    assert reference.write(readme) is False
