"""headwise.experiments.plots.plot_head_scores: a PNG for any (L, H) score matrix, rows named or numbered; every
picture of the methods goes through it, and without matplotlib (an optional extra) each says how to get it."""

import sys

import pytest
import torch

import interventions as iv
from headwise.experiments.plots import plot_head_scores, pyplot
from lofit.select import HeadSelection
from zerotuning.calibrate import HeadProfile


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_by_head_matrix_with_selected_heads(tmp_path):
    path = plot_head_scores(torch.randn(30, 9), tmp_path / "sub" / "heads.png", selected=[(3, 4), (29, 8)], title="t")
    assert path == tmp_path / "sub" / "heads.png" and _is_png(path)


def test_named_rows_must_match_the_matrix(tmp_path):
    assert _is_png(plot_head_scores(torch.randn(1, 4), tmp_path / "one.png", rows=["every layer"]))
    with pytest.raises(ValueError, match="rows names 2 rows but the scores have 1"):
        plot_head_scores(torch.randn(1, 4), tmp_path / "bad.png", rows=["a", "b"])


@pytest.mark.parametrize("shape", [(9,), (3, 4)])
def test_head_profile_plots_by_index_and_by_head(tmp_path, shape):
    profile = HeadProfile(scores=torch.randn(shape), baseline=0.5, gamma=2.0)
    assert _is_png(profile.plot(tmp_path / "profile.png"))


PICTURES = {
    "plot_head_scores": lambda path: plot_head_scores(torch.randn(3, 4), path),
    "lofit HeadSelection.plot": lambda path: HeadSelection(heads=[(0, 1)], scores=torch.rand(3, 4)).plot(path),
    "zerotuning HeadProfile.plot": lambda path: HeadProfile(scores=torch.randn(4), baseline=0.5, gamma=2.0).plot(path),
    "interventions.plot_attribution": lambda path: iv.plot_attribution(torch.randn(2, 3, 4), path),
}


@pytest.mark.parametrize("picture", list(PICTURES))
def test_without_matplotlib_every_picture_names_the_extra_to_install(tmp_path, monkeypatch, picture):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets where it is not installed
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ModuleNotFoundError, match=r'needs? matplotlib.*pip install "headwise\[plot\]"') as error:
        PICTURES[picture](tmp_path / "picture.png")
    assert error.value.name == "matplotlib" and not (tmp_path / "picture.png").exists()
    with pytest.raises(ImportError, match="headwise"):  # ModuleNotFoundError is an ImportError: either catch works
        pyplot()
