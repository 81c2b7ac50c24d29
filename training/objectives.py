"""Pure RL objectives: ``f(tensors, *, hyper) -> (loss, metrics)``.

Every function here is a pure tensor function (no models, no trainers, no I/O). The trainers in
``training/rl.py`` only compute log-probabilities and call one of these.

Shared conventions
------------------
* A batch holds ``B = n_groups * group_size`` completions; the ``group_size`` completions of one
  prompt are **consecutive** rows (row ``g * group_size + k``).
* ``logps``     : ``[B, T]`` per-token log pi_theta(o_t | q, o_<t) of the sampled tokens, with grad.
* ``old_logps`` : ``[B, T]`` the same under the sampling policy pi_old (no grad). On the first
  update of fully on-policy training it equals ``logps.detach()``.
* ``ref_logps`` : ``[B, T]`` under the frozen reference policy (no grad), for KL / CAPO's mask.
* ``mask``      : ``[B, T]`` 1 for completion tokens, 0 for padding.
* ``rewards``   : ``[B]`` scalar reward per completion (1.0 correct / 0.0 wrong for GSM8K).
* Losses are to be **minimised**; ``metrics`` is a dict of python floats for logging.

Loss aggregation (``aggregation=``, token-level objectives only)
---------------------------------------------------------------
* ``"sequence"`` (default, GRPO paper eq. 3): mean over each completion's tokens, then mean over
  completions: ``1/G sum_i 1/|o_i| sum_t l_it``.
* ``"token"`` (DAPO): sum over all tokens of the batch / number of tokens, so long completions are
  not down-weighted per token.

Group normalisation of rewards (``group_advantages``)
-----------------------------------------------------
``A_i = (r_i - mean_g) / (std_g + eps)`` with the **unbiased** (Bessel, ``n - 1``) standard
deviation of the group, the same as ``torch.std`` and TRL's GRPOTrainer, so advantages are
comparable with TRL runs. A group whose rewards are all equal has std 0 and numerator 0: A = 0.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

AGGREGATIONS = ("sequence", "token")


# ----------------------------------------------------------------------------------------------
# small shared helpers
# ----------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (over all of them when ``dim`` is None)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def sequence_mean_logp(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised sequence log-probability ``1/|o| sum_t log pi(o_t)``.

    logps: [B, T], mask: [B, T] -> [B]. This is CAPO's ``lpm(o)``, and ``exp`` of it is the
    C2GSPG confidence and ``1 / perplexity``.
    """
    return masked_mean(logps, mask, dim=-1)  # [B]


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar; see the module docstring."""
    if aggregation == "sequence":
        return masked_mean(per_token, mask, dim=-1).mean()
    if aggregation == "token":
        return masked_mean(per_token, mask)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def _groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B] -> [n_groups, group_size]; raises if B is not a multiple of group_size."""
    if group_size < 1 or x.shape[0] % group_size:
        raise ValueError(f"batch of {x.shape[0]} is not a whole number of groups of {group_size}")
    return x.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor, *, group_size: int, eps: float = 1e-4, scale: bool = True
) -> torch.Tensor:
    """GRPO outcome advantage ``(r_i - mean_g) / (std_g + eps)`` (DeepSeekMath, Shao et al. 2024, §4.1.2).

    rewards: [B] -> [B]. ``std_g`` is the unbiased group std (module docstring). ``scale=False``
    returns ``r_i - mean_g`` only (Dr. GRPO). A single-sample group gets advantage 0.
    """
    r = _groups(rewards.float(), group_size)  # [G, K]
    centred = r - r.mean(dim=1, keepdim=True)  # [G, K]
    if scale and group_size > 1:
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)  # [B]


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref) (Schulman 2020; GRPO eq. 4).

    ``exp(ref - logp) - (ref - logp) - 1`` >= 0, zero where the two agree. [B, T] -> [B, T].
    """
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


def ppo_clip_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)`` with ``r = pi/pi_old`` (PPO eq. 7).

    logps, old_logps: [B, T]; advantages: [B] or [B, T]. Returns (loss [B, T], clipped [B, T] bool),
    ``clipped`` marking tokens whose gradient the clip removed.
    """
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(-1)  # [B, T] or [B, 1]
    ratio = torch.exp(logps - old_logps)  # [B, T]
    clipped_ratio = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    unclipped_obj, clipped_obj = ratio * adv, clipped_ratio * adv
    loss = -torch.minimum(unclipped_obj, clipped_obj)  # [B, T]
    clipped = clipped_obj < unclipped_obj
    return loss, clipped


