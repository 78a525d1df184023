"""HoliTom's static merge goes into the right token: the density-peak centre of each cluster of a static
window keeps the merged state beta * centre + (1 - beta) * mean(members), at the centre's own id.

The features are built so that the right target (the cluster's density peak) and every wrong one
(another member of the cluster, the other cluster's centre, the first token) hold different states
and different ids, so a merge written into the wrong token, or at the wrong id, fails.
"""

from __future__ import annotations

import torch

from mlbcli.selection import get_method
from mlbcli.selection.ops.holitom import holitom_outer


def _two_static_clusters() -> torch.Tensor:
    """[T=2, N=6, D=4]: frame 1 = 1.01 * frame 0 (every position static, one window 0..1).

    Cluster A = positions 0, 1, 2 at a - 2e1, a, a + e1; cluster B = positions 3, 4, 5 at b - 2e3, b,
    b + e3. In each cluster the middle token has the nearest neighbour (1 away, tied with the third
    token, which has the higher index), so HoliTom's density peaks are positions 1 and 4; positions
    0 and 2 merge into 1, positions 3 and 5 into 4.
    """
    a = torch.tensor([10.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 10.0, 0.0])
    e1 = torch.tensor([0.0, 1.0, 0.0, 0.0])
    e3 = torch.tensor([0.0, 0.0, 0.0, 1.0])
    frame = torch.stack([a - 2 * e1, a, a + e1, b - 2 * e3, b, b + e3])  # [6, 4]
    return torch.stack([frame, 1.01 * frame])


def test_static_window_merges_into_the_density_peak_of_each_cluster():
    x = _two_static_clusters()
    params = get_method("holitom").params
    beta = params["holitom_beta"]
    ids, states, info = holitom_outer(x, 2, params)
    assert info["windows"] == [[0, 2]]  # one static window over both frames
    assert ids.tolist() == [1, 4]  # the centres, at their positions in the window's first frame
    window = x.mean(dim=0)  # [6, 4] static tokens are averaged over the window first
    expected_a = beta * window[1] + (1 - beta) * (window[0] + window[2]) / 2
    expected_b = beta * window[4] + (1 - beta) * (window[3] + window[5]) / 2
    torch.testing.assert_close(states[0], expected_a)
    torch.testing.assert_close(states[1], expected_b)
    # the wrong targets hold other states: the test tells them apart
    wrong_first = beta * window[0] + (1 - beta) * (window[1] + window[2]) / 2
    assert not torch.allclose(states[0], wrong_first) and not torch.allclose(states[0], expected_b)


def test_official_inner_merge_keeps_its_share_of_the_tokens_that_entered():
    """The reference's inner merge keeps round(n * (1 - r)) of the n tokens entering layer K (not of the
    --keep budget): given the outer merge's output, the count follows it."""
    import torch

    from mlbcli import select_tokens

    features = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(0))
    outer = select_tokens("holitom", features, keep=0.5, holitom_layer=2)  # what enters the LLM
    n = len(outer)
    attention = torch.rand(n, generator=torch.Generator().manual_seed(1))
    both = select_tokens("holitom", features, keep=0.5, holitom_layer=2, attention=attention)
    assert both.layers == [0, 2]
    assert len(both) == round(n * (1 - 0.5))  # holitom_merge_ratio's default
