"""The option contract, generated from every declared option table: a value of the wrong type, a value out of
range and an unknown option name each give one UserError naming the part, the option and the value."""

import pytest
from pydantic import BaseModel

from descend.config import Config
from descend.errors import UserError
from descend.options import REQUIRED, reference, refusal

PARTS = reference.parts()


def _cases():
    for part in PARTS:
        for option in part.table:
            constraint = option.constraint
            yield pytest.param(part, option, constraint.wrong_type(), id=f"{part.name}-{option.name}-type")
            bad = constraint.out_of_range()
            if bad is not None:
                yield pytest.param(part, option, bad, id=f"{part.name}-{option.name}-range")


@pytest.mark.parametrize(("part", "option", "value"), list(_cases()))
def test_a_bad_value_gives_the_one_message(part, option, value):
    assert not option.constraint.check(value)[0]
    with pytest.raises(UserError) as err:
        part.build(**{option.name: value})
    assert str(err.value) == refusal(part.where, option.name, option.allowed(), value)
    assert part.where in str(err.value) and repr(option.name) in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize("part", [p for p in PARTS if p.closed], ids=lambda p: p.name)
def test_an_unknown_option_is_refused_listing_the_valid_ones(part):
    with pytest.raises(UserError) as err:
        part.build(no_such_option=1)
    valid = ", ".join(o.name for o in part.table) or "none"
    assert str(err.value) == f"{part.where}: unknown option 'no_such_option'; valid options: {valid}."


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.name)
def test_every_default_passes_its_own_check(part):
    for option in part.table:
        if option.default is not REQUIRED:
            default = list(option.default) if isinstance(option.default, tuple) else option.default
            assert option.check(part.where, option.default) == default, option.name  # tuples become lists


@pytest.mark.parametrize("part", [p for p in PARTS if p.section and p.closed], ids=lambda p: p.name)
def test_every_recipe_part_builds_from_its_defaults(part):
    required = [o.name for o in part.table if o.default is REQUIRED]
    if required:
        with pytest.raises(UserError, match=f"option {required[0]!r} is required"):
            part.build()
    else:
        part.build(**part.needs)


def test_every_recipe_section_is_in_the_reference():
    sections = {name for name, field in Config.model_fields.items() if isinstance(field.annotation, type) and
                issubclass(field.annotation, BaseModel) or any(isinstance(a, type) and issubclass(a, BaseModel)
                                                               for a in getattr(field.annotation, "__args__", ()))}
    assert sections == {"data", "model", "train", "optimizer", "schedule", "regularization", "augment",
                        "early_stopping", "averaging", "ensemble", "transfer", "tracking"}
    assert {p.section for p in PARTS} - {None, ""} == sections  # "": the top level (name, seed)
    text = reference.reference_markdown()
    assert all(f"<code>[{name}]</code>" in text for name in sections)


@pytest.mark.parametrize("section", ["train", "early_stopping", "tracking"])
def test_every_field_of_a_table_section_is_in_the_reference(section):
    fields = set(Config.model_fields[section].annotation.__args__[0].model_fields if section != "train"
                 else Config.model_fields[section].annotation.model_fields)
    assert fields == {o.name for p in PARTS if p.section == section for o in p.table}
