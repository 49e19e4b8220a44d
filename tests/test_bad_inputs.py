"""A catalogue of careless and hostile inputs to every command: each must end in one `error:` line on stderr,
exit status 2, no traceback, and no file created or changed where the command ran.

The failure classes of issue 9 have their own tests beside the code they concern (test_data, test_config,
test_package_damage, test_failures, test_evaluate, test_serve); this file adds the inputs a user or an attacker
would try next, all through the real entry points (`python -m gan_core`, `ganops`), in-process for speed.
README's bad-input section states how many cases it holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


@dataclass(frozen=True)
class Case:
    id: str
    cli: str  # "gan_core" (python -m gan_core) or "ganops"
    argv: list[str]
    must_name: str  # the message must name the bad value (or its path)
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] | None = None


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def _mkdir(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir(parents=True, exist_ok=True)


CASES = [
    # --- params files -------------------------------------------------------------------------------------------
    Case("params-missing", "gan_core", ["train", "--params", "nope.yaml"], "nope.yaml"),
    Case("params-is-a-directory", "gan_core", ["train", "--params", "pdir"], "pdir", _mkdir("pdir")),
    Case("params-not-yaml", "gan_core", ["train", "--params", "p.yaml"], "p.yaml", _write("p.yaml", "train: [1, 2\n")),
    Case("params-binary", "gan_core", ["train", "--params", "p.yaml"], "p.yaml", _write("p.yaml", b"\xff\xfe\x00\x81")),
    Case("params-a-list", "gan_core", ["train", "--params", "p.yaml"], "p.yaml", _write("p.yaml", "- 1\n- 2\n")),
    Case("params-unknown-section", "gan_core", ["train", "--params", "p.yaml"], "trian",
         _write("p.yaml", "trian: {steps: 5}\n")),
    Case("params-tab-indent", "gan_core", ["train", "--params", "p.yaml"], "p.yaml",
         _write("p.yaml", "train:\n\tsteps: 5\n")),
    # --- overrides ----------------------------------------------------------------------------------------------
    Case("override-without-equals", "gan_core", ["train", "train.steps"], "train.steps"),
    Case("override-empty-key", "gan_core", ["train", "=5"], "=5"),
    Case("override-unknown-key", "gan_core", ["train", "train.stpes=5"], "train.stpes"),
    Case("override-into-a-value", "gan_core", ["train", "train.steps.x=5"], "train.steps"),
    Case("override-wrong-type", "gan_core", ["train", "train.steps=many"], "train.steps"),
    Case("override-negative-lr", "gan_core", ["train", "train.g_optimizer.lr=-1"], "train.g_optimizer.lr"),
    Case("override-float-steps", "gan_core", ["train", "train.steps=2.5"], "train.steps"),
    Case("override-bad-device", "gan_core", ["train", "train.device=tpu"], "tpu"),
    Case("override-absent-cuda", "gan_core", ["train", "train.device=cuda:7", "train.steps=1"], "cuda:7"),
    Case("override-unknown-arch", "gan_core", ["train", "model.arch=transformer"], "model.arch"),
    Case("override-unknown-extractor", "gan_core", ["evaluate", "eval.extractors=[clip]"], "clip"),
    # --- data ---------------------------------------------------------------------------------------------------
    Case("data-folder-missing", "gan_core", ["prepare", "data.source=folder:nowhere"], "nowhere"),
    Case("data-folder-is-file", "gan_core", ["prepare", "data.source=folder:f.png"], "f.png", _write("f.png", "x")),
    Case("data-flat-folder-gated-on-labels", "gan_core", ["prepare", "data.source=folder:flat",
         "gate.thresholds={class_coverage: {min: 0.9}}"], "class_coverage", _write("flat/a.png", "x")),
    Case("data-folder-only-text", "gan_core", ["prepare", "data.source=folder:imgs"], "imgs",
         _write("imgs/notes.txt", "not an image")),
    Case("data-folder-fake-png", "gan_core", ["prepare", "data.source=folder:imgs"], "imgs",
         _write("imgs/a.png", "<html>not a png</html>")),
    Case("data-unknown-source", "gan_core", ["prepare", "data.source=imagenet"], "imagenet"),
    Case("data-prepared-dir-under-a-file", "gan_core",
         ["prepare", "data.source=digits", "data.prepared_dir=blocker/prepared"], "blocker", _write("blocker", "x")),
    # --- training, evaluation -----------------------------------------------------------------------------------
    Case("train-without-prepared-data", "gan_core", ["train", "data.prepared_dir=missing"], "missing"),
    Case("evaluate-missing-generator", "gan_core", ["evaluate", "--generator", "no-such-package"], "no-such-package"),
    Case("evaluate-generator-is-a-file", "gan_core", ["evaluate", "--generator", "g.json"], "g.json",
         _write("g.json", "{}")),
    # --- generate -----------------------------------------------------------------------------------------------
    Case("generate-missing-package", "ganops", ["generate", "--model", "no-such-dir"], "no-such-dir"),
    Case("generate-empty-dir", "ganops", ["generate", "--model", "empty"], "empty", _mkdir("empty")),
    Case("generate-spec-not-json", "ganops", ["generate", "--model", "pkg"], "generator.json",
         _write("pkg/generator.json", "{\"format\": ")),
    Case("generate-spec-is-a-list", "ganops", ["generate", "--model", "pkg"], "generator.json",
         _write("pkg/generator.json", "[1, 2, 3]")),
    Case("generate-zero-images", "ganops", ["generate", "--model", "pkg", "-n", "0"], "0",
         _write("pkg/generator.json", "{}")),
    Case("generate-bad-labels", "ganops", ["generate", "--model", "pkg", "--labels", "one,two"], "one,two",
         _write("pkg/generator.json", "{}")),
    Case("generate-uri-typo", "ganops", ["generate", "--model", "model:/ganops-generator@champion"], "model:/"),
    Case("generate-truncation-out-of-range", "ganops", ["generate", "--model", "pkg", "--truncation", "1.5"], "1.5",
         _write("pkg/generator.json", "{}")),
    Case("override-unknown-loss", "gan_core", ["train", "train.loss=wgan-clip"], "wgan-clip"),
    Case("override-unknown-optimizer", "gan_core", ["train", "train.d_optimizer.kind=sgd"], "sgd"),
    Case("override-unknown-augment", "gan_core", ["train", "train.augment=ada2"], "ada2"),
    Case("ada-with-lsgan", "gan_core", ["train", "train.augment=ada", "train.loss=lsgan"], "train.loss=lsgan"),
    # --- registry commands outside a ganops repo ----------------------------------------------------------------
    Case("models-without-store", "ganops", ["models"], "mlflow.db"),
    Case("promote-without-store", "ganops", ["promote", "1"], "mlflow.db"),
    Case("rollback-without-store", "ganops", ["rollback"], "mlflow.db"),
    Case("models-unknown-recipe", "ganops", ["models", "--recipe", "nope"], "nope"),
    Case("promote-not-a-number", "ganops", ["promote", "latest"], "latest"),
    Case("force-without-reason", "ganops", ["promote", "1", "--force"], "--reason"),
    Case("ui-bad-port", "ganops", ["ui", "--port", "70000"], "70000"),
    Case("plain-file-tracking-uri", "ganops", ["models"], "file:./mlruns",
         env={"MLFLOW_TRACKING_URI": "file:./mlruns"}),
    Case("unknown-tracking-scheme", "ganops", ["models"], "foo://", env={"MLFLOW_TRACKING_URI": "foo://x"}),
    Case("schedule-bad-cron", "ganops", ["schedule", "--cron", "every night"], "every night"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_behind(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_core.cli import run_app

    if case.cli == "gan_core":
        from gan_core.cli import app
    else:
        from flows.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in (case.env or {}).items():
        monkeypatch.setenv(key, value)
    # A params.yaml that keeps every output inside tmp_path, so "nothing created" is checked where it matters.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"steps": 2}}))
    if case.setup:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)

    code = run_app(app, case.argv)

    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr:\n{err}\nstdout:\n{out}"
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert case.must_name in lines[0], lines[0]
    assert _snapshot(tmp_path) == before, "a failed command created or changed files"
    assert not any(name.startswith(".") and name.endswith(".tmp") for name in os.listdir(tmp_path))
