"""Paper Eqs. 1-4 against values computed by hand."""
import math

import pytest
import torch

from cim.reward import cim_reward, grc, group_advantages, qir, rank_weights


def test_grc_identical_images_is_one():
    v = torch.tensor([0.6, 0.8, 0.0])
    assert grc(v.repeat(5, 1)).item() == pytest.approx(1.0, abs=1e-6)


def test_grc_orthogonal_images_by_hand():
    # K = 3 orthonormal vectors: mean = (1/3, 1/3, 1/3), norm = sqrt(3)/3
    assert grc(torch.eye(3)).item() == pytest.approx(math.sqrt(3) / 3, abs=1e-6)


def test_grc_opposite_pair_is_zero_and_normalises_inputs():
    retrieved = torch.tensor([[3.0, 0.0], [-0.5, 0.0]])   # not unit length: GRC uses v~ (normalised)
    assert grc(retrieved).item() == pytest.approx(0.0, abs=1e-6)


def test_grc_batched_shape():
    out = grc(torch.randn(4, 5, 8))
    assert out.shape == (4,)
    assert torch.all(out <= 1.0 + 1e-6) and torch.all(out >= 0)


def test_rank_weights_are_powers_of_decay():
    assert rank_weights(5, decay=0.5).tolist() == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert rank_weights(3, decay=0.1).tolist() == pytest.approx([1.0, 0.1, 0.01])


def test_qir_by_hand():
    source = torch.tensor([1.0, 0.0])
    # cosines with the source: 1, 0, -1, 0.6 (ranks 1..4)
    retrieved = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    expected = 1.0 * 1 + 0.5 * 0 + 0.25 * (-1) + 0.125 * 0.6
    assert qir(source, retrieved, decay=0.5).item() == pytest.approx(expected, abs=1e-6)
    assert qir(source, retrieved, decay=1.0).item() == pytest.approx(1 + 0 - 1 + 0.6, abs=1e-6)


def test_qir_maximum_is_sum_of_weights():
    source = torch.randn(16)
    assert qir(source, source.repeat(5, 1), decay=0.5).item() == pytest.approx(1.9375, abs=1e-5)


def test_qir_batched_matches_loop():
    src, ret = torch.randn(3, 7), torch.randn(3, 5, 7)
    batched = qir(src, ret, decay=0.5)
    for i in range(3):
        assert batched[i].item() == pytest.approx(qir(src[i], ret[i], decay=0.5).item(), abs=1e-6)


def test_reward_modes():
    g, q = torch.tensor([0.9, 0.5]), torch.tensor([1.2, -0.3])
    assert cim_reward(g, q, beta=1.0, mode="both").tolist() == pytest.approx([2.1, 0.2])
    assert cim_reward(g, q, beta=0.5, mode="both").tolist() == pytest.approx([1.5, 0.35])
    assert cim_reward(g, q, beta=1.0, mode="grc").tolist() == pytest.approx([0.9, 0.5])
    assert cim_reward(g, q, beta=1.0, mode="qir").tolist() == pytest.approx([1.2, -0.3])
    with pytest.raises(ValueError, match="mode"):
        cim_reward(g, q, beta=1.0, mode="sum")


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    adv = group_advantages(rewards, group_size=3)
    # group 1: mean 2, unbiased std 1 -> (-1, 0, 1); group 2: std 0 -> all zeros
    assert adv.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0], abs=1e-5)


def test_group_advantages_rejects_ragged_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.ones(6), group_size=4)


def test_group_advantages_equal_verl_grpo():
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    import numpy as np

    torch.manual_seed(0)
    scores = torch.randn(4 * 5)
    index = np.repeat(np.arange(4), 5).astype(object)
    mask = torch.ones(20, 3)
    token_scores = torch.zeros(20, 3)
    token_scores[:, -1] = scores
    adv, _ = core_algos.compute_grpo_outcome_advantage(token_scores, mask, index)
    assert adv[:, 0].tolist() == pytest.approx(group_advantages(scores, 5).tolist(), abs=1e-5)
