"""Objectives against numbers computed by hand (in the comments) and gradient signs via autograd."""

from __future__ import annotations

import math

import pytest
import torch

from training import objectives as O

A_STD = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # 0.865875: (1 - 0.5) / (unbiased std sqrt(1/3) + eps)


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def flat(x) -> list[float]:
    """Flatten a tensor or nested list (pytest.approx compares flat sequences only)."""
    return torch.as_tensor(x, dtype=torch.float64).flatten().tolist()


def ones(b: int, t: int) -> torch.Tensor:
    return torch.ones(b, t, dtype=torch.float64)


# ---------------------------------------------------------------- GRPO


def test_group_advantages_by_hand():
    # group 1: r = [1,0,0,1], mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = 0.57735
    #   -> A = +-0.5 / (0.57735 + 1e-4) = +-0.865875
    # group 2: all correct -> centred 0 -> A = 0
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1])
    adv = O.group_advantages(r, group_size=4)
    expected = [A_STD, -A_STD, -A_STD, A_STD, 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    assert A_STD == pytest.approx(0.865875, abs=1e-6)
    # Dr. GRPO variant: no scaling, just r - mean
    assert O.group_advantages(r, group_size=4, scale=False)[:4].tolist() == [0.5, -0.5, -0.5, 0.5]


def test_group_advantages_rejects_ragged_batch():
    with pytest.raises(ValueError):
        O.group_advantages(torch.ones(6), group_size=4)


def test_grpo_on_policy_loss_and_gradient_signs():
    # on-policy: ratio 1 everywhere, per-token loss = -A_i; symmetric group -> loss 0.
    # d loss / d logp_it = -A_i / (|o_i| * B) = -+0.865875 / (2 * 4) = -+0.108234 ("sequence" agg)
    logps = leaf([[-1.0, -2.0], [-0.5, -0.5], [-1.0, -1.0], [-3.0, -0.1]])
    loss, metrics = O.grpo_loss(logps, logps.detach(), torch.tensor([1.0, 0, 0, 1]), ones(4, 2), group_size=4)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-9)
    g = A_STD / 8
    assert flat(logps.grad) == pytest.approx(flat([[-g, -g], [g, g], [g, g], [-g, -g]]), abs=1e-6)
    assert metrics["clip_frac"] == 0.0


def test_grpo_aggregation_token_vs_sequence():
    # completion 0 has 1 token, completion 1 has 3 (mask); rewards [1,0] -> A = +-0.5/(0.7071+1e-4)
    logps = leaf([[-1.0, 0, 0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)  # 0.70701
    loss_tok, _ = O.grpo_loss(logps, logps.detach(), torch.tensor([1.0, 0]), mask, group_size=2, aggregation="token")
    loss_tok.backward()
    # token: every real token weighs 1/4 -> grads -a/4 and +a/4
    assert flat(logps.grad) == pytest.approx(flat([[-a / 4, 0, 0], [a / 4] * 3]), abs=1e-6)
    logps.grad = None
    loss_seq, _ = O.grpo_loss(logps, logps.detach(), torch.tensor([1.0, 0]), mask, group_size=2)
    loss_seq.backward()
    # sequence: 1/(|o_i| * 2): completion 0's single token -a/2, completion 1's tokens +a/6
    assert flat(logps.grad) == pytest.approx(flat([[-a / 2, 0, 0], [a / 6] * 3]), abs=1e-6)
    with pytest.raises(ValueError):
        O.grpo_loss(logps, logps.detach(), torch.tensor([1.0, 0]), mask, group_size=2, aggregation="x")


def test_ppo_clip_zero_gradient_outside_trust_region():
    # A = +1. token 0: ratio e^0.4 = 1.49 > 1.2 -> clipped, no gradient.
    # token 1: ratio e^-0.7 = 0.497 < 0.8 but A > 0 -> min picks r*A (unclipped): grad = -r = -0.496585
    logps = leaf([[0.4, -0.7]])
    loss, clipped = O.ppo_clip_token_loss(logps, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0]),
                                          epsilon_low=0.2, epsilon_high=0.2)
    loss.sum().backward()
    assert clipped.tolist() == [[True, False]]
    assert flat(logps.grad) == pytest.approx([0.0, -math.exp(-0.7)], abs=1e-9)
    assert math.exp(-0.7) == pytest.approx(0.496585, abs=1e-6)


