import json
import math
import os

import numpy as np
import pytest
import torch

from lablib.core import checks, results


def _claims(text: str = ""):
    results.claim("student keeps the teacher's accuracy", 0.9612, holds=True, condition=">= 0.95",
                  source="92 % (article)")
    results.claim("sparse model faster", 1.1, holds=False, condition="speed-up >= 1.25", asserted=False)


def test_claim_prints_verdict_and_source(capsys, monkeypatch):
    monkeypatch.setenv("LAB_SCALE", "cpu")
    assert results.claim("a", 0.97, holds=True, condition=">= 0.95", source="92 %")
    assert not results.claim("b", 0.5, holds=False, condition=">= 0.9")
    results.claim("c", 1.1, holds=False, condition=">= 1.25", asserted=False)
    out = capsys.readouterr().out
    assert "[✓] a: 0.97 (>= 0.95: holds)" in out and "source: 92 %" in out
    assert "[✗] b: 0.5 (>= 0.9: does NOT hold)" in out
    assert "[~] c" in out and "not asserted" in out


def test_claim_at_smoke_is_not_asserted(capsys):
    results.claim("a", 0.1, holds=False, condition=">= 0.9")
    assert "[·]" in capsys.readouterr().out
    results.record(lab="01_demo")  # a failed claim does not fail a smoke run


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"name": ""}, ValueError, "name"),
        ({"measured": math.nan}, ValueError, "finite"),
        ({"measured": [1]}, TypeError, "must be a number"),
        ({"holds": 1}, TypeError, "holds must be a bool"),
        ({"holds": None}, TypeError, "holds must be a bool"),
        ({"condition": 3}, TypeError, "condition"),
    ],
)
def test_claim_rejects_bad_input(kwargs, error, word):
    args = {"name": "x", "measured": 1.0, "holds": True, "condition": ">= 1"} | kwargs
    with pytest.raises(error, match=word):
        results.claim(args.pop("name"), args.pop("measured"), **args)


def test_claim_accepts_numpy_and_torch(capsys):
    assert results.claim("x", np.float32(0.5), holds=np.bool_(True), condition=">= 0")
    assert results.claim("y", torch.tensor(2.0), holds=torch.tensor(2.0) > 1, condition="> 1")
    assert results.CLAIMS["y"].measured == 2.0


def test_record_writes_claims_metrics_verdicts_and_env(_isolated, monkeypatch):
    monkeypatch.setenv("LAB_SCALE", "cpu")
    _claims()
    checks.VERDICTS["my_fn"] = checks.CORRECT
    assert results.record({"params": 12_345, "ok": True, "a": np.float32(0.5)}, lab="01_demo") is None  # nothing to echo in a notebook
    path = _isolated / "results" / "01_demo.cpu.json"
    entry = json.loads(path.read_text())
    assert entry["metrics"] == {"params": 12345, "ok": True, "a": 0.5}
    assert [c["name"] for c in entry["claims"]] == ["student keeps the teacher's accuracy", "sparse model faster"]
    assert entry["claims"][0]["measured"] == 0.9612 and entry["claims"][1]["asserted"] is False
    assert entry["exercises"] == {"my_fn": "correct"} and entry["solutions_mode"] is False
    assert entry["env"]["scale"] == "cpu" and "torch" in entry["env"]["versions"]
    assert [p.name for p in path.parent.iterdir()] == ["01_demo.cpu.json"]  # no temporary file left


def test_record_fails_the_run_on_an_asserted_claim_at_cpu(_isolated, monkeypatch):
    monkeypatch.setenv("LAB_SCALE", "cpu")
    results.claim("accuracy", 0.5, holds=False, condition=">= 0.9")
    with pytest.raises(results.ClaimFailed, match="accuracy: 0.5 fails >= 0.9"):
        results.record({"x": 1}, lab="01_demo")
    assert (_isolated / "results" / "01_demo.cpu.json").is_file()  # recorded before failing


