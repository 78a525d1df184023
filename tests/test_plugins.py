"""Method plugins: the example package `examples/plugins/mlb-topk-norm`, installed without network into a
temporary folder, is found through its `mlb.methods` entry point by `mlb methods` and `mlb answer`;
a broken plugin is an error that names it; a plugin cannot replace a built-in method.

Every check runs in a fresh interpreter whose PYTHONPATH holds the install folder, so the entry points
are read as a user's installation would read them (the registry reads them once per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlbcli.io.writers import read_results
from mlbcli.selection import token_budget

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "plugins" / "mlb-topk-norm"


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}


def _python(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=_env(site), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed (no dependencies, no build isolation: offline) into a folder."""
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("plugin-src")  # a copy: building must not write into the checkout
    subprocess.run(["cp", "-r", str(PLUGIN), str(build)], check=True)
    source = build / PLUGIN.name
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*install, "--quiet", "--target", str(site), str(source)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return site


@pytest.fixture()
def fake_plugins(tmp_path: Path) -> Path:
    """A site folder with one distribution declaring a broken method and one that shadows `fastv`."""
    site = tmp_path / "fake-site"
    info = site / "mlb_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlb-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mlb.methods]\nbroken-method = mlb_broken:Broken\nfastv = mlb_broken:Shadow\n"
        "[mlb.debiasers]\nmy-debias = mlb_broken:Debias\n"
    )
    (site / "mlb_broken.py").write_text("raise ImportError('needs a library that is not installed')\n")
    return site


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runs(plugin_site, tiny_model_dir, clips_dir, tmp_path):
    listed = _python(plugin_site, "-m", "mlbcli", "methods")
    assert listed.returncode == 0, listed.stderr
    assert "\ntopk-norm " in listed.stdout and "largest L2 norm" in listed.stdout
    assert "--topk-norm-p 2 " in listed.stdout  # its hyperparameter, with its default

    out = tmp_path / "x.parquet"
    args = ["answer", str(clips_dir / "a.mp4"), "--question", "What happens?", "--model", str(tiny_model_dir)]
    args += ["--method", "topk-norm", "--keep", "0.25", "--out", str(out), "--frames", "4"]
    answered = _python(plugin_site, "-m", "mlbcli", *args, "--workers", "0", "--max-new-tokens", "2", "-q")
    assert answered.returncode == 0, answered.stderr
    row = read_results(out).to_pylist()[0]
    assert row["error"] is None and row["method"] == "topk-norm"
    n_in = row["visual_tokens_in"]
    assert row["visual_tokens_kept"] == token_budget(n_in, 0.25)  # the budget, exactly
    assert row["keep_realized"] == token_budget(n_in, 0.25) / n_in and row["keep_note"] is None
    assert json.loads(row["options_json"])["method"] == "topk-norm"


def test_plugin_keeps_the_largest_norm_tokens_per_frame(plugin_site):
    code = (
        "import torch\nfrom mlb_topk_norm import topk_norm_keep\n"
        "x = torch.zeros(2, 4, 3)\n"
        "x[0, 2] = 5; x[0, 0] = 1; x[1, 3] = 4; x[1, 1] = -9\n"  # norms: frame 0 -> 2, 0; frame 1 -> 1, 3
        "print(topk_norm_keep(x, [2, 2]).tolist())"
    )
    result = _python(plugin_site, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 2, 5, 7]"


def test_broken_plugin_names_itself(fake_plugins):
    code = (
        "from mlbcli.errors import UsageError\nfrom mlbcli.selection import get_method, method_names\n"
        "assert 'broken-method' in method_names()\n"
        "try:\n    get_method('broken-method')\nexcept UsageError as error:\n    print(error)\n"
    )
    result = _python(fake_plugins, "-c", code)
    assert result.returncode == 0, result.stderr
    assert "plugin 'broken-method' (mlb_broken:Broken)" in result.stdout
    assert "needs a library that is not installed" in result.stdout
    listed = _python(fake_plugins, "-m", "mlbcli", "methods")  # listing still works, with a warning
    assert listed.returncode == 0 and "\nfastv " in listed.stdout
    assert "broken-method" in listed.stderr


def test_plugin_cannot_shadow_a_builtin(fake_plugins):
    code = "from mlbcli.selection import METHODS\nprint(METHODS['fastv'].__module__)"
    result = _python(fake_plugins, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mlbcli.selection.methods.attention"
    assert "plugin fastv=mlb_broken:Shadow ignored" in result.stderr


def test_broken_debiaser_plugin_names_itself(fake_plugins):
    """A debiaser plugin that fails to import is named when chosen; every other command still works."""
    code = (
        "from mlbcli.errors import UsageError\nfrom mlbcli.selection import MethodOptions, get_method\n"
        "try:\n    get_method('fastv', MethodOptions(debias=('my-debias',)))\n"
        "except UsageError as error:\n    print(error)\n"
    )
    result = _python(fake_plugins, "-c", code)
    assert result.returncode == 0, result.stderr
    assert "plugin 'my-debias' (mlb_broken:Debias)" in result.stdout
    listed = _python(fake_plugins, "-m", "mlbcli", "methods")
    assert listed.returncode == 0 and "\nfastv " in listed.stdout
    assert "my-debias" in listed.stderr and "my-debias" not in listed.stdout
