"""The ideas of notes/walkthrough.md as pictures, drawn by ppo.py's own functions on real data.

    python notes/pictures.py               # every figure, into notes/img/idea-*.png (about a minute on one core)
    python notes/pictures.py --fast        # only those that need no training: clip, discount, lambda
    python notes/pictures.py --out /tmp/pictures

Each picture calls the function that teaches its idea, never a second copy of it, so a change to ppo.py shows in
its picture (and test_ppo.py draws the fast ones, so a broken function fails the suite):

  idea-clip.png       the clipped objective against the ratio, for A > 0 and A < 0: clipped_policy_loss, with
                      autograd saying where its gradient is zero
  idea-discount.png   the weight gamma^k of a reward k steps ahead, for gamma 0.9, 0.99, 0.999
  idea-lambda.png     GAE as a blend of n-step returns: the weight compute_gae puts on each, found by feeding it
                      a single TD error at a time
  idea-rollout.png    one real rollout of a briefly trained Acrobot-v1 agent: collect_rollout, next_state_values
                      and compute_gae, as train() wires them
  idea-policy.png     a CartPole-v1 policy's action probabilities on a few states, before and after training
  idea-entropy.png    the policy's entropy over training, with and without the entropy bonus (Acrobot-v1, train())

Training runs go to a temporary folder, deleted at the end; seeds are fixed, so the figures come out the same on
every run on the CPU. Needs matplotlib (pip install matplotlib), as notes/plot.py does; ppo.py does not.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import ppo  # noqa: E402

SEED = 1
FAST = ("clip", "discount", "lambda")
ALL = (*FAST, "rollout", "policy", "entropy")
POS, NEG, GREY = "#2a9d5c", "#d1495b", "#8d99ae"          # positive advantage, negative advantage, "before"


# ======================================================================================================================
# The data: each function calls ppo.py and returns plain arrays, which the test checks and draw_* plots.
# ======================================================================================================================
def clip_curves(clip_coef: float = 0.2, advantage: float = 1.0, ratios: np.ndarray | None = None) -> dict:
    """The clipped objective L = -clipped_policy_loss for one sample at each ratio, and dL/dratio by autograd."""
    ratios = np.linspace(0.0, 2.0, 401)[1:] if ratios is None else np.asarray(ratios, dtype=np.float64)
    objective, gradient = [], []
    for r in ratios:
        logratio = torch.tensor([np.log(r)], dtype=torch.float64, requires_grad=True)
        loss = ppo.clipped_policy_loss(logratio, torch.tensor([advantage], dtype=torch.float64), clip_coef)
        loss.backward()
        objective.append(-loss.item())
        gradient.append(-logratio.grad.item() / r)                  # d/dratio = d/dlogratio * dlogratio/dratio
    return dict(ratio=ratios, objective=np.array(objective), gradient=np.array(gradient),
                unclipped=ratios * advantage, advantage=advantage, clip_coef=clip_coef)


def discount_weights(gammas=(0.9, 0.99, 0.999), max_k: int = 10_000) -> dict:
    """gamma^k, the weight of a reward k steps ahead, and the horizon 1 / (1 - gamma) of each gamma."""
    k = np.arange(max_k + 1)
    return dict(k=k, weights={g: g ** k for g in gammas}, horizons={g: 1 / (1 - g) for g in gammas})


def gae_weights(gae_lambda: float, gamma: float = 0.99, steps: int = 30) -> np.ndarray:
    """The weight GAE puts on each n-step advantage estimate, n = 1 .. steps, from compute_gae itself.

    The n-step estimate A(n) = delta_0 + gamma delta_1 + ... + gamma^(n-1) delta_(n-1) counts the TD error l steps
    ahead with gamma^l, in every A(n) with n > l. So if GAE = sum_n w_n A(n), it counts delta_l with
    gamma^l (w_(l+1) + w_(l+2) + ...). compute_gae, fed a single TD error of 1 at step l (reward 1, every V 0),
    gives that count as its advantage at step 0; divided by gamma^l it is the weight left for n > l, and the
    differences give each w_n. The last, n = steps, is the rollout's end: the longest return the rollout holds,
    bootstrapped there. Column l of one (steps, steps) batch carries the TD error at step l."""
    rewards = np.eye(steps, dtype=np.float64)                       # (T, N): env l has its one TD error at step l
    zeros = np.zeros_like(rewards)
    advantages, _ = ppo.compute_gae(rewards, zeros, zeros, zeros, zeros, gamma, gae_lambda)
    beyond = advantages[0] / gamma ** np.arange(steps)              # weight on the estimates with n > l, l = 0..T-1
    return np.append(beyond[:-1] - beyond[1:], beyond[-1])          # w_1 .. w_T


def brief_run(env_id: str, steps: int, runs_dir: str, **overrides) -> dict:
    """train() on the command line's defaults for env_id, quietly, into runs_dir."""
    args = ppo.default_args(env_id, total_timesteps=steps, seed=SEED, runs_dir=runs_dir, quiet=True,
                            tensorboard=False, **overrides)
    with contextlib.redirect_stdout(io.StringIO()):         # its first and last lines name a folder soon deleted
        return ppo.train(args)