def test_k3_kl_by_hand_and_grpo_kl_term():
    # logp = ref: 0.  logp = ref + ln 2: delta = -ln 2 -> 0.5 + 0.693147 - 1 = 0.193147
    kl = O.k3_kl(torch.tensor([0.0, math.log(2)]), torch.tensor([0.0, 0.0]))
    assert kl.tolist() == pytest.approx([0.0, 0.193147], abs=1e-6)
    # KL pulls a policy that is above the reference back down: gradient of beta*KL w.r.t. logp is
    # beta * (1 - exp(ref - logp)) = 0.1 * (1 - 0.5) = 0.05 > 0 for the second token (equal rewards: A = 0)
    logps = leaf([[0.0, math.log(2)]] * 2)
    loss, metrics = O.grpo_loss(logps, logps.detach(), torch.tensor([1.0, 1.0]), ones(2, 2), group_size=2,
                                ref_logps=torch.zeros(2, 2, dtype=torch.float64), beta=0.1)
    loss.backward()
    # sequence aggregation: each token weighs 1/(2*2)
    assert logps.grad[:, 1].tolist() == pytest.approx([0.05 / 4] * 2, abs=1e-9)
    assert logps.grad[:, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    assert metrics["kl"] == pytest.approx(0.193147 / 2, abs=1e-6)
    with pytest.raises(ValueError):
        O.grpo_loss(logps, logps.detach(), torch.tensor([1.0, 1.0]), ones(2, 2), group_size=2, beta=0.1)


# ---------------------------------------------------------------- GSPO


def gspo_batch():
    # old logps all 0; current per-token log-ratios give sequence-mean log-ratios 0.2, 0.1, -0.3, 0.1
    logps = leaf([[0.1, 0.3], [0.0, 0.2], [-0.3, -0.3], [0.1, 0.1]])
    return logps, torch.zeros(4, 2, dtype=torch.float64), ones(4, 2)


def test_gspo_sequence_ratio_by_hand():
    logps, old, mask = gspo_batch()
    s = O.gspo_sequence_ratio(logps, old, mask)
    # exp(0.2) = 1.221403, exp(0.1) = 1.105171, exp(-0.3) = 0.740818
    assert s.tolist() == pytest.approx([1.221403, 1.105171, 0.740818, 1.105171], abs=1e-6)
    # padding is excluded from the length normalisation: mean over the one real token = 0.1
    assert float(O.gspo_sequence_ratio(logps[:1].detach(), old[:1], torch.tensor([[1.0, 0.0]]))) == pytest.approx(
        math.exp(0.1))


def test_gspo_sequence_clipping_gradients():
    # rewards [1,1,0,0] -> A = [+a, +a, -a, -a], a = 0.865875; eps = 0.2 for readability
    # seq 0: s = 1.2214 > 1.2 with A > 0 -> clipped: zero gradient
    # seq 1: s = 1.1052 inside -> d(-s A / 4)/d logp_t = -s A / (4 * 2) = -1.105171 * 0.865875 / 8 = -0.119618
    # seq 2: s = 0.7408 < 0.8 with A < 0 -> clipped: zero gradient
    # seq 3: s = 1.1052 inside, A < 0 -> +0.119618
    logps, old, mask = gspo_batch()
    loss, metrics = O.gspo_loss(logps, old, torch.tensor([1.0, 1, 0, 0]), mask, group_size=4,
                                epsilon=0.2, epsilon_high=0.2)
    loss.backward()
    g = math.exp(0.1) * A_STD / 8
    assert g == pytest.approx(0.119618, abs=1e-6)
    assert flat(logps.grad) == pytest.approx(flat([[0, 0], [-g, -g], [0, 0], [g, g]]), abs=1e-6)
    assert metrics["clip_frac"] == 0.5


def test_gspo_paper_default_clip_range_is_tiny():
    logps, old, mask = gspo_batch()
    loss, metrics = O.gspo_loss(logps, old, torch.tensor([1.0, 1, 0, 0]), mask, group_size=4)
    loss.backward()
    # with (3e-4, 4e-4) every sequence here is outside the range -> all four clipped in their A direction
    # except seq 3 (A < 0, s > 1): min(sA, clip(s)A) picks the unclipped sA, which keeps its gradient
    assert metrics["clip_frac"] == 0.75
    assert logps.grad[:3].abs().sum() == 0
    assert (logps.grad[3] > 0).all()


# ---------------------------------------------------------------- CAPO

# lpm = [-0.2, -0.8, -0.5, -1.1], correct = [T, T, F, F], tau = 0.6
#   pair (0,2): t =  0.3 -> sigmoid(-0.5)/0.6 = 0.377541/0.6 = 0.629235
#   pair (0,3): t =  0.9 -> sigmoid(-1.5)/0.6 = 0.182426/0.6 = 0.304043
#   pair (1,2): t = -0.3 -> sigmoid( 0.5)/0.6 = 0.622459/0.6 = 1.037432
#   pair (1,3): t =  0.3 -> 0.629235
# raw: A0 = 0.629235 + 0.304043 = 0.933278     A1 = 1.037432 + 0.629235 = 1.666667
#      A2 = -(0.629235 + 1.037432) = -1.666667  A3 = -(0.304043 + 0.629235) = -0.933278
# divided by 4 pairs: [0.233320, 0.416667, -0.416667, -0.233320]
LPM = [-0.2, -0.8, -0.5, -1.1]
CORRECT = [True, True, False, False]
CAPO_RAW = [0.933278, 1.666667, -1.666667, -0.933278]
CAPO_PAIRS = [0.233320, 0.416667, -0.416667, -0.233320]


def test_capo_advantages_by_hand():
    lpm, correct = torch.tensor(LPM), torch.tensor(CORRECT)
    raw = O.capo_advantages(lpm, correct, group_size=4, tau=0.6, normalise="none")
    assert raw.tolist() == pytest.approx(CAPO_RAW, abs=1e-5)
    assert O.capo_advantages(lpm, correct, group_size=4, tau=0.6).tolist() == pytest.approx(CAPO_PAIRS, abs=1e-5)
    # the less likely correct answer (sample 1) is pushed harder than the likelier one (sample 0)
    assert raw[1] > raw[0] > 0 > raw[3] > raw[2]


def test_capo_advantage_is_gradient_of_logistic_surrogate():
    lpm = torch.tensor(LPM, dtype=torch.float64, requires_grad=True)
    i, j = torch.tensor([0, 0, 1, 1]), torch.tensor([2, 3, 2, 3])
    surrogate = torch.log1p(torch.exp(-(lpm[i] - lpm[j]) / 0.6)).mean()  # mean over the 4 pairs
    surrogate.backward()
    adv = O.capo_advantages(lpm.detach(), torch.tensor(CORRECT), group_size=4, tau=0.6)
    assert adv.tolist() == pytest.approx((-lpm.grad).tolist(), abs=1e-6)


def test_capo_all_correct_or_all_wrong_groups_get_zero_advantage():
    lpm = torch.tensor(LPM + LPM + LPM)
    correct = torch.tensor([True] * 4 + [False] * 4 + CORRECT)
    adv = O.capo_advantages(lpm, correct, group_size=4)
    assert adv[:8].tolist() == [0.0] * 8
    assert adv[8:].tolist() == pytest.approx(CAPO_PAIRS, abs=1e-5)


def test_capo_mask_and_loss_by_hand():
    # two tokens per sample; old logps chosen so lpm = LPM (on-policy)
    logps = leaf([[v, v] for v in LPM])
    # ref mean logps -1.0, -0.5, -0.01, -0.5 -> ref-PPL e = 2.718, 1.6487, 1.01005, 1.6487
    #   sample 0: correct, PPL 2.718 > 2.5   -> dropped
    #   sample 2: incorrect, PPL 1.010 < 1.05 -> dropped
    ref = torch.tensor([[-1.0, -1.0], [-0.4, -0.6], [-0.01, -0.01], [-0.5, -0.5]], dtype=torch.float64)
    correct = torch.tensor(CORRECT)
    m = O.capo_mask(ref, ones(4, 2), correct)
    assert m.tolist() == [0.0, 1.0, 0.0, 1.0]
    loss, metrics = O.capo_loss(logps, logps.detach(), ref, correct, ones(4, 2), group_size=4)
    loss.backward()
    # on-policy, m*A = [0, 0.416667, 0, -0.233320]; loss = -mean(m*A) = -(0.416667 - 0.233320)/4 = -0.045837
    assert float(loss.detach()) == pytest.approx(-0.045837, abs=1e-5)
    # grad = -m A_i / (|o| * B) = -m A_i / 8
    assert logps.grad[:, 0].tolist() == pytest.approx([0, -0.416667 / 8, 0, 0.233320 / 8], abs=1e-6)
    assert metrics["masked_frac"] == 0.5


def test_capo_ppo_clip():
    # sample 1 (A > 0) already has ratio e^0.3 = 1.35 > 1.2 on both tokens -> no gradient; others unchanged
    old = torch.tensor([[v, v] for v in LPM], dtype=torch.float64)
    logps = leaf((old + torch.tensor([[0.0, 0], [0.3, 0.3], [0, 0], [0, 0]], dtype=torch.float64)).tolist())
    ref = torch.full((4, 2), -0.5, dtype=torch.float64)  # PPL 1.65: nothing masked
    loss, metrics = O.capo_loss(logps, old, ref, torch.tensor(CORRECT), ones(4, 2), group_size=4)
    loss.backward()
    assert logps.grad[1].tolist() == [0.0, 0.0]
    assert logps.grad[0].tolist() == pytest.approx([-CAPO_PAIRS[0] / 8] * 2, abs=1e-6)
    assert metrics["clip_frac"] == 0.25


# ---------------------------------------------------------------- C2GSPG


def test_confidence_bce_gradient_direction():
    # c = 0.5: dBCE/dlpm = (c - y)/(1 - c) = -1 for y = 1 (descent raises lpm), +1 for y = 0
    lpm = torch.full((2,), math.log(0.5), dtype=torch.float64, requires_grad=True)
    O.confidence_bce(lpm, torch.tensor([1.0, 0.0], dtype=torch.float64)).sum().backward()
    assert lpm.grad.tolist() == pytest.approx([-1.0, 1.0], abs=1e-9)
    # BCE(0.5, y) = ln 2 for either label
    assert O.confidence_bce(lpm.detach(), torch.tensor([1.0, 0.0], dtype=torch.float64)).tolist() == \
        pytest.approx([math.log(2)] * 2)


@pytest.mark.parametrize("reward,sign", [(1.0, -1.0), (0.0, 1.0)])
def test_c2gspg_regulariser_pulls_confidence_toward_reward(reward, sign):
    # equal rewards -> A = 0: the GSPO term has no gradient, only lam * mean_i BCE(c_i, r) acts.
    # every token log 0.5 -> c = 0.5; dL/dlogp_it = lam/B * (c - r)/(1 - c) / |o| = 0.1/4 * (-+1) / 2 = -+0.0125
    logps = leaf([[math.log(0.5)] * 2] * 4)
    loss, metrics = O.c2gspg_loss(logps, logps.detach(), torch.full((4,), reward), ones(4, 2), group_size=4)
    loss.backward()
    assert logps.grad.flatten().tolist() == pytest.approx([sign * 0.0125] * 8, abs=1e-9)
    assert metrics["confidence_mean"] == pytest.approx(0.5)
    assert metrics["calib_loss"] == pytest.approx(math.log(2))


def test_c2gspg_binary_mixed_group_regulariser_agrees_with_policy_gradient():
    logps = leaf([[math.log(0.5)] * 2] * 4)
    loss, metrics = O.c2gspg_loss(logps, logps.detach(), torch.tensor([1.0, 0, 0, 1]), ones(4, 2), group_size=4)
    loss.backward()
    assert metrics["reg_clip_frac"] == 0.0
    # correct samples pushed up by both terms, wrong ones down
    assert (logps.grad[[0, 3]] < 0).all() and (logps.grad[[1, 2]] > 0).all()


def test_c2gspg_nonlinear_targets_and_adaptive_clipping():
    # rewards [0.9, 0.1, 0.5, 0.5]: mean 0.5, unbiased std sqrt(0.32/3) = 0.326599
    #   A = 0.4 / (0.326599 + 1e-4) = [1.224346, -1.224346, 0, 0]
    #   y = sigmoid(2 A) = sigmoid(+-2.448692) = [0.920469, 0.079531, 0.5, 0.5]
    r = torch.tensor([0.9, 0.1, 0.5, 0.5])
    y = O.confidence_targets(r, group_size=4)
    assert y.tolist() == pytest.approx([0.920469, 0.079531, 0.5, 0.5], abs=1e-5)
    # confidences 0.95, 0.5, 0.5, 0.5: sample 0 is above its target -> regulariser would push it down
    # while A > 0 pushes it up -> conflict -> clipped (1 of 4); sample 1 (c > y, A < 0) agrees -> kept.
    logps = leaf([[math.log(0.95)] * 2] + [[math.log(0.5)] * 2] * 3)
    loss, metrics = O.c2gspg_loss(logps, logps.detach(), r, ones(4, 2), group_size=4)
    assert metrics["reg_clip_frac"] == 0.25
    # sample 2 (A = 0, c = y = 0.5): BCE gradient (c - y)/(1 - c) = 0 -> no gradient at all
    loss.backward()
    assert logps.grad[2].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    # sample 0's gradient is the GSPO term only; sample 1 gets GSPO (+) plus regulariser (+)
    assert (logps.grad[0] <= 0).all() and (logps.grad[1] > 0).all()


def test_registry_lists_all_objectives():
    assert set(O.OBJECTIVES) == {"grpo", "gspo", "capo", "c2gspg"}


def test_objective_records_carry_what_the_trainer_reads():
    grpo, gspo, capo, c2gspg = (O.OBJECTIVES[n] for n in ("grpo", "gspo", "capo", "c2gspg"))
    assert grpo.needs_reference({"beta": 0.1}) and not grpo.needs_reference({"beta": 0.0})
    assert capo.needs_reference({}) and not gspo.needs_reference({"beta": 1.0})
    assert [o.token_level for o in (grpo, gspo, capo, c2gspg)] == [True, False, True, False]
    assert capo.takes_correctness and not grpo.takes_correctness
    assert set(capo.hyper_parameters) == {"tau", "epsilon", "ref_low", "ref_high", "normalise", "aggregation"}
    assert "ref_logps" not in grpo.hyper_parameters and "beta" in grpo.hyper_parameters
    with pytest.raises(ValueError):
        O.Objective(O.gspo_loss, reference="sometimes")


def test_objective_call_passes_correctness_and_reference():
    """The record calls CAPO with ``correct = reward > 0.5`` and ref_logps, GSPO with the rewards only."""
    logps = torch.log(torch.tensor([[0.9, 0.8], [0.5, 0.4], [0.6, 0.7], [0.3, 0.2]]))
    ref = torch.log(torch.tensor([[0.8, 0.8], [0.6, 0.5], [0.5, 0.6], [0.4, 0.4]]))
    rewards, mask = torch.tensor([1.0, 0.0, 0.3, 0.9]), torch.ones(4, 2, dtype=torch.long)
    loss, _ = O.OBJECTIVES["capo"](logps, logps, ref, rewards, mask, group_size=4, ref_high=1e9, ref_low=0.0)
    direct, _ = O.capo_loss(logps, logps, ref, rewards > 0.5, mask.float(), group_size=4, ref_high=1e9, ref_low=0.0)
    assert float(loss) == float(direct)
    loss, _ = O.OBJECTIVES["gspo"](logps, logps, None, rewards, mask, group_size=4)
    direct, _ = O.gspo_loss(logps, logps, rewards, mask.float(), group_size=4)
    assert float(loss) == float(direct)