# ----------------------------------------------------------------------------------------------
# GRPO
# ----------------------------------------------------------------------------------------------


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int,
    ref_logps: torch.Tensor | None = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    std_eps: float = 1e-4,
    scale_rewards: bool = True,
    aggregation: str = "sequence",
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO (Shao et al. 2024, arXiv 2402.03300, eq. 3):

        J = 1/G sum_i 1/|o_i| sum_t [ min(r_it A_i, clip(r_it, 1-eps, 1+eps) A_i) - beta KL_k3 ]

    with the group-normalised advantage ``A_i`` of ``group_advantages`` and the k3 KL (eq. 4) to the
    reference (only when ``beta > 0``; then ``ref_logps`` is required). ``epsilon_high`` defaults to
    ``epsilon`` (set it larger for DAPO's clip-higher). Returns ``(-J, metrics)``.
    """
    adv = group_advantages(rewards, group_size=group_size, eps=std_eps, scale=scale_rewards)  # [B]
    per_token, clipped = ppo_clip_token_loss(
        logps, old_logps, adv.detach(),
        epsilon_low=epsilon, epsilon_high=epsilon if epsilon_high is None else epsilon_high,
    )  # [B, T]
    metrics: dict[str, float] = {}
    if beta > 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = k3_kl(logps, ref_logps)  # [B, T]
        per_token = per_token + beta * kl
        metrics["kl"] = float(masked_mean(kl.detach(), mask))
    loss = aggregate(per_token, mask, aggregation)
    metrics.update(
        loss=float(loss.detach()),
        clip_frac=float(masked_mean(clipped.float(), mask)),
        adv_abs_mean=float(adv.abs().mean()),
    )
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# GSPO
# ----------------------------------------------------------------------------------------------


def gspo_sequence_ratio(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """GSPO's length-normalised sequence importance ratio (Zheng et al. 2025, arXiv 2507.18071, eq. 7):

        s_i = (pi(o_i)/pi_old(o_i))^(1/|o_i|) = exp(1/|o_i| sum_t (log pi - log pi_old))

    [B, T] -> [B]. Computed in log space, so it is exact for long sequences.
    """
    return torch.exp(masked_mean(logps - old_logps, mask, dim=-1))  # [B]


def gspo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int,
    epsilon: float = 3e-4,
    epsilon_high: float = 4e-4,
    std_eps: float = 1e-4,
    scale_rewards: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (arXiv 2507.18071, eq. 5):

        J = 1/G sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)

    ``s_i`` from ``gspo_sequence_ratio`` (sequence-level, so one clip decision per completion) and
    ``A_i`` the group-normalised advantage. Default clip range (3e-4, 4e-4) is the paper's (§5.1):
    sequence ratios are length-averaged and so sit much closer to 1 than token ratios.
    A ratio clipped in the direction the advantage pushes gets zero gradient. Returns ``(-J, metrics)``.
    """
    adv = group_advantages(rewards, group_size=group_size, eps=std_eps, scale=scale_rewards).detach()
    ratio = gspo_sequence_ratio(logps, old_logps, mask)  # [B]
    unclipped_obj = ratio * adv
    clipped_obj = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high) * adv
    per_seq = -torch.minimum(unclipped_obj, clipped_obj)  # [B]
    loss = per_seq.mean()
    metrics = {
        "loss": float(loss.detach()),
        "clip_frac": float((clipped_obj < unclipped_obj).float().mean()),
        "seq_ratio_mean": float(ratio.detach().mean()),
        "adv_abs_mean": float(adv.abs().mean()),
    }
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# CAPO
# ----------------------------------------------------------------------------------------------

CAPO_NORMALISATIONS = ("pairs", "none")