def one_rollout(checkpoint: Path, num_steps: int = 1000, num_envs: int = 32, seed: int = SEED) -> dict:
    """One rollout of the saved agent, wired as train() wires it (collect, values, scale rewards, next values, GAE), and the
    timeline of the env in it that shows the most: both kinds of episode end if any env has them, then most ends."""
    agent, args = ppo.load_agent(checkpoint)
    args = dataclasses.replace(args, num_envs=num_envs)
    torch.manual_seed(seed)
    with contextlib.closing(ppo.make_vector_env(args)) as envs:
        first = envs.reset(seed=seed)
        rollout = ppo.Rollout.start(num_steps, envs.single_observation_space, envs.single_action_space, first,
                                    core=agent.core)
        reward_scaler = ppo.RewardScaler(agent.reward_rms, args.gamma, num_envs, enabled=args.norm_reward)
        ppo.collect_rollout(envs, agent, rollout, reward_scaler)
        rollout.values, rollout.final_values = ppo.critic_values(agent, rollout)
    rewards = reward_scaler.scale(rollout.rewards)
    reward_divisor = agent.reward_rms.std().item() if args.norm_reward else 1.0     # what scale() divided by
    next_values = ppo.next_state_values(agent, rollout, rollout.values, rollout.final_values)
    advantages, returns = ppo.compute_gae(rewards, rollout.values, next_values, rollout.terminations,
                                          rollout.truncations, args.gamma, args.gae_lambda)
    term, trunc = rollout.terminations.sum(0), rollout.truncations.sum(0)
    n = int(np.argmax(((term > 0) & (trunc > 0)) * 1000 + term + trunc))
    return dict(env_id=args.env_id, env=n, raw_rewards=rollout.rewards[:, n], rewards=rewards[:, n],
                values=rollout.values[:, n], advantages=advantages[:, n],
                returns=returns[:, n], terminations=rollout.terminations[:, n], truncations=rollout.truncations[:, n],
                gamma=args.gamma, gae_lambda=args.gae_lambda, norm_reward=args.norm_reward, num_envs=num_envs,
                reward_divisor=reward_divisor)


# A few CartPole states: (cart position, cart velocity, pole angle in radians, pole angular velocity).
CARTPOLE_STATES = [
    ("upright, still", [0.0, 0.0, 0.0, 0.0]),
    ("leaning right", [0.0, 0.0, 0.05, 0.0]),
    ("leaning left", [0.0, 0.0, -0.05, 0.0]),
    ("upright, falling right", [0.0, 0.0, 0.0, 0.3]),
    ("leaning right,\nswinging back left", [0.0, 0.0, 0.04, -0.3]),
]


def policy_probabilities(checkpoint: Path, states=CARTPOLE_STATES) -> dict:
    """pi(.|s) on each state, from the saved agent ("after") and from the agent train() started from: built by
    build_agent right after seeding torch with the run's seed, as train() does ("before")."""
    after, args = ppo.load_agent(checkpoint)
    torch.manual_seed(args.seed)
    env = ppo.make_env(args.env_id)
    before = ppo.build_agent(args, env.observation_space, env.action_space).eval()
    env.close()
    obs = torch.tensor([s for _, s in states], dtype=torch.float32)
    with torch.inference_mode():
        probs = {name: agent.distribution(obs).probs.numpy()
                 for name, agent in (("before", before), ("after", after))}
    return dict(labels=[label for label, _ in states], states=obs.numpy(), **probs)