def test_record_takes_the_lab_name_from_the_notebook(_isolated, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", str(_isolated / "labs" / "03_topic.ipynb"))
    results.record({"x": 1})
    assert (_isolated / "results" / "03_topic.smoke.json").is_file()


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"lab": "demo"}, ValueError, "NN_snake_case"),
        ({"metrics": {}}, ValueError, "nothing to record"),
        ({"metrics": [1]}, TypeError, "dict"),
        ({"metrics": {"a": math.nan}}, ValueError, "finite"),
        ({"metrics": {"a": [1]}}, TypeError, "'a' must be"),
        ({"metrics": {3: 1}}, ValueError, "non-empty strings"),
        ({"notes": 123}, TypeError, "notes"),
        ({"scale": "huge"}, ValueError, "scale"),
    ],
)
def test_record_rejects_bad_input(kwargs, error, word):
    args = {"lab": "01_demo", "metrics": {"a": 1.0}} | kwargs
    with pytest.raises(error, match=word):
        results.record(args.pop("metrics"), **args)


def test_record_without_a_notebook_says_how_to_name_the_lab():
    with pytest.raises(RuntimeError, match="LAB_NAME"):
        results.record({"a": 1})


def test_render_shows_claims_and_figures_and_marks_missing(_isolated, monkeypatch):
    monkeypatch.setenv("LAB_SCALE", "cpu")
    (_isolated / "labs" / "01_demo.py").write_text("")
    (_isolated / "labs" / "02_other.py").write_text("")
    _claims()
    results.record({"teacher params": 230_000, "img/s": 12170.4, "ms": 1.2416}, lab="01_demo")
    text = results.render(["cpu"])
    assert "| student keeps the teacher's accuracy | 0.961 | >= 0.95 | holds | 92 % (article) |" in text
    assert "| sparse model faster | 1.1 | speed-up >= 1.25 | does not hold (not asserted) | — |" in text
    assert "| teacher params | 230,000 |" in text
    assert "| img/s | 12,170 |" in text and "| ms | 1.242 |" in text
    assert "### 02_other" in text and "_Not run at this scale yet._" in text


def test_main_writes_report_and_require_all_fails_on_missing(_isolated, capsys):
    (_isolated / "labs" / "01_demo.py").write_text("")
    (_isolated / "labs" / "02_other.py").write_text("")
    results.record({"a": 1.0}, lab="01_demo", scale="cpu")
    assert results.main(["--scale", "cpu"]) == 0
    assert (_isolated / "docs" / "results.md").read_text().startswith("# Results")
    assert results.main(["--scale", "cpu", "--require-all"]) == 1
    assert "02_other (cpu)" in capsys.readouterr().err
    results.record({"b": 2.0}, lab="02_other", scale="cpu")
    assert results.main(["--scale", "cpu", "--require-all"]) == 0


def test_folder_labs_count_as_labs(_isolated):
    folder = _isolated / "labs" / "15_distributed"
    folder.mkdir()
    (folder / "15_distributed.py").write_text("")
    (folder / "worker.py").write_text("")
    (_isolated / "labs" / "01_demo.py").write_text("")
    assert results.lab_names() == ["01_demo", "15_distributed"]


def test_exercise_report_of_a_solutions_run(_isolated, monkeypatch, capsys):
    (_isolated / "labs" / "00_setup.py").write_text("")
    (_isolated / "labs" / "01_demo.py").write_text("")
    monkeypatch.setenv("LAB_SOLUTIONS", "1")
    monkeypatch.setattr(checks, "VERDICTS", {"ex1": "correct"})
    results.record({"a": 1}, lab="00_setup")
    monkeypatch.setattr(checks, "VERDICTS", {"ex1": "correct", "ex2": "not attempted"})
    results.record({"a": 1}, lab="01_demo")
    assert results.main(["--scale", "smoke", "--exercises", "2", "--exempt", "00_setup"]) == 1
    assert "01_demo: ex2 is not attempted" in capsys.readouterr().err
    monkeypatch.setattr(checks, "VERDICTS", {"ex1": "correct", "ex2": "correct"})
    results.record({"a": 1}, lab="01_demo")
    assert results.main(["--scale", "smoke", "--exercises", "2", "--exempt", "00_setup"]) == 0
    assert results.main(["--scale", "smoke", "--exercises", "2"]) == 1  # 00_setup has only one


def test_a_corrupt_record_names_its_file(_isolated):
    (_isolated / "results").mkdir()
    (_isolated / "results" / "01_demo.cpu.json").write_text("{not json")
    with pytest.raises(ValueError, match="01_demo.cpu.json is not a lab record"):
        results.load_records("cpu")