def capo_advantages(
    lpm: torch.Tensor,
    correct: torch.Tensor,
    *,
    group_size: int,
    tau: float = 0.6,
    normalise: str = "pairs",
) -> torch.Tensor:
    """CAPO's pairwise calibration advantage (CAPO, arXiv 2604.12632).

    For every (correct i, incorrect j) pair of a group, ``t = lpm_i - lpm_j`` and the logistic
    surrogate ``phi_tau(t) = log(1 + exp(-t/tau))`` is minimised. Its negative gradient gives

        correct i  : A_i =  sum_{incorrect j} sigmoid(-(lpm_i - lpm_j)/tau) / tau
        incorrect j: A_j = -sum_{correct i}   sigmoid(-(lpm_i - lpm_j)/tau) / tau

    i.e. a correct answer that is *less* likely than the wrong ones gets a large push up (close to
    1/tau per pair), one already far above them gets almost none.

    ``normalise="pairs"`` (default) divides by the group's number of pairs ``n_correct * n_wrong``:
    A is then exactly minus the gradient of the *mean* pairwise surrogate, so its scale does not
    grow with the group size or the correct/wrong split. ``"none"`` keeps the raw sums.
    A group that is all-correct or all-wrong has no pairs: A = 0 there.

    lpm: [B] (use ``sequence_mean_logp``), correct: [B] bool -> [B] (no grad).
    """
    if normalise not in CAPO_NORMALISATIONS:
        raise ValueError(f"normalise must be one of {CAPO_NORMALISATIONS}, got {normalise!r}")
    lpm_g = _groups(lpm.detach().float(), group_size)  # [G, K]
    ok = _groups(correct.bool(), group_size).float()  # [G, K]
    bad = 1.0 - ok
    # w[g, i, j] = sigmoid(-(lpm_i - lpm_j)/tau)/tau for every ordered pair, then masked to
    # (i correct, j incorrect) pairs.
    t = lpm_g.unsqueeze(2) - lpm_g.unsqueeze(1)  # [G, K, K]: t[g, i, j] = lpm_i - lpm_j
    w = torch.sigmoid(-t / tau) / tau * ok.unsqueeze(2) * bad.unsqueeze(1)  # [G, K, K]
    adv = w.sum(dim=2) - w.sum(dim=1)  # [G, K]: correct rows get +, incorrect columns get -
    if normalise == "pairs":
        n_pairs = ok.sum(1, keepdim=True) * bad.sum(1, keepdim=True)  # [G, 1]
        adv = adv / n_pairs.clamp(min=1.0)
    return adv.reshape(-1)  # [B]


def capo_mask(
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    correct: torch.Tensor,
    *,
    ref_low: float = 1.05,
    ref_high: float = 2.5,
) -> torch.Tensor:
    """CAPO's sample mask m(o) from the reference model's perplexity (CAPO, arXiv 2604.12632).

    ``ref_ppl = exp(-mean_t log pi_ref(o_t))``. Drop (m = 0) a *correct* sample the reference finds
    implausible (ref_ppl > ref_high: likely a lucky or degenerate answer, not worth reinforcing) and an
    *incorrect* sample the reference is already near-certain of (ref_ppl < ref_low: pushing it down
    would fight the reference's fluent text rather than the error). [B, T] -> [B] float.
    """
    ref_ppl = torch.exp(-sequence_mean_logp(ref_logps.detach(), mask))  # [B]
    correct = correct.bool()
    drop = (correct & (ref_ppl > ref_high)) | (~correct & (ref_ppl < ref_low))
    return (~drop).float()


def capo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    correct: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int,
    tau: float = 0.6,
    epsilon: float = 0.2,
    ref_low: float = 1.05,
    ref_high: float = 2.5,
    normalise: str = "pairs",
    aggregation: str = "sequence",
) -> tuple[torch.Tensor, dict[str, float]]:
    """CAPO (arXiv 2604.12632): PPO-clipped objective with advantage ``m(o_i) * A~_i``

        J = 1/G sum_i 1/|o_i| sum_t min(r_it m_i A~_i, clip(r_it, 1-eps, 1+eps) m_i A~_i)

    ``A~`` from ``capo_advantages`` on ``lpm = sequence_mean_logp(old_logps)`` -- the
    length-normalised log-probability under the *sampling* policy: the advantage is a constant
    weight fixed at rollout time (as in GRPO), and length normalisation keeps long and short answers
    comparable. ``m`` from ``capo_mask`` (computed on all pairs, then applied). Returns ``(-J, metrics)``.
    """
    lpm = sequence_mean_logp(old_logps.detach(), mask)  # [B]
    adv = capo_advantages(lpm, correct, group_size=group_size, tau=tau, normalise=normalise)  # [B]
    m = capo_mask(ref_logps, mask, correct, ref_low=ref_low, ref_high=ref_high)  # [B]
    weighted = (m * adv).detach()  # [B]
    per_token, clipped = ppo_clip_token_loss(
        logps, old_logps, weighted, epsilon_low=epsilon, epsilon_high=epsilon
    )  # [B, T]
    loss = aggregate(per_token, mask, aggregation)
    metrics = {
        "loss": float(loss.detach()),
        "clip_frac": float(masked_mean(clipped.float(), mask)),
        "masked_frac": float(1.0 - m.mean()),
        "adv_abs_mean": float(weighted.abs().mean()),
    }
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# C2GSPG
# ----------------------------------------------------------------------------------------------