def entropy_runs(runs_dir: str, env_id: str = "Acrobot-v1", steps: int = 50_000, coefs=(0.0, 0.01),
                 seeds=(1, 2)) -> dict:
    """train() with each entropy coefficient and seed: the entropy column of updates.csv, and episode returns."""
    runs = {}
    for coef in coefs:
        for seed in seeds:
            args = ppo.default_args(env_id, total_timesteps=steps, seed=seed, ent_coef=coef, runs_dir=runs_dir,
                                    quiet=True, tensorboard=False, exp_name=f"ent{coef}")
            with contextlib.redirect_stdout(io.StringIO()):
                result = ppo.train(args)
            with open(result["run_dir"] / "updates.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            runs[coef, seed] = dict(step=np.array([int(r["global_step"]) for r in rows]),
                                    entropy=np.array([float(r["entropy"]) for r in rows]),
                                    episode_step=np.array(result["episode_steps"]),
                                    episode_return=np.array(result["episode_returns"]))
    with contextlib.closing(ppo.make_env(env_id)) as env:
        n_actions = env.action_space.n
    return dict(env_id=env_id, runs=runs, coefs=coefs, seeds=seeds, n_actions=n_actions,
                max_entropy=float(np.log(n_actions)))


# ======================================================================================================================
# The pictures.
# ======================================================================================================================
def draw_clip(plt, out: Path, clip_coef: float = 0.2) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, advantage in zip(axes, (1.0, -1.0)):
        c = clip_curves(clip_coef, advantage)
        r, obj, flat = c["ratio"], c["objective"], np.isclose(c["gradient"], 0.0)
        ax.axvspan(1 - clip_coef, 1 + clip_coef, color="#f1f3f5", zorder=0)
        ax.plot(r, c["unclipped"], ls="--", color=GREY, lw=1.2, label="unclipped: ratio · A")
        moving = np.where(flat, np.nan, obj)
        still = np.where(flat, obj, np.nan)
        color = POS if advantage > 0 else NEG
        ax.plot(r, moving, color=color, lw=2.8, label="clipped objective, still pushing: gradient ≠ 0")
        ax.plot(r, still, color="black", lw=2.8, label="clipped objective, flat: gradient = 0")
        ax.axvline(1.0, color="black", lw=0.8, ls=":")
        ax.set_xlabel("probability ratio  π_new(a|s) / π_old(a|s)")
        ax.set_xlim(0, 2)
        sign = "A > 0: a good action" if advantage > 0 else "A < 0: a bad action"
        ax.set_title(f"{sign} (A = {advantage:+g})")
        ax.text(1.0, 0.98, f"ratio 1: the old policy\nshaded: [1 − ε, 1 + ε], ε = {clip_coef:g}",
                transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8.5, color="#495057",
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.5))
        # where the flat part starts: the edge of the range that the advantage favours
        edge = 1 + clip_coef if advantage > 0 else 1 - clip_coef
        ax.annotate(f"flat beyond {edge:g}:\nmoving further earns\nnothing, no more push",
                    (edge + (0.1 if advantage > 0 else -0.4), edge * advantage),
                    xytext=(0, -45), textcoords="offset points", ha="left" if advantage > 0 else "center",
                    fontsize=9, arrowprops=dict(arrowstyle="->", lw=0.8))
        # the other side: the min keeps the unclipped term, so a move the wrong way is pulled back in full
        far = 0.4 if advantage > 0 else 1.45
        ax.annotate("the wrong way: full slope,\npulled back", (far, far * advantage),
                    xytext=(-45, 55) if advantage > 0 else (12, 22),
                    textcoords="offset points", ha="left", fontsize=9, arrowprops=dict(arrowstyle="->", lw=0.8))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("objective  min(ratio · A, clip(ratio) · A)")
    fig.suptitle("The clipped objective, drawn by ppo.clipped_policy_loss; black = where autograd gives it no "
                 "gradient", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save(fig, out / "idea-clip.png", plt)


def draw_discount(plt, out: Path) -> Path:
    d = discount_weights()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = ["#e76f51", "#2a9d8f", "#264653"]
    k = d["k"][1:]
    for (g, w), color in zip(d["weights"].items(), colors):
        h = d["horizons"][g]
        ax.plot(k, w[1:], color=color, lw=2, label=f"γ = {g}:  horizon 1 / (1 − γ) = {h:,.0f} steps")
        ax.axvline(h, color=color, ls=":", lw=1.2)
        ax.plot([h], [g ** h], "o", color=color, ms=5)
    ax.axhline(np.exp(-1), color=GREY, lw=0.8, ls="--")
    ax.text(1.2, np.exp(-1) + 0.02, "at its horizon a reward counts about 0.37 (1/e)", fontsize=8.5, color="#495057")
    ax.set_xscale("log")
    ax.set_xlim(1, d["k"][-1])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k, steps ahead (log scale)")
    ax.set_ylabel("weight of a reward k steps ahead:  γ^k")
    ax.set_title("The discount factor: how much a later reward counts today")
    ax.legend(loc="lower left", fontsize=9, frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save(fig, out / "idea-discount.png", plt)


def draw_lambda(plt, out: Path, steps: int = 30, gamma: float = 0.99) -> Path:
    lambdas = [(0.0, "one-step TD:\nall on n = 1"), (0.5, ""), (0.9, ""), (0.95, "the default"),
               (1.0, "Monte Carlo: all on\nthe rewards to the\nrollout's end")]
    fig, axes = plt.subplots(1, len(lambdas), figsize=(13, 3.6), sharey=True)
    n = np.arange(1, steps + 1)
    for ax, (lam, note) in zip(axes, lambdas):
        w = gae_weights(lam, gamma, steps)
        colors = ["#2a6f97"] * (steps - 1) + ["#e76f51"]
        ax.bar(n, w, width=0.8, color=colors)
        ax.set_title(f"λ = {lam:g}" + (f"  ({note})" if note and "\n" not in note else ""), fontsize=10)
        if "\n" in note:
            ax.text(0.5, 0.6, note, transform=ax.transAxes, ha="center", fontsize=9, color="#495057")
        ax.text(0.97, 0.97, f"last: {w[-1]:.2f}" if 0 < lam < 1 else "", transform=ax.transAxes, ha="right",
                va="top", fontsize=8.5, color="#e76f51")
        ax.set_xticks([1, 10, 20, steps])
        ax.set_xlim(0.3, steps + 0.7)
        ax.set_xlabel("n (steps before bootstrapping)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("weight GAE puts on\nthe n-step estimate")
    fig.suptitle(f"λ blends the n-step advantage estimates: weight (1 − λ) λ^(n−1) on each, and the rest (orange) "
                 f"on the longest, to the end of a {steps}-step rollout\n(the weights GAE gives, found by calling "
                 f"compute_gae; they do not depend on γ, here {gamma})", fontsize=10.5)
    fig.tight_layout()
    return save(fig, out / "idea-lambda.png", plt)


def draw_rollout(plt, out: Path, data: dict, trained_steps: int) -> Path:
    t = np.arange(len(data["rewards"]))
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.4), sharex=True, gridspec_kw=dict(height_ratios=[0.8, 1.4, 1.6]))
    for ax in axes:
        for e in np.flatnonzero(data["terminations"]):
            ax.axvline(e + 0.5, color="black", lw=1.3)
        for e in np.flatnonzero(data["truncations"]):
            ax.axvline(e + 0.5, color="#e76f51", lw=2, ls="--")
        ax.grid(alpha=0.25)
        ax.margins(x=0)
    # the ends, named once, above the first panel
    from matplotlib.lines import Line2D
    ends = [Line2D([], [], color="black", lw=1.3), Line2D([], [], color="#e76f51", lw=2, ls="--")]
    fig.legend(ends, ["episode ends: terminated (Acrobot: the goal is reached; no future to bootstrap)",
                      "time limit cuts it: truncated (bootstrapped from V of its last state)"],
               loc="upper center", bbox_to_anchor=(0.5, 0.96), ncol=2, fontsize=8.5, frameon=False)
    raw = data["raw_rewards"]
    axes[0].plot(t, raw, color="#495057", lw=1.2, drawstyle="steps-mid")
    axes[0].set_ylim(raw.min() - 0.4, raw.max() + 0.4)
    axes[0].set_ylabel("reward r_t")
    if data["norm_reward"]:
        axes[0].set_title(f"the update sees each reward ÷ {data['reward_divisor']:.1f} (--norm-reward): V and Â "
                          "below are in those units", fontsize=8.5, loc="right", color="#495057")
    axes[1].plot(t, data["values"], color="#264653", lw=1.3, label="V(s_t): the critic's prediction, the baseline")
    axes[1].plot(t, data["returns"], color="#e9c46a", lw=1.6, label="what came: return target Â_t + V(s_t)")
    axes[1].set_ylabel("value")
    terms, truncs = np.flatnonzero(data["terminations"]), np.flatnonzero(data["truncations"])
    if len(terms):
        e = terms[0]
        axes[1].annotate("goal reached: the target\nis r_t alone, no future", (e, data["returns"][e]),
                         xytext=(12, -4), textcoords="offset points", fontsize=8.5, va="top")
    if len(truncs):
        e = truncs[0]
        axes[1].annotate("cut by the time limit: the target\nbootstraps, r_t + γ V(last state)",
                         (e, data["returns"][e]), xytext=(-12, 38), textcoords="offset points", fontsize=8.5,
                         ha="right",
                         arrowprops=dict(arrowstyle="->", lw=0.8))
    axes[1].legend(fontsize=8.5, frameon=False, loc="lower left", bbox_to_anchor=(0, 1), ncol=2, borderaxespad=0)
    adv = data["advantages"]
    axes[2].fill_between(t, adv, 0, where=adv >= 0, color=POS, step="mid", label="Â_t > 0: better than V expected")
    axes[2].fill_between(t, adv, 0, where=adv < 0, color=NEG, step="mid", label="Â_t < 0: worse than V expected")
    axes[2].axhline(0, color="black", lw=0.6)
    axes[2].set_ylabel("GAE advantage Â_t")
    axes[2].set_xlabel(f"step t of the rollout (env {data['env']} of its {data['num_envs']})")
    axes[2].legend(fontsize=8.5, frameon=False, loc="lower left", bbox_to_anchor=(0, 1), ncol=2, borderaxespad=0)
    fig.suptitle(f"One real rollout: {data['env_id']} after {trained_steps:,} training steps (collect_rollout, "
                 f"next_state_values, compute_gae; γ {data['gamma']}, λ {data['gae_lambda']})", fontsize=10.5)
    fig.tight_layout(rect=(0, 0, 1, 0.945))
    return save(fig, out / "idea-rollout.png", plt)


SKETCH_ANGLE = 4      # the sketches draw the pole's angle 4 times larger than it is, so that 3 degrees show


def draw_cartpole(ax, state) -> None:
    """A small sketch of a CartPole state: the cart, the pole at its angle, an arrow for its angular velocity."""
    from matplotlib.patches import Rectangle
    x, _, theta, omega = state
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-0.35, 1.25)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.plot([-1.1, 1.1], [-0.12, -0.12], color="#adb5bd", lw=1)
    ax.add_patch(Rectangle((x - 0.3, -0.1), 0.6, 0.22, color="#343a40"))
    angle = theta * SKETCH_ANGLE
    tip = np.array([x + np.sin(angle), 0.12 + np.cos(angle)])
    ax.plot([x, tip[0]], [0.12, tip[1]], color="#bc6c25", lw=4, solid_capstyle="round")
    if omega:
        ax.annotate("", xy=(tip[0] + 0.45 * np.sign(omega), tip[1] - 0.05), xytext=(tip[0], tip[1]),
                    arrowprops=dict(arrowstyle="->", color="#d1495b", lw=1.6))


