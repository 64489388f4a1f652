"""The whole-protocol driver: its commands are ones rcmseg accepts, its page comes from real reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.cli import build_parser, main
from tests.worker.evaluation.test_protocol import dataset, one_thread  # noqa: F401  (fixtures)
from worker.evaluation import full_protocol
from worker.evaluation.full_protocol import Step, check_phantoms, plan
from worker.evaluation.report import benchmark_markdown


def test_every_step_is_a_command_rcmseg_accepts_and_the_sweep_is_the_paper_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--root", str(tmp_path / "p"), "--device", "cuda", "--difficulty", "harder"]
    steps = plan(full_protocol.build_parser().parse_args(argv))
    assert [s.name for s in steps] == ["phantoms", "weak-labels", "train", "validation sweep", "test table 2"]
    parser = build_parser()
    parsed = {s.name: parser.parse_args(s.argv[1:]) for s in steps}
    assert all(s.argv[0] == "rcmseg" for s in steps)
    assert parsed["phantoms"].difficulty == "harder" and parsed["phantoms"].count == 60
    assert parsed["train"].resume and parsed["train"].out == tmp_path / "p" / "phantom-b2"
    val, test = parsed["validation sweep"], parsed["test table 2"]
    defaults = build_parser().parse_args(["evaluate", "--model", "m", "--mosaics", "d", "--out", "o"])
    for sweep in (val, test):
        assert sweep.steps == [25, 50, 100] and sweep.sigmas == defaults.sigmas  # none, 1, 2.5, 5 ... 10
        assert sweep.cams == ["cam", "scorecam"] and sweep.scorecam_top_k == 8 and sweep.device == "cuda"
        assert Path(sweep.model) == tmp_path / "p" / "phantom-b2"  # never the shipped model
    assert val.split == "val" and val.write_defaults and val.choose_defaults
    assert test.split == "test" and test.mode == "both" and not test.write_defaults and test.bootstrap == 1000
    assert full_protocol.main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "rcmseg evaluate" in printed and "--steps 25 50 100" in printed
    assert not (tmp_path / "p").exists()  # a dry run writes nothing
    cam_only = full_protocol.build_parser().parse_args([*argv, "--cams", "cam"])
    for step in plan(cam_only)[3:]:  # the CAM rows alone, which the card's rule chooses from
        sweep = parser.parse_args(step.argv[1:])
        assert sweep.cams == ["cam"] and sweep.scorecam_top_k is None, step.name
    assert full_protocol.rerun_command(cam_only)[-2:] == ["--cams", "cam"]
    assert "--cams" not in full_protocol.rerun_command(full_protocol.build_parser().parse_args(argv))
    fewer = full_protocol.build_parser().parse_args([*argv, "--scorecam-steps", "50", "100"])
    for step in plan(fewer)[3:]:  # ScoreCAM rows at the steps given, CAM rows at all three
        sweep = parser.parse_args(step.argv[1:])
        assert sweep.steps == [25, 50, 100] and sweep.scorecam_steps == [50, 100], step.name
    assert full_protocol.rerun_command(fewer)[-3:] == ["--scorecam-steps", "50", "100"]


def test_a_training_step_is_done_only_when_the_card_holds_test_metrics(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    step = Step("train", ["rcmseg", "train"], card)
    assert not step.finished()
    card.write_text(json.dumps({"metrics": {"best_epoch": 2, "val": {}}}))
    assert not step.finished()  # the best epoch so far: training was stopped
    card.write_text(json.dumps({"metrics": {"best_epoch": 2, "val": {}, "test": {}}}))
    assert step.finished()


def test_phantoms_of_another_difficulty_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "phantoms"
    check_phantoms(folder, "hard")  # nothing drawn yet
    assert main(["phantom", "--out", str(folder), "--count", "1", "--max-side-um", "500"]) == 0
    check_phantoms(folder, "default")
    with pytest.raises(SystemExit, match="choose another --root"):
        check_phantoms(folder, "hard")


def test_the_benchmark_page_comes_from_the_two_reports(
    dataset: Path,  # noqa: F811
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    root = tmp_path / "p"
    model = root / "phantom-b2"
    shutil.copytree(tiny_model_dir, model)
    common = ["evaluate", "--model", str(model), "--mosaics", str(dataset), "--cams", "cam",
              "--steps", "64", "128", "--sigmas", "none", "2", "--bootstrap", "10", "--no-panels",
              "--device", "cpu"]  # fmt: skip
    assert main([*common, "--split", "val", "--out", str(root / "eval-val"), "--write-defaults"]) == 0
    assert main([*common, "--split", "test", "--out", str(root / "eval-test"), "--choose-defaults"]) == 0
    page = benchmark_markdown(root, command="python -m worker.evaluation.full_protocol", difficulty="hard")
    val = json.loads((root / "eval-val" / "report.json").read_text())
    test = json.loads((root / "eval-test" / "report.json").read_text())
    assert val["chosen_defaults"]["label"] in page and val["chosen_defaults"]["run"] in page
    assert f"| {test['patch_level']['auc']:.3f} |" in page
    assert "Step size: 64" in page and "Step size: 128" in page  # both tables, as evaluate wrote them
    assert page.count("| Run (step px, sigma x 32 px) |") == 2
    for key in test["timings"]["per_pass"]:
        assert f"| {key} |" in page
    met = 0.92 <= test["patch_level"]["auc"] <= 0.97
    assert ("NOT met" in page) == (not met)
    # the paper's questions: each side the validation's first of its kind, the difference on test
    section = page[page.index("## What the test split says") : page.index("## Time per mosaic")]
    pooled = {r["key"]: r["pooled"] for r in test["runs"]}
    ranked = {
        step: max(
            (r for r in val["runs"] if r["step_px"] == step),
            key=lambda r: (round(r["pooled"]["best_dice"], 3), round(r["pooled"]["auc"], 3)),
        )["key"]
        for step in (64, 128)
    }
    row = next(line for line in section.splitlines() if line.startswith("| CAM: step 64 against step 128 |"))
    difference = pooled[ranked[64]]["auc"] - pooled[ranked[128]]["auc"]
    assert f"| {difference:+.3f} (" in row, row
    assert "CAM, step 64: Gaussian against plain averaging" in section
    assert "ScoreCAM" not in section  # no ScoreCAM rows were run