# --- bad input and hostile results files ---------------------------------------------------------

RECORD = {"lab": "01_demo", "scale": "cpu", "claims": [], "metrics": {"m": 1.0}, "exercises": {},
          "notes": "", "wall_s": 1.0, "env": {"date": "2026-01-01", "device": "cpu", "versions": {}}}


@pytest.mark.parametrize("content", [
    b'{"lab": "01_', b"", b"\xff\xfe\x00", b"[1, 2]", b"{}",
    *(json.dumps(RECORD | change).encode() for change in (
        {"lab": 5}, {"notes": 123}, {"wall_s": "x"}, {"claims": [{"name": "c"}]}, {"metrics": [1]},
        {"metrics": {"m": None}}, {"env": {}})),
])
def test_a_spoiled_record_names_its_file(_isolated, content):
    (_isolated / "results").mkdir()
    (_isolated / "results" / "01_demo.cpu.json").write_bytes(content)
    for call in (lambda: results.load_records("cpu"), lambda: results.render(["cpu"]),
                 lambda: results.main(["--scale", "cpu", "--out", str(_isolated / "out.md")])):
        with pytest.raises(ValueError, match="01_demo.cpu.json is not a lab record"):
            call()
    assert not (_isolated / "out.md").exists()


def test_a_valid_record_still_loads(_isolated):
    (_isolated / "results").mkdir()
    (_isolated / "results" / "01_demo.cpu.json").write_text(json.dumps(RECORD))
    assert results.load_records("cpu") == {"01_demo": RECORD}


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir])
def test_a_record_that_is_not_a_regular_file_is_refused_without_reading(_isolated, make):
    (_isolated / "results").mkdir()
    make(_isolated / "results" / "01_demo.cpu.json")  # a FIFO would block a read forever
    with pytest.raises(ValueError, match="01_demo.cpu.json is not a lab record"):
        results.load_records("cpu")


@pytest.mark.parametrize("call, error, word", [
    (lambda d: results.claim("x", torch.tensor([1.0, 2.0]), holds=True, condition=""), TypeError, "must be a number"),
    (lambda d: results.claim("x", 1.0, holds=True, condition="", asserted="no"), TypeError, "asserted"),
    (lambda d: results.load_records("big"), ValueError, "scale"),
    (lambda d: results.load_records(None), ValueError, "scale"),
    (lambda d: results.load_records("cpu", d / "nope"), ValueError, "folder"),
    (lambda d: results.load_records("cpu", d / "file.txt"), ValueError, "folder"),
    (lambda d: results.load_records("cpu", 123), TypeError, "folder"),
    (lambda d: results.render("cpu"), TypeError, "scales"),
    (lambda d: results.render(None), TypeError, "scales"),
    (lambda d: results.exercise_problems("cpu", -1), ValueError, "minimum"),
    (lambda d: results.exercise_problems("cpu", "3"), TypeError, "minimum"),
    (lambda d: results.fmt(None), TypeError, "value"),
    (lambda d: results.fmt([1, 2]), TypeError, "value"),
    (lambda d: results.lab_names(d / "nope"), ValueError, "labs_dir"),
])
def test_results_rejects_bad_arguments(_isolated, call, error, word):
    (_isolated / "file.txt").write_text("")
    with pytest.raises(error, match=word):
        call(_isolated)
    assert not results.CLAIMS


def test_record_names_a_bad_lab_name_variable(monkeypatch):
    monkeypatch.setenv("LAB_NAME", "lab")
    with pytest.raises(ValueError, match="LAB_NAME='lab'"):
        results.record({"a": 1})


def test_fmt_takes_numpy_numbers():
    assert results.fmt(np.float32(0.5)) == "0.5" and results.fmt(np.float64(12345.6)) == "12,346"


def test_mean_sd_of_seeds():
    from lablib.core import results as r

    assert r.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert r.mean_sd(x for x in (4.0,)) == (4.0, 0.0)  # a generator, one value: sd 0
    assert r.mean_sd(torch.tensor([0.5, 1.5])) == (1.0, pytest.approx(0.7071067811865476))
    with pytest.raises(ValueError, match="values"):
        r.mean_sd([])
    with pytest.raises(TypeError, match="values"):
        r.mean_sd(["a"])