def draw_policy(plt, out: Path, data: dict, trained_steps: int) -> Path:
    k = len(data["labels"])
    fig, axes = plt.subplots(2, k, figsize=(2.3 * k, 5.2), gridspec_kw=dict(height_ratios=[1, 1.5]))
    for j in range(k):
        draw_cartpole(axes[0, j], data["states"][j])
        axes[0, j].set_title(data["labels"][j], fontsize=9.5)
        ax = axes[1, j]
        x = np.arange(2)
        ax.bar(x - 0.2, data["before"][j], width=0.38, color=GREY, label="before training")
        ax.bar(x + 0.2, data["after"][j], width=0.38, color="#2a6f97", label=f"after {trained_steps:,} steps")
        for xi, p in zip(x + 0.2, data["after"][j]):
            ax.text(xi, p + 0.02, f"{p:.2f}", ha="center", fontsize=8)
        ax.set_xticks(x, ["push\nleft", "push\nright"])
        ax.set_ylim(0, 1.1)
        ax.set_yticks([0, 0.5, 1])
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(labelsize=8.5)
        ax.set_xlabel("s = [{:+.2f}, {:+.2f}, {:+.2f}, {:+.2f}]".format(*data["states"][j]), fontsize=8)
        if j:
            ax.set_yticklabels([])
    axes[1, 0].set_ylabel("π(a|s)")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("The policy network turns a state into action probabilities: CartPole-v1's Agent.distribution on "
                 "a few states\ns = [cart position, cart velocity, pole angle, pole angular velocity]; sketches draw "
                 f"the angle ×{SKETCH_ANGLE}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, out / "idea-policy.png", plt)


def smoothed(steps: np.ndarray, values: np.ndarray, window: int = 20) -> tuple[np.ndarray, np.ndarray]:
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return steps, (cumulative[idx] - cumulative[start]) / (idx - start)


def draw_entropy(plt, out: Path, data: dict) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {data["coefs"][0]: "#264653", **{c: col for c, col in zip(data["coefs"][1:], ("#e76f51", "#e9c46a"))}}
    for (coef, seed), run in data["runs"].items():
        label = (f"--ent-coef {coef:g}" + (" (no bonus, the default)" if coef == 0 else " (bonus)")
                 if seed == data["seeds"][0] else None)
        axes[0].plot(run["step"], run["entropy"], color=colors[coef], lw=1.6, label=label, alpha=0.9)
        axes[1].plot(*smoothed(run["episode_step"], run["episode_return"]), color=colors[coef], lw=1.4, alpha=0.9,
                     label=label)
    axes[0].axhline(data["max_entropy"], color=GREY, ls="--", lw=1)
    n = data["n_actions"]
    axes[0].text(0.99, data["max_entropy"] - 0.02, f"uniform over the {n} actions: ln {n}", ha="right", va="top",
                 fontsize=8.5, transform=axes[0].get_yaxis_transform(), color="#495057")
    axes[0].set_ylim(0, data["max_entropy"] * 1.08)
    axes[0].set_ylabel("policy entropy (updates.csv)")
    axes[0].set_title("exploration: how random the policy still is", fontsize=10)
    axes[1].set_ylabel("episode return (mean of the last 20)")
    axes[1].set_title("what it earns (−1 a step until the goal; −500: the time limit came first)", fontsize=10)
    for ax in axes:
        ax.xaxis.set_major_formatter(lambda x, pos: f"{x / 1000:g}k")
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5, frameon=False)
    fig.suptitle(f"The entropy bonus keeps {data['env_id']}'s policy exploring longer: train() with and without it, "
                 f"{len(data['seeds'])} seeds each", fontsize=10.5)
    fig.tight_layout()
    return save(fig, out / "idea-entropy.png", plt)


