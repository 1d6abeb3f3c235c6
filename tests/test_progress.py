"""results/progress.json: the exercises a learner passed, noted by the checks themselves."""

import json

import pytest

from lablib.core import checks, progress


def _lab(root, name, code):
    (root / "labs" / f"{name}.py").write_text(code, encoding="utf-8")


LAB = '''# %% [markdown]
# # Lab 02 — a lab
# %%
@checks.exercise
def my_step(x):
    raise NotImplementedError

my_tau = checks.answer("my_tau", ...)
'''


def test_a_passed_check_is_remembered_once_with_its_date(_isolated, monkeypatch):
    monkeypatch.setenv("LAB_NAME", "02_distillation")
    assert checks.check_value(0.95, 0.95, name="my_tau", quiet=True)
    checks.check_value(0.5, 0.95, name="my_step", quiet=True)  # wrong: not noted
    data = json.loads(progress.path().read_text())
    assert list(data) == ["02_distillation"] and list(data["02_distillation"]) == ["my_tau"]
    assert progress.remember("02_distillation", "my_tau") is False  # already there: unchanged
    assert progress.remember("02_distillation", "my_step") is True
    assert set(progress.load()["02_distillation"]) == {"my_tau", "my_step"}


def test_the_reference_answers_and_checks_outside_a_lab_are_not_progress(_isolated, monkeypatch):
    checks.check_value(1.0, 1.0, name="my_tau", quiet=True)  # no lab name: nothing to note it in
    monkeypatch.setenv("LAB_NAME", "02_distillation")
    monkeypatch.setenv("LAB_SOLUTIONS", "1")
    checks.check_value(1.0, 1.0, name="my_tau", quiet=True)
    assert not progress.path().exists()


def test_summary_counts_each_labs_exercises(_isolated):
    _lab(_isolated, "02_distillation", LAB)
    _lab(_isolated, "03_pruning", "# %%\nx = 1\n")  # no exercises: no row
    assert progress.exercise_names(LAB) == ["my_step", "my_tau"]
    assert progress.summary() == [{"lab": "02_distillation", "passed": "0/2", "left": "my_step, my_tau"}]
    progress.remember("02_distillation", "my_tau")
    assert progress.summary()[0] == {"lab": "02_distillation", "passed": "1/2", "left": "my_step"}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"../x": {"a": "b"}, "02_x": 3}'])
def test_a_damaged_file_counts_as_no_progress_and_is_rewritten(_isolated, content):
    progress.path().parent.mkdir(parents=True, exist_ok=True)
    progress.path().write_text(content)
    assert progress.load() == {}
    assert progress.remember("02_distillation", "my_tau")
    assert progress.load() == {"02_distillation": {"my_tau": progress.load()["02_distillation"]["my_tau"]}}


def test_bad_names_are_refused(_isolated):
    with pytest.raises(ValueError, match="lab"):
        progress.remember("distillation", "my_tau")
    with pytest.raises(TypeError, match="exercise"):
        progress.remember("02_distillation", "")
    with pytest.raises(TypeError, match="lab"):
        progress.remember(None, "my_tau")


def test_the_command_prints_the_table(_isolated, capsys):
    _lab(_isolated, "02_distillation", LAB)
    progress.remember("02_distillation", "my_step")
    assert progress.main([]) == 0
    out = capsys.readouterr().out
    assert "02_distillation" in out and "1/2" in out and "my_tau" in out and "1 passed" in out


def test_the_command_says_so_when_there_are_no_labs(_isolated, capsys):
    assert progress.main([]) == 0
    assert "no lab with exercises found" in capsys.readouterr().out
