"""headwise.experiments.plots.plot_head_scores: a PNG for any (L, H) score matrix, rows named or numbered."""

import pytest
import torch

from headwise.experiments.plots import plot_head_scores
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