def save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def import_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: notes/pictures.py needs matplotlib; pip install matplotlib") from None
    return plt


ROLLOUT_TRAIN_STEPS = 10_240       # Acrobot-v1: most episodes reach the goal, a few still run into the time limit
ROLLOUT_SEED = 3                   # the envs' first reset and the actions sampled: one of its envs has both ends
POLICY_TRAIN_STEPS = 30_720        # CartPole-v1: long enough to hold the pole for 500 steps


def draw(names, out: Path) -> list[Path]:
    """Draw the named figures into out; returns their paths."""
    plt = import_pyplot()
    out.mkdir(parents=True, exist_ok=True)
    fast = {"clip": draw_clip, "discount": draw_discount, "lambda": draw_lambda}
    drawn = [fast[name](plt, out) for name in FAST if name in names]
    if set(names) - set(FAST):
        with tempfile.TemporaryDirectory() as runs_dir:
            if "rollout" in names:
                run = brief_run("Acrobot-v1", ROLLOUT_TRAIN_STEPS, runs_dir)
                data = one_rollout(run["checkpoint"], seed=ROLLOUT_SEED)
                drawn.append(draw_rollout(plt, out, data, run["global_step"]))
            if "policy" in names:
                run = brief_run("CartPole-v1", POLICY_TRAIN_STEPS, runs_dir)
                drawn.append(draw_policy(plt, out, policy_probabilities(run["checkpoint"]), run["global_step"]))
            if "entropy" in names:
                drawn.append(draw_entropy(plt, out, entropy_runs(runs_dir)))
    return drawn


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help=f"only the figures that need no training: {FAST}")
    parser.add_argument("--out", type=Path, default=HERE / "img", help="folder for the PNGs (default: notes/img)")
    parser.add_argument("--only", nargs="+", choices=ALL, help="draw only these figures")
    args = parser.parse_args(argv)
    names = args.only or (FAST if args.fast else ALL)
    start = time.time()
    for path in draw(names, args.out):
        print(f"wrote {path}")
    print(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
