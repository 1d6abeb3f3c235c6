import json
import math

import pytest

from lablib.core import cache, results


def test_record_writes_stamped_json(_isolated):
    results.record("01_demo", {"acc": 0.9612, "params": 12_345, "ok": True},
                   claims={"acc": "92 % (article)"}, scale="cpu")
    path = _isolated / "results" / "01_demo.cpu.json"
    entry = json.loads(path.read_text())
    assert entry["metrics"] == {"acc": 0.9612, "params": 12345, "ok": True}
    assert entry["claims"] == {"acc": "92 % (article)"}
    assert entry["env"]["scale"] == "cpu" and "torch" in entry["env"]["versions"]
    assert entry["wall_s"] >= 0
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed away


def test_record_converts_numpy_and_torch_scalars(_isolated):
    import numpy as np
    import torch

    results.record("02_demo", {"a": np.float32(0.5), "b": torch.tensor(2.0)}, scale="cpu")
    path = _isolated / "results" / "02_demo.cpu.json"
    assert json.loads(path.read_text())["metrics"] == {"a": 0.5, "b": 2.0}


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"lab": "demo"}, ValueError, "NN_snake_case"),
        ({"metrics": {}}, ValueError, "non-empty"),
        ({"metrics": {"a": math.nan}}, ValueError, "finite"),
        ({"metrics": {"a": [1]}}, TypeError, "'a' must be"),
        ({"claims": {"b": "x"}}, ValueError, r"\['b'\]"),
        ({"scale": "huge"}, ValueError, "scale"),
    ],
)
def test_record_rejects_bad_input(kwargs, error, word):
    args = {"lab": "01_demo", "metrics": {"a": 1.0}} | kwargs
    with pytest.raises(error, match=word):
        results.record(args.pop("lab"), args.pop("metrics"), **args)


def test_render_puts_claim_beside_measured_and_marks_missing(_isolated):
    (_isolated / "labs" / "01_demo.py").write_text("")
    (_isolated / "labs" / "02_other.py").write_text("")
    results.record("01_demo", {"student acc": 0.9312, "teacher params": 230_000, "img/s": 12170.4, "ms": 1.2416},
                   claims={"student acc": "92 %"}, scale="cpu")
    text = results.render(["cpu"])
    assert "| student acc | 0.931 | 92 % |" in text
    assert "| teacher params | 230,000 | — |" in text
    assert "| img/s | 12,170 | — |" in text and "| ms | 1.242 | — |" in text
    assert "### 02_other" in text and "_Not run at this scale yet._" in text


def test_main_writes_report_and_require_all_fails_on_missing(_isolated, capsys):
    (_isolated / "labs" / "01_demo.py").write_text("")
    (_isolated / "labs" / "02_other.py").write_text("")
    results.record("01_demo", {"a": 1.0}, scale="cpu")
    assert results.main(["--scale", "cpu"]) == 0
    assert (_isolated / "docs" / "results.md").read_text().startswith("# Results")
    assert results.main(["--scale", "cpu", "--require-all"]) == 1
    assert "02_other (cpu)" in capsys.readouterr().err
    results.record("02_other", {"b": 2.0}, scale="cpu")
    assert results.main(["--scale", "cpu", "--require-all"]) == 0


def test_write_atomic_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out" / "x.json"
    cache.write_atomic(target, "old")
    with pytest.raises(TypeError):
        cache.write_atomic(target, 3)  # not text: fails while writing
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temporary file left behind
