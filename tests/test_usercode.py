"""The user's own code named by reference: parsed before import, imported with every failure one UserError,
keyword arguments checked against the factory's signature, and consent before a run directory imports code."""

import sys

import pytest
from torch import nn

from descend import usercode
from descend.errors import UserError

FACTORY = """
from torch import nn

def net(input_shape, num_outputs, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))

class Net(nn.Module):
    def __init__(self, num_outputs, *, width):
        super().__init__()
        self.head = nn.LazyLinear(num_outputs)

    def forward(self, x):
        return self.head(x)

NOT_CALLABLE = 3
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mymodels.py").write_text(FACTORY)
    (tmp_path / "broken.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    (tmp_path / "uses_sibling.py").write_text("from mymodels import net\n")
    return tmp_path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pkg.mod:factory", True),
        ("models/net.py:build", True),
        ("a.b:Class.create", True),
        ("mlp", False),
        ("data.csv", False),
        ("pkg.mod:", False),
        (":x", False),
        ("pkg:1x", False),
        (3, False),
        ("a:" + "b" * 2000, False),
    ],
)
def test_a_reference_is_recognised_by_its_form(text, expected):
    assert usercode.is_reference(text) is expected


def test_a_file_reference_is_read_from_the_recipe_folder(project, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    fn = usercode.load("mymodels.py:net", base=project, what="model")
    assert isinstance(fn((1, 4), 3), nn.Sequential)
    # the same file imported twice is one module: its classes compare equal
    assert usercode.load("mymodels.py:Net", base=project) is usercode.load("mymodels.py:Net", base=project)


def test_a_module_reference_finds_modules_beside_the_recipe_and_leaves_sys_path_as_it_was(project):
    before = list(sys.path)
    try:
        assert usercode.load("mymodels:net", base=project).__name__ == "net"
        assert usercode.load("uses_sibling.py:net", base=project).__name__ == "net"
    finally:
        sys.modules.pop("mymodels", None)
    assert sys.path == before


@pytest.mark.parametrize(
    "text, words",
    [
        ("missing.py:net", ["no file", "recipe's folder"]),
        ("no_such_module_here:net", ["no module named 'no_such_module_here'", "PYTHONPATH"]),
        ("broken.py:net", ["broken.py:2", "RuntimeError: boom"]),
        ("mymodels.py:absent", ["has no 'absent'", "net"]),
        ("mymodels.py:NOT_CALLABLE", ["is a int, not a function"]),
        ("my models!:net", ["neither a dotted module name nor a .py file"]),
        ("mlp", ["not a code reference"]),
    ],
)
def test_every_failure_is_one_user_error_naming_the_reference(project, text, words):
    with pytest.raises(UserError) as error:
        usercode.load(text, base=project, what="[model] name")
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_keyword_arguments_are_checked_against_the_signature():
    def net(input_shape, num_outputs, hidden=8):
        return None

    provided = {"input_shape": (4,), "num_outputs": 3, "num_classes": 3}
    assert usercode.call_kwargs(net, {"hidden": 16}, provided, what="f") == {
        "input_shape": (4,),
        "num_outputs": 3,
        "hidden": 16,
    }
    with pytest.raises(UserError, match="takes no argument 'hiden' \\(it takes input_shape, num_outputs, hidden\\)"):
        usercode.call_kwargs(net, {"hiden": 16}, provided, what="f")

    def wide(*, width, **rest):
        return None

    assert usercode.call_kwargs(wide, {"width": 2}, {"num_outputs": 3}, what="f") == {"num_outputs": 3, "width": 2}
    with pytest.raises(UserError, match="needs argument 'width'"):
        usercode.call_kwargs(wide, {}, {"num_outputs": 3}, what="f")


def test_a_class_is_a_factory_too(project):
    cls = usercode.load("mymodels.py:Net", base=project)
    kwargs = usercode.call_kwargs(cls, {"width": 4}, {"input_shape": (4,), "num_outputs": 2}, what="Net")
    assert kwargs == {"num_outputs": 2, "width": 4}
    assert isinstance(cls(**kwargs), nn.Module)


def test_consent_is_needed_before_a_run_directory_imports_code():
    usercode.consent("pkg.mod:net", allow=True, what="model", where="run 'runs/a'")
    with pytest.raises(UserError) as error:
        usercode.consent("models/net.py:build", allow=False, what="model", where="run 'runs/a'")
    assert "file 'models/net.py'" in str(error.value) and "--allow-code" in str(error.value)
