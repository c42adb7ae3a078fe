"""What a newcomer meets first: the demo says which dataset it trains on, and neither the demo nor the
notebooks write into tracked files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ssvae_lib import __main__ as cli
from ssvae_lib import settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_says_first_which_dataset_it_uses(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "FAST", True)
    assert cli.main(["demo", "--dataset", "digits", "--figures", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("dataset: digits (digits: scikit-learn's 1,797 8x8 handwritten digits")
    assert "ELBO and IWAE: Bernoulli decoder on grey-level pixels: a bound on a score that is not" in out
    assert (tmp_path / "demo_analogies.png").stat().st_size > 0


def test_figures_of_the_demo_and_notebooks_go_to_an_ignored_folder(monkeypatch):
    monkeypatch.setattr(settings, "FAST", False)
    monkeypatch.delenv("SSVAE_FIGURES_DIR", raising=False)
    folder = settings.figures_dir()
    assert folder == ROOT / "runs" / "figures"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / "demo_analogies.png")], cwd=ROOT)
    assert ignored.returncode == 0                       # git ignores it: no tracked file changes
    assert settings.checkout_figures() == ROOT / "figures"


def test_the_mirrors_can_be_named_in_the_environment():
    code = "from ssvae_lib import data; print(','.join(data.MNIST_MIRRORS))"
    env = dict(os.environ, SSVAE_MNIST_MIRRORS=" http://a.example/m/ ,http://b.example/m/")
    named = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert named.stdout.strip() == "http://a.example/m/,http://b.example/m/"
    env.pop("SSVAE_MNIST_MIRRORS")
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.strip().startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