def sequence_confidence(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """C2GSPG's sequence confidence ``c_i = exp(1/|o_i| sum_t log pi(o_t))`` in (0, 1]. [B, T] -> [B]."""
    return torch.exp(sequence_mean_logp(logps, mask))


def is_binary(rewards: torch.Tensor) -> bool:
    """True when every reward is exactly 0 or 1."""
    return bool(((rewards == 0) | (rewards == 1)).all())


def confidence_targets(
    rewards: torch.Tensor, *, group_size: int, kappa: float = 2.0, std_eps: float = 1e-4
) -> torch.Tensor:
    """Target confidence y_i in [0, 1] for the C2GSPG regulariser.

    Binary rewards are their own target (y = r). For non-binary rewards (our choice; the seed does
    not fix one) we use a nonlinear group normalisation ``y_i = sigmoid(kappa * A_i)`` with ``A_i``
    the GRPO group-normalised advantage: above-average answers are pulled above 0.5 confidence,
    below-average ones below, saturating smoothly instead of trusting the raw reward scale; a
    group of equal rewards gets y = 0.5 everywhere. rewards: [B] -> [B].
    """
    if is_binary(rewards):
        return rewards.float()
    adv = group_advantages(rewards, group_size=group_size, eps=std_eps)  # [B]
    return torch.sigmoid(kappa * adv)


def confidence_bce(lpm: torch.Tensor, target: torch.Tensor, *, max_conf: float = 1.0 - 1e-6) -> torch.Tensor:
    """Per-sequence ``BCE(c, y) = -[y log c + (1 - y) log(1 - c)]`` with ``c = exp(lpm)``. [B] -> [B].

    Written in log space (``log c = lpm``, ``log(1 - c) = log(-expm1(lpm))``) for stability.
    d BCE / d lpm = (c - y) / (1 - c): confidence below the target pushes lpm up, above pushes it down.
    """
    lpm = lpm.clamp(max=math.log(max_conf))
    return -(target * lpm + (1.0 - target) * torch.log(-torch.expm1(lpm)))


def c2gspg_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int,
    lam: float = 0.1,
    epsilon: float = 3e-4,
    epsilon_high: float = 4e-4,
    kappa: float = 2.0,
    std_eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """C2GSPG ("Confidence-calibrated Group Sequence Policy Gradient towards Self-aware Reasoning",
    arXiv 2509.23129): GSPO's group-sequence policy gradient + a confidence-calibration BCE.

        L = L_GSPO + lam * 1/G sum_i k_i * BCE(c_i, y_i),   c_i = exp(mean_t log pi(o_it))

    * ``L_GSPO`` from ``gspo_loss`` (sequence ratio, sequence clipping, group-normalised advantage).
    * ``y_i`` from ``confidence_targets``: the reward itself when binary, else ``sigmoid(kappa*A_i)``.
    * Adaptive regulariser clipping (our choice): ``k_i = 0`` for a sequence whose regulariser
      gradient on lpm_i has the opposite sign of its policy-gradient advantage A_i (sign(y_i - c_i)
      != sign(A_i), A_i != 0), so the regulariser can only calibrate, never undo, what the reward
      asks. With binary rewards this never triggers in a mixed group (a correct answer has A > 0 and
      y = 1 >= c; a wrong one A < 0 and y = 0 <= c), matching the paper's claim that binary rewards
      align the two terms; in an all-equal group (A = 0) the regulariser acts alone.

    ``c`` keeps its gradient (the regulariser trains the policy); everything else is detached.
    """
    pg_loss, metrics = gspo_loss(
        logps, old_logps, rewards, mask, group_size=group_size,
        epsilon=epsilon, epsilon_high=epsilon_high, std_eps=std_eps,
    )
    adv = group_advantages(rewards, group_size=group_size, eps=std_eps)  # [B]
    target = confidence_targets(rewards, group_size=group_size, kappa=kappa, std_eps=std_eps)  # [B]
    lpm = sequence_mean_logp(logps, mask)  # [B], with grad
    conf = torch.exp(lpm.detach())  # [B]
    conflict = (adv != 0) & (torch.sign(target - conf) != torch.sign(adv))  # [B]
    keep = (~conflict).float()
    reg = (keep * confidence_bce(lpm, target)).mean()
    loss = pg_loss + lam * reg
    metrics.update(
        loss=float(loss.detach()),
        pg_loss=float(pg_loss.detach()),
        calib_loss=float(reg.detach()),
        reg_clip_frac=float(conflict.float().mean()),
        confidence_mean=float(conf.mean()),
    )
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# the registry: what a trainer needs to know about each objective
# ----------------------------------------------------------------------------------------------

REFERENCE_USES = ("never", "always", "with_kl")
INERT_WHEN = ("never", "always", "without_kl")


@dataclass(frozen=True)
class Objective:
    """An objective as the trainer sees it: its loss and the properties that decide what to compute.

    The trainer reads these properties and never an objective's name."""

    loss: Callable[..., tuple[torch.Tensor, dict[str, float]]]
    takes_correctness: bool = False  # gets ``correct`` (reward > 0.5, bool [B]) instead of ``rewards``
    reference: str = "never"  # ref_logps: "never", "always" (CAPO's mask) or "with_kl" (when beta > 0)
    token_level: bool = False  # one loss term per token, so ``aggregation`` applies
    # a group whose rewards are all equal has zero gradient: "never", "always" or "without_kl" (beta == 0)
    inert_when_uniform: str = "never"

    def __post_init__(self):
        if self.reference not in REFERENCE_USES:
            raise ValueError(f"reference must be one of {REFERENCE_USES}, got {self.reference!r}")
        if self.inert_when_uniform not in INERT_WHEN:
            raise ValueError(f"inert_when_uniform must be one of {INERT_WHEN}, got {self.inert_when_uniform!r}")

    def inert_on_uniform_groups(self, hyper: Mapping[str, Any]) -> bool:
        """True when an all-right or all-wrong group contributes exactly zero gradient (its advantages
        are 0 and nothing else in the loss depends on it), so the trainer may skip its backward pass."""
        return self.inert_when_uniform == "always" or (
            self.inert_when_uniform == "without_kl" and not hyper.get("beta", 0.0))

    @property
    def hyper_parameters(self) -> tuple[str, ...]:
        """The loss's keyword hyper-parameters (keyword-only, except ``group_size`` and ``ref_logps``)."""
        return tuple(p.name for p in inspect.signature(self.loss).parameters.values()
                     if p.kind is p.KEYWORD_ONLY and p.name not in ("group_size", "ref_logps"))

    def needs_reference(self, hyper: Mapping[str, Any]) -> bool:
        return self.reference == "always" or (self.reference == "with_kl" and hyper.get("beta", 0.0) > 0.0)

    def __call__(self, logps, old_logps, ref_logps, rewards, mask, *, group_size: int, **hyper):
        """``loss`` with the tensors it takes: ``correct`` or ``rewards``, ``ref_logps`` when it uses one."""
        outcome = {"correct": rewards > 0.5} if self.takes_correctness else {"rewards": rewards}
        ref = {} if self.reference == "never" else {"ref_logps": ref_logps}
        return self.loss(logps, old_logps, mask=mask.to(logps.dtype), group_size=group_size, **outcome, **ref,
                         **hyper)


OBJECTIVES: dict[str, Objective] = {
    "grpo": Objective(grpo_loss, reference="with_kl", token_level=True, inert_when_uniform="without_kl"),
    "gspo": Objective(gspo_loss, inert_when_uniform="always"),
    "capo": Objective(capo_loss, takes_correctness=True, reference="always", token_level=True,
                      inert_when_uniform="always"),
    "c2gspg": Objective(c2gspg_loss),
}
