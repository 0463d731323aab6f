"""``descend evaluate RUN --data X`` on labels that are not the run's classes — text at training and numbers now, the
reverse, labels the run never saw, or another task — is refused with one message, never scored as 0."""

import numpy as np
import pytest
from sklearn.datasets import load_iris

from descend import config as cfg
from descend.cli import main
from descend.errors import UserError
from descend.runs import execute
from descend.runs.loaded import load_run

NAMES = np.array(["setosa", "versicolor", "virginica"])


def _csv(path, x, y, header=("a", "b", "c", "d", "species")):
    rows = [",".join(header)] + [",".join([*(f"{v:.3f}" for v in xi), str(yi)]) for xi, yi in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    x, y = load_iris(return_X_y=True)
    text = _csv(folder / "text.csv", x, NAMES[y])
    numbers = _csv(folder / "numbers.csv", x, y)
    out = {}
    for name, data in (("text", str(text)), ("numbers", str(numbers))):
        config = cfg.validate({"name": name, "data": {"name": data}, "train": {"epochs": 2}})
        execute.run(config, folder / name, quiet=True)
        out[name] = folder / name
    return SimpleRuns(folder, out["text"], out["numbers"], text, numbers, x, y)


class SimpleRuns:
    def __init__(self, folder, text_run, number_run, text_csv, number_csv, x, y):
        self.folder, self.text_run, self.number_run = folder, text_run, number_run
        self.text_csv, self.number_csv, self.x, self.y = text_csv, number_csv, x, y


def test_text_labels_at_training_and_numbers_now_are_refused(runs):
    run = load_run(runs.text_run)
    with pytest.raises(UserError, match="not one of the classes"):
        run.evaluate(runs.number_csv)
    with pytest.raises(UserError, match="are numbers, but .* text labels setosa, versicolor, virginica"):
        run.evaluate("iris")


def test_numbers_at_training_and_text_now_are_refused(runs):
    run = load_run(runs.number_run)
    with pytest.raises(UserError, match="are text, but .* class numbers 0..2"):
        run.evaluate(runs.text_csv)


def test_unseen_labels_are_refused(runs, tmp_path):
    unseen = _csv(tmp_path / "unseen.csv", runs.x[:10], ["setosa"] * 9 + ["rose"])
    with pytest.raises(UserError, match="'rose' is not one of the classes"):
        load_run(runs.text_run).evaluate(unseen)
    beyond = _csv(tmp_path / "beyond.csv", runs.x[:10], [0] * 9 + [5])
    with pytest.raises(UserError, match="labels must be in \\[0, 2\\]"):
        load_run(runs.number_run).evaluate(beyond)


def test_a_subset_of_the_classes_is_scored_with_the_runs_numbering(runs, tmp_path):
    keep = runs.y > 0  # versicolor and virginica only: sorted alone they would be classes 0 and 1
    part = _csv(tmp_path / "part.csv", runs.x[keep], NAMES[runs.y[keep]])
    run = load_run(runs.text_run)
    expected = float(np.mean(run.predict(runs.x[keep]) == NAMES[runs.y[keep]]))
    assert run.evaluate(part)["test_accuracy"] == pytest.approx(expected)


def test_the_command_line_refuses_with_exit_2(runs, capsys):
    assert main(["evaluate", str(runs.text_run), "--data", "iris"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error:") and "text labels" in err and "Traceback" not in err
