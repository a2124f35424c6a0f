"""Tests for ppo.py: known answers worked out by hand, properties that must hold, and short runs that must learn.

Run with:  python -m pytest -q test_ppo.py
"""

import ast
import dataclasses
import csv
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import shutil
import subprocess
import sys
import time
import textwrap
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.distributions import Independent, Normal

import ppo

HERE = Path(__file__).resolve().parent
TAXI = "Taxi-v4" if "Taxi-v4" in gym.registry else "Taxi-v3"    # the masked env; gymnasium 1.1 has Taxi-v3 only


def run_cli(*flags, cwd=None, timeout=120, env=None):
    # PYTHONSAFEPATH: ppo.py's own folder is not searched for modules, so that what a user keeps beside it (the
    # README's my_envs.py) cannot stand in for a test's module of the same name.
    env = {**(os.environ if env is None else env), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, str(HERE / "ppo.py"), *flags], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------------------------------
def test_compute_gae_matches_hand_computed_answer():
    # gamma = lambda = 0.5, so gamma * lambda = 0.25. Two envs, four steps.
    # env 0: terminates at t=1 (its next value, 99, must be ignored); truncated by a time limit at the very last
    #        step, bootstrapped with the final state's value 10.
    # env 1: truncated at t=1 (final state's value 8); the rollout ends mid-episode, bootstrapped with V = 6.
    rewards = np.array([[1, 2], [1, 0], [1, 0], [1, 1]], dtype=np.float32)
    values = np.array([[1, 1], [2, 1], [3, 1], [4, 1]], dtype=np.float32)
    next_values = np.array([[2, 1], [99, 8], [4, 1], [10, 6]], dtype=np.float32)
    terminations = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], dtype=np.float32)
    truncations = np.array([[0, 0], [0, 1], [0, 0], [1, 0]], dtype=np.float32)
    adv, ret = ppo.compute_gae(rewards, values, next_values, terminations, truncations, gamma=0.5, gae_lambda=0.5)
    # env 0, backwards: t3 delta = 1 + .5*10 - 4 = 2            -> A = 2 (episode ends: nothing carried in)
    #                   t2 delta = 1 + .5*4 - 3 = 0             -> A = 0 + .25*2 = 0.5
    #                   t1 delta = 1 + 0 - 2 = -1 (terminated)  -> A = -1 (the next episode is not carried in)
    #                   t0 delta = 1 + .5*2 - 1 = 1             -> A = 1 + .25*(-1) = 0.75
    # env 1:            t3 delta = 1 + .5*6 - 1 = 3             -> A = 3
    #                   t2 delta = 0 + .5*1 - 1 = -0.5          -> A = -0.5 + .25*3 = 0.25
    #                   t1 delta = 0 + .5*8 - 1 = 3 (truncated) -> A = 3
    #                   t0 delta = 2 + .5*1 - 1 = 1.5           -> A = 1.5 + .25*3 = 2.25
    expected = np.array([[0.75, 2.25], [-1, 3], [0.5, 0.25], [2, 3]], dtype=np.float32)
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(ret, expected + values, rtol=1e-6)


def test_gae_of_a_one_step_rollout_and_the_next_state_values_it_bootstraps_from():
    # One step: A = r + gamma * V(s') - V(s) = 1 + 0.5 * 4 - 2 = 1; the return is A + V(s) = 3.
    adv, ret = ppo.compute_gae(np.array([[1.0]]), np.array([[2.0]]), np.array([[4.0]]), np.zeros((1, 1)),
                               np.zeros((1, 1)), gamma=0.5, gae_lambda=0.9)
    assert adv.tolist() == [[1.0]] and ret.tolist() == [[3.0]]
    # V(s_{t+1}): the next step's V(s_t); after the last step V(next_obs), read with the rollout's memory as it is
    # now (a critic that sums the observation here); where a time limit cut an episode, V(its final state).
    seen = []

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def value(self, obs, mem=None):
            seen.append(mem)
            return obs.sum(-1)
    rollout = types.SimpleNamespace(next_obs=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
                                    memory=types.SimpleNamespace(peek=lambda: "memory now"),
                                    truncations=np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    values = np.array([[10.0, 20.0], [11.0, 21.0], [12.0, 22.0]])
    final_values = np.full((3, 2), -1.0)
    next_values = ppo.next_state_values(Critic(), rollout, values, final_values)
    assert next_values.tolist() == [[11.0, 21.0], [-1.0, 22.0], [3.0, -1.0]] and seen == ["memory now"]


def test_gae_extremes_are_td_error_and_monte_carlo():
    rng = np.random.default_rng(0)
    T, N = 6, 3
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    last = rng.normal(size=N)
    next_values = np.concatenate([values[1:], last[None]])
    zeros = np.zeros((T, N))
    # lambda = 0: the advantage is the one-step TD error.
    adv, _ = ppo.compute_gae(rewards, values, next_values, zeros, zeros, gamma=0.9, gae_lambda=0.0)
    np.testing.assert_allclose(adv, rewards + 0.9 * next_values - values)
    # lambda = 1: the advantage is the discounted Monte Carlo return (bootstrapped at the end) minus V.
    adv, ret = ppo.compute_gae(rewards, values, next_values, zeros, zeros, gamma=0.9, gae_lambda=1.0)
    mc = np.zeros((T, N))
    running = last
    for t in reversed(range(T)):
        running = rewards[t] + 0.9 * running
        mc[t] = running
    np.testing.assert_allclose(ret, mc)


# ---------------------------------------------------------------------------------------------------------------------
# The clipped objective
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, advantage, expected_loss, expected_grad", [
    # inside [0.8, 1.2]: the plain surrogate -ratio * A, gradient d/dlogratio = -ratio * A
    (1.1, 2.0, -2.2, -2.2),
    (0.9, -2.0, 1.8, 1.8),
    # A > 0 and the ratio already above 1 + eps: clipped, flat, no gradient (the update has gone far enough)
    (1.5, 2.0, -2.4, 0.0),
    # A > 0 but the ratio below 1 - eps: min picks the unclipped term, so the gradient still pushes it back up
    (0.5, 2.0, -1.0, -1.0),
    # A < 0 and the ratio already below 1 - eps: clipped, no gradient
    (0.5, -2.0, 1.6, 0.0),
    # A < 0 but the ratio above 1 + eps: unclipped, the gradient pulls it back down
    (1.5, -2.0, 3.0, 3.0),
])
def test_clipped_policy_loss_value_and_gradient(ratio, advantage, expected_loss, expected_grad):
    logratio = torch.tensor([math.log(ratio)], requires_grad=True)
    loss = ppo.clipped_policy_loss(logratio, torch.tensor([advantage]), clip_coef=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert logratio.grad.item() == pytest.approx(expected_grad, rel=1e-5, abs=1e-7)


def test_ppo_loss_is_the_clipped_objective_minus_the_entropy_bonus_plus_the_value_loss():
    # Every part from its formula, written out here, on a minibatch whose ratios are known: logprobs are the policy's
    # own minus d, so ratio = exp(d). With and without advantage normalization and value clipping.
    torch.manual_seed(0)
    env = ppo.make_env("CartPole-v1")
    for norm_adv, clip_vloss in [(True, True), (False, False)]:
        args = ppo.default_args("CartPole-v1", norm_adv=norm_adv, clip_vloss=clip_vloss, ent_coef=0.01, vf_coef=0.5,
                                clip_coef=0.2)
        agent = ppo.build_agent(args, env.observation_space, env.action_space)
        obs, actions = torch.randn(6, 4), torch.tensor([0, 1, 1, 0, 1, 0])
        d = torch.tensor([0.0, 0.1, -0.3, 0.5, -0.05, 0.25])
        with torch.no_grad():
            dist, new_values = agent(obs)
            logprobs = dist.log_prob(actions) - d
        adv = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])
        old_values, returns = new_values + torch.tensor([0.5, -0.5, 0.1, 0.0, 1.0, -0.05]), torch.randn(6)
        mb = dict(obs=obs, actions=actions, logprobs=logprobs, advantages=adv, values=old_values, returns=returns)
        terms = {}
        with torch.no_grad():
            loss, parts = ppo.ppo_loss(agent, mb, args, terms)
        ratio = d.exp()
        a = (adv - adv.mean()) / (adv.std() + 1e-8) if norm_adv else adv
        pg = -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a).mean()
        v = (new_values - returns) ** 2
        if clip_vloss:
            v = torch.max(v, (old_values + (new_values - old_values).clamp(-0.2, 0.2) - returns) ** 2)
        entropy = dist.entropy().mean()
        expected = dict(policy_loss=pg, value_loss=0.5 * v.mean(), entropy=entropy,
                        approx_kl=((ratio - 1) - d).mean(), clipfrac=torch.tensor(3 / 6))
        assert list(parts) == list(expected)
        for name, value in expected.items():
            assert torch.allclose(parts[name], value, atol=1e-5), (name, norm_adv, clip_vloss)
        assert torch.allclose(loss, pg - 0.01 * entropy + 0.5 * expected["value_loss"], atol=1e-5)
        assert torch.allclose(terms["advantages"], a) and torch.allclose(terms["new_values"], new_values)
        assert torch.allclose(terms["logratio"], d, atol=1e-6) and isinstance(terms["dist"], type(dist))


def test_ppo_update_reports_the_last_epochs_means_and_stops_once_past_target_kl():
    # A loss whose k-th call reports approx_kl = k: 3 epochs of 2 minibatches report the last epoch's mean, (5 + 6) / 2;
    # target_kl 3.5 is not exceeded by the second epoch's (3 + 4) / 2, 3.4 is. recompute() runs before epochs 2 and 3.
    calls, recomputed = [], []

    def loss_fn(agent, mb, args):
        calls.append(mb["x"].tolist())
        k = float(len(calls))
        return (agent(mb["x"][:, None]) ** 2).mean(), dict(approx_kl=torch.tensor(k), other=torch.tensor(10 * k))
    batch = {"x": torch.arange(8.0)}
    for target_kl, epochs_run in [(None, 3), (3.5, 3), (3.4, 2)]:
        calls.clear(), recomputed.clear()
        args = ppo.default_args("CartPole-v1", num_envs=2, num_steps=4, num_minibatches=2, update_epochs=3,
                                target_kl=target_kl)
        agent = nn.Linear(1, 1)
        parts = ppo.ppo_update(agent, torch.optim.SGD(agent.parameters(), lr=0.01), batch, args, loss_fn,
                               lambda: recomputed.append(1) or batch)
        assert [len(c) for c in calls] == [4] * (2 * epochs_run) and len(recomputed) == epochs_run - 1, target_kl
        for epoch in range(epochs_run):            # each epoch deals out every transition once, in a new order
            assert sorted(calls[2 * epoch] + calls[2 * epoch + 1]) == list(range(8)), calls
        assert len({tuple(calls[2 * e] + calls[2 * e + 1]) for e in range(epochs_run)}) > 1    # reshuffled each epoch
        k = 2 * epochs_run - 0.5
        assert set(parts) == {"approx_kl", "other", "grad_norm"} and parts["approx_kl"] == k, (target_kl, parts)
        assert parts["other"] == 10 * k and parts["grad_norm"] > 0


def test_value_loss_clipping():
    new, old, ret = torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([3.0])
    assert ppo.value_loss(new, old, ret, None).item() == pytest.approx(0.0)
    # clipped prediction is 1 + 0.2 = 1.2, error 1.8; the max of the two squared errors is kept (pessimistic)
    assert ppo.value_loss(new, old, ret, 0.2).item() == pytest.approx(0.5 * 1.8**2)


# ---------------------------------------------------------------------------------------------------------------------
# The policy's distributions, one code path for every action space
# ---------------------------------------------------------------------------------------------------------------------
OBS = gym.spaces.Box(-1, 1, (4,), np.float32)


def test_discrete_distribution():
    agent = ppo.Agent(OBS, gym.spaces.Discrete(3))
    x = torch.randn(5, 4)
    dist = agent.distribution(x)
    a = dist.sample()
    assert a.shape == (5,) and dist.log_prob(a).shape == (5,) and dist.entropy().shape == (5,)
    logp = torch.log_softmax(agent.actor(x), -1)
    torch.testing.assert_close(dist.log_prob(a), logp.gather(1, a[:, None]).squeeze(1))
    # the last layer's small init makes the first policy nearly uniform: entropy ~ log 3
    torch.testing.assert_close(dist.entropy(), torch.full((5,), math.log(3)), atol=1e-3, rtol=0)
    torch.testing.assert_close(dist.mode, logp.argmax(-1))


def test_multidiscrete_distribution_sums_independent_parts():
    agent = ppo.Agent(OBS, gym.spaces.MultiDiscrete([3, 2]))
    x = torch.randn(5, 4)
    dist = agent.distribution(x)
    a = dist.sample()
    assert a.shape == (5, 2) and dist.log_prob(a).shape == (5,) and dist.entropy().shape == (5,)
    out = agent.actor(x)
    p1, p2 = torch.log_softmax(out[:, :3], -1), torch.log_softmax(out[:, 3:], -1)
    expected = p1.gather(1, a[:, :1]).squeeze(1) + p2.gather(1, a[:, 1:]).squeeze(1)
    torch.testing.assert_close(dist.log_prob(a), expected)
    entropy = -(p1.exp() * p1).sum(-1) - (p2.exp() * p2).sum(-1)
    torch.testing.assert_close(dist.entropy(), entropy)
    # the padding never gets probability: the 2-way sub-action is never sampled as 2
    many = agent.distribution(torch.randn(2000, 4)).sample()
    assert many[:, 0].max() == 2 and many[:, 1].max() == 1


def test_box_distribution_is_a_diagonal_gaussian():
    agent = ppo.Agent(OBS, gym.spaces.Box(-1, 1, (3,), np.float32))
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([0.0, -1.0, 0.5]))
    x = torch.randn(5, 4)
    dist = agent.distribution(x)
    a = dist.sample()
    assert a.shape == (5, 3) and dist.log_prob(a).shape == (5,) and dist.entropy().shape == (5,)
    mean, std = agent.actor(x), agent.actor_logstd.exp()
    expected = (-((a - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(dist.log_prob(a), expected)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + agent.actor_logstd).sum()
    torch.testing.assert_close(dist.entropy(), entropy.expand(5))
    torch.testing.assert_close(dist.mode, mean)


def test_activation_and_log_std_init_shape_the_networks():
    agent = ppo.Agent(OBS, gym.spaces.Box(-1, 1, (3,), np.float32), (32,), activation="relu", log_std_init=-2.0)
    assert [type(m) for m in agent.actor] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in agent.critic] == [nn.Linear, nn.ReLU, nn.Linear]
    torch.testing.assert_close(agent.distribution(torch.randn(2, 4)).stddev,
                               torch.full((2, 3), math.exp(-2.0)))
    assert any(isinstance(m, nn.Tanh) for m in ppo.Agent(OBS, gym.spaces.Discrete(2)).actor)
    # orthogonal init gives the last policy layer weights of norm ~0.01 per row; nn.Linear's own init, far more
    ortho, default = (ppo.Agent(OBS, gym.spaces.Discrete(2), (64,), ortho_init=o).actor[-1] for o in (True, False))
    torch.testing.assert_close(ortho.weight.norm(dim=1), torch.full((2,), 0.01))
    assert (ortho.bias == 0).all() and default.weight.norm(dim=1).min() > 0.2 and (default.bias != 0).all()


def test_readme_versions_table_is_what_ppo_checks_and_ci_installs():
    # Each row: the floor ppo.py refuses below (FLOORS), requirements.txt's range, and the two versions CI pins.
    readme, requirements = (HERE / "README.md").read_text(), (HERE / "requirements.txt").read_text()
    pins = {name: dict(re.findall(r"^([\w-]+)==([\d.]+)", (HERE / ".ci" / name).read_text(), re.M))
            for name in ("constraints-oldest.txt", "constraints.txt")}
    rows = re.findall(r"^\| (Python|torch|gymnasium|numpy|tyro) \| ([\d.]+) \| ([\d.]+), ([\d.]+) \|$", readme, re.M)
    assert len(rows) == len(ppo.FLOORS) == 5
    for package, floor, oldest, newest in rows:
        name = package.lower()
        assert ppo.FLOORS[name] == ppo.version_tuple(floor), package
        if name == "python":
            continue
        assert re.search(rf"^{name}(\[\w+\])?>={re.escape(floor)}$", requirements, re.M), package
        assert (pins["constraints-oldest.txt"][name], pins["constraints.txt"][name]) == (oldest, newest), package
        assert ppo.version_tuple(oldest)[:len(ppo.FLOORS[name])] == ppo.FLOORS[name], package   # the floor is tested


def test_readme_defaults_table_matches_default_args():
    # The README's table of defaults, row by row, against what default_args gives a discrete, a continuous and an
    # image env: a default changed in ppo.py and not in the README (or the reverse) fails here.
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in (HERE / "README.md").read_text().splitlines() if line.startswith("| ")}
    for row, env_id in [("Discrete / MultiDiscrete", "CartPole-v1"), ("Box (continuous)", "Pendulum-v1"),
                        ("Images (Atari; wins over the two above)", "PixelSide-v0")]:
        envs_steps, epochs_minibatches, lr, entropy, vclip, normalization, steps = rows[row]
        args = ppo.default_args(env_id)
        assert envs_steps == f"{args.num_envs} × {args.num_steps}", row
        assert epochs_minibatches == f"{args.update_epochs} × {args.num_minibatches}", row
        assert float(lr.split()[0].rstrip(",;")) == args.learning_rate, row
        assert float(entropy) == args.ent_coef, row
        assert vclip == ("on" if args.clip_vloss else "off"), row
        assert normalization.startswith("observations and rewards") == (args.norm_obs and args.norm_reward), row
        assert steps == {500_000: "500k", 1_000_000: "1M", 10_000_000: "10M"}[args.total_timesteps], row
        if "start std" in lr:
            assert f"start std {math.exp(args.log_std_init):.1f}" in lr and f"value weight {args.vf_coef}" in lr
        if "clip" in lr:
            assert f"clip {args.clip_coef}" in lr, row
    envs_steps, epochs_minibatches, lr, *rest = rows["With `--recurrent` (not images; notes/recurrent_screen.md)"]
    discrete, continuous = (ppo.default_args(env_id, recurrent=True) for env_id in ("CartPole-v1", "Pendulum-v1"))
    assert envs_steps == f"discrete {discrete.num_envs} × {discrete.num_steps}; continuous as above", envs_steps
    plain = ppo.default_args("Pendulum-v1")
    assert (continuous.num_envs, continuous.num_steps) == (plain.num_envs, plain.num_steps)
    assert epochs_minibatches.startswith(f"{discrete.num_minibatches} minibatches")
    assert discrete.num_minibatches == continuous.num_minibatches
    assert float(lr) == discrete.learning_rate == continuous.learning_rate, lr
    for env_id, args in (("CartPole-v1", discrete), ("Pendulum-v1", continuous)):      # the row changes something
        assert ppo.default_args(env_id).learning_rate != args.learning_rate


def test_presets_layer_on_defaults_and_flags_win():
    for name, settings in ppo.PRESETS.items():          # every preset names real flags and passes the checks
        args = ppo.default_args("Pendulum-v1", preset=name)
        ppo.check_args(args)
        assert args.preset == name and all(getattr(args, k) == v for k, v in settings.items())
    args = ppo.parse_args(["--env-id", "Pendulum-v1", "--preset", "halfcheetah-zoo", "--gamma", "0.9"])
    assert args.gamma == 0.9                                                     # the explicit flag
    assert (args.learning_rate, args.hidden_sizes, args.activation) == (2.0633e-5, (256, 256), "relu")  # preset
    assert args.norm_obs and args.norm_reward and args.total_timesteps == 1_000_000   # continuous defaults beneath
    assert ppo.parse_args(["--env-id", "MountainCar-v0", "--preset", "mountaincar"]).ent_coef == 0.01


def test_the_zoo_preset_weighs_the_value_loss_as_the_zoo_does():
    # SB3's value loss is F.mse_loss(returns, values), without the 0.5 of value_loss: the zoo's vf_coef 0.58096
    # weighs it, so the preset's weight, on value_loss, must give the same term.
    new_values, returns = torch.randn(64), torch.randn(64)
    ours = ppo.PRESETS["halfcheetah-zoo"]["vf_coef"] * ppo.value_loss(new_values, new_values, returns, None)
    torch.testing.assert_close(ours, 0.58096 * torch.nn.functional.mse_loss(returns, new_values))


def test_running_mean_std_is_the_mean_and_variance_of_everything_seen():
    # Chan et al.'s update, batch after batch, gives the mean and variance of all the rows at once, with the prior
    # (mean 0, variance 1, weight 1e-4) counted as one more sample of that weight.
    torch.manual_seed(0)
    rms, batches = ppo.RunningMeanStd((2,)), [torch.randn(50, 2) * 3 + 5, torch.randn(30, 2) * 2 - 1]
    for x in batches:
        rms.update(x)
    x = torch.cat(batches).double()
    total = len(x) + 1e-4
    mean = x.sum(0) / total
    var = (1e-4 * (1 + mean**2) + ((x - mean) ** 2).sum(0)) / total
    assert torch.allclose(rms.mean, mean, rtol=1e-12) and torch.allclose(rms.var, var, rtol=1e-12)
    assert rms.count.item() == total
    assert torch.allclose(rms.std(), (var + 1e-8).sqrt())
    out = rms.normalize(torch.tensor([[5.0, -1.0], [1e9, -1e9]]))
    assert out.dtype == torch.float32 and out[1].tolist() == [10.0, -10.0]
    assert torch.allclose(out[0], ((torch.tensor([5.0, -1.0]).double() - mean) / (var + 1e-8).sqrt()).float())
    rms.var.zero_()                                                     # a constant stream: std 1e-4, not 0 or NaN
    assert torch.allclose(rms.std(), torch.full((2,), 1e-4, dtype=torch.float64))


def test_reward_scaler_divides_by_the_std_of_the_discounted_return():
    # gamma 0.5, one env, rewards 1, 1, 1 with an episode ending at the second step: returns 1, 1.5, then 1 again.
    scaler = ppo.RewardScaler(ppo.RunningMeanStd(), gamma=0.5, num_envs=1)
    for done in (False, True, False):
        scaler.observe(np.array([1.0]), np.array([done]))
    rewards = np.array([[2.0], [1e9], [-1e9]])
    scaled = scaler.scale(rewards)
    seen = np.array([1.0, 1.5, 1.0])
    mean = seen.sum() / (3 + 1e-4)
    var = (1e-4 * (1 + mean**2) + ((seen - mean) ** 2).sum()) / (3 + 1e-4)
    assert np.isclose(scaler.rms.var.item(), var, rtol=1e-9) and scaler.seen == []
    assert np.allclose(scaled, [[2.0 / np.sqrt(var + 1e-8)], [10.0], [-10.0]])
    off = ppo.RewardScaler(ppo.RunningMeanStd(), gamma=0.5, num_envs=1, enabled=False)
    off.observe(np.array([1.0]), np.array([False]))
    assert off.scale(rewards) is rewards and off.rms.count.item() == 1e-4


def test_defaults_normalize_real_valued_vector_observations_only():
    # Real-valued vectors get observation and reward normalization whatever the action space; one-hot states
    # (Taxi's Discrete, Blackjack's Tuple of Discretes) and images do not.
    for env_id, normalized in [("CartPole-v1", True), ("Pendulum-v1", True), (TAXI, False),
                               ("Blackjack-v1", False), ("PixelSide-v0", False)]:
        args = ppo.default_args(env_id)
        assert (args.norm_obs, args.norm_reward) == (normalized, normalized), env_id
    assert ppo.parse_args(["--env-id", "CartPole-v1", "--no-norm-obs"]).norm_obs is False      # a flag still wins


class SpacesEnv(gym.Env):
    """An env with the spaces it is given, and (optionally) an action mask in its reset's info; it only resets."""

    def __init__(self, observation_space, action_space=gym.spaces.Discrete(2), mask=None):
        self.observation_space, self.action_space, self.mask = observation_space, action_space, mask

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), ({} if self.mask is None else {"action_mask": self.mask})


IMAGE_IN_DICT = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), "speed": OBS})
gym.register("ImageInDict-v0", entry_point=SpacesEnv, kwargs={"observation_space": IMAGE_IN_DICT})


def test_unsupported_spaces_are_refused():
    with pytest.raises(ppo.UsageError, match="action space .* not supported"):
        ppo.check_spaces(OBS, gym.spaces.Tuple([gym.spaces.Discrete(2)]), "X-v0")
    # make_env flattens what it can; what is left, an image inside a Dict or text, check_spaces refuses
    with pytest.raises(ppo.UsageError, match=r"observation space Dict\('pixels'.* not supported.*no images"):
        ppo.env_spaces("ImageInDict-v0")
    gym.register("TextObs-v0", entry_point=SpacesEnv, kwargs={"observation_space": gym.spaces.Text(5)})
    with pytest.raises(ppo.UsageError, match="observation space Text.* not supported"):
        ppo.env_spaces("TextObs-v0")
    # an action mask must have one entry per action (MultiDiscrete: sum(nvec)); a Box action has none
    for i, (action_space, mask) in enumerate([(gym.spaces.Discrete(3), np.ones(4)), (gym.spaces.MultiDiscrete([3, 2]),
                                              np.ones(3)), (gym.spaces.Box(-1, 1, (3,), np.float32), np.ones(3))]):
        gym.register(f"BadMask{i}-v0", entry_point=SpacesEnv, kwargs=dict(observation_space=OBS,
                                                                         action_space=action_space, mask=mask))
        with pytest.raises(ppo.UsageError, match=r"its action mask, shape \(\d,\), does not fit action space"):
            ppo.env_spaces(f"BadMask{i}-v0")
        assert ppo.env_spaces(f"BadMask{i}-v0", action_mask=False)[1].shape == action_space.shape   # ignored


# Property-based: spaces drawn from what gymnasium offers (not from ppo.py's own lists of what it supports), as the
# observation and action spaces of a tiny env that returns samples of them. The invariant: each pair is refused in one
# line before the run directory exists, or trains with the actions kept as sampled (the first minibatch's ratio is 1,
# and the env gets actions inside its own action space). An env that breaks gymnasium's API is refused in one line
# before the run, or stopped mid-run in one line naming the env and the step, keeping what the run wrote.
class GeneratedEnv(gym.Env):
    """Samples of its observation space; truncated every 5 steps, terminated every 7th. `misbehave` from its 40th
    step on (reset_obs_only: from the start). Actions outside its action space are kept in `wrong_actions`."""
    wrong_actions: list = []

    def __init__(self, observation_space, action_space, misbehave=None):
        self.observation_space, self.action_space, self.misbehave, self.t, self.steps = (observation_space,
                                                                                        action_space, misbehave, 0, 0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        obs = self.observation_space.sample()
        return obs if self.misbehave == "reset_obs_only" or (self.misbehave == "reset_obs_only_later"
                                                             and self.steps >= 40) else (obs, {})

    def step(self, action):
        if not self.action_space.contains(action):
            GeneratedEnv.wrong_actions.append((self.action_space, action))
        self.t, self.steps = self.t + 1, self.steps + 1
        obs, reward, bad = self.observation_space.sample(), 1.0, self.misbehave if self.steps >= 40 else None
        result = (obs, reward, self.t % 7 == 0, self.t % 5 == 0, {})
        if bad == "wrong_shape":
            return (np.zeros(np.shape(obs) + (2,), np.float32), *result[1:])
        if bad == "wrong_dtype":
            return (np.full(np.shape(obs) if isinstance(obs, np.ndarray) else (), "x"), *result[1:])
        if bad == "nan_reward":
            return (obs, float("nan"), *result[2:])
        if bad == "step4":
            return obs, reward, self.t % 5 == 0, {}
        if bad == "info_list":
            return (*result[:4], [])
        if bad == "reward_none":
            return (obs, None, *result[2:])
        return result


MISBEHAVIOURS = ["wrong_shape", "wrong_dtype", "nan_reward", "step4", "info_list", "reward_none", "reset_obs_only",
                 "reset_obs_only_later"]


def space_strategies(st):
    """(any space, observation-like spaces for the misbehaving envs) as hypothesis strategies."""
    shapes = st.lists(st.integers(0, 3), max_size=3).map(tuple)             # () and (0,) and (2, 0, 1) included
    floats, ints = [np.float16, np.float32, np.float64], [np.int8, np.int16, np.int32, np.int64, np.uint8]

    @st.composite
    def boxes(draw):
        dtype, shape = draw(st.sampled_from([*floats, *ints, np.bool_])), draw(shapes)
        if dtype is np.bool_:
            return gym.spaces.Box(0, 1, shape, np.bool_)
        if dtype in floats:
            bounds = [-np.inf, -1e39, -1e6, -1.0, 0.0, 2.5, 1e6, 1e39, np.inf]
            bounds = [b for b in bounds if not np.isfinite(b) or abs(b) <= float(np.finfo(dtype).max)]
        else:
            info = np.iinfo(dtype)
            bounds = sorted({info.min, max(info.min, -3), 0, 1, 5, info.max})
        low = draw(st.sampled_from(bounds[:-1] if dtype in floats else bounds))
        high = draw(st.sampled_from([b for b in bounds if b >= low and b > -np.inf]))
        return gym.spaces.Box(low, high, shape, dtype)

    discrete = st.builds(gym.spaces.Discrete, st.integers(1, 4), start=st.integers(-5, 5))
    multi_discrete = st.builds(lambda nvec, start: gym.spaces.MultiDiscrete(np.array(nvec, np.int64).reshape(
        -1 if len(nvec) != 4 else (2, 2)), start=np.full(len(nvec), start).reshape(-1 if len(nvec) != 4 else (2, 2))),
        st.lists(st.integers(1, 3), max_size=4), st.integers(-2, 2))
    multi_binary = st.one_of(st.integers(1, 3), st.lists(st.integers(1, 2), min_size=1, max_size=2)).map(
        gym.spaces.MultiBinary)
    other = st.sampled_from([gym.spaces.Text(3), gym.spaces.Sequence(gym.spaces.Discrete(2)),
                             gym.spaces.Graph(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))])
    supported = st.one_of(boxes(), discrete, multi_discrete, multi_binary)
    nested = st.recursive(st.one_of(supported, other), lambda parts: st.one_of(
        st.lists(parts, max_size=3).map(lambda p: gym.spaces.Tuple(p)),
        st.dictionaries(st.sampled_from("abc"), parts, max_size=3).map(gym.spaces.Dict)), max_leaves=4)
    simple = st.sampled_from([gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(3, start=2), gym.spaces.Dict(
        {"a": gym.spaces.Box(-1, 1, ()), "b": gym.spaces.MultiBinary(2)}), gym.spaces.Box(0, 9, (2,), np.int32)])
    return st.one_of(supported, nested), simple                # about half of them nested, or of the other kinds


GENERATED = itertools.count()


def generated_env(observation_space, action_space, misbehave=None):
    env_id = f"Generated{next(GENERATED)}-v0"
    gym.register(env_id, entry_point=GeneratedEnv, kwargs=dict(observation_space=observation_space,
                                                               action_space=action_space, misbehave=misbehave))
    return env_id


def test_generated_spaces_train_with_ratio_one_or_are_refused_in_one_line(tmp_path_factory, capsys):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    spaces, _ = space_strategies(st)
    seen = {"trained": 0, "refused": 0}

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(observation_space=spaces, action_space=spaces)
    def check(observation_space, action_space):
        env_id, runs = generated_env(observation_space, action_space), tmp_path_factory.mktemp("runs") / "runs"
        try:
            ppo.env_spaces(env_id)
        except ppo.UsageError as e:
            assert "\n" not in str(e) and str(e).startswith(f"--env-id {env_id}: "), str(e)
            assert ppo.main(["--env-id", env_id, "--runs-dir", str(runs), "--quiet"]) == 2
            err = capsys.readouterr().err
            assert err == f"error: {e}\n" and not runs.exists(), err
            seen["refused"] += 1
            return
        logratios = []

        def recording_loss(agent, mb, args):
            terms = {}
            loss = ppo.ppo_loss(agent, mb, args, terms)
            logratios.append(terms["logratio"].detach().abs().max().item())
            return loss
        GeneratedEnv.wrong_actions.clear()
        args = ppo.default_args(env_id, total_timesteps=64, num_envs=2, num_steps=32, update_epochs=1,
                                num_minibatches=1, runs_dir=str(runs), quiet=True, tensorboard=False)
        ppo.train(args, loss_fn=recording_loss)
        capsys.readouterr()
        # one minibatch before any gradient step: every log-probability is the one its action was sampled with
        assert len(logratios) == 1 and logratios[0] < 1e-6, (observation_space, action_space, logratios)
        assert GeneratedEnv.wrong_actions == [], GeneratedEnv.wrong_actions[:3]
        seen["trained"] += 1
    check()
    assert seen["trained"] >= 10 and seen["refused"] >= 10, seen


class HugeFloat64Env(gym.Env):
    """float64 observations (as MuJoCo's are) that leave float32's range, the network's, at the env's 40th step."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = getattr(self, "t", 0)
        return np.zeros(3), {}

    def step(self, action):
        self.t += 1
        return np.full(3, 1e39 if self.t == 40 else 1.0), 0.0, False, self.t % 10 == 0, {}


def test_float64_observations_beyond_float32s_range_stop_the_run_in_one_line(tmp_path, capsys):
    # They would become inf inside the network; the check sits on the path every MuJoCo step takes (its fast path).
    gym.register("HugeFloat64-v0", entry_point=HugeFloat64Env)
    code = ppo.main(["--env-id", "HugeFloat64-v0", "--num-envs", "1", "--num-steps", "32", "--total-timesteps", "128",
                     "--runs-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "env HugeFloat64-v0: step() returned an observation that does not fit" in err and "float32" in err, err
    assert "at global step 40" in err, err


def test_an_env_that_breaks_the_api_in_a_worker_process_stops_the_run_in_one_line(tmp_path):
    # --async-envs: gymnasium reports a worker's exception in three warnings, the worker's traceback among them,
    # before raising it in the main process; the run's one line already says what the env did, and where.
    (tmp_path / "broken_envs.py").write_text(textwrap.dedent('''
        import gymnasium as gym, numpy as np

        class GrowsAnAxis(gym.Env):
            observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.t = 0
                return np.zeros(3, np.float32), {}

            def step(self, action):
                self.t += 1
                return np.zeros(3 if self.t < 5 else 4, np.float32), 0.0, False, False, {}

        gym.register("GrowsAnAxis-v0", entry_point=GrowsAnAxis)
        '''))
    out = run_cli("--env-id", "broken_envs:GrowsAnAxis-v0", "--async-envs", "--num-envs", "2", "--num-steps", "64",
                  "--total-timesteps", "256", "--runs-dir", str(tmp_path / "runs"), "--quiet", cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: env broken_envs:GrowsAnAxis-v0: step() returned an observation that does "
                                 "not fit its observation space") and "at global step 10" in out.stderr, out.stderr


def test_envs_that_break_the_api_are_refused_or_stopped_in_one_line(tmp_path_factory, capsys):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    _, simple = space_strategies(st)

    @hypothesis.settings(max_examples=24, deadline=None, derandomize=True, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(observation_space=simple, action_space=st.sampled_from([gym.spaces.Discrete(2, start=1),
                                                                              gym.spaces.Box(-1, 1, (2,))]),
                      misbehave=st.sampled_from(MISBEHAVIOURS))
    def check(observation_space, action_space, misbehave):
        env_id, runs = generated_env(observation_space, action_space, misbehave), tmp_path_factory.mktemp("r") / "runs"
        code = ppo.main(["--env-id", env_id, "--runs-dir", str(runs), "--quiet", "--num-envs", "2", "--num-steps", "32",
                         "--total-timesteps", "256", "--no-tensorboard"])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        if misbehave == "reset_obs_only":                     # at the first reset: refused before the run
            assert code == 2 and f"--env-id {env_id}: reset() returned" in err and not runs.exists(), err
            return
        assert code == 1 and re.search(rf"^error: env {env_id}\b.* at global step \d+", err), err
        run_dir, = runs.iterdir()                             # what the run wrote before is kept
        assert (run_dir / "args.json").is_file() and len(read_csv(run_dir / "updates.csv")) >= 1
    check()


# ---------------------------------------------------------------------------------------------------------------------
# Action masks and structured (Dict / Tuple) observations
# ---------------------------------------------------------------------------------------------------------------------
def test_categorical_is_torchs_distribution_with_its_log_probabilities_normalized_by_log_softmax():
    # ppo.Categorical normalizes the logits with one log_softmax (torch's: a logsumexp, equal to a float's last bit)
    # and picks log pi(a|s) with one gather where there is one action per state; other shapes expand the actions.
    # MultiDiscrete's parts are a batch of (B, K) Categoricals over the widest part's logits.
    generator = torch.Generator().manual_seed(0)
    for batch_shape, n in [((5,), 3), ((5, 2), 4), ((1, 3), 6), ((), 2)]:
        logits = torch.randn(*batch_shape, n, generator=generator) * 3
        ours, torchs = ppo.Categorical(logits), torch.distributions.Categorical(logits=logits)
        assert torch.equal(ours.logits, logits.log_softmax(-1)) and ours.batch_shape == torchs.batch_shape
        assert ours.param_shape == torchs.param_shape                    # what torch's own methods read
        assert ours._validate_args is False             # no argument checks at every step: they cost, and cannot fail
        assert torch.equal(ours.enumerate_support(), torchs.enumerate_support())
        for name in ["logits", "probs", "entropy", "mode"]:
            a, b = getattr(ours, name), getattr(torchs, name)
            torch.testing.assert_close(a() if callable(a) else a, b() if callable(b) else b, rtol=0, atol=1e-6)
        for shape in [batch_shape, (7, *batch_shape)]:                    # one action per state, then 7 each
            actions = torch.randint(n, shape, generator=generator)
            by_hand = ours.logits.expand(*shape, n).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            assert torch.equal(ours.log_prob(actions), by_hand), (batch_shape, shape)
            torch.testing.assert_close(ours.log_prob(actions), torchs.log_prob(actions), rtol=0, atol=1e-6)


def test_categorical_samples_each_action_with_its_probability_and_never_an_illegal_one(monkeypatch):
    # The exponential race: action i arrives at E_i / p_i with E_i ~ Exp(1), and the first is i with probability p_i.
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    logits = probs.log().clamp_min(torch.finfo(torch.float32).min)      # the last one masked, as LegalActions does
    torch.manual_seed(0)
    n = 200_000
    for samples in [ppo.Categorical(logits.expand(n, 5)).sample(), ppo.Categorical(logits).sample((n,))]:
        assert samples.shape == (n,) and samples.dtype == torch.int64
        freq = torch.bincount(samples, minlength=5) / n
        assert (freq - probs).abs().max() < 5 * (0.4 * 0.6 / n) ** 0.5 and freq[4] == 0, freq   # 5 standard errors
    shape = ppo.Categorical(torch.zeros(3, 2, 4)).sample((6,)).shape
    assert shape == (6, 3, 2)
    # A uniform draw of exactly 0 (1 in 2**24) must not tie the only legal action with an illegal one at 0.
    monkeypatch.setattr(torch, "rand_like", lambda p: torch.tensor([0.5, 0.0]).expand_as(p).clone())
    illegal_first = torch.tensor([torch.finfo(torch.float32).min, 0.0])
    assert ppo.Categorical(illegal_first).sample().item() == 1


def test_diagonal_gaussian_is_torchs_independent_normal_bit_for_bit():
    # ppo.DiagonalGaussian skips Independent's layer and Normal's argument broadcasting, and must change no number:
    # the same log-probabilities, entropy, samples from the same seed, gradients and KL, and the same shapes.
    generator = torch.Generator().manual_seed(0)
    for batch_shape, dim in [((5,), 3), ((2, 4), 1), ((), 6)]:
        mean = torch.randn(*batch_shape, dim, generator=generator, requires_grad=True)
        log_std = torch.randn(dim, generator=generator, requires_grad=True)
        std = log_std.exp().expand_as(mean)
        ours, torchs = ppo.DiagonalGaussian(mean, std), Independent(Normal(mean, std), 1)
        assert (ours.batch_shape, ours.event_shape) == (torchs.batch_shape, torchs.event_shape) == (
            torch.Size(batch_shape), torch.Size([dim]))
        assert ours._validate_args is False                 # no argument checks at every step
        for sample_shape in [(), (7,)]:
            torch.manual_seed(1)
            a = ours.sample(sample_shape)
            torch.manual_seed(1)
            assert torch.equal(a, torchs.sample(sample_shape)) and a.shape == (*sample_shape, *batch_shape, dim)
            torch.manual_seed(2)
            r = ours.rsample(sample_shape)
            torch.manual_seed(2)
            assert torch.equal(r, torchs.rsample(sample_shape))
            assert torch.equal(ours.log_prob(a), torchs.log_prob(a)) and ours.log_prob(a).shape == a.shape[:-1]
        for name in ["mode", "mean", "stddev", "variance"]:
            assert torch.equal(getattr(ours, name), getattr(torchs, name)), name
        assert torch.equal(ours.entropy(), torchs.entropy()) and ours.entropy().shape == batch_shape
        a = torchs.sample()
        grads = [torch.autograd.grad((d.log_prob(a) + d.entropy()).sum(), (mean, log_std), retain_graph=True)
                 for d in (ours, torchs)]
        assert all(torch.equal(g, h) for g, h in zip(*grads))
        other = (mean.detach() + 1, std.detach() * 2)
        kl = torch.distributions.kl_divergence(ours, ppo.DiagonalGaussian(*other))
        assert kl.shape == batch_shape                       # summed over the dimensions, as torch's Independent
        assert torch.equal(kl, torch.distributions.kl_divergence(torchs, Independent(Normal(*other), 1)))


def test_masked_distribution_matches_hand_computed_values():
    agent = ppo.Agent(OBS, gym.spaces.Discrete(4))
    agent.actor = nn.Identity()                        # so that the policy's logits are its input
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).log().requires_grad_()  # unmasked: 0.1, 0.2, 0.3, 0.4
    mask = torch.tensor([[True, False, True, False]])  # legal: 0 and 2, renormalized to 1/(1+3) and 3/(1+3)
    dist = agent.policy(logits, mask)
    torch.testing.assert_close(dist.probs, torch.tensor([[0.25, 0.0, 0.75, 0.0]]))
    torch.testing.assert_close(dist.log_prob(torch.tensor([0, 2])), torch.tensor([0.25, 0.75]).log())
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))   # 0.5623: over the legal actions only
    torch.testing.assert_close(dist.entropy(), torch.tensor([entropy]))
    assert dist.mode.item() == 2 and set(dist.sample((2000,)).unique().tolist()) == {0, 2}
    # an illegal action gets no gradient, and nothing is NaN (0 * log 0 is never formed from -inf)
    (dist.log_prob(torch.tensor([2])) + dist.entropy()).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, [1, 3]] == 0).all() and logits.grad[0, 0] != 0
    # an all-True mask changes nothing, to the bit
    torch.testing.assert_close(agent.policy(logits, torch.ones(1, 4, dtype=torch.bool)).logits,
                               agent.policy(logits).logits, rtol=0, atol=0)
    # gymnasium's own masks are int8 0/1 arrays (Discrete.sample(mask=...)): the policy reads them as the same mask
    torch.testing.assert_close(agent.policy(logits, np.array([[1, 0, 1, 0]], np.int8)).probs, dist.probs)

    # MultiDiscrete([3, 2]): one mask per sub-action, end to end. Part 1: 1, 3, 4 with the 4 illegal -> 0.25, 0.75, 0;
    # part 2: 1, 3 with the first illegal -> 0, 1 (a forced choice: log-probability 0, entropy 0).
    agent = ppo.Agent(OBS, gym.spaces.MultiDiscrete([3, 2]))
    agent.actor = nn.Identity()
    logits = torch.tensor([[1.0, 3.0, 4.0, 1.0, 3.0]]).log().requires_grad_()
    dist = agent.policy(logits, torch.tensor([[True, True, False, False, True]]))
    torch.testing.assert_close(dist.log_prob(torch.tensor([[0, 1], [1, 1]])), torch.tensor([0.25, 0.75]).log())
    torch.testing.assert_close(dist.entropy(), torch.tensor([entropy]))
    assert dist.mode.tolist() == [[1, 1]]
    samples = dist.sample((2000,))
    assert set(samples[:, 0, 0].tolist()) == {0, 1} and set(samples[:, 0, 1].tolist()) == {1}
    dist.entropy().sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, [2, 3]] == 0).all()


def test_the_update_applies_the_mask_the_policy_acted_under():
    # A fresh batch, scored by the policy that collected it: every ratio is exactly 1 when ppo_loss applies the
    # stored mask; over all actions, the ratio of a legal action is below 1 before any learning.
    agent, args = ppo.Agent(OBS, gym.spaces.Discrete(4)), ppo.default_args("CartPole-v1")
    obs = torch.randn(64, 4)
    mask = torch.rand(64, 4) < 0.5
    mask[:, 0] = True
    with torch.no_grad():
        (actions, logprobs), values = agent.act(obs, mask), agent.value(obs)
    mb = dict(obs=obs, actions=actions, logprobs=logprobs, values=values, advantages=torch.randn(64),
              returns=torch.randn(64), action_masks=mask)
    assert ppo.ppo_loss(agent, mb, args)[1]["approx_kl"].item() == 0.0
    mb.pop("action_masks")
    assert ppo.ppo_loss(agent, mb, args)[1]["approx_kl"].item() > 0.01


class IllegalMovesEnv(gym.Env):
    """Four actions, of which a random half or so are legal at every step; the env says which in info["action_mask"]
    (gymnasium's convention). A legal action pays +1, an illegal one -1. Nothing in the observation tells which
    actions are legal, so an agent that ignores the mask keeps choosing illegal ones. The class counts them, over
    every copy (a SyncVectorEnv keeps its copies in this process)."""
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(4)
    steps = illegal = 0

    def new_mask(self):
        mask = self.np_random.integers(0, 2, size=gym.spaces.flatdim(self.action_space), dtype=np.int8)
        for start, n in zip(np.cumsum([0, *self.parts()[:-1]]), self.parts()):   # at least one legal per part
            mask[start + self.np_random.integers(n)] = 1
        self.mask = mask
        return mask

    def parts(self):
        return [int(self.action_space.n)]

    def is_legal(self, action):
        return bool(self.mask[action])

    def observe(self):
        return np.zeros(1, np.float32), {"action_mask": self.new_mask()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observe()

    def step(self, action):
        legal = self.is_legal(action)
        type(self).steps += 1
        type(self).illegal += not legal
        obs, info = self.observe()
        return obs, (1.0 if legal else -1.0), False, False, info


def test_collect_rollout_acts_under_each_states_mask_keeps_it_and_follows_the_discounted_return():
    # Two envs, episodes cut at 3 steps: the policy never picks an illegal action, each step keeps the mask its action
    # was chosen under, and the reward scaler's running return (gamma 0.5, legal moves pay 1) restarts at each cut.
    IllegalMovesEnv.steps = IllegalMovesEnv.illegal = 0
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(IllegalMovesEnv(), 3)] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    torch.manual_seed(0)
    agent = ppo.build_agent(ppo.default_args("CartPole-v1"), envs.single_observation_space, envs.single_action_space)
    rollout = ppo.Rollout.start(6, envs.single_observation_space, envs.single_action_space, envs.reset(seed=0))
    scaler = ppo.RewardScaler(agent.reward_rms, 0.5, 2)
    ppo.collect_rollout(envs, agent, rollout, scaler)
    assert IllegalMovesEnv.steps == 12 and IllegalMovesEnv.illegal == 0
    masks, actions = rollout.legal.masks, rollout.actions.astype(int)
    assert masks[np.arange(6)[:, None], np.arange(2)[None, :], actions].all()
    assert len({m.tobytes() for m in masks}) > 1                           # each step its own mask
    assert rollout.truncations[:, 0].tolist() == [0, 0, 1, 0, 0, 1] and rollout.rewards.min() == 1
    assert np.stack(scaler.seen).tolist() == [[1.0, 1.0], [1.5, 1.5], [1.75, 1.75]] * 2


class IllegalMovesDictEnv(IllegalMovesEnv):
    """The same with MultiDiscrete([3, 4]) actions (legal when both sub-actions are), and the mask in a Dict
    observation (PettingZoo's convention), beside a Box and a Discrete part that the network does see."""
    observation_space = gym.spaces.Dict({"position": gym.spaces.Box(0.0, 1.0, (2,), np.float32),
                                         "phase": gym.spaces.Discrete(3), "action_mask": gym.spaces.MultiBinary(7)})
    action_space = gym.spaces.MultiDiscrete([3, 4])
    steps = illegal = 0

    def parts(self):
        return [3, 4]

    def is_legal(self, action):
        return bool(self.mask[action[0]] and self.mask[3 + action[1]])

    def observe(self):
        return dict(position=np.full(2, 0.5, np.float32), phase=1, action_mask=self.new_mask()), {}


class NoLegalMoveEnv(IllegalMovesEnv):
    """IllegalMovesEnv whose mask, at its 7th step, leaves no legal action."""
    def new_mask(self):
        self.count = getattr(self, "count", 0) + 1
        return np.zeros(4, np.int8) if self.count == 8 else super().new_mask()


def test_a_mask_with_no_legal_action_is_refused_with_env_and_step(tmp_path, capsys):
    gym.register("NoLegalMove-v0", entry_point=NoLegalMoveEnv)
    code = ppo.main(["--env-id", "NoLegalMove-v0", "--num-envs", "2", "--total-timesteps", "2048",
                     "--runs-dir", str(tmp_path), "--quiet", "--no-tensorboard"])   # no warning where it is missing
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: env NoLegalMove-v0 gave an action mask with no legal action at global step 14 (env 0 of the vector "
        "env); every state needs one, or use --no-action-mask to ignore it"]
    # a MultiDiscrete sub-action with no legal choice is refused too; one legal choice in each part is enough
    space = gym.spaces.MultiDiscrete([3, 4])
    ppo.check_some_action_legal(np.array([[1, 0, 0, 0, 0, 0, 1]]), space, "X-v0", "here")
    with pytest.raises(ppo.NoLegalActionError, match="no legal action here"):
        ppo.check_some_action_legal(np.array([[1, 0, 0, 0, 0, 0, 0]]), space, "X-v0", "here")


def test_the_rollout_keeps_each_steps_mask_for_the_update():
    space = gym.spaces.Discrete(3)
    first = np.array([[True, False, True], [False, True, True]])
    rollout = ppo.Rollout.start(2, gym.spaces.Box(-1, 1, (1,)), space, (np.zeros((2, 1), np.float32),
                                                                         {"action_mask": first}))
    second = np.array([[False, False, True], [True, True, False]])
    rollout.legal.step(0, {"action_mask": second})
    rollout.legal.step(1, {"action_mask": first})
    batch = rollout.flatten(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), torch.device("cpu"))
    assert batch["action_masks"].tolist() == [*first.tolist(), *second.tolist()]   # row t * N + n
    wide = gym.spaces.Box(-1, 1, (1,), np.float16)                  # real-valued observations are kept as float32
    assert ppo.Rollout.start(2, wide, space, (np.zeros((2, 1)), {})).obs.dtype == np.float32
    assert "action_masks" not in ppo.Rollout.start(2, gym.spaces.Box(-1, 1, (1,)), space,
                                                   (np.zeros((2, 1), np.float32), {})).flatten(
        np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), torch.device("cpu"))


@pytest.mark.parametrize("env_class", [IllegalMovesEnv, IllegalMovesDictEnv])
def test_masked_agent_never_chooses_an_illegal_action(env_class, tmp_path):
    env_id = f"{env_class.__name__}-v0"
    gym.register(env_id, entry_point=env_class, max_episode_steps=10)     # many resets: the reset's mask counts

    def illegal_share(**flags):
        env_class.steps = env_class.illegal = 0
        result = ppo.train(ppo.Args(env_id=env_id, total_timesteps=4096, runs_dir=str(tmp_path), quiet=True, **flags))
        return env_class.illegal / env_class.steps, result

    share, result = illegal_share()
    assert share == 0 and env_class.steps == 4096
    env_class.steps = env_class.illegal = 0
    ppo.evaluate(result["checkpoint"], episodes=5)                        # the deterministic policy, too
    assert env_class.illegal == 0 and env_class.steps == 50
    assert np.mean(result["episode_returns"]) == 10.0                     # every step legal, every step paid
    share, _ = illegal_share(action_mask=False)                           # --no-action-mask: about half illegal
    assert share > 0.3, share


class ReachGoalEnv(gym.Env):
    """A goal-conditioned Dict observation, one step per episode: the goal (a Discrete part) says which of two
    actions pays 1. An agent that learns has read the one-hot goal out of the flattened observation."""
    observation_space = gym.spaces.Dict({"observation": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                                         "desired_goal": gym.spaces.Discrete(2)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.goal = int(self.np_random.integers(2))
        return dict(observation=self.np_random.uniform(-1, 1, 2).astype(np.float32), desired_goal=self.goal), {}

    def step(self, action):
        reward = float(action == self.goal)
        return self.reset()[0], reward, True, False, {}


def test_dict_and_tuple_observations_end_to_end(tmp_path, capsys):
    gym.register("ReachGoal-v0", entry_point=ReachGoalEnv)
    obs_space, _ = ppo.env_spaces("ReachGoal-v0")
    assert obs_space.shape == (4,)                                         # Box part (2) + one-hot goal (2)
    result = ppo.train(ppo.Args(env_id="ReachGoal-v0", total_timesteps=4096, runs_dir=str(tmp_path), quiet=True))
    assert np.mean(result["episode_returns"][:200]) < 0.7 < 0.95 < np.mean(result["episode_returns"][-200:])
    assert ppo.evaluate(result["checkpoint"], episodes=20) == [1.0] * 20
    # Blackjack's Tuple(Discrete(32), Discrete(11), Discrete(2)), one-hot end to end: 45 inputs
    assert ppo.env_spaces("Blackjack-v1")[0].shape == (45,)
    assert ppo.main(["--env-id", "Blackjack-v1", "--total-timesteps", "2048", "--runs-dir", str(tmp_path / "bj"),
                     "--quiet"]) == 0
    checkpoint = next((tmp_path / "bj").glob("Blackjack-v1__*/checkpoint.pt"))
    assert ppo.main(["--evaluate", str(checkpoint), "--eval-episodes", "20"]) == 0
    assert "Blackjack-v1: mean return" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------------
# Learning runs
# ---------------------------------------------------------------------------------------------------------------------
def test_cartpole_learns(tmp_path, capsys):
    args = ppo.default_args("CartPole-v1", total_timesteps=40_000, runs_dir=str(tmp_path), quiet=True)
    result = ppo.train(args)
    # 40,000 is not a multiple of the 1,024 steps of one iteration: the first line says what will run instead
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.endswith("(trains 39,936 steps: 39 whole iterations of 1,024)"), first_line
    returns = result["episode_returns"]
    # random play averages ~22; a clearly learning agent is far above it within 40k steps
    assert np.mean(returns[:20]) < 60
    assert np.mean(returns[-20:]) > 200, returns[-20:]
    run_dir = result["run_dir"]
    episodes = read_csv(run_dir / "episodes.csv")
    assert list(episodes[0]) == ["global_step", "wall_time", "episodic_return", "episodic_length"]
    assert len(episodes) == len(returns)
    updates = read_csv(run_dir / "updates.csv")
    assert len(updates) == args.total_timesteps // args.batch_size
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "SPS"):
        assert key in updates[0]
    # The critic learns to explain part of the returns' variance, never all of it: 1 exactly would mean that the
    # values were compared with themselves (or the returns with the returns).
    explained = [float(u["explained_variance"]) for u in updates]
    assert max(explained) > 0.2 and all(ev < 1 for ev in explained), explained
    checkpoint = torch.load(run_dir / "checkpoint.pt")
    assert checkpoint["global_step"] == args.total_timesteps // args.batch_size * args.batch_size
    assert {"agent", "optimizer", "args", "global_step"} <= set(checkpoint)


class ConstantRewardEnv(gym.Env):
    """Reward 1 on every step, the same observation always, and a time limit of 5 steps. The episode never fails,
    so the true value of every state is 1 / (1 - gamma). An agent that mistakes the time limit for a termination
    can never value a state above 5."""
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, False, {}


def test_time_limit_truncation_is_bootstrapped(tmp_path):
    gym.register("ConstantReward-v0", entry_point=ConstantRewardEnv, max_episode_steps=5)
    args = ppo.Args(env_id="ConstantReward-v0", gamma=0.9, total_timesteps=16_384, num_envs=4, num_steps=64,
                    runs_dir=str(tmp_path), quiet=True)
    agent = ppo.train(args)["agent"]
    with torch.no_grad():
        value = agent.value(torch.zeros(1, 2)).item()
    # true value 1 / (1 - 0.9) = 10; treating truncation as termination would give at most 5 (about 3 on average)
    assert 8.0 < value < 12.0, value


class StepCountEnv(ConstantRewardEnv):
    """ConstantRewardEnv whose observation is the step count, so that every state, the last one too, differs."""
    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t / 5, np.float32), 1.0, False, False, {}


def test_recompute_adv_also_revalues_the_final_states_of_time_limits():
    # With --recompute-adv, V(s_t) and V(the final state of a truncated episode) must both come from the critic as
    # it is now: through GAE a stale final value reaches about 1 / (1 - gamma * lambda) steps back.
    gym.register("StepCount-v0", entry_point=StepCountEnv, max_episode_steps=5)
    envs = gym.vector.SyncVectorEnv([lambda: ppo.make_env("StepCount-v0")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    agent = ppo.Agent(envs.single_observation_space, envs.single_action_space)
    rollout = ppo.Rollout.start(12, envs.single_observation_space, envs.single_action_space, envs.reset(seed=0))
    ppo.collect_rollout(envs, agent, rollout, ppo.RewardScaler(agent.reward_rms, 0.99, 2, enabled=False))
    truncated = rollout.truncations == 1
    assert truncated.sum() == 4                                     # steps 4 and 9 of both envs
    rollout.values, rollout.final_values = ppo.critic_values(agent, rollout)    # as train() takes them
    assert (rollout.final_values[truncated] != 0).all() and (rollout.final_values[~truncated] == 0).all()
    assert rollout.values.dtype == rollout.final_values.dtype == np.float32          # the rollout's precision
    with torch.no_grad():
        agent.critic[-1].weight.add_(1.0)                           # the critic changes, as an epoch changes it
        expected_final = agent.value(torch.ones(1, 2)).item()       # every final state is (5/5, 5/5)
    values, final_values = ppo.critic_values(agent, rollout)
    assert np.allclose(final_values[truncated], expected_final, atol=1e-6)
    assert not np.allclose(rollout.final_values[truncated], expected_final, atol=1e-3)   # acting time's differ
    with torch.no_grad():
        now = agent.value(torch.from_numpy(rollout.obs.reshape(24, 2))).reshape(12, 2).numpy()
    assert np.allclose(values, now, atol=1e-6)


def test_box_actions_end_to_end_and_checkpoint_reload(tmp_path):
    args = ppo.default_args("Pendulum-v1", total_timesteps=4096, num_steps=512, runs_dir=str(tmp_path), quiet=True)
    assert args.norm_obs and args.norm_reward and args.ent_coef == 0.0       # the continuous defaults
    result = ppo.train(args)
    agent = result["agent"]
    assert agent.obs_rms.count > 4000                                        # the statistics were learned
    loaded, loaded_args = ppo.load_agent(result["checkpoint"])
    assert loaded_args.env_id == "Pendulum-v1"
    raw_obs = torch.randn(16, 3) * 3
    with torch.no_grad():
        expected = agent.act(raw_obs, deterministic=True)[0]          # the agent normalizes raw observations
        actual = loaded.act(raw_obs, deterministic=True)[0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    torch.testing.assert_close(loaded.obs_rms.mean, agent.obs_rms.mean)


def test_learning_rate_decays_to_zero_over_the_steps_that_run(tmp_path):
    # 5000 steps in iterations of 256 run 19 iterations, 4864 steps: the rate, set at each iteration's start, falls
    # linearly to 0 at step 4864 (not at 5000, which no iteration reaches).
    args = ppo.default_args("CartPole-v1", total_timesteps=5000, num_envs=4, num_steps=64, runs_dir=str(tmp_path),
                            quiet=True, tensorboard=False)
    rows = read_csv(ppo.train(args)["run_dir"] / "updates.csv")
    assert len(rows) == 19
    for row in rows:                                                  # global_step: after the iteration
        start = int(row["global_step"]) - 256
        assert math.isclose(float(row["learning_rate"]), args.learning_rate * (1 - start / 4864), rel_tol=1e-9)


def test_same_seed_gives_identical_episodes(tmp_path):
    def run(sub):
        args = ppo.Args(total_timesteps=8192, runs_dir=str(tmp_path / sub), quiet=True, seed=7)
        rows = read_csv(ppo.train(args)["run_dir"] / "episodes.csv")
        return [(r["global_step"], r["episodic_return"], r["episodic_length"]) for r in rows]

    first, second = run("a"), run("b")
    assert len(first) > 50 and first == second


@pytest.mark.parametrize("recompute", [False, True])
def test_recompute_adv_bootstraps_every_epoch_from_the_critic_as_it_is_now(recompute, tmp_path):
    # returns - advantages is the V(s_t) that GAE used. Without --recompute-adv that is the critic at acting time
    # in every epoch; with it, from the second epoch on, the critic as the previous epoch left it. One minibatch per
    # epoch, so loss_fn sees each epoch's batch before that epoch's gradient step.
    seen = []

    def spy(agent, mb, args):
        with torch.no_grad():
            critic_now = agent.value(mb["obs"])
        used = mb["returns"] - mb["advantages"]
        seen.append((torch.allclose(used, mb["values"], atol=1e-5), torch.allclose(used, critic_now, atol=1e-5)))
        return ppo.ppo_loss(agent, mb, args)

    args = ppo.Args(num_envs=2, num_steps=32, total_timesteps=128, num_minibatches=1, update_epochs=3,
                    recompute_adv=recompute, runs_dir=str(tmp_path), quiet=True, tensorboard=False)
    ppo.train(args, loss_fn=spy)
    assert len(seen) == 2 * 3
    for epoch, (acting_values, current_values) in enumerate(seen):
        if epoch % 3 == 0:
            assert acting_values and current_values       # nothing has changed the critic yet in this update
        else:
            assert (acting_values, current_values) == ((False, True) if recompute else (True, False))


# ---------------------------------------------------------------------------------------------------------------------
# Images: the CNN path (a tiny pixel env of our own, so CI needs no Atari ROMs), and Atari when ale-py is installed
# ---------------------------------------------------------------------------------------------------------------------
class PixelSide(gym.Env):
    """A 36x36 grey picture, channels last, whose left or right half is lit: the action naming the lit side pays 1.
    Eight pictures per episode, so a random agent scores about 4 and one that sees scores 8."""
    observation_space = gym.spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)                  # 0 = left, 1 = right

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def _draw(self):
        self.side = int(self.np_random.integers(2))
        picture = np.zeros((36, 36, 1), np.uint8)
        picture[:, 18 * self.side:18 * (self.side + 1)] = 255
        return picture

    def step(self, action):
        reward, self.t = float(action == self.side), self.t + 1
        return self._draw(), reward, self.t == 8, False, {}


class SmallImage(PixelSide):
    observation_space = gym.spaces.Box(0, 255, (3, 16, 16), np.uint8)


class ChannelsInTheMiddle(PixelSide):
    observation_space = gym.spaces.Box(0, 255, (40, 3, 40), np.uint8)


gym.register("PixelSide-v0", entry_point=PixelSide)
gym.register("SmallImage-v0", entry_point=SmallImage)
gym.register("ChannelsInTheMiddle-v0", entry_point=ChannelsInTheMiddle)


def test_image_observations_get_the_cnn_and_learn(tmp_path):
    env = ppo.make_env("PixelSide-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (1, 36, 36) and obs.dtype == np.uint8       # channels moved first
    assert obs[0, :, 18 * env.unwrapped.side].all() and not obs[0, :, 18 * (1 - env.unwrapped.side)].any()
    agent = ppo.build_agent(ppo.default_args("PixelSide-v0"), env.observation_space, env.action_space)
    assert isinstance(agent.encoder[0], nn.Conv2d) and agent.encoder[-2].out_features == 512
    assert agent.actor[0].in_features == 512 and len(agent.actor) == 1                 # one linear layer per head
    args = ppo.default_args("PixelSide-v0")
    assert all(getattr(args, k) == v for k, v in ppo.ATARI_DEFAULTS.items())         # defaults follow the observation
    # Bigger steps and fewer minibatches than Atari's defaults, so that it learns in a few seconds on a CPU.
    args = ppo.default_args("PixelSide-v0", total_timesteps=4096, num_steps=32, learning_rate=1e-3,
                            num_minibatches=2, update_epochs=2, runs_dir=str(tmp_path), quiet=True)
    result = ppo.train(args)
    returns = result["episode_returns"]
    assert np.mean(returns[:20]) < 5.5 and np.mean(returns[-20:]) > 7.0, returns[-20:]
    # The checkpoint holds weights and statistics, not frames: no uint8 tensor, and about 3 copies of the weights
    # (weights and Adam's two moments), where one rollout of frames alone would be 8 * 32 * 1296 bytes again.
    checkpoint = torch.load(result["checkpoint"])
    tensors = [*checkpoint["agent"].values(), *(t for state in checkpoint["optimizer"]["state"].values()
                                                for t in state.values())]
    assert not any(t.dtype == torch.uint8 for t in tensors)
    weight_bytes = sum(p.numel() * 4 for p in result["agent"].parameters())
    assert result["checkpoint"].stat().st_size < 3 * weight_bytes + 100_000


def test_rollout_keeps_frames_as_uint8():
    envs = ppo.make_vector_env(ppo.Args(env_id="PixelSide-v0", num_envs=2))
    space = envs.single_observation_space
    rollout = ppo.Rollout.start(4, space, envs.single_action_space, first=envs.reset(seed=0))
    agent = ppo.Agent(space, envs.single_action_space, hidden_sizes=())
    ppo.collect_rollout(envs, agent, rollout, ppo.RewardScaler(agent.reward_rms, 0.99, 2, enabled=False))
    assert rollout.obs.dtype == np.uint8 and rollout.obs.shape == (4, 2, 1, 36, 36) and rollout.obs.max() == 255
    batch = rollout.flatten(np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32), torch.device("cpu"))
    assert batch["obs"].dtype == torch.uint8                     # minibatches stay uint8 until the agent reads them
    float_space = gym.spaces.Box(-1, 1, (3,), np.float64)       # float observations are stored as float32, as before
    assert ppo.Rollout.start(4, float_space, envs.single_action_space, (np.zeros((2, 3)), {})).obs.dtype == np.float32


def test_mlp_agent_keeps_its_checkpoint_keys():
    # checkpoints of vector-observation agents written before the CNN existed must still load
    assert sorted(ppo.Agent(OBS, gym.spaces.Box(-1, 1, (2,), np.float32)).state_dict()) == [
        "actor.0.bias", "actor.0.weight", "actor.2.bias", "actor.2.weight", "actor.4.bias", "actor.4.weight",
        "actor_logstd", "critic.0.bias", "critic.0.weight", "critic.2.bias", "critic.2.weight", "critic.4.bias",
        "critic.4.weight", "obs_rms.count", "obs_rms.mean", "obs_rms.var", "reward_rms.count", "reward_rms.mean",
        "reward_rms.var"]


class LivesEnv(ConstantRewardEnv):
    """A game of 3 lives that loses one every 3 steps and pays 5 points per step, reporting lives as ALE does."""
    def reset(self, *, seed=None, options=None):
        self.t, self.lives = 0, 3
        return np.zeros(2, np.float32), {"lives": self.lives}

    def step(self, action):
        self.t += 1
        self.lives -= self.t % 3 == 0
        return np.zeros(2, np.float32), 5.0, self.lives == 0, False, {"lives": self.lives}


def test_atari_signals_clip_rewards_and_end_lives_but_log_whole_games():
    envs = gym.vector.SyncVectorEnv([LivesEnv], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = ppo.AtariLearningSignals(gym.wrappers.vector.RecordEpisodeStatistics(envs))
    envs.reset(seed=0)
    terminated, games = [], []
    for _ in range(12):
        _, reward, term, _, infos = envs.step(np.zeros(1, np.int64))
        assert reward.tolist() == [1.0]                                  # the update sees the reward's sign
        terminated.append(bool(term[0]))
        if infos.get("_episode", [False])[0]:
            games.append((float(infos["episode"]["r"][0]), int(infos["episode"]["l"][0])))
    # a life ends every 3 steps (a training episode); the game ends with the third, at step 9, and restarts
    assert terminated == [False, False, True] * 4
    assert games == [(45.0, 9)]                                      # episodes.csv: the whole game, raw points


@pytest.mark.parametrize("flags, expected", [
    (["--env-id", "SmallImage-v0"], "images of 16x16 are too small for the Nature CNN"),
    (["--env-id", "ChannelsInTheMiddle-v0"], "have their smallest axis, taken for the channels, in the middle"),
    (["--env-id", "PixelSide-v0", "--norm-obs"], "--norm-obs: PixelSide-v0 gives images"),
    (["--env-id", "ALE/Breakout-v5"], 'Atari needs the optional packages ale-py and opencv; pip install'),
])
def test_unsupported_images_and_missing_atari_are_refused(flags, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)                  # as if ale-py were not installed
    code = ppo.main([*flags, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not any(tmp_path.iterdir())


def test_atari_smoke(tmp_path, capsys):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    args = ppo.default_args("ALE/Breakout-v5", total_timesteps=128, num_envs=2, num_steps=64, num_minibatches=2,
                            update_epochs=1, runs_dir=str(tmp_path), quiet=True)
    assert (args.num_envs, args.num_steps, args.learning_rate, args.clip_coef, args.ent_coef) == (2, 64, 2.5e-4, 0.1,
                                                                                                   0.01)
    result = ppo.train(args)
    agent = result["agent"]
    assert isinstance(agent.encoder[0], nn.Conv2d) and agent.encoder[0].in_channels == 4       # 4 stacked frames
    assert ppo.make_env("ALE/Breakout-v5").observation_space.shape == (4, 84, 84)
    returns = ppo.evaluate(result["checkpoint"], episodes=1, deterministic=False)   # a whole game, same wrappers
    assert len(returns) == 1 and returns[0] >= 0
    with pytest.raises(SystemExit):
        ppo.parse_args(["--env-id", "ALE/Breakout-v5", "--help"])
    help_text = unboxed(capsys.readouterr().out)                     # --help shows the values Atari will use
    assert "(default: 10000000)" in help_text and "(default: 0.00025)" in help_text


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def unboxed(help_text):
    """--help's text without tyro's box and line breaks: "(default: │ 1000000)" reads "(default: 1000000)"."""
    return re.sub(r"[\s│|]+", " ", help_text)


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import ppo"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_help_lists_flags_with_the_defaults_that_will_be_used():
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in ("--env-id", "--total-timesteps", "--learning-rate", "--num-envs", "--num-steps", "--anneal-lr",
                 "--gamma", "--gae-lambda", "--num-minibatches", "--update-epochs", "--norm-adv", "--clip-coef",
                 "--clip-vloss", "--ent-coef", "--vf-coef", "--max-grad-norm", "--target-kl", "--cuda",
                 "--capture-video", "--exp-name", "--seed", "--torch-deterministic"):
        assert flag in out.stdout, flag
    continuous = unboxed(run_cli("--env-id", "Pendulum-v1", "--help").stdout)
    assert "(default: 1000000)" in continuous and "(default: 1000000)" not in unboxed(out.stdout)


def test_help_lists_each_preset_on_its_own_line(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")                      # wide enough that tyro wraps no line itself
    with pytest.raises(SystemExit):
        ppo.main(["--help"])
    wide = capsys.readouterr().out
    for name in ppo.PRESETS:                                  # tyro draws them from the docstring of Args.preset
        assert re.search(rf"^[│ ]+{name}: \S", wide, re.MULTILINE), name    # after the edge of the box tyro may draw
    assert "PRESETS" not in wide


def test_help_lines_break_between_sentences_only():
    # tyro prints each flag's docstring with its line breaks: a break must not cut a sentence in two
    docstrings = [node.value.value for cls in ppo.Args.__mro__[:-1]      # Part I's Args and Part III's extension
                  for node in ast.walk(ast.parse(inspect.getsource(cls)))
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)]
    for doc in docstrings:
        for line in doc.splitlines()[:-1]:
            assert line.rstrip()[-1] in ".:;)", line


@pytest.mark.parametrize("flags, expected", [
    (["--gamma", "1.5"], "--gamma 1.5: must be in (0, 1]"),
    (["--gamma", "abc"], "--gamma"),
    (["--num-envs", "0"], "--num-envs 0: must be a positive integer"),
    (["--num-minibatches", "3"], "--num-minibatches 3: must divide"),
    (["--num-envs", "1", "--num-steps", "4", "--num-minibatches", "4", "--total-timesteps", "8"],
     "--num-minibatches 4: leaves minibatches of 1 transition"),
    (["--total-timesteps", "10"], "--total-timesteps 10: smaller than one batch"),
    (["--clip-coef", "0"], "--clip-coef 0.0: must be > 0"),
    (["--learning-rate", "-1e-3"], "--learning-rate -0.001: must be > 0"),
    (["--gamma", "-inf"], "--gamma -inf: must be a finite number"),         # -1e-3 and -inf read as values, too
    (["--ent-coef", "-0.1"], "--ent-coef -0.1: must be >= 0"),
    (["--env-id", "CartPole-v9"], "--env-id CartPole-v9: cannot make this environment"),
    (["--env-id", "CartPol-v1"], "did you mean CartPole-v1"),
    (["--resume", "/nonexistent/checkpoint.pt"], "--resume /nonexistent/checkpoint.pt: no such file"),
    (["--bogus-flag", "1"], "Unrecognized options"),
    (["--num-steps", "-5"], "--num-steps -5: must be a positive integer"),
    (["--env-id", "ImageInDict-v0"], "observation space Dict('pixels'"),
    (["--gae-lambda", "1.5"], "--gae-lambda 1.5: must be in [0, 1]"),
    (["--update-epochs", "0"], "--update-epochs 0: must be a positive integer"),
    (["--target-kl", "-1"], "--target-kl -1.0: must be > 0"),
    (["--hidden-sizes", "0"], "--hidden-sizes 0: layer sizes must be positive"),
    (["--max-grad-norm", "0"], "--max-grad-norm 0.0: must be > 0"),
    (["--preset", "cheetah"], "--preset cheetah: no such preset; valid: mountaincar, halfcheetah-zoo"),
    (["--activation", "gelu"], ("--activation", "'gelu'", "'tanh', 'relu'")),    # tyro's words vary: what they name
    (["--resume", "x.pt", "--preset", "mountaincar"], "--preset: --resume uses the settings saved in the checkpoint"),
    (["--lr", "1e-3"], "--lr: ppo.py calls it --learning-rate"),
    (["--env", "CartPole-v1"], "--env: ppo.py calls it --env-id"),
    (["--n-envs", "8"], "--n-envs: ppo.py calls it --num-envs"),
    (["--batch-size", "64"], "--batch-size: ppo.py calls it --num-envs * --num-steps (the batch)"),
    (["--hidden-sizes", "64,64"],
     "--hidden-sizes 64,64: give the sizes as separate numbers, e.g. --hidden-sizes 64 64"),
    (["--anneal-l"], "did you mean --anneal-lr; see --help"),               # tyro's suggestion, without its comma
    (["--evaluate", "x.pt", "--resume", "y.pt"], "--evaluate: plays a checkpoint, --resume trains one further"),
    (["--evaluate", "."], "--evaluate .: a folder; give the checkpoint.pt in it"),
])
def test_bad_input_is_one_line_and_exit_2(flags, expected, capsys, tmp_path):
    code = ppo.main([*flags, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert all(part in err for part in ([expected] if isinstance(expected, str) else expected)), err
    assert not any(tmp_path.iterdir())                  # refused before anything was created


def test_the_installed_versions_pass_the_floors():
    found = ppo.installed_versions()
    assert set(found) == set(ppo.FLOORS) and all(found.values()), found
    assert all(ppo.version_tuple(found[name]) >= floor for name, floor in ppo.FLOORS.items()), found
    ppo.check_versions(command_line=True)


def test_version_tuple_reads_the_numbers_of_real_version_strings():
    assert ppo.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert ppo.version_tuple("1.26.0rc1") == (1, 26, 0) and ppo.version_tuple("2.5.0.dev20240901") == (2, 5, 0, 0)
    assert ppo.version_tuple("1.1.0") >= (1, 1) > ppo.version_tuple("1.0.0")
    assert ppo.version_tuple("0.9.35") > ppo.version_tuple("0.9.1") >= (0, 9, 1) > ppo.version_tuple("0.8.14")


@pytest.mark.parametrize("name, old", [("python", "3.9.18"), ("torch", "2.3.1"), ("gymnasium", "1.0.0"),
                                       ("numpy", "1.25.2"), ("tyro", "0.8.14")])
def test_a_version_below_its_floor_is_refused_in_one_line_before_anything_is_made(name, old, monkeypatch, capsys,
                                                                                  tmp_path):
    versions = {**ppo.installed_versions(), name: old}
    monkeypatch.setattr(ppo, "installed_versions", lambda: versions)
    need = ".".join(map(str, ppo.FLOORS[name]))
    assert ppo.main(["--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{'Python' if name == 'python' else name} {old} is older than ppo.py needs ({need} or newer)" in err
    assert ("a newer Python" if name == "python" else f'pip install "{name}>={need}"') in err
    assert not any(tmp_path.iterdir())
    args = ppo.Args(total_timesteps=256, num_envs=2, num_steps=128, runs_dir=str(tmp_path), quiet=True)
    if name == "tyro":                              # only the command line parses with tyro: Python goes on
        ppo.check_versions()
        return
    with pytest.raises(ppo.UsageError) as e:        # from Python: the same message
        ppo.train(args)
    assert f"error: {e.value}\n" == err
    assert not any(tmp_path.iterdir())


def test_a_missing_tyro_is_named_with_how_to_install_it(monkeypatch, capsys, tmp_path):
    versions, find_spec = {**ppo.installed_versions(), "tyro": None}, importlib.util.find_spec
    monkeypatch.setattr(ppo, "installed_versions", lambda: versions)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tyro" else find_spec(name, *a))
    need = ".".join(map(str, ppo.FLOORS["tyro"]))
    assert ppo.main(["--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: tyro is not installed; ppo.py needs {need} or newer: "
                                       f'pip install "tyro>={need}"\n')
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, limit", [("--num-envs", 1024), ("--num-steps", 10**6), ("--frame-stack", 1024),
                                         ("--recurrent-size", 65_536), ("--recurrent-seq-len", 10**6),
                                         ("--torch-threads", 1024), ("--hidden-sizes", 65_536),
                                         ("--eval-episodes", 10**6)])
def test_each_size_is_refused_one_past_its_largest_value(flag, limit, capsys, tmp_path):
    # The largest sizes that make sense (a run beyond them cannot fit in memory, or is a typo), written out here.
    assert ppo.main([flag, str(limit + 1), "--runs-dir", str(tmp_path)]) == 2
    assert one_error_line(capsys.readouterr().err, f"{flag} {limit + 1}: at most {limit:,}")
    assert not any(tmp_path.iterdir())


def test_the_limits_and_combinations_accept_each_edge_and_refuse_one_past_it(tmp_path, capsys, monkeypatch):
    # check_limits_and_combinations alone, on settings filled in as check_args fills them: each limit itself is
    # accepted (one past it: the test above), so are no hidden layers, seeds 0 and 2**31 - 1, and
    # --eval-video-episodes -1 (all); a package is needed only to train with it; a note for --recurrent with stacks.
    def outcome(**fields):
        args = ppo.fill_auto(ppo.Args(**{"runs_dir": str(tmp_path / "runs"), **fields}))
        try:
            ppo.check_limits_and_combinations(args)
        except ppo.UsageError as e:
            return str(e)
        return "accepted"
    for name, limit in ppo.LIMITS.items():
        needs = {ppo.REQUIRES[name]: True} if name in ppo.REQUIRES else {}
        assert outcome(**{name: (limit,) if name == "hidden_sizes" else limit}, **needs) == "accepted", name
    for fields in [dict(hidden_sizes=()), dict(seed=0), dict(seed=2**31 - 1), dict(eval_video_episodes=-1),
                   dict(tensorboard=installed("tensorboard")), dict(track=installed("wandb"))]:
        assert outcome(**fields) == "accepted", fields
    for fields, message in [(dict(seed=-1), "--seed -1: must be in [0, 2**31)"),
                            (dict(seed=2**31), "--seed 2147483648: must be in [0, 2**31)"),
                            (dict(eval_video_episodes=-2), "--eval-video-episodes -2: films the first N episodes")]:
        assert outcome(**fields).startswith(message), fields
    monkeypatch.setattr(ppo, "installed", lambda package: False)
    for name, package in [("tensorboard", "tensorboard"), ("track", "wandb")]:
        assert outcome(**{name: True}) == f"--{name}: needs the optional package {package}; pip install {package}, " \
                                           f"or --no-{name}"
        assert outcome(**{name: True}, evaluate="runs/a/checkpoint.pt") == "accepted"   # evaluation does not log
    monkeypatch.setattr(ppo, "EXCLUSIVE", {("recurrent", "recompute_adv"): "a reason"})  # the table, with one entry
    assert outcome(recurrent=True) == outcome(recompute_adv=True) == "accepted"
    assert outcome(recurrent=True, recompute_adv=True) == "--recurrent and --recompute-adv do not combine: a reason"
    capsys.readouterr()
    assert outcome(recurrent=True, frame_stack=2) == "accepted"
    assert capsys.readouterr().err == "note: --recurrent --frame-stack 2: both apply, the GRU reads stacks of 2 " \
                                      "observations\n"
    assert outcome(recurrent=True, frame_stack=2, evaluate="runs/a/checkpoint.pt") == "accepted"
    assert capsys.readouterr().err == ""                             # evaluation plays the agent as it was trained
    (tmp_path / "a-file").write_text("")                            # --runs-dir matters to a new run only
    assert outcome(runs_dir=str(tmp_path / "a-file")).startswith("--runs-dir")
    assert outcome(runs_dir=str(tmp_path / "a-file"), evaluate="runs/a/checkpoint.pt") == "accepted"


def test_missing_package_says_what_to_install_not_did_you_mean(capsys, tmp_path):
    def lunar_lander_without_box2d(**kwargs):     # what gymnasium raises for LunarLander-v3 when Box2D is missing
        raise gym.error.DependencyNotInstalled("Box2D is not installed, you can install it by run `pip install swig` "
                                               'followed by `pip install "gymnasium[box2d]"`')
    gym.register("NeedsBox2D-v0", entry_point=lunar_lander_without_box2d)
    assert ppo.main(["--env-id", "NeedsBox2D-v0", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "error: --env-id NeedsBox2D-v0: needs a package that is not installed: Box2D is not installed, you can "
        'install it by run `pip install swig` followed by `pip install "gymnasium[box2d]"`\n')


def test_bad_input_through_the_real_cli_has_no_traceback():
    out = run_cli("--gamma", "2")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --gamma 2.0: must be in (0, 1]; "
                                               "typical: gamma 0.99, lambda 0.95"]
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize("envs, steps, minibatches, expected", [
    (1, 1, 1, "--num-envs 1 --num-steps 1: a batch of 1 transition, whose advantages cannot be normalized (the std "
              "of one number); raise --num-envs or --num-steps, or use --no-norm-adv"),
    (1, 4, 4, "--num-minibatches 4: leaves minibatches of 1 transition, whose advantages cannot be normalized (the "
              "std of one number); use fewer minibatches (valid: 1, 2), or --no-norm-adv"),
])
def test_minibatches_of_one_transition_get_advice_that_holds(envs, steps, minibatches, expected, capsys, tmp_path):
    # 1 minibatch is already the fewest: with a batch of 1, only a larger batch (or no normalization) helps.
    flags = ["--num-envs", str(envs), "--num-steps", str(steps), "--num-minibatches", str(minibatches),
             "--total-timesteps", "8", "--runs-dir", str(tmp_path)]
    assert ppo.main(flags) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    assert not any(tmp_path.iterdir())
    # What it advises passes the check.
    args = ppo.default_args("CartPole-v1", num_envs=envs, num_steps=steps, num_minibatches=minibatches,
                            total_timesteps=8, runs_dir=str(tmp_path))
    valid = re.search(r"valid: ([\d, ]+)\)", expected)
    for advice in ([dict(num_minibatches=int(v)) for v in valid[1].split(", ")] if valid else
                   [dict(num_envs=2), dict(num_steps=2)]) + [dict(norm_adv=False)]:
        ppo.check_args(dataclasses.replace(args, **advice))


def test_an_unknown_flag_is_named_without_its_value(capsys, tmp_path):
    for flags, expected in [
            (["--learning-rte", "1e-3"], "Unrecognized options: --learning-rte; did you mean --learning-rate"),
            (["--learning-rte=1e-3"], "Unrecognized options: --learning-rte; did you mean --learning-rate"),
            (["--bogus", "-1", "--gamm", "0.9"],
             "Unrecognized options: --bogus, --gamm; did you mean --gamma for --gamm"),
            (["--no-norm-ob"], "Unrecognized options: --no-norm-ob; did you mean --no-norm-obs"),
            (["--num-envs", "4", "5"], "Unrecognized (options|arguments): 5")]:   # no flag: the stray value is named
        assert ppo.main([*flags, "--runs-dir", str(tmp_path)]) == 2
        assert re.fullmatch(f"error: {expected}; see --help\n", capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_mujoco_starts_quietly_and_writes_no_log_file(tmp_path):
    # MuJoCo's 'settotalmass' warning and gymnasium's v4 deprecation used to print ~10 lines before ours, and MuJoCo
    # wrote MUJOCO_LOG.TXT into the current folder
    out = run_cli("--env-id", "HalfCheetah-v4", "--total-timesteps", "1024", "--num-envs", "1", "--num-steps", "1024",
                  "--num-minibatches", "1", "--update-epochs", "1", "--runs-dir", "runs", "--quiet", "--no-tensorboard",
                  cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("run directory: runs/HalfCheetah-v4__")
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
    # and from Python: train, evaluate and load_policy().make_env() alike
    script = ("import ppo; r = ppo.train(ppo.default_args('HalfCheetah-v4', total_timesteps=64, num_envs=1, "
              "num_steps=64, num_minibatches=1, update_epochs=1, runs_dir='py', quiet=True)); "
              "ppo.evaluate(r['checkpoint'], episodes=1); ppo.load_policy(r['checkpoint']).make_env().reset()")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(HERE)})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["py", "runs"]


def test_without_tensorboard_a_run_is_quiet_and_says_what_it_wrote(tmp_path, capsys, monkeypatch):
    # The README's own install has no tensorboard: no warning, and args.json says no event files were written.
    really_installed = ppo.installed
    monkeypatch.setattr(ppo, "installed", lambda package: package != "tensorboard" and really_installed(package))
    runs = tmp_path / "runs"
    small = ["--total-timesteps", "128", "--num-envs", "2", "--num-steps", "64", "--runs-dir", str(runs), "--quiet"]
    assert ppo.main(small) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("run directory: "), (out, err)
    (run,) = runs.iterdir()
    assert json.loads((run / "args.json").read_text())["tensorboard"] is False
    assert not list(run.glob("events.out.tfevents.*"))
    assert ppo.main([*small, "--resume", str(run / "checkpoint.pt"), "--total-timesteps", "256"]) == 0
    assert capsys.readouterr().err == ""
    assert ppo.main([*small, "--tensorboard"]) == 2                 # asked for by name: refused, nothing made
    assert capsys.readouterr().err == ("error: --tensorboard: needs the optional package tensorboard; pip install "
                                       "tensorboard, or --no-tensorboard\n")
    assert len(list(runs.iterdir())) == 1
    with pytest.raises(ppo.UsageError, match="--tensorboard: needs the optional package"):
        ppo.train(ppo.Args(total_timesteps=128, num_envs=2, num_steps=64, runs_dir=str(runs), tensorboard=True))
    assert ppo.default_args("CartPole-v1").tensorboard is False and ppo.fill_auto(ppo.Args()).tensorboard is False
    # A checkpoint written where tensorboard was installed resumes here without it (nothing to refuse: not given).
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    checkpoint["args"]["tensorboard"] = True
    torch.save(checkpoint, run / "checkpoint.pt")
    assert ppo.main([*small, "--resume", str(run / "checkpoint.pt"), "--total-timesteps", "384"]) == 0
    assert capsys.readouterr().err == ""
    assert json.loads((run / "args.json").read_text())["resumed"][-1]["changed"]["tensorboard"] == [True, False]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # the -v4 ids kept for comparison with published tables
def test_every_env_id_the_docs_name_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # MuJoCo writes MUJOCO_LOG.TXT into the current folder: not the repo's
    docs = [HERE / "README.md", *sorted((HERE / "notes").glob("*.md")), *sorted((HERE / "notes").glob("*.py"))]
    text = "\n".join(p.read_text() for p in docs) + ppo.__doc__
    env_ids = set(re.findall(r"(?<![\w:/-])([A-Z][A-Za-z0-9]*-v\d+)\b", text))   # not `module:Id-v0`, `ALE/Pong-v5`
    named_as_examples = {"CartPol-v1", "GoRight-v0", "MyEnv-v0", "EnvId-v0", "LunarLander-v3",   # typos, custom, Box2D,
                         "LunarLander-v2", "LunarLanderNoVel-v3",         # the SB3 zoo's id, Box2D hidden vel.,
                         "CarRacing-v3", "NoFrameskip-v4",                                  # Box2D, `*NoFrameskip-v4`
                         "Taxi-v3"}                                       # gymnasium before 1.4 (the versions table)
    assert {"CartPole-v1", "HalfCheetah-v5", "Hopper-v4"} <= env_ids
    try:
        import ale_py  # noqa: F401  (Atari ids run where the optional Atari packages are installed, as in CI)
    except ImportError:
        named_as_examples |= {env_id for env_id in env_ids if "NoFrameskip" in env_id}
    if "Taxi-v4" not in gym.registry:                # the docs' Taxi-v4 is gymnasium 1.4's; 1.1 has Taxi-v3 only
        named_as_examples.add("Taxi-v4")
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    importlib.import_module("memory_benchmark")  # registers CartPoleNoVel-v1 and PendulumNoVel-v1, which the docs name
    importlib.import_module("recurrent_lr_screen")  # registers CueDelay-v0
    for env_id in sorted(env_ids - named_as_examples):
        env = ppo.make_env(env_id)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(capsys, tmp_path):
    assert ppo.main(["--cuda", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cuda: no CUDA GPU is visible" in err, err


def test_cuda_under_torchrun_needs_a_gpu_per_process_on_the_machine(monkeypatch):
    # nccl takes one GPU per process: torchrun's LOCAL_WORLD_SIZE processes on this machine against the GPUs visible
    # (faked here: 2 GPUs); the message says how many of each, word for word. Without torchrun: 1 process.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    ppo.check_args(ppo.Args(cuda=True))
    for processes, refused in [("2", False), ("3", True)]:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
        if not refused:
            ppo.check_args(ppo.Args(cuda=True))
            continue
        with pytest.raises(ppo.UsageError) as e:
            ppo.check_args(ppo.Args(cuda=True))
        assert str(e.value) == "--cuda: torchrun started 3 processes on this machine but 2 GPU(s) are visible, and " \
                               "nccl needs one per process; use --nproc-per-node 2, or drop --cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    with pytest.raises(ppo.UsageError, match="^--cuda: torchrun started 1 processes on this machine but 0 GPU"):
        ppo.check_args(ppo.Args(cuda=True))


def test_learning_rate_and_target_kl_must_be_above_zero(tmp_path, capsys, monkeypatch):
    for words, expected in [(["--learning-rate", "0"], "refused"), (["--learning-rate", "1e-9"], "accepted"),
                            (["--target-kl", "0"], "refused"), (["--target-kl", "1e-9"], "accepted")]:
        assert accepted_or_refused_in_one_line([*words, "--total-timesteps", "2048"], tmp_path / "runs", capsys,
                                               monkeypatch, words[0]) == expected, words


# ---------------------------------------------------------------------------------------------------------------------
# Runs that survive their users: checkpoints, resume, signals, non-finite values, custom envs, evaluation, plots
# ---------------------------------------------------------------------------------------------------------------------
def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"this is not a checkpoint")
    assert ppo.main(["--resume", str(bad)]) == 2
    assert "not a readable ppo.py checkpoint" in capsys.readouterr().err
    result = ppo.train(ppo.Args(total_timesteps=256, num_envs=2, num_steps=128, runs_dir=str(tmp_path), quiet=True))
    code = ppo.main(["--resume", str(result["checkpoint"]), "--env-id", "Acrobot-v1"])
    err = capsys.readouterr().err
    assert code == 2 and "trained on CartPole-v1, not Acrobot-v1" in err, err


def wait_for(predicate, timeout=60.0):
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_saves_and_resume_picks_up_at_the_saved_step(tmp_path, sig, code):
    import signal
    import time
    flags = ["--total-timesteps", "20480", "--num-envs", "4", "--num-steps", "64", "--save-every", "1000",
             "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, str(HERE / "ppo.py"), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(len(read_csv(p)) >= 5 for p in tmp_path.glob("*/updates.csv")))
    sent = time.time()
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=30)
    assert time.time() - sent < 10
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    run_dir = next(tmp_path.iterdir())
    checkpoint = run_dir / "checkpoint.pt"
    assert f"python {HERE / 'ppo.py'} --resume {checkpoint}" in stdout          # the script path as given
    saved_step = torch.load(checkpoint)["global_step"]
    assert 0 < saved_step < 20480 and saved_step % 256 == 0
    episodes = read_csv(run_dir / "episodes.csv")
    assert all(None not in row.values() for row in episodes)          # every row whole
    assert int(episodes[-1]["global_step"]) <= saved_step

    out = run_cli("--resume", str(checkpoint), "--quiet")
    assert out.returncode == 0, out.stderr
    update_steps = [int(r["global_step"]) for r in read_csv(run_dir / "updates.csv")]
    assert update_steps == list(range(256, 20480 + 1, 256))           # no step missing, none twice
    episode_steps = [int(r["global_step"]) for r in read_csv(run_dir / "episodes.csv")]
    assert episode_steps == sorted(episode_steps) and episode_steps[-1] <= 20480
    assert torch.load(checkpoint)["global_step"] == 20480


def test_resumed_run_counts_the_episodes_it_already_has(tmp_path, capsys):
    result = ppo.train(ppo.Args(total_timesteps=4096, runs_dir=str(tmp_path), quiet=True))
    kept = len(read_csv(result["run_dir"] / "episodes.csv"))
    capsys.readouterr()
    assert ppo.main(["--resume", str(result["checkpoint"]), "--total-timesteps", "5120", "--no-quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(resuming at step 4,096)"), lines[0]
    # The one iteration that ran ended fewer than 100 episodes; with those the run already had, there are more.
    new = len(read_csv(result["run_dir"] / "episodes.csv")) - kept
    assert new < 100 <= kept + new
    assert "(last 100 ep)" in next(line for line in lines if line.startswith("step")), lines


def test_a_run_says_when_the_mean_of_its_last_100_episodes_reaches_the_envs_solve_level(tmp_path, monkeypatch, capsys):
    # CartPole with a solve level (reward_threshold) that a short run reaches on any torch, and one without any.
    easy = dataclasses.replace(gym.spec("CartPole-v1"), id="EasyCartPole-v1", reward_threshold=60.0)
    monkeypatch.setitem(gym.registry, easy.id, easy)
    monkeypatch.setitem(gym.registry, "NoLevel-v1", dataclasses.replace(easy, id="NoLevel-v1", reward_threshold=None))
    flags = ["--num-envs", "16", "--num-steps", "32", "--runs-dir", str(tmp_path)]
    assert ppo.main(["--env-id", "EasyCartPole-v1", "--total-timesteps", "32768", *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    run_dir = next(tmp_path.iterdir())
    rows = read_csv(run_dir / "episodes.csv")
    returns = [float(r["episodic_return"]) for r in rows]
    first = next(i for i in range(99, len(returns)) if np.mean(returns[i - 99:i + 1]) >= 60)
    step, seconds = int(rows[first]["global_step"]), float(rows[first]["wall_time"])
    assert [line for line in out if "solved" in line] == [
        f"solved: mean return of the last 100 episodes >= 60.0 at step {step:,}, after {seconds:.1f}s", out[-1]], out
    summary = f"; solved (>= 60.0) at step {step:,} after {seconds:.1f}s; run directory {run_dir}"
    assert summary in out[-1], out[-1]
    # Resumed, it knows from episodes.csv that it was solved: no new line, and --quiet's last line says when.
    assert ppo.main(["--resume", str(run_dir / "checkpoint.pt"), "--total-timesteps", "33280", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and summary in out[1], out
    assert ppo.main(["--env-id", "NoLevel-v1", "--total-timesteps", "512", *flags]) == 0   # no level: nothing said
    assert "solved" not in capsys.readouterr().out


def test_resume_keeps_the_first_settings_in_args_json_and_lists_what_each_resume_changed(tmp_path, capsys):
    result = ppo.train(ppo.Args(total_timesteps=2048, num_envs=4, num_steps=64, runs_dir=str(tmp_path), quiet=True))
    first = json.loads((result["run_dir"] / "args.json").read_text())
    checkpoint = str(result["checkpoint"])
    assert ppo.main(["--resume", checkpoint, "--total-timesteps", "2304", "--learning-rate", "1e-4"]) == 0
    assert ppo.main(["--resume", checkpoint, "--total-timesteps", "2560", "--ent-coef", "0.01"]) == 0
    saved = json.loads((result["run_dir"] / "args.json").read_text())
    assert {name: value for name, value in saved.items() if name != "resumed"} == first
    assert saved["resumed"] == [
        {"step": 2048, "changed": {"total_timesteps": [2048, 2304], "learning_rate": [first["learning_rate"], 1e-4]}},
        {"step": 2304, "changed": {"total_timesteps": [2304, 2560], "ent_coef": [0.0, 0.01]}}]
    rates = {int(r["global_step"]): float(r["learning_rate"]) for r in read_csv(result["run_dir"] / "updates.csv")}
    assert rates[2048] == pytest.approx(first["learning_rate"] * 256 / 2048)     # annealed: the last of 8 iterations
    assert rates[2304] == pytest.approx(1e-4 * 256 / 2304)                       # from the resume on, the new rate
    assert torch.load(checkpoint)["args"]["learning_rate"] == 1e-4               # what a next --resume continues with


def test_an_empty_hidden_sizes_says_the_policy_is_linear(tmp_path, capsys):
    small = ["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "1", "--total-timesteps", "64", "--quiet"]
    assert ppo.main(["--hidden-sizes", *small, "--runs-dir", str(tmp_path / "linear")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(" (a linear policy and value: --hidden-sizes is empty)"), first
    weights = torch.load(next((tmp_path / "linear").glob("*/checkpoint.pt")))["agent"]
    assert {k for k in weights if k.startswith(("actor.", "critic."))} == {
        "actor.0.weight", "actor.0.bias", "critic.0.weight", "critic.0.bias"}     # one linear layer each
    # Heads on a GRU's features (as on a CNN's) are no linear policy: nothing to say; nor with hidden layers.
    for flags in (["--hidden-sizes", "--recurrent", "--recurrent-seq-len", "32"], []):
        assert ppo.main([*flags, *small, "--runs-dir", str(tmp_path / "other")]) == 0
        assert "linear" not in capsys.readouterr().out


def test_second_ctrl_c_quits_at_once_with_files_intact(tmp_path):
    import signal
    proc = subprocess.Popen([sys.executable, str(HERE / "ppo.py"), "--total-timesteps", "400000",
                             "--runs-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(len(read_csv(p)) >= 3 for p in tmp_path.glob("*/updates.csv")))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    for name in ("episodes.csv", "updates.csv"):
        rows = read_csv(next(tmp_path.glob(f"*/{name}")))
        assert rows and all(None not in row.values() for row in rows)


# A kill (SIGKILL: the OOM killer, a preempted cluster job) at any moment, then --resume: every file whole, every
# iteration logged once. One process imports ppo and runs the first run itself (which also imports what ppo imports
# lazily); it forks the runs to kill, so that each starts training in a fraction of a second, not the ~3 s of a new
# process.
KILLER = """
import os, signal, sys, time, traceback
sys.path.insert(0, sys.argv[1])
import ppo
ppo.quiet_known_warnings(None)      # what --resume imports: MuJoCo, whose glfw runs helper processes (not killed)
answers = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)    # what ppo prints
for line in sys.stdin:      # "<seconds> <flags of ppo.py>": a run killed after that long, or "- <flags>": a whole run
    delay, *flags = line.split()
    if delay == "-":
        print(ppo.main(flags), file=answers, flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(ppo.main(flags))
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    time.sleep(float(delay))
    os.kill(pid, signal.SIGKILL)    # not yet waited for, so the pid is still this child's even if it has ended
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), file=answers, flush=True)
"""


def whole_rows(path):
    """The rows of the CSV file's complete lines, and whether a last line was cut short (no line end)."""
    with open(path, newline="") as f:
        text = f.read()
    return list(csv.DictReader(io.StringIO(text[:text.rfind("\n") + 1]))), not text.endswith("\n")


def test_a_kill_at_any_moment_leaves_files_that_resume_whole(tmp_path):
    rng, batch, total = random.Random(0), 64, 64 * 250
    flags = ("--num-envs 4 --num-steps 16 --update-epochs 1 --num-minibatches 1 --save-every 1 --no-tensorboard "
             "--quiet")                                             # ~20 ms an iteration, a third of it saving
    killer = subprocess.Popen([sys.executable, "-c", KILLER, str(HERE)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(delay, more_flags):
        killer.stdin.write(f"{delay} {flags} {more_flags}\n")
        killer.stdin.flush()
        return int(killer.stdout.readline() or "999")              # 999: the killer itself died (its stderr says)

    try:
        assert run("-", f"--total-timesteps {10 * batch} --runs-dir {tmp_path}") == 0
        run_dir = next(tmp_path.iterdir())
        checkpoint = run_dir / "checkpoint.pt"
        resume = f"--resume {checkpoint} --total-timesteps {total}"
        kills, cut = 0, set()
        for _ in range(8):
            if torch.load(checkpoint)["global_step"] == total:
                break
            code = run(rng.uniform(0.0, 0.5), resume)
            assert code in (0, -signal.SIGKILL), code
            kills += code == -signal.SIGKILL
            # Right after the kill: the checkpoint loads, and the logs hold every row up to its step (rows after
            # it, and a last line cut short, are dropped by the resume)
            saved = torch.load(checkpoint)["global_step"]
            updates, cut_short = whole_rows(run_dir / "updates.csv")
            assert [int(r["global_step"]) for r in updates if int(r["global_step"]) <= saved] == \
                list(range(batch, saved + 1, batch))
            cut |= {"updates.csv"} if cut_short else set()
            cut |= {"episodes.csv"} if whole_rows(run_dir / "episodes.csv")[1] else set()
            cut |= {p.name for p in run_dir.glob("*.tmp")}
            json.loads((run_dir / "args.json").read_text())
        if torch.load(checkpoint)["global_step"] < total:
            assert run("-", resume) == 0                               # the last resume, to the end
    finally:
        killer.stdin.close()
        stderr = killer.stderr.read()
        killer.wait(timeout=30)
    print(f"{kills} kills; cut short: {sorted(cut) or 'nothing'}")  # what the kills happened to interrupt
    assert kills >= 3 and "Traceback" not in stderr, stderr
    saved = torch.load(checkpoint)
    assert (saved["global_step"], saved["iteration"]) == (total, total // batch)
    for name in ("updates.csv", "episodes.csv"):
        assert (run_dir / name).read_bytes().endswith(b"\n")          # no line cut short
    updates = read_csv(run_dir / "updates.csv")
    assert [int(r["global_step"]) for r in updates] == list(range(batch, total + 1, batch))   # none missing, none twice
    episodes = read_csv(run_dir / "episodes.csv")
    assert episodes and all(len(r) == 4 and None not in r.values() and "" not in r.values() for r in episodes)
    steps = [int(r["global_step"]) for r in episodes]
    assert steps == sorted(steps) and steps[-1] <= total
    assert [float(r["episodic_return"]) for r in episodes]          # every value parses
    assert not list(run_dir.glob("*.tmp"))
    json.loads((run_dir / "args.json").read_text())


def test_a_resumed_log_ends_at_the_checkpoint_at_once(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("global_step,x\n1,a\n2,b\n3,c\n7")           # a row after the checkpoint, a line cut short
    log = ppo.CsvLog(path, resume_step=2)
    assert path.read_bytes() == b"global_step,x\r\n1,a\r\n2,b\r\n"     # even if the resumed run never logs a row
    log.write(dict(global_step=3, x="d", y="new"))                  # a new column: the file is rewritten with it
    log.write(dict(global_step=4, x="e", y="f"))
    log.close()
    assert read_csv(path) == [dict(global_step="1", x="a", y=""), dict(global_step="2", x="b", y=""),
                              dict(global_step="3", x="d", y="new"), dict(global_step="4", x="e", y="f")]


def test_resume_drops_a_line_cut_short_and_removes_stray_temporary_files(tmp_path):
    flags = dict(num_envs=4, num_steps=16, runs_dir=str(tmp_path), quiet=True, tensorboard=False)
    result = ppo.train(ppo.Args(total_timesteps=128, **flags))
    run_dir, checkpoint = result["run_dir"], result["checkpoint"]
    for name in ("updates.csv", "episodes.csv"):                    # a kill in the middle of a row after the save
        with open(run_dir / name, "a") as f:
            f.write("7")                                            # step 7 <= 128: kept, were it read as a row
    (run_dir / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    ppo.train(ppo.Args(resume=str(checkpoint), total_timesteps=640, **flags))
    assert [int(r["global_step"]) for r in read_csv(run_dir / "updates.csv")] == list(range(64, 640 + 1, 64))
    episodes = read_csv(run_dir / "episodes.csv")
    steps = [int(r["global_step"]) for r in episodes]
    assert all(None not in r.values() for r in episodes) and 7 not in steps
    assert steps == sorted(steps) and steps[-1] > 128                # the file was rewritten: the resumed run logged
    assert not list(run_dir.glob("*.tmp"))


def test_a_run_saved_before_any_episode_ended_resumes(tmp_path):
    flags = dict(num_envs=1, num_steps=4, num_minibatches=1, runs_dir=str(tmp_path), quiet=True, tensorboard=False)
    result = ppo.train(ppo.Args(total_timesteps=8, save_every=1, **flags))
    assert not (result["run_dir"] / "episodes.csv").exists()          # CartPole's first episode is longer than 8 steps
    ppo.train(ppo.Args(resume=str(result["checkpoint"]), total_timesteps=160, **flags))  # episodes end on the way
    assert [int(r["global_step"]) for r in read_csv(result["run_dir"] / "updates.csv")] == list(range(4, 160 + 1, 4))
    assert read_csv(result["run_dir"] / "episodes.csv")


# The last save, slowed down (torch.save sleeps between writing checkpoint.pt.tmp and its rename), so that a second
# SIGTERM surely comes during it.
SLOW_SAVE = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import ppo
save = torch.save

def slow_save(obj, path, *args, **kwargs):
    save(obj, path, *args, **kwargs)
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(1.5)

torch.save = slow_save
sys.exit(ppo.main(sys.argv[3:]))
"""


def test_a_second_sigterm_during_the_last_save_lets_it_finish(tmp_path):
    saving = tmp_path / "saving"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(HERE), str(saving), "--total-timesteps", "400000",
                             "--num-envs", "4", "--num-steps", "16", "--save-every", "100000", "--no-tensorboard",
                             "--runs-dir", str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert wait_for(lambda: any(len(read_csv(p)) >= 3 for p in tmp_path.glob("runs/*/updates.csv")))
    proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: saving.exists(), timeout=30)            # the last save has begun
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    assert "SIGTERM: quitting once the checkpoint being saved is written" in stderr, stderr
    run_dir = next((tmp_path / "runs").iterdir())
    saved = torch.load(run_dir / "checkpoint.pt")                   # whole
    steps = [int(r["global_step"]) for r in read_csv(run_dir / "updates.csv")]
    assert steps == list(range(64, saved["global_step"] + 1, 64)) and len(steps) == saved["iteration"] >= 3
    assert not list(run_dir.glob("*.tmp"))


SLOW_ENV_MODULE = """
import time
import gymnasium as gym

class Slow(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,))
    action_space = gym.spaces.Discrete(2)
    def __init__(self):
        open("constructing", "w").close()
        time.sleep(30)

gym.register("Slow-v0", entry_point=Slow)
"""


@pytest.mark.parametrize("when", ["while torch loads", "during the set-up"])
def test_ctrl_c_before_training_is_one_calm_line(when, tmp_path):
    import signal
    (tmp_path / "slow_envs.py").write_text(SLOW_ENV_MODULE)
    proc = subprocess.Popen([sys.executable, str(HERE / "ppo.py"), "--env-id", "slow_envs:Slow-v0",
                             "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3 if when == "while torch loads" else 0)
    if when == "during the set-up":              # the env's constructor is running: imports and flags are done
        assert wait_for(lambda: (tmp_path / "constructing").exists(), timeout=60)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: quit before training started"], stderr


def test_async_envs_leave_signals_to_the_trainer():
    # AsyncVectorEnv also makes one env in the trainer, to read the spaces: that one must not switch Ctrl-C or SIGTERM
    # off there (it once did, and --async-envs runs ignored Ctrl-C).
    import signal

    def handler(signum, frame):
        pass
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ppo.make_vector_env(ppo.Args(num_envs=2, async_envs=True)).close()
        assert all(signal.getsignal(s) is handler for s in previous)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


CUSTOM_ENV_MODULE = '''
import gymnasium as gym
import numpy as np

class GoRight(gym.Env):
    """Walk right along a line of 10 cells to reach the goal: reward 1 there, and a small cost per step."""
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)        # 0 = left, 1 = right

    def __init__(self, nan_at_step=None):
        self.nan_at_step, self.steps = nan_at_step, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.steps += 1
        self.position = max(0, self.position + (1 if action == 1 else -1))
        obs = np.array([self.position / 10], np.float32)
        if self.nan_at_step is not None and self.steps >= self.nan_at_step:
            obs[0] = np.nan
        done = self.position == 10
        return obs, (1.0 if done else -0.01), done, False, {}

gym.register("GoRight-v0", entry_point=GoRight, max_episode_steps=100)
gym.register("GoRightNaN-v0", entry_point=GoRight, max_episode_steps=100, kwargs={"nan_at_step": 300})
'''


@pytest.fixture
def custom_env_path(tmp_path):
    (tmp_path / "my_envs.py").write_text(CUSTOM_ENV_MODULE)      # found in the current folder, no PYTHONPATH
    return tmp_path, None


def test_custom_env_from_the_command_line(custom_env_path):
    path, env = custom_env_path
    out = run_cli("--env-id", "my_envs:GoRight-v0", "--total-timesteps", "20480", "--runs-dir", str(path / "runs"),
                  "--quiet", env=env, cwd=path)
    assert out.returncode == 0, out.stderr
    rows = read_csv(next((path / "runs").glob("GoRight-v0__*/episodes.csv")))
    lengths = [int(r["episodic_length"]) for r in rows]
    assert np.mean(lengths[-20:]) < 20 < np.mean(lengths[:20])       # it learned to walk straight to the goal


def test_custom_env_trained_from_python_is_evaluated_from_the_command_line(custom_env_path, monkeypatch, capsys):
    path, _ = custom_env_path
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delitem(sys.modules, "my_envs", raising=False)
    importlib.import_module("my_envs")                         # registers GoRight-v0, as in the README's example
    result = ppo.train(ppo.default_args("GoRight-v0", total_timesteps=2048, runs_dir=str(path / "runs"), quiet=True))
    assert result["run_dir"].name.startswith("GoRight-v0__")   # as `--env-id my_envs:GoRight-v0` names it
    checkpoint = torch.load(result["checkpoint"])
    assert checkpoint["env_module"] == "my_envs"
    del checkpoint["env_module"]                               # as in a checkpoint from before it was saved
    torch.save(checkpoint, path / "old.pt")

    # Now as a new process would be: GoRight-v0 and my_envs unknown, and my_envs.py not in a folder Python searches.
    for env_id in ("GoRight-v0", "GoRightNaN-v0"):
        monkeypatch.delitem(gym.registry, env_id)
    monkeypatch.delitem(sys.modules, "my_envs")
    # (a my_envs.py of the user's own, beside test_ppo.py as the README suggests, must not be found either)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "my_envs.py").exists()])
    monkeypatch.chdir(path / "runs")
    assert ppo.main(["--evaluate", str(result["checkpoint"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "registered by the module my_envs, which cannot be imported" in err, err
    assert ppo.main(["--evaluate", str(path / "old.pt")]) == 2
    assert "give --env-id your_module:GoRight-v0" in capsys.readouterr().err
    # From the folder that holds my_envs.py, the checkpoint's env_module is imported; the old one names it by flag.
    monkeypatch.chdir(path)
    assert ppo.main(["--evaluate", str(result["checkpoint"]), "--eval-episodes", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("GoRight-v0: mean return")   # after a line an episode
    assert ppo.main(["--evaluate", str(path / "old.pt"), "--env-id", "my_envs:GoRight-v0", "--eval-episodes", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("my_envs:GoRight-v0: mean return")
    assert ppo.main(["--evaluate", str(path / "old.pt"), "--env-id", "CartPole-v1"]) == 2
    assert "--env-id CartPole-v1: its observation or action space differs" in capsys.readouterr().err


def test_an_unregistered_env_id_names_the_module_here_that_registers_it(custom_env_path, monkeypatch, capsys):
    path, _ = custom_env_path
    (path / "notes.py").write_text('EXAMPLE = """gym.register("GoRight-v0")"""   # in a string: registers nothing\n')
    (path / "broken.py").write_text('gym.register("GoRight-v0"\n')                 # not Python: passed over
    for env_id in ("GoRight-v0", "GoRightNaN-v0"):                 # registered if another test imported my_envs
        monkeypatch.delitem(gym.registry, env_id, raising=False)
    monkeypatch.delitem(sys.modules, "my_envs", raising=False)
    monkeypatch.chdir(path)
    for given in ("GoRight-v0", "GoRight", "wrong_module:GoRight-v0"):
        assert ppo.main(["--env-id", given]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.endswith(
            "; the current folder's my_envs.py registers it: give --env-id my_envs:GoRight-v0\n"), err
    assert "my_envs" not in sys.modules                            # found by reading the file, not by running it
    assert not (path / "runs").exists()


def test_non_finite_observation_stops_with_env_and_step(custom_env_path):
    path, env = custom_env_path
    out = run_cli("--env-id", "my_envs:GoRightNaN-v0", "--num-envs", "1", "--runs-dir", str(path / "runs"),
                  "--no-tensorboard", env=env, cwd=path)
    assert out.returncode == 1
    # step 300 may also end an episode (a 100-step time limit), if the policy never reached the goal: then it is the
    # final observation that is named (which one happens depends on torch's random numbers)
    assert re.fullmatch(r"error: env GoRightNaN-v0 returned a non-finite (observation or reward|final observation "
                        r"\(the last state of an episode\)) at global step 300; check the environment's step\(\)\n",
                        out.stderr), out.stderr


class NaNAtTheTimeLimitEnv(StepCountEnv):
    """Its 5th state, the one a time limit of 5 cuts the episode at, is NaN: only infos["final_obs"] shows it."""
    def step(self, action):
        obs, *rest = super().step(action)
        return (np.full(2, np.nan, np.float32) if self.t == 5 else obs), *rest


def test_non_finite_final_observation_stops_with_env_and_step(tmp_path, capsys):
    gym.register("NaNAtTheTimeLimit-v0", entry_point=NaNAtTheTimeLimitEnv, max_episode_steps=5)
    code = ppo.main(["--env-id", "NaNAtTheTimeLimit-v0", "--num-envs", "2", "--total-timesteps", "2048",
                     "--runs-dir", str(tmp_path), "--quiet", "--no-tensorboard"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: env NaNAtTheTimeLimit-v0 returned a non-finite final observation (the last state of an episode) at "
        "global step 10; check the environment's step()"]


def test_the_suite_passes_beside_the_readmes_own_my_envs_py(tmp_path):
    # A user who follows the README keeps my_envs.py beside ppo.py; the custom-env tests, which write a my_envs.py
    # of their own, must still find theirs (a copy of the repo's two files, run as the README runs the suite).
    for name in ("ppo.py", "test_ppo.py", "README.md"):
        shutil.copy(HERE / name, tmp_path / name)
    shutil.copytree(HERE / "notes", tmp_path / "notes", ignore=shutil.ignore_patterns("img", "__pycache__"))
    readme = (HERE / "README.md").read_text()
    (tmp_path / "my_envs.py").write_text(re.search(r"`my_envs.py`:\n\n```python\n(.*?)```", readme, re.S).group(1))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_ppo.py", "-k",
                          "custom_env_trained_from_python or non_finite_observation_stops"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout[-2000:]


class HugeRewardEnv(ConstantRewardEnv):
    """Ordinary rewards at first, then one so large that its square overflows: the loss becomes infinite."""
    def __init__(self):
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return np.zeros(2, np.float32), (3e38 if self.steps > 600 else 1.0), False, False, {}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy warns about the overflow we provoke
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    gym.register("HugeReward-v0", entry_point=HugeRewardEnv, max_episode_steps=50)
    args = ppo.Args(env_id="HugeReward-v0", num_envs=1, num_steps=128, num_minibatches=1, total_timesteps=2048,
                    save_every=1, runs_dir=str(tmp_path), quiet=True)
    with pytest.raises(ppo.NonFiniteError, match=r"iteration 5: the loss, gradients or parameters became NaN/inf"):
        ppo.train(args)
    checkpoint = torch.load(next(tmp_path.glob("*/checkpoint.pt")))
    assert checkpoint["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["agent"].values())


def test_evaluate_a_checkpoint(tmp_path, capsys):
    result = ppo.train(ppo.default_args("CartPole-v1", total_timesteps=30_000, runs_dir=str(tmp_path), quiet=True))
    returns = ppo.evaluate(result["checkpoint"], episodes=3, seed=1)   # the CLI uses the run's seed
    assert len(returns) == 3 and np.mean(returns) > 100
    assert returns == ppo.evaluate(result["checkpoint"], episodes=3, seed=1)   # deterministic policy, same seeds
    assert ppo.main(["--evaluate", str(result["checkpoint"]), "--eval-episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over 3 deterministic" in out


def test_evaluation_prints_each_episode_and_films_the_first_apart(tmp_path, capsys, monkeypatch):
    result = ppo.train(ppo.default_args("CartPole-v1", total_timesteps=2048, runs_dir=str(tmp_path), quiet=True,
                                        eval_stochastic=True))
    assert json.loads((result["run_dir"] / "args.json").read_text())["env_id"] == "CartPole-v1"   # readable settings
    capsys.readouterr()
    assert ppo.main(["--evaluate", str(result["checkpoint"]), "--eval-episodes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["episode 1/2", "episode 2/2"]
    assert "over 2 stochastic (sampled actions: the default saved with this" in lines[2]    # why not deterministic
    if installed("moviepy", "pygame"):
        for _ in range(2):                                       # two evaluations: two folders, one episode filmed each
            assert ppo.main(["--evaluate", str(result["checkpoint"]), "--eval-episodes", "3", "--capture-video"]) == 0
        folders = sorted((result["run_dir"] / "videos-eval").iterdir())
        assert len(folders) == 2 and all(len(list(f.glob("*.mp4"))) == 1 for f in folders)


def test_evaluate_into_a_pipe_that_closes_ends_quietly(small_checkpoint):
    # `python ppo.py --evaluate ... | head -1`: the reader goes away; no BrokenPipeError traceback, exit 141 as a
    # shell reports a command stopped by SIGPIPE
    proc = subprocess.Popen([sys.executable, str(HERE / "ppo.py"), "--evaluate", str(small_checkpoint),
                             "--eval-episodes", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("episode 1/100000: return")
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and stderr == "", stderr


def test_evaluate_into_a_pipe_closed_before_its_one_line_ends_quietly(small_checkpoint):
    # --quiet prints only the summary line, into a pipe whose reader is already gone: that line meets the closed
    # pipe while main() can still handle it (printed and flushed at once), not as Python exits
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}     # a pipe's stdout, block-buffered
    proc = subprocess.Popen([sys.executable, str(HERE / "ppo.py"), "--evaluate", str(small_checkpoint),
                             "--eval-episodes", "1", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141 and proc.stderr.read() == b""


def test_one_ctrl_c_during_evaluation_stops_after_the_episode(tmp_path):
    import signal
    result = ppo.train(ppo.Args(total_timesteps=2048, runs_dir=str(tmp_path), quiet=True, tensorboard=False))
    proc = subprocess.Popen([sys.executable, str(HERE / "ppo.py"), "--evaluate", str(result["checkpoint"]),
                             "--eval-episodes", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("episode 1/100000: return")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert re.search(r"^stopped: CartPole-v1: mean return [\d.]+ \+- [\d.]+ over \d+ of 100000 deterministic episodes$",
                     stdout.splitlines()[-1]), stdout[-300:]


def test_stochastic_evaluation_is_reproducible_and_plays_episodes_training_never_started(tmp_path, monkeypatch):
    result = ppo.train(ppo.default_args("CartPole-v1", total_timesteps=2048, runs_dir=str(tmp_path), quiet=True))
    first = ppo.evaluate(result["checkpoint"], episodes=3, deterministic=False, seed=1)
    torch.rand(5)                                                   # whatever the global generator did meanwhile
    assert ppo.evaluate(result["checkpoint"], episodes=3, deterministic=False, seed=1) == first
    seeds = []                                                      # the seed of every reset evaluation makes

    class RecordSeeds(gym.Wrapper):
        def reset(self, **kwargs):
            seeds.append(kwargs.get("seed"))
            return self.env.reset(**kwargs)
    make_env = ppo.make_env
    monkeypatch.setattr(ppo, "make_env", lambda *args, **kwargs: RecordSeeds(make_env(*args, **kwargs)))
    ppo.evaluate(result["checkpoint"], episodes=3, seed=1)
    seeds = [s for s in seeds if s is not None]                     # (loading the agent resets once, unseeded)
    training_seeds = set(range(1, 1 + 16))                          # seed + i for each of the 16 training envs
    assert seeds and not set(seeds) & training_seeds and len(set(seeds)) == 3, seeds


def test_evaluate_from_python_plays_what_the_command_line_plays(tmp_path, capsys):
    # evaluate()'s default seed is the run's own, as --evaluate's is; and two seeds never share an episode
    result = ppo.train(ppo.default_args("CartPole-v1", total_timesteps=8192, seed=4, runs_dir=str(tmp_path),
                                        quiet=True))
    returns = ppo.evaluate(result["checkpoint"], episodes=4)
    assert returns == ppo.evaluate(result["checkpoint"], episodes=4, seed=4)
    assert ppo.main(["--evaluate", str(result["checkpoint"]), "--eval-episodes", "4"]) == 0
    assert f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f}" in capsys.readouterr().out
    episodes = lambda seed: {ppo.evaluation_seed(seed, k) for k in (0, 1, 999_999)}   # noqa: E731
    for a, b in [(0, 1), (1, 2), (4, 5), (2**31 - 2, 2**31 - 1)]:
        assert not episodes(a) & episodes(b)
    assert max(episodes(2**31 - 1)) < 2**63                          # numpy and every env take it
    assert min(episodes(0)) >= 10**9                                # nor any seed training gives its envs


class TwoRewardsEnv(gym.Env):
    """The same observation always; action 0 earns 1 and action 1 earns 0.5. Registered with a time limit, so an
    episode's return and length are known. It keeps each reset's seed and each render mode it was made with."""
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    seeds, render_modes = [], []

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        TwoRewardsEnv.render_modes.append(render_mode)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        TwoRewardsEnv.seeds.append(seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0 if action == 0 else 0.5, False, False, {}

    def render(self):
        return np.zeros((64, 64, 3), np.uint8)


def test_evaluate_plays_known_returns_with_each_argument_it_is_given(tmp_path, capfd):
    # Known answers: with one observation, a deterministic policy takes one action throughout, so every episode
    # returns 7 * 1 or 7 * 0.5 in 7 steps; sampling mixes the two. The checkpoint's own default is stochastic
    # (--eval-stochastic), so evaluate()'s deterministic=True must be passed on, not left to the checkpoint.
    gym.register("TwoRewards-v0", entry_point=TwoRewardsEnv, max_episode_steps=7)
    gym.register("TwoRewardsLonger-v0", entry_point=TwoRewardsEnv, max_episode_steps=11)
    checkpoint = ppo.train(ppo.Args(env_id="TwoRewards-v0", total_timesteps=128, num_envs=2, num_steps=64, seed=3,
                                    eval_stochastic=True, runs_dir=str(tmp_path), quiet=True,
                                    tensorboard=False))["checkpoint"]
    capfd.readouterr()
    TwoRewardsEnv.seeds.clear(), TwoRewardsEnv.render_modes.clear()
    returns = ppo.evaluate(checkpoint)
    assert len(returns) == 10 and len(set(returns)) == 1 and returns[0] in (7.0, 3.5), returns
    assert capfd.readouterr() == ("", "")                                  # quiet unless verbose
    assert "rgb_array" not in TwoRewardsEnv.render_modes                  # nothing rendered without a video
    assert [s for s in TwoRewardsEnv.seeds if s is not None] == [ppo.evaluation_seed(3, k) for k in range(10)]
    sampled = ppo.evaluate(checkpoint, episodes=10, deterministic=False, seed=5)
    assert set(sampled) - {7.0, 3.5} and all(3.5 <= r <= 7.0 and r * 2 == int(r * 2) for r in sampled), sampled
    TwoRewardsEnv.seeds.clear()
    ppo.evaluate(checkpoint, episodes=2, seed=5)
    assert [s for s in TwoRewardsEnv.seeds if s is not None] == [ppo.evaluation_seed(5, k) for k in range(2)]
    assert ppo.evaluate(checkpoint, episodes=2, verbose=True, env_id="TwoRewardsLonger-v0") == [returns[0] / 7 * 11] * 2
    lines = capfd.readouterr().out.splitlines()
    assert [line.split(", ")[:2] for line in lines] == [[f"episode {k}/2: return {returns[0] / 7 * 11:.2f}", "11 steps"]
                                                        for k in (1, 2)], lines
    with pytest.raises(ppo.UsageError, match="video_episodes=2: films episodes only into a video_dir"):
        ppo.evaluate(checkpoint, episodes=1, video_episodes=2)
    if installed("moviepy"):                                  # the first video_episodes filmed; 0: none, -1: all
        for video_episodes, filmed in [(0, 0), (2, 2), (-1, 3), (1, 1)]:
            folder = tmp_path / f"videos{video_episodes}"
            assert len(ppo.evaluate(checkpoint, episodes=3, video_dir=folder, video_episodes=video_episodes)) == 3
            assert len(list(folder.glob("*.mp4"))) == filmed, video_episodes
        assert capfd.readouterr() == ("", "")                              # moviepy's progress bars stay quiet


class NoLegalMoveAtStep3(IllegalMovesEnv):
    """IllegalMovesEnv, until its third step leaves no legal action."""
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.t = getattr(self, "t", 0) + 1
        return obs, reward, terminated, truncated, {"action_mask": info["action_mask"] * (self.t < 3)}


class CtrlCAtStep3(TwoRewardsEnv):
    """TwoRewardsEnv, whose third step comes with a Ctrl-C, as if typed then."""
    def step(self, action):
        self.t = 1 if getattr(self, "t", 0) == 0 or self.t >= 7 else self.t + 1
        if self.t == 3 and not getattr(self, "interrupted", False):
            self.interrupted = True
            os.kill(os.getpid(), signal.SIGINT)
        return super().step(action)


def test_evaluate_acts_legally_names_the_episode_and_stops_after_the_one_a_ctrl_c_came_in(tmp_path, capfd):
    gym.register("IllegalMovesEval-v0", entry_point=IllegalMovesEnv, max_episode_steps=10)
    gym.register("NoLegalMoveAtStep3-v0", entry_point=NoLegalMoveAtStep3, max_episode_steps=10)
    checkpoint = ppo.train(ppo.Args(env_id="IllegalMovesEval-v0", total_timesteps=128, num_envs=2, num_steps=64,
                                    runs_dir=str(tmp_path), quiet=True, tensorboard=False))["checkpoint"]
    IllegalMovesEnv.steps = IllegalMovesEnv.illegal = 0
    assert ppo.evaluate(checkpoint, episodes=3) == [10.0] * 3                      # each info's mask is obeyed
    assert IllegalMovesEnv.steps == 30 and IllegalMovesEnv.illegal == 0
    with pytest.raises(ppo.NoLegalActionError, match=r"no legal action in evaluation episode 1; every state"):
        ppo.evaluate(checkpoint, episodes=3, env_id="NoLegalMoveAtStep3-v0")
    gym.register("TwoRewardsCtrlC-v0", entry_point=CtrlCAtStep3, max_episode_steps=7)
    gym.register("TwoRewardsPlain-v0", entry_point=TwoRewardsEnv, max_episode_steps=7)
    checkpoint = ppo.train(ppo.Args(env_id="TwoRewardsPlain-v0", total_timesteps=128, num_envs=2, num_steps=64,
                                    runs_dir=str(tmp_path), quiet=True, tensorboard=False))["checkpoint"]
    capfd.readouterr()
    returns = ppo.evaluate(checkpoint, episodes=5, env_id="TwoRewardsCtrlC-v0")       # the episode under way ends
    assert len(returns) == 1 and returns[0] in (7.0, 3.5), returns
    assert "stopping after this episode" in capfd.readouterr().err


def test_every_mode_acts_with_the_thread_setting_and_gives_the_caller_its_own_back(tmp_path, capsys, monkeypatch):
    # Acting with these small networks is fastest on one thread; a caller's own setting must come back unchanged.
    checkpoint = ppo.train(ppo.Args(total_timesteps=128, num_envs=2, num_steps=64, runs_dir=str(tmp_path),
                                    quiet=True))["checkpoint"]
    seen = []
    act = ppo.Agent.act
    monkeypatch.setattr(ppo.Agent, "act", lambda self, *a, **k: seen.append(torch.get_num_threads()) or
                        act(self, *a, **k))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        policy = ppo.load_policy(checkpoint)
        policy.act(policy.make_env().reset(seed=0)[0])
        ppo.evaluate(checkpoint, episodes=1)
        assert set(seen) == {1} and torch.get_num_threads() == 2, seen
        seen.clear()
        ppo.evaluate(checkpoint, episodes=1, threads=3)
        assert set(seen) == {3} and torch.get_num_threads() == 2, seen
        seen.clear()
        assert ppo.main(["--evaluate", str(checkpoint), "--eval-episodes", "1", "--torch-threads", "3"]) == 0
        assert set(seen) == {3} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_masked_agent_asked_to_act_without_the_mask_says_so(tmp_path):
    gym.register("IllegalMovesEnv-v0", entry_point=IllegalMovesEnv, max_episode_steps=10)
    checkpoint = ppo.train(ppo.Args(env_id="IllegalMovesEnv-v0", total_timesteps=128, num_envs=2, num_steps=64,
                                    runs_dir=str(tmp_path), quiet=True))["checkpoint"]
    policy = ppo.load_policy(checkpoint)
    obs, info = policy.make_env().reset(seed=0)
    policy.act(obs, info)                                           # with the mask: fine
    with pytest.raises(ppo.UsageError, match=r"gives action masks .* policy.act\(obs, info\)"):
        policy.act(obs)


def installed(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.mark.skipif(not installed("moviepy", "pygame"), reason="needs moviepy and pygame")
def test_capture_video_writes_mp4_and_nothing_to_stderr(tmp_path):
    # as on a machine without a display, where SDL used to print "error: XDG_RUNTIME_DIR is invalid or not set"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    out = run_cli("--total-timesteps", "1024", "--num-envs", "2", "--num-steps", "512", "--capture-video",
                  "--runs-dir", str(tmp_path), "--quiet", env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert list(tmp_path.glob("*/videos/*.mp4"))


def test_missing_optional_packages_are_named_in_one_line(monkeypatch, capsys, tmp_path):
    for module in ("moviepy", "pygame", "wandb"):
        monkeypatch.setitem(sys.modules, module, None)                 # makes `import module` fail
    # everything the video needs at once: moviepy writes it, pygame draws CartPole's frames
    assert ppo.main(["--capture-video", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --capture-video: needs moviepy and pygame, not installed; "
                                       "pip install moviepy pygame\n")
    assert ppo.main(["--track", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --track: needs the optional package wandb; pip install wandb, "
                                       "or --no-track\n")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not installed("tensorboard"), reason="needs tensorboard")
def test_tensorboard_where_installed_writes_the_scalars_and_resumes_without_the_replayed_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    small = dict(num_envs=2, num_steps=64, runs_dir=str(tmp_path), quiet=True)
    assert ppo.default_args("CartPole-v1").tensorboard is True                  # on by default where installed
    result = ppo.train(ppo.Args(total_timesteps=256, save_every=1, **small))
    ppo.train(ppo.Args(resume=str(result["checkpoint"]), total_timesteps=512, **small))
    events = EventAccumulator(str(result["run_dir"])).Reload()
    steps = [e.step for e in events.Scalars("charts/learning_rate")]
    assert steps == [128, 256, 384, 512], steps                                # one per iteration, none repeated


@pytest.mark.skipif(not installed("wandb"), reason="needs wandb")
def test_track_logs_the_tensorboard_scalars_to_wandb_offline(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data")}
    out = run_cli("--track", "--total-timesteps", "2048", "--runs-dir", str(tmp_path / "runs"), "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    log = next(run_dir.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()    # keys are stored as plain text
    updates, episodes = read_csv(run_dir / "updates.csv"), read_csv(run_dir / "episodes.csv")
    for key in updates[0]:                                   # what TensorBoard gets: a value per update...
        if key not in ("global_step", "wall_time"):
            tag = f"{'charts' if key in ('SPS', 'learning_rate') else 'losses'}/{key}"
            assert log.count(tag.encode()) >= len(updates), tag
    for key in ("episodic_return", "episodic_length"):        # ...and per episode
        assert log.count(f"charts/{key}".encode()) >= len(episodes), key


def test_plot_command_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [ppo.train(ppo.Args(total_timesteps=2048, seed=s, runs_dir=str(tmp_path), quiet=True))["run_dir"]
            for s in (1, 2)]
    episodes = read_csv(runs[0] / "episodes.csv")                  # the first stopped halfway, as by Ctrl-C
    with open(runs[0] / "episodes.csv", "w", newline="") as f:
        log = csv.DictWriter(f, episodes[0].keys())
        log.writeheader()
        log.writerows(episodes[:len(episodes) // 2])
    out = subprocess.run([sys.executable, str(HERE / "notes" / "plot.py"), *map(str, runs), "-o",
                          str(tmp_path / "curve.png")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert re.search(r"note: CartPole-v1: drawn to [\d,]+ steps, where the shortest of its 2 runs ends", out.stdout)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = subprocess.run([sys.executable, str(HERE / "notes" / "plot.py"), *map(str, runs), "--overlay", "-o",
                          str(tmp_path / "overlay.png")], capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "overlay.png").stat().st_size > 1000, out.stderr
    # several groups: a grid, not a strip; without -o, the PNG goes beside the runs, never into the current folder;
    # a folder that cannot be drawn is skipped with a note
    other = ppo.train(ppo.Args(total_timesteps=2048, exp_name="other", runs_dir=str(tmp_path), quiet=True))["run_dir"]
    (tmp_path / "CartPole-v1__ppo__3__0").mkdir()                   # a run that has not written its logs yet
    out = subprocess.run([sys.executable, str(HERE / "notes" / "plot.py"), *map(str, [*runs, other]),
                          str(tmp_path / "CartPole-v1__ppo__3__0")], capture_output=True, text=True, cwd=HERE)
    assert out.returncode == 0 and (tmp_path / "learning_curve.png").is_file(), out.stderr
    assert f"({runs[0]}; the longest reaches" in out.stdout                        # the run that cut its group
    assert out.stderr == f"note: {tmp_path / 'CartPole-v1__ppo__3__0'}: skipped, no episodes.csv\n"
    assert not (HERE / "learning_curve.png").exists()


def fake_run(folder, name, rows=((100, 10.0), (200, 20.0)), **given):
    """A run directory as ppo.py writes it, without the training: args.json for these flags, and these episodes."""
    run = folder / name
    run.mkdir()
    settings = dataclasses.asdict(ppo.default_args(name.split("__")[0], **given))
    (run / "args.json").write_text(json.dumps(settings, indent=2) + "\n")
    (run / "episodes.csv").write_text("global_step,episodic_return,episodic_length\n" +
                                      "".join(f"{step},{ret},{int(ret)}\n" for step, ret in rows))
    return run


def test_plot_averages_only_runs_that_differ_in_the_seed(tmp_path, monkeypatch):
    """The quick start, a --frame-stack 4 run, a --recurrent run and a 30k-step run were once drawn as one mean of
    4 runs; runs with other settings are curves of their own, named by the flags in which they differ. Runs that
    differ only in what does not change learning (where they log, threads) are seeds of one curve."""
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    plot = importlib.import_module("plot")
    assert plot.NOT_SETTINGS <= set(ppo.ARGS_DEFAULTS)              # a renamed field would split seeds apart
    runs = [fake_run(tmp_path, "CartPole-v1__ppo__1__1"), fake_run(tmp_path, "CartPole-v1__ppo__1__2", frame_stack=4),
            fake_run(tmp_path, "CartPole-v1__ppo__1__3", recurrent=True),
            fake_run(tmp_path, "CartPole-v1__ppo__1__4", total_timesteps=30_000),
            fake_run(tmp_path, "CartPole-v1__ppo__2__5", seed=2, quiet=True, runs_dir="elsewhere", torch_threads=2,
                     tensorboard=False, save_every=5)]
    groups = plot.group_runs({run: plot.read_run(run)[0] for run in runs})
    assert groups == {"CartPole-v1": [
        ("--total-timesteps 500000 --num-steps 64 --learning-rate 0.0025 --no-recurrent --frame-stack 1",
         [runs[0], runs[4]]),
        ("--frame-stack 4", [runs[1]]), ("--num-steps 128 --learning-rate 0.001 --recurrent", [runs[2]]),
        ("--total-timesteps 30000", [runs[3]])]}
    # one setting: one unnamed curve; another --exp-name or env: a panel of its own, as before
    groups = plot.group_runs({run: plot.read_run(run)[0] for run in (runs[0], runs[4])})
    assert groups == {"CartPole-v1": [("", [runs[0], runs[4]])]}
    other = fake_run(tmp_path, "CartPole-v1__other__1__6")
    groups = plot.group_runs({run: plot.read_run(run)[0] for run in (runs[0], other)})
    assert groups == {"CartPole-v1 [other]": [("", [other])], "CartPole-v1 [ppo]": [("", [runs[0]])]}


def test_plot_skips_a_folder_it_cannot_draw_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    plot = importlib.import_module("plot")
    fake_run(tmp_path, "CartPole-v1__ppo__1__1", rows=()).joinpath("episodes.csv").write_text("")   # just started
    fake_run(tmp_path, "CartPole-v1__ppo__1__2", rows=())                                       # the header only
    fake_run(tmp_path, "CartPole-v1__ppo__1__3").joinpath("args.json").unlink()
    (tmp_path / "CartPole-v1__ppo__1__4").mkdir()
    (tmp_path / "learning_curve.png").write_bytes(b"")                  # what `runs/*` matches after a first plot
    assert plot.main(sorted(map(str, tmp_path.iterdir())) + [str(tmp_path / "Acrobot-v1__*")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"note: {tmp_path / 'CartPole-v1__ppo__1__1'}: skipped, no finished episode in episodes.csv yet",
        f"note: {tmp_path / 'CartPole-v1__ppo__1__2'}: skipped, no finished episode in episodes.csv yet",
        f"note: {tmp_path / 'CartPole-v1__ppo__1__3'}: skipped, no args.json, so its settings are unknown",
        f"note: {tmp_path / 'CartPole-v1__ppo__1__4'}: skipped, no episodes.csv",
        f"note: {tmp_path / 'learning_curve.png'}: skipped, not a run directory",
        f"note: {tmp_path / 'Acrobot-v1__*'}: skipped, matched no run directory",
        "error: nothing to plot; give ppo.py run directories"]


# ---------------------------------------------------------------------------------------------------------------------
# Memory: --recurrent and --frame-stack
# ---------------------------------------------------------------------------------------------------------------------
class CueEnv(gym.Env):
    """A cue (+1 or -1) is shown in the first observation only; four blank steps later the action must name it
    (reward 1, else 0). Without memory the best an agent can do is guess: 0.5 per episode."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return np.array([2.0 * self.cue - 1.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float(action == self.cue) if self.t == 5 else 0.0
        return np.zeros(2, np.float32), reward, self.t == 5, False, {}


gym.register("Cue-v0", entry_point=CueEnv)


def test_recurrent_first_update_has_ratio_one_across_episode_ends():
    # CartPole under a fresh policy ends an episode every ~20 steps: 64 steps of 4 envs hold many episode ends. The
    # update re-runs the GRU over sequences of --recurrent-seq-len steps, each from its stored state, restarting at
    # episode starts, so before any gradient step every log-probability is the one the action was sampled with.
    torch.manual_seed(0)
    args = ppo.default_args("CartPole-v1", num_envs=4, num_steps=64, num_minibatches=2, recurrent=True,
                            recurrent_size=16)
    envs = gym.vector.SyncVectorEnv([lambda: ppo.make_env("CartPole-v1")] * 4,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    agent = ppo.build_agent(args, envs.single_observation_space, envs.single_action_space)
    rollout = ppo.Rollout.start(64, envs.single_observation_space, envs.single_action_space, envs.reset(seed=0),
                                core=agent.core)
    for _ in range(2):                                  # the second rollout starts from a state that is not zero
        ppo.collect_rollout(envs, agent, rollout, ppo.RewardScaler(agent.reward_rms, 0.99, 4, enabled=False))
    assert rollout.memory.starts.sum() >= 6 and rollout.memory.starts[0].sum() < 4
    batch = rollout.flatten(np.zeros((64, 4), np.float32), np.zeros((64, 4), np.float32), torch.device("cpu"))
    for mb_inds in ppo.minibatches(args):
        assert len(mb_inds) == 4 * 32                                  # four sequences of 32 steps
        mb, terms = {k: v[mb_inds] for k, v in batch.items()}, {}
        with torch.no_grad():
            parts = ppo.ppo_loss(agent, mb, args, terms)[1]
        # ratio 1 up to float32 rounding: matrix products over 2 envs' rows and over 4 may differ in the last bit
        assert terms["logratio"].abs().max() < 1e-6 and abs(parts["approx_kl"].item()) < 1e-8
        mb["memory_starts"] = torch.zeros_like(mb["memory_starts"])     # forgetting the episode starts breaks it
        with torch.no_grad():
            ppo.ppo_loss(agent, mb, args, terms)
        assert terms["logratio"].abs().max() > 1e-4


def test_gru_core_restarts_the_memory_from_zero_where_an_episode_starts():
    # Two sequences over two steps (row t * n + i): sequence 0 starts an episode at step 0, sequence 1 at step 1. The
    # core's output must be nn.GRU stepped one row at a time, from h = 0 at a start and from the given h otherwise.
    torch.manual_seed(0)
    core, x, h0 = ppo.GRUCore(3, 4), torch.randn(4, 3), torch.randn(2, 4)
    mem = ppo.MemoryState(h0.clone(), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    with torch.no_grad():
        out = core(x, mem)

        def step(features, h):
            return core.gru(features[None, None], h[None, None])[0][0, 0]
        zero = torch.zeros(4)
        first0, first1 = step(x[0], zero), step(x[1], h0[1])
        expected = torch.stack([first0, first1, step(x[2], first0), step(x[3], zero)])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(mem.state, expected[2:], atol=1e-6)          # left holding h after the last step


def test_memory_store_gives_each_cut_episode_the_state_its_last_step_reached():
    # after_step: for an episode cut at step t, the h stored at step t + 1; after the rollout's last step, h now.
    store = ppo.MemoryStore(3, 2, ppo.GRUCore(1, 2))
    store.states[:] = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    store.now.state = torch.tensor([[100.0, 101.0], [102.0, 103.0]])
    mem = store.after_step([(0, 1), (1, 0), (2, 1)], torch.device("cpu"))
    assert mem.state.tolist() == [[6.0, 7.0], [8.0, 9.0], [102.0, 103.0]]
    assert mem.starts.tolist() == [0.0, 0.0, 0.0]


def test_memory_peek_is_a_copy_and_replay_starts_each_sequence_from_its_first_stored_state():
    store = ppo.MemoryStore(3, 2, ppo.GRUCore(1, 2))
    store.now.state = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    peek = store.peek()
    assert peek.state.tolist() == [[1.0, 2.0], [3.0, 4.0]] and peek.starts.tolist() == [1.0, 1.0]
    peek.state += 1
    assert store.now.state.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    # A minibatch of 2 sequences of 4 steps, in time order: its first 2 rows are the sequences' first steps.
    mb = dict(memory_states=torch.arange(16.0).view(8, 2), memory_starts=torch.zeros(8))
    mem = ppo.replay(mb, ppo.default_args("CartPole-v1", recurrent=True, recurrent_seq_len=4))
    assert mem.state.tolist() == [[0.0, 1.0], [2.0, 3.0]] and mem.starts is mb["memory_starts"]
    assert ppo.replay({}, ppo.default_args("CartPole-v1")) is None


def test_critic_values_are_what_the_critic_says_at_each_step_with_the_memory_the_policy_acted_on():
    # The critic judges a rollout in one batch once it is collected (critic_values). With the weights unchanged that
    # must be what it says step by step while acting: V(s_t) read with the memory h_t the policy acted on, and
    # V(final state) with the memory the ended episode's last step left. Recurrent, so that the memories matter.
    gym.register("StepCount-v0", entry_point=StepCountEnv, max_episode_steps=5)
    envs = gym.vector.SyncVectorEnv([lambda: ppo.make_env("StepCount-v0")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    agent = ppo.Agent(envs.single_observation_space, envs.single_action_space, memory_size=8)
    rollout = ppo.Rollout.start(10, envs.single_observation_space, envs.single_action_space, envs.reset(seed=0),
                                core=agent.core)
    acting_values, acting_final_values, t = np.zeros((10, 2), np.float32), np.zeros((10, 2), np.float32), [0]
    act, step = agent.act, envs.step

    def act_and_judge(obs, mask=None, deterministic=False, mem=None):
        acting_values[t[0]] = agent.value(obs, ppo.MemoryState(mem.state.clone(), mem.starts.clone()))
        return act(obs, mask, deterministic, mem)

    def step_and_judge(actions):
        obs, rewards, terminated, truncated, infos = step(actions)
        for n in np.flatnonzero(truncated):                         # the memory the ended episode's last step left
            mem = ppo.MemoryState(rollout.memory.now.state[[n]].clone(), torch.zeros(1))
            acting_final_values[t[0], n] = agent.value(torch.as_tensor(infos["final_obs"][n][None]), mem)
        t[0] += 1
        return obs, rewards, terminated, truncated, infos

    agent.act, envs.step = act_and_judge, step_and_judge
    for _ in range(2):                          # the second rollout starts from a memory that is not zero
        t[0] = 0
        ppo.collect_rollout(envs, agent, rollout, ppo.RewardScaler(agent.reward_rms, 0.99, 2, enabled=False))
    truncated = rollout.truncations == 1
    assert truncated[[4, 9]].all() and truncated.sum() == 4         # steps 4 and 9: one at the very end
    values, final_values = ppo.critic_values(agent, rollout)
    assert np.allclose(values, acting_values, atol=1e-6) and np.abs(acting_values).max() > 1e-2
    assert np.allclose(final_values, acting_final_values, atol=1e-6) and (final_values[~truncated] == 0).all()
    assert (np.abs(acting_final_values[truncated]) > 1e-4).all()
    rollout.memory.states[:] = 0                                    # forgetting the stored memory changes both
    values, final_values = ppo.critic_values(agent, rollout)
    assert not np.allclose(values, acting_values, atol=1e-3)
    assert not np.allclose(final_values[4], acting_final_values[4], atol=1e-3)


def test_recurrent_recompute_adv_trains_with_the_critic_as_it_is_now(tmp_path):
    # As test_recompute_adv_bootstraps_every_epoch_from_the_critic_as_it_is_now, with a recurrent critic: from the
    # second epoch on, returns - advantages is V(s_t) of the critic as the last epoch left it, on the stored memory.
    seen = []

    def spy(agent, mb, args):
        with torch.no_grad():
            critic_now = agent.value(mb["obs"], ppo.MemoryState(mb["memory_states"], mb["memory_starts"]))
        used = mb["returns"] - mb["advantages"]
        seen.append((torch.allclose(used, mb["values"], atol=1e-5), torch.allclose(used, critic_now, atol=1e-5)))
        return ppo.ppo_loss(agent, mb, args)

    args = ppo.Args(num_envs=2, num_steps=32, total_timesteps=128, num_minibatches=1, update_epochs=3,
                    recurrent=True, recurrent_size=8, recompute_adv=True, runs_dir=str(tmp_path), quiet=True,
                    tensorboard=False)
    ppo.train(args, loss_fn=spy)
    assert seen == [(True, True), (False, True), (False, True)] * 2


def test_recurrent_agent_learns_a_cue_that_a_memoryless_one_cannot(tmp_path):
    def last_mean(steps, **flags):
        args = ppo.default_args("Cue-v0", total_timesteps=steps, runs_dir=str(tmp_path), quiet=True,
                                tensorboard=False, **flags)
        return np.mean(ppo.train(args)["episode_returns"][-200:])
    assert last_mean(24_576, recurrent=True) > 0.9                               # remembers the cue
    assert last_mean(6_144) < 0.65                                               # can only guess: 0.5


def test_recurrent_checkpoint_resume_and_evaluate_round_trip(tmp_path, capsys):
    args = ppo.default_args("Cue-v0", total_timesteps=2048, runs_dir=str(tmp_path), quiet=True, recurrent=True,
                            recurrent_size=8, save_every=1)
    result = ppo.train(args)
    assert any(k.startswith("core.gru.") for k in torch.load(result["checkpoint"])["agent"])
    assert ppo.main(["--resume", str(result["checkpoint"]), "--total-timesteps", "4096", "--quiet"]) == 0
    assert torch.load(result["checkpoint"])["global_step"] == 4096
    agent, loaded = ppo.load_agent(result["checkpoint"])
    assert loaded.recurrent and agent.core.size == 8
    first = ppo.evaluate(result["checkpoint"], episodes=4, seed=3)
    assert len(first) == 4 and first == ppo.evaluate(result["checkpoint"], episodes=4, seed=3)
    assert ppo.main(["--evaluate", str(result["checkpoint"]), "--eval-episodes", "2"]) == 0


def test_a_recurrent_agent_called_without_a_memory_starts_from_a_zero_memory():
    # README's `agent(torch.as_tensor(obs[None]))` after load_agent works for a --recurrent agent too: each state is
    # the first step of an episode, as with a memory fresh from the store.
    agent = ppo.Agent(OBS, gym.spaces.Discrete(2), memory_size=8)
    obs = torch.randn(3, *OBS.shape)
    (pi, value), (pi_fresh, value_fresh) = agent(obs), agent(obs, mem=ppo.MemoryStore(1, 3, agent.core).at_step(0))
    assert torch.equal(value, value_fresh) and torch.equal(pi.logits, pi_fresh.logits)
    assert agent.act(obs[:1])[0].shape == (1,) and agent.value(obs).shape == (3,)


def test_recurrent_checkpoints_from_before_nn_gru_still_load():
    # The core once stepped an nn.GRUCell, whose four tensors, the same as nn.GRU's, are named cell.weight_ih, ...
    # instead of gru.weight_ih_l0, ...: such checkpoints load, renamed, into the same function.
    def agent():
        return ppo.Agent(gym.spaces.Box(-1.0, 1.0, (3,)), gym.spaces.Discrete(2), memory_size=8)
    saved, loaded = agent(), agent()
    old = {k.replace("core.gru.", "core.cell.").replace("_l0", ""): v for k, v in saved.state_dict().items()}
    assert "core.cell.weight_ih" in old and not any(k.startswith("core.gru.") for k in old)
    loaded.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))


def test_frame_stack_puts_the_last_observations_side_by_side():
    env = ppo.make_env("CartPole-v1", frame_stack=3)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (12,) and np.array_equal(obs[:4], obs[8:])     # the reset state, 3 times
    nxt = env.step(0)[0]
    assert np.array_equal(nxt[:8], obs[4:]) and not np.array_equal(nxt[8:], obs[8:])      # shifted by one step


@pytest.mark.parametrize("flags, expected", [
    (["--recurrent", "--num-envs", "6", "--num-minibatches", "16"], "--num-minibatches 16: with --recurrent"),
    (["--recurrent", "--recurrent-seq-len", "48"], "--recurrent-seq-len 48: must divide --num-steps 128"),
    (["--frame-stack", "0"], "--frame-stack 0: must be a positive integer"),
])
def test_memory_flags_are_checked(flags, expected, capsys, tmp_path):
    assert ppo.main([*flags, "--runs-dir", str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Several processes under torchrun (gloo, CPU)
# ---------------------------------------------------------------------------------------------------------------------
# Runs ppo.main under torchrun as ppo.py would, and on every rank records what the test needs to see: the episodes
# that rank collected (episodes<rank>.jsonl) and the agent it ends with (agent<rank>.pt).
TORCHRUN_DRIVER = '''
import json, os, sys
import torch
sys.path.insert(0, {here!r})
import ppo

out, rank = sys.argv[1], os.environ["RANK"]
end_iteration, train = ppo.Run.end_iteration, ppo.train

def recording_end_iteration(self, *args, **kwargs):
    with open(os.path.join(out, f"episodes{{rank}}.jsonl"), "a") as f:   # this rank's episodes of the iteration
        f.writelines(json.dumps(ep) + "\\n" for ep in self.pending)
    return end_iteration(self, *args, **kwargs)

def saving_train(args):
    result = train(args)
    torch.save(result["agent"].state_dict(), os.path.join(out, f"agent{{rank}}.pt"))
    return result

ppo.Run.end_iteration, ppo.train = recording_end_iteration, saving_train
sys.exit(ppo.main(sys.argv[2:]))
'''


def torchrun(tmp_path, nproc, *flags, popen=False):
    driver = tmp_path / "driver.py"
    driver.write_text(TORCHRUN_DRIVER.format(here=str(HERE)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               str(driver), str(tmp_path), *flags, "--runs-dir", str(tmp_path / "runs"), "--no-tensorboard", "--quiet"]
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def no_traceback_from_ppo(stderr):
    # torchrun prints its own report (and traceback) when a process exits non-zero; ours must print none.
    return "ppo.py\", line" not in stderr and "[rank" not in stderr


def test_torchrun_two_processes_train_one_agent_and_stop_and_resume_together(tmp_path):
    import signal
    import json
    flags = ["--env-id", "CartPole-v1", "--num-envs", "4", "--num-steps", "64", "--norm-obs", "--norm-reward",
             "--target-kl", "0.02", "--save-every", "1000"]
    # Ctrl-C to torchrun, which forwards it to both ranks: they stop after the same iteration, rank 0 saves.
    proc = torchrun(tmp_path, 2, *flags, "--total-timesteps", "1000000", popen=True)
    assert wait_for(lambda: any(len(read_csv(p)) >= 1 for p in tmp_path.glob("runs/*/updates.csv")), timeout=90)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert no_traceback_from_ppo(stderr), stderr
    assert stdout.count("stopped:") == 1 and stdout.count("checkpoint saved; resume with") == 1, stdout
    assert "    python -m torch.distributed.run --standalone --nproc-per-node 2 " in stdout, stdout   # as launched
    [run_dir] = (tmp_path / "runs").iterdir()                                       # one run directory
    saved_step = torch.load(run_dir / "checkpoint.pt")["global_step"]
    assert saved_step > 0 and saved_step % (2 * 4 * 64) == 0                        # whole iterations of 2 ranks

    # Resume under torchrun for 2 more iterations, then look at everything both runs wrote.
    out = torchrun(tmp_path, 2, "--resume", str(run_dir / "checkpoint.pt"), "--total-timesteps",
                   str(saved_step + 2 * 512))
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "runs").iterdir()) == [run_dir]
    update_steps = [int(r["global_step"]) for r in read_csv(run_dir / "updates.csv")]
    assert update_steps == list(range(512, saved_step + 2 * 512 + 1, 512))           # one row per iteration
    # episodes.csv holds exactly the episodes the two ranks collected, none lost, none twice, in step order
    logged = [(int(r["global_step"]), float(r["episodic_return"]), int(r["episodic_length"]))
              for r in read_csv(run_dir / "episodes.csv")]
    by_rank = [[(e["global_step"], e["episodic_return"], e["episodic_length"])
                for e in map(json.loads, (tmp_path / f"episodes{rank}.jsonl").read_text().splitlines())]
               for rank in (0, 1)]
    assert by_rank[0] and by_rank[1] and by_rank[0] != by_rank[1]        # different seeds: different episodes
    assert sorted(logged) == sorted(by_rank[0] + by_rank[1]) and logged == sorted(logged, key=lambda e: e[0])
    # one agent: identical parameters and normalization statistics on both ranks, and in the checkpoint
    agents = [torch.load(tmp_path / f"agent{rank}.pt") for rank in (0, 1)]
    saved = torch.load(run_dir / "checkpoint.pt")["agent"]
    for name, value in agents[0].items():
        assert torch.equal(value, agents[1][name]) and torch.equal(value, saved[name]), name
    assert agents[0]["obs_rms.count"] > saved_step                 # the statistics took in both ranks' steps


def test_torchrun_with_one_process_is_the_plain_run(tmp_path, monkeypatch):
    flags = ["--env-id", "CartPole-v1", "--total-timesteps", "8192", "--norm-obs", "--norm-reward", "--target-kl",
             "0.01", "--quiet", "--no-tensorboard"]
    collectives = []                         # whether a process group was joined, at each all_reduce_mean call
    all_reduce_mean = ppo.all_reduce_mean
    monkeypatch.setattr(ppo, "all_reduce_mean", lambda x: collectives.append(ppo.distributed()) or all_reduce_mean(x))
    assert ppo.main([*flags, "--runs-dir", str(tmp_path / "plain")]) == 0
    assert collectives and not any(collectives)
    # In this process, what `torchrun --nproc-per-node 1` would set: a real gloo process group of one, in which
    # every all-reduce, gather and broadcast runs.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in dict(RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, LOCAL_WORLD_SIZE=1, MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=port).items():
        monkeypatch.setenv(name, str(value))
    collectives.clear()
    assert ppo.main([*flags, "--runs-dir", str(tmp_path / "torchrun")]) == 0
    assert collectives and all(collectives) and not ppo.distributed()          # main left the group at the end

    def episodes(runs):
        return [(r["global_step"], r["episodic_return"], r["episodic_length"])
                for r in read_csv(next(runs.iterdir()) / "episodes.csv")]
    assert episodes(tmp_path / "torchrun") == episodes(tmp_path / "plain")


@pytest.mark.parametrize("flags, expected", [
    (["--gamma", "2"], "error: --gamma 2.0: must be in (0, 1]; typical: gamma 0.99, lambda 0.95"),
    (["--total-timesteps", "1500"], "error: --total-timesteps 1500: smaller than one batch of 2 processes x "
                                    "num-envs * num-steps = 2048; use at least that"),
])
def test_torchrun_bad_flag_is_reported_once_by_rank_0(flags, expected, tmp_path, monkeypatch, capsys):
    # What torchrun sets for 2 processes; flags are refused before the process group is joined.
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        assert ppo.main([*flags, "--runs-dir", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (f"{expected}\n" if rank == 0 else "")
    assert not any(tmp_path.iterdir())


def test_torchrun_cuda_needs_one_gpu_per_process(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ppo.UsageError, match=r"--cuda: torchrun started 2 processes on this machine but 1 GPU\(s\) "
                                             r"are visible, and nccl needs one per process; use --nproc-per-node 1"):
        ppo.check_args(ppo.Args(cuda=True))


# ---------------------------------------------------------------------------------------------------------------------
# The docs keep their word: their code runs, their commands parse, their links resolve, their names exist
# ---------------------------------------------------------------------------------------------------------------------
DOCS = [HERE / "README.md", *sorted((HERE / "notes").glob("*.md"))]


def fenced_blocks(path, language):
    """[(line, the paragraph before the block, the block's code)] of every ```language block in a Markdown file."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            start, before = i + 1, []
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            while j >= 0 and lines[j].strip() and not lines[j].startswith("```"):
                before.insert(0, lines[j])
                j -= 1
            end = next(k for k in range(start, len(lines)) if lines[k].strip() == "```")
            blocks.append((start, " ".join(before), "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return blocks


# A doc's Python block runs as written, in a fresh process, in a folder of its own shared by the blocks of one doc
# (so that `import my_envs` finds the `my_envs.py` a block before it defined). Only training is shortened: train()
# runs one iteration. A block introduced by "`NAME.py`:" is that file; one whose first line says "run as: ...
# torchrun" runs under torchrun.
SHORT_TRAINING = '''
import dataclasses, sys
sys.path[:0] = [{here!r}, "."]
import ppo
_train = ppo.train
def train(args, *a, **k):
    args = ppo.fill_auto(args)
    return _train(dataclasses.replace(args, total_timesteps=args.batch_size, quiet=True), *a, **k)
ppo.train = train
exec(compile(open({block!r}).read(), {block!r}, "exec"), {{"__name__": "__main__"}})
'''


def python_blocks():
    return [pytest.param(doc, line, before, code, id=f"{doc.relative_to(HERE)}:{line}")
            for doc in DOCS for line, before, code in fenced_blocks(doc, "python")]


@pytest.mark.parametrize("doc, line, before, code", python_blocks())
def test_every_python_block_in_the_docs_runs(doc, line, before, code, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "docs" / doc.stem
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    named = re.search(r"`(\w+\.py)`:$", before.strip())
    if named:                                                        # a module the next blocks import
        (folder / named.group(1)).write_text(code)
        command = [sys.executable, "-c", f"import {named.group(1)[:-3]}"]
    elif "torchrun" in code.splitlines()[0]:
        (folder / "block.py").write_text(code)
        launcher = re.search(r"--nproc-per-node (\d+)", code.splitlines()[0])
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   launcher.group(1), "block.py"]
    else:
        (folder / f"block{line}.py").write_text(code)
        command = [sys.executable, "-c", SHORT_TRAINING.format(here=str(HERE), block=f"block{line}.py")]
    out = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{doc.name}:{line}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def doc_commands():
    """Every `python ppo.py ...` and `torchrun ... ppo.py ...` the docs show, in code blocks or inline:
    [(where, argv)]."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())         # a command continued on the next line: one line
        lines = [(i + 1, line) for i, line in enumerate(text.splitlines())]
        candidates = [(n, line) for n, line in lines if re.match(r"\s*(python|torchrun|\w+=\S+ )", line)]
        inline = r"`((?:python|torchrun)[^`]*ppo\.py[^`]*)`"
        candidates += [(n, m) for n, line in lines for m in re.findall(inline, line)]
        for n, command in candidates:
            command = command.split(" #")[0].strip().rstrip("\\").strip()
            words = [w for w in command.split() if w not in ("...", "FLAGS", "[FLAGS]")]   # "and your flags"
            if "ppo.py" in words:
                found.append((f"{doc.relative_to(HERE)}:{n}", words[words.index("ppo.py") + 1:]))
    return found


def test_every_command_in_the_docs_parses(tmp_path, monkeypatch, capsys):
    commands = doc_commands()
    assert len(commands) >= 20 and any(argv[:1] == ["--evaluate"] for _, argv in commands)
    checkpoint = ppo.train(ppo.Args(total_timesteps=128, num_envs=2, num_steps=64, runs_dir=str(tmp_path),
                                    quiet=True, tensorboard=False))["checkpoint"]
    (tmp_path / "my_envs.py").write_text(CUSTOM_ENV_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(HERE / "notes"))                # PYTHONPATH=notes: memory_benchmark's envs
    placeholders = {"<env>": "CartPole-v1", "ENV": "CartPole-v1", "X": "CartPole-v1", "S": "1", "SEED": "1",
                    "$seed": "1", "Taxi-v4": TAXI}
    for where, argv in commands:
        argv = [str(checkpoint) if a.endswith(".pt") else placeholders.get(a, a) for a in argv]
        if any(a.startswith("ALE/") or "NoFrameskip" in a for a in argv) and not importlib.util.find_spec("ale_py"):
            continue                                                 # the optional Atari packages are not here
        try:
            ppo.parse_args(argv)
        except SystemExit as e:                                      # --help prints and exits 0
            assert e.code == 0 and "--help" in argv, where
        except ppo.UsageError as e:
            # Box2D or Atari (ALE/Breakout-v5, BreakoutNoFrameskip-v4), say: optional packages, skipped without them
            if not re.search(r"needs a package that is not installed|needs the optional packages?", str(e)):
                pytest.fail(f"{where}: python ppo.py {' '.join(argv)}: {e}")
    capsys.readouterr()


def markdown_links(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def heading_anchors(doc):
    text = doc.read_text()
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)} | set(re.findall(r'<a id="([^"]+)">', text))


def test_every_link_and_path_in_the_docs_exists_in_the_repo():
    for doc in DOCS:
        for link in markdown_links(doc):
            if re.match(r"https?://", link):
                continue
            path, _, anchor = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            assert target.exists() and HERE in target.parents or target == HERE, f"{doc.name}: link {link}"
            if anchor and target.suffix == ".md":
                assert anchor in heading_anchors(target), f"{doc.name}: link {link}: no such heading"
        text = doc.read_text()
        assert "../shared" not in text and "ANCHORS.md" not in text, f"{doc.name} points outside the repo"
        for path in re.findall(r"`((?:notes|\.ci)/[\w./-]+)`", text):   # paths named in backticks
            assert (HERE / path).exists(), f"{doc.name}: {path}"
        assert not re.search(r"\bline \d+ of ppo\.py|ppo\.py:\d+|ppo\.py line \d+", text), f"{doc.name} names lines"


def test_the_docs_speak_of_the_software_not_of_how_its_work_was_scheduled():
    # "issue 30", "the issue's test", "this session's device time", "the lent machine": a reader can check none of them.
    # Say what was measured, on which commit and machine, instead.
    internal = r"\bissues? #?\d+|\bthe issue\b|\bsessions?\b|\blent\b|\.\./shared|ANCHORS"
    notes = HERE / "notes"
    for path in [HERE / "README.md", *sorted([*notes.glob("*.md"), *notes.glob("*.py"), *notes.glob("*.sh")])]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found = re.search(internal, line, flags=re.I)
            assert not found, f"{path.relative_to(HERE)}:{n}: {found.group()!r}: {line.strip()}"


# One source of defaults: the same explicit inputs give the same run from Python and from the command line.
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "PixelSide-v0", TAXI])      # discrete,
def test_python_and_the_command_line_write_the_same_args_json(env_id, tmp_path, capsys):   # continuous, image, masked
    given = dict(total_timesteps=2048, seed=3, quiet=True, tensorboard=False, save_every=1000)
    cli, python = tmp_path / "cli", tmp_path / "python"
    assert ppo.main(["--env-id", env_id, "--total-timesteps", "2048", "--seed", "3", "--quiet", "--no-tensorboard",
                     "--save-every", "1000", "--runs-dir", str(cli)]) == 0
    ppo.train(ppo.Args(env_id=env_id, runs_dir=str(python), **given))
    capsys.readouterr()
    saved = [json.loads(next(d.glob("*/args.json")).read_text()) for d in (cli, python)]
    for s in saved:
        s.pop("runs_dir")
    assert saved[0] == saved[1]
    expected = json.loads(json.dumps(dataclasses.asdict(ppo.default_args(env_id, **given))))
    expected.pop("runs_dir")
    assert saved[1] == expected                       # and both are what --help shows for this env


def test_args_shows_auto_for_what_depends_on_the_env_and_its_docstring_gives_the_values():
    # Every field the per-space tables set is AUTO in Args (a learner never reads a default that will not be used),
    # and its --help text names the values each kind of env gets.
    tables = {**ppo.DISCRETE_DEFAULTS, **ppo.VECTOR_DEFAULTS, **ppo.CONTINUOUS_DEFAULTS, **ppo.ATARI_DEFAULTS,
              **ppo.RECURRENT_DEFAULTS, **ppo.RECURRENT_DISCRETE_DEFAULTS}
    auto = {f.name for f in dataclasses.fields(ppo.Args) if f.default is ppo.Args.AUTO and f.name in tables}
    assert set(tables) == auto == set(ppo.DISCRETE_DEFAULTS)
    source = inspect.getsource(ppo.Args.__mro__[1]) + inspect.getsource(ppo.RunArgs)
    docs = dict(re.findall(r"\n    (\w+): [^\n]*= (?:Args\.)?AUTO\n    \"\"\"(.*?)\"\"\"", source, flags=re.S))
    assert set(docs) == auto | {"tensorboard"}               # and one the machine decides: is the package there?
    assert "where the optional package is installed" in docs["tensorboard"]
    def numbers(text):                                # "500k", "1M", "2.5e-3", "0.2" -> floats
        scale = {"k": 1e3, "M": 1e6, "": 1}
        return {float(n) * scale[k] for n, k in re.findall(r"(?<![\w.])(-?\d+(?:\.\d+)?(?:e-?\d+)?)(k|M|)\b", text)}
    for name in auto - {"norm_obs", "norm_reward", "eval_stochastic", "clip_vloss", "norm_adv"}:   # said in words
        for table in (ppo.DISCRETE_DEFAULTS, ppo.CONTINUOUS_DEFAULTS, ppo.ATARI_DEFAULTS, ppo.RECURRENT_DEFAULTS,
                      ppo.RECURRENT_DISCRETE_DEFAULTS):
            value = table.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert float(value) in numbers(docs[name]), (name, value, docs[name])


def test_the_table_above_args_is_what_auto_becomes():
    # Part I's one place for what each AUTO field becomes: its rows read back against env_defaults, per kind of env.
    text = (HERE / "ppo.py").read_text()
    lines = text[text.index("\n#              total_"):text.index("\n@dataclass\nclass Args")].splitlines()[1:]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])][1:]      # where each column starts
    names = ["".join(line[a:b].strip() for line in lines[:2]) for a, b in zip(starts, [*starts[1:], None])]
    words = {"on": True, "off": False, "none": (), "64 64": (64, 64)}
    def value(cell):
        return words[cell] if cell in words else float(cell.replace("k", "e3").replace("M", "e6"))
    table = {}
    for line, env_id in zip(lines[2:5], ["CartPole-v1", "Pendulum-v1", "PixelSide-v0"]):  # the rows, in order
        table.update({name: value(line[a:b].strip()) for name, a, b in zip(names, starts, [*starts[1:], None])
                      if line[a:b].strip()})
        defaults = ppo.env_defaults(env_id)
        assert {name: defaults[name] for name in table} == table, env_id
    assert set(names) | {"norm_obs", "norm_reward"} == set(ppo.DISCRETE_DEFAULTS) - {"eval_stochastic"}
    assert "norm_obs, norm_reward: on for real-valued vector observations" in text        # CartPole's: on; Taxi's: off
    assert ppo.env_defaults("CartPole-v1")["norm_obs"] and not ppo.env_defaults(TAXI)["norm_obs"]
    recurrent = "learning_rate 1e-3, num_minibatches 4; with discrete actions, num_steps 128"
    assert recurrent in text and {**ppo.RECURRENT_DEFAULTS, **ppo.RECURRENT_DISCRETE_DEFAULTS} == dict(
        learning_rate=1e-3, num_minibatches=4, num_steps=128)


def test_fill_auto_is_default_args_and_explicit_values_win():
    assert ppo.fill_auto(ppo.Args(env_id="Pendulum-v1")) == ppo.default_args("Pendulum-v1")
    assert ppo.fill_auto(ppo.Args(env_id="Pendulum-v1", learning_rate=1e-3)).learning_rate == 1e-3
    assert ppo.fill_auto(ppo.Args(env_id="MountainCar-v0", preset="mountaincar")) == \
        ppo.default_args("MountainCar-v0", preset="mountaincar")
    filled = ppo.default_args("CartPole-v1", seed=5)
    assert ppo.fill_auto(filled) is filled                                      # once filled, left alone
    for env_id in ("CartPole-v1", "Pendulum-v1"):                  # the --recurrent row, from Python and the CLI
        assert ppo.fill_auto(ppo.Args(env_id=env_id, recurrent=True)) == \
            ppo.parse_args(["--env-id", env_id, "--recurrent"]) == ppo.default_args(env_id, recurrent=True)


# The acting API: the README's example, run as written, for every kind of checkpoint the file writes.
def readme_acting_example():
    code = next(code for _, _, code in fenced_blocks(HERE / "README.md", "python") if "load_policy(" in code)
    imports = code.splitlines()[0]
    return imports + "\n" + code[code.index("policy = load_policy("):]


@pytest.mark.parametrize("kind, env_id, flags", [
    ("plain", "CartPole-v1", dict(norm_obs=False, norm_reward=False)),
    ("normalized", "CartPole-v1", {}),
    ("frame stack", "CartPole-v1", dict(frame_stack=3)),
    ("recurrent", "CartPole-v1", dict(recurrent=True, recurrent_size=16)),
    ("masked", TAXI, {}),
    ("image", "PixelSide-v0", {}),
])
def test_the_readme_acting_example_runs_for_every_kind_of_checkpoint(kind, env_id, flags, tmp_path, monkeypatch):
    result = ppo.train(ppo.Args(env_id=env_id, total_timesteps=2048, runs_dir=str(tmp_path), quiet=True,
                                tensorboard=False, **flags))
    namespace = {"result": result}
    exec(readme_acting_example(), namespace)
    policy, env = namespace["policy"], namespace["env"]
    assert namespace["done"] and isinstance(policy, ppo.Policy)
    assert env.observation_space == ppo.make_env(env_id, frame_stack=flags.get("frame_stack", 1)).observation_space
    if kind == "masked":                              # every action the policy takes is legal where it was taken
        obs, info = env.reset(seed=1)
        policy.reset()
        for _ in range(50):
            action = policy.act(obs, info)
            assert info["action_mask"][action] == 1
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break


def test_policy_carries_a_recurrent_memory_and_restarts_it_at_episode_ends_and_lost_lives(tmp_path, monkeypatch):
    result = ppo.train(ppo.Args(env_id="CartPole-v1", total_timesteps=2048, recurrent=True, recurrent_size=16,
                                runs_dir=str(tmp_path), quiet=True, tensorboard=False))
    policy = ppo.load_policy(result["checkpoint"], deterministic=True)
    env = policy.make_env()
    observations, actions, starts = [], [], []
    for episode in range(2):                          # two episodes, acted one step at a time
        obs, info = env.reset(seed=episode)
        policy.reset()
        for t in range(20):
            observations.append(obs)
            starts.append(float(t == 0))
            actions.append(int(policy.act(obs, info)))
            obs, _, terminated, truncated, info = env.step(actions[-1])
            if terminated or truncated:
                break
    # The same steps in one call of the GRU over the whole sequence, restarting where each episode starts: the same
    # actions, so act() carried the memory from step to step and reset() restarted it.
    with torch.no_grad():
        mem = ppo.MemoryState(torch.zeros(1, 16), torch.tensor(starts))
        replayed = policy.agent.distribution(torch.as_tensor(np.array(observations)), mem=mem).mode
    assert replayed.tolist() == actions and sum(starts) == 2 and len(actions) > 20
    # In an Atari game (here pretended), a lost life restarts the memory as the training's lost-life signal did.
    monkeypatch.setattr(ppo, "is_atari", lambda env_id: True)
    obs, info = env.reset(seed=5)
    policy.reset()
    policy.act(obs, {"lives": 3})
    policy.act(obs, {"lives": 3})
    carried = policy.memory.now.state.clone()
    policy.act(obs, {"lives": 2})                     # a life lost: this step starts from a zero memory
    after_loss = policy.memory.now.state.clone()
    policy.reset()
    policy.act(obs, {"lives": 2})
    torch.testing.assert_close(after_loss, policy.memory.now.state)
    assert not torch.allclose(carried, policy.memory.now.state)


def doc_error_messages():
    """(where, flags, message) for every one-line error the docs quote: the bad-input table's rows (flags in the
    first column) and `error: --flag value: ...` quoted in the text (the flags are the message's start)."""
    found = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            row = re.match(r"\| `([^`]*)`(.*?) \| 2 \| `+ ?(error: .*?) ?`+ \|$", line)
            if row:                                                  # conditional: "(no Box2D)", "under torchrun"
                found.append((f"{doc.name}:{n}", row.group(1).split(), row.group(3), bool(row.group(2).strip())))
                continue
            for message in re.findall(r"`(error: --[\w-]+ [^`:]*: [^`]*)`", line):
                flags = message.removeprefix("error: ").split(":")[0].split()
                found.append((f"{doc.name}:{n}", flags, message, False))
    return found


def test_every_error_message_the_docs_quote_is_what_the_command_line_prints(tmp_path, monkeypatch, capsys):
    # Each quoted message is produced by running its flags, unless the row names a condition (a package missing,
    # torchrun, a module of the reader's own) or a placeholder: those rows have tests of their own above.
    messages = doc_error_messages()
    assert len(messages) >= 25
    for env_id in ("CartPoleNoVel-v1", "PendulumNoVel-v1"):       # registered by another test: not in "did you mean"
        monkeypatch.delitem(gym.registry, env_id, raising=False)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    tyro_before_1 = ppo.version_tuple(importlib.metadata.version("tyro")) < (1, 0)
    ran = 0
    for where, flags, message, conditional in messages:
        if conditional or any(c in " ".join(flags) for c in ("<", "…", "my_", "ALE/")):
            continue
        if "--cuda" in flags and torch.cuda.is_available():
            continue
        flags = [f.replace("/tmp/", f"{tmp_path}/") for f in flags]
        code = ppo.main([*flags, "--runs-dir", str(tmp_path / "runs")])
        err, message = capsys.readouterr().err.strip(), message.replace("/tmp/", f"{tmp_path}/")
        assert code == 2 and "\n" not in err, f"{where}: {flags}\n{err}"
        if tyro_before_1 and err != message:        # a row in tyro's words, which are 1.0's: the same flags, named
            err, message = (sorted(set(re.findall(r"--[\w-]+", text))) for text in (err, message))
        assert err == message, f"{where}: {flags}\n{err}\n{message}"
        ran += 1
    assert ran >= 20 and not (tmp_path / "runs").exists()           # and nothing was made before the error


# Names the docs give in backticks that are not ppo.py's own: gymnasium's, torch's, CleanRL's, SB3's, the shell's.
OUTSIDE_NAMES = {
    "ChildFailedError", "SignalException", "all_gather_object", "inference_mode", "GLOO_SOCKET_IFNAME",  # torch
    "NCCL_SOCKET_IFNAME", "log_prob", "SyncVectorEnv", "SyncVectorEnv.step", "envs.step", "ClipAction",  # gymnasium
    "FrameStackObservation", "max_episode_steps", "mujoco.set_mju_user_warning", "MaskablePPO",          # SB3
    "ppo_atari.py", "ppo_atari_multigpu.py", "ppo_continuous_action.py", "ppo_multidiscrete_mask.py",    # CleanRL
    "log_std", "my_envs.py",                          # the usual name of the Gaussian's parameter; the README's module
}
OUTSIDE_FLAGS = {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--standalone",
                 "--rdzv-backend", "--rdzv-endpoint", "--logdir", "--help",       # torchrun's, tensorboard's, tyro's
                 "--index-url", "--dry-run", "--ignore-installed", "--report",   # pip's
                 "--gama"}                                                        # the typo the bad-input table shows


def test_the_readmes_speed_figures_are_those_notes_performance_md_measured():
    # A measurement cannot be rerun in a test, but the README cannot claim one that performance.md does not show.
    readme = (HERE / "README.md").read_text()
    claims = re.search(r"- \*\*Fast on a CPU\*\*(.*?)\n\n", readme, re.S).group(1)
    figures = re.findall(r"\d+\.\d+(?:×| s\b)", " ".join(claims.split()))      # ratios and seconds
    performance = " ".join((HERE / "notes" / "performance.md").read_text().split())
    missing = [f for f in figures if not re.search(r"(?<![\d.])" + re.escape(f.split()[0]) + r"(?![\d])", performance)]
    assert len(figures) >= 4 and not missing, (figures, missing)


def test_every_name_and_flag_the_docs_give_exists():
    source, tests = (HERE / "ppo.py").read_text(), (HERE / "test_ppo.py").read_text()
    scripts = "\n".join(p.read_text() for p in (HERE / "notes").glob("*.py"))
    flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(ppo.Args)}
    flags |= {"--no-" + f.name.replace("_", "-") for f in dataclasses.fields(ppo.Args)}
    owners = {"agent": ppo.Agent, "self": ppo.Agent, "rollout": ppo.Rollout, "run": ppo.Run, "args": ppo.Args,
              "legal": ppo.LegalActions, "policy": ppo.Policy}

    def exists(name):
        if name.startswith("test_"):
            return f"def {name}(" in tests
        if re.search(r"\.(csv|pt|py|txt|json|TXT)$", name):             # a file: in the repo, or one ppo.py writes
            return (HERE / name).exists() or name in source
        first, *rest = name.split(".")
        obj = getattr(ppo, first, owners.get(first))
        if obj is None:
            if re.search(rf"^(def|class) {re.escape(name)}\b", scripts, re.M):   # a notes script's own function
                return True
            return re.search(rf"\b{re.escape(name)}\b", source) is not None   # a local name, a column, a key
        for part in rest:                                                # an attribute, method or dataclass field
            if part in getattr(obj, "__dataclass_fields__", {}) or re.search(rf"self\.{part}\b", source):
                obj = None
            elif obj is None or not hasattr(obj, part):
                return False
            else:
                obj = getattr(obj, part)
        return True

    missing = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for token in re.findall(r"`([^`\n]+)`", text):
            for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", token):
                script_flag = re.search(rf"\bargs\.{flag[2:].replace('-', '_')}\b", scripts)  # notes/*.py's
                if flag not in flags | OUTSIDE_FLAGS and not script_flag:
                    missing.append(f"{doc.name}: flag {flag}")
            code = re.fullmatch(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\(\))?", token.strip())
            if not code:
                continue
            name = code.group(1)
            looks_like_code = ("_" in name or "." in name or code.group(2) or name.isupper()
                               or re.search(r"[a-z][A-Z]", name))
            if looks_like_code and name not in OUTSIDE_NAMES and not exists(name):
                missing.append(f"{doc.name}: {name}")
    assert not missing, "\n".join(sorted(set(missing)))


# ---------------------------------------------------------------------------------------------------------------------
# Every input and every combination: generated from ppo.py's own tables (EVALUATE_FLAGS, RESUME_KEEPS, EXCLUSIVE)
# ---------------------------------------------------------------------------------------------------------------------
def a_valid_value(field):
    """A value each flag accepts on its own, to give it where it does not belong: (the flag's words)."""
    name = "--" + field.name.replace("_", "-")
    value = getattr(ppo.default_args("CartPole-v1"), field.name)
    if isinstance(value, bool):
        return [name] if not value else ["--no-" + field.name.replace("_", "-")]
    if isinstance(value, tuple):
        return [name, "8"]
    return [name, {"env_id": "CartPole-v1", "preset": "mountaincar", "resume": "x.pt", "evaluate": "x.pt"}.get(
        field.name, str(value) if value is not None else "1")]


def one_error_line(err, *names):
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in names)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    result = ppo.train(ppo.Args(total_timesteps=128, num_envs=2, num_steps=64, runs_dir=str(folder), quiet=True,
                                tensorboard=False))
    return Path(result["checkpoint"])


def test_evaluate_refuses_every_flag_it_would_ignore(small_checkpoint, capsys):
    for field in dataclasses.fields(ppo.Args):
        if field.name in ppo.EVALUATE_FLAGS or field.name in ("resume", "preset"):
            continue
        words = a_valid_value(field)
        assert ppo.main(["--evaluate", str(small_checkpoint), *words]) == 2, words
        assert one_error_line(capsys.readouterr().err, words[0], "has no effect with --evaluate"), words


# What --evaluate reads, written out here from its documentation rather than read from ppo.EVALUATE_FLAGS (which the
# test above is generated from, so an entry added there or dropped would pass it): how many episodes, which seed, how
# to act and film, how loud, how many threads. Nothing that would change the saved agent.
EVALUATE_READS = {"evaluate", "env_id", "seed", "eval_episodes", "eval_stochastic", "eval_video_episodes",
                  "capture_video", "quiet", "torch_threads"}


def test_evaluate_hands_each_flag_it_reads_to_evaluate_and_refuses_every_other(small_checkpoint, tmp_path, capsys,
                                                                                 monkeypatch):
    checkpoint = tmp_path / "run" / "checkpoint.pt"                  # a copy: --capture-video makes a folder beside it
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(small_checkpoint.read_bytes())
    calls = []

    def played(path, episodes=10, deterministic=True, seed=None, video_dir=None, env_id=None, video_episodes=1,
               verbose=False, threads=None):                          # evaluate's documented signature
        calls.append(dict(path=str(path), episodes=episodes, deterministic=deterministic, seed=seed,
                          video_dir=video_dir, env_id=env_id, video_episodes=video_episodes, verbose=verbose,
                          threads=threads))
        return [float(k) for k in range(episodes)]                     # returns 0, 1, ...: mean and std known
    monkeypatch.setattr(ppo, "evaluate", played)
    monkeypatch.setattr(ppo, "check_video", lambda env_id: None)      # --capture-video without moviepy installed
    default = dict(path=str(checkpoint), episodes=10, deterministic=True, seed=1, video_dir=None, env_id=None,
                   video_episodes=1, verbose=True, threads=1)       # the checkpoint's seed, 1, not 0
    for words, changed in [([], {}), (["--seed", "7"], dict(seed=7)), (["--eval-episodes", "3"], dict(episodes=3)),
                           (["--eval-stochastic"], dict(deterministic=False)), (["--quiet"], dict(verbose=False)),
                           (["--torch-threads", "2"], dict(threads=2)),
                           (["--env-id", "CartPole-v1"], dict(env_id="CartPole-v1"))]:
        calls.clear()
        assert ppo.main(["--evaluate", str(checkpoint), *words]) == 0, (words, capsys.readouterr().err)
        assert calls == [{**default, **changed}], words
        out = capsys.readouterr().out
        if "--quiet" not in words:
            episodes = changed.get("episodes", 10)
            returns = np.arange(episodes)
            how = "stochastic" if "--eval-stochastic" in words else "deterministic"
            assert out == f"CartPole-v1: mean return {returns.mean():.2f} +- {returns.std():.2f} over {episodes} " \
                          f"{how} episodes\n", words
    calls.clear()
    assert ppo.main(["--evaluate", str(checkpoint), "--capture-video"]) == 0
    assert calls[0]["video_dir"].parent == checkpoint.parent / "videos-eval"
    assert re.fullmatch(r"\d{8}-\d{6}", calls[0]["video_dir"].name)     # <run>/videos-eval/<time>/, as the README says
    assert "; videos in " + str(calls[0]["video_dir"]) in capsys.readouterr().out
    calls.clear()                                    # --eval-video-episodes: how many of them to film (only filming)
    assert ppo.main(["--evaluate", str(checkpoint), "--capture-video", "--eval-video-episodes", "2"]) == 0
    assert calls[0]["video_episodes"] == 2 and calls[0]["video_dir"] is not None
    saved = torch.load(checkpoint, weights_only=True)       # a run saved with --eval-video-episodes 3 films 3 ...
    saved["args"]["eval_video_episodes"] = 3
    torch.save(saved, checkpoint)
    for words, video_episodes in [(["--capture-video"], 3), ([], 1)]:       # ... only when it films at all
        calls.clear()
        assert ppo.main(["--evaluate", str(checkpoint), *words]) == 0
        assert calls[0]["video_episodes"] == video_episodes, words
    capsys.readouterr()
    monkeypatch.setattr(ppo, "evaluate", lambda *a, **k: [0.0, 1.0])       # Ctrl-C stopped it after 2 episodes
    assert ppo.main(["--evaluate", str(checkpoint)]) == 130
    assert capsys.readouterr().out == "stopped: CartPole-v1: mean return 0.50 +- 0.50 over 2 of 10 deterministic " \
                                      "episodes\n"
    for field in dataclasses.fields(ppo.Args):
        if field.name in EVALUATE_READS or field.name in ("resume", "preset"):
            continue
        words = a_valid_value(field)
        assert ppo.main(["--evaluate", str(checkpoint), *words]) == 2, words
        err = capsys.readouterr().err
        assert one_error_line(err, words[0], "has no effect with --evaluate"), words
        listed = re.search(r"\(--evaluate takes (.*)\)$", err.strip()).group(1).split(", ")    # what to give instead
        assert sorted(listed) == sorted(ppo.flag(n) for n in EVALUATE_READS - {"evaluate"}), err


def test_resume_refuses_to_change_what_made_the_run(small_checkpoint, capsys):
    before = {p.name: p.read_bytes() for p in small_checkpoint.parent.iterdir() if p.is_file()}
    saved = ppo.args_from_checkpoint(torch.load(small_checkpoint))
    for name in ppo.RESUME_KEEPS:
        value = getattr(saved, name)
        other = (not value if isinstance(value, bool) else (32,) if isinstance(value, tuple) else
                 {"activation": "relu", "exp_name": "other", "runs_dir": "elsewhere"}.get(name, value) if
                 isinstance(value, str) else value + 1)
        words = ppo.flag(name, other).split()
        assert ppo.main(["--resume", str(small_checkpoint), "--total-timesteps", "4096", *words]) == 2, words
        why = "has no effect without" if name in ppo.REQUIRES else "--resume continues the run as it was made"
        assert one_error_line(capsys.readouterr().err, words[0], why), words
    assert before == {p.name: p.read_bytes() for p in small_checkpoint.parent.iterdir() if p.is_file()}


# What --resume may not change, written out here rather than read from ppo.RESUME_KEEPS (which the test above is
# generated from): the run folder's name (seed, exp name, runs dir), and what built the saved agent. Every other
# flag applies from the resumed step on, each given here a value other than the checkpoint's.
RESUME_MAY_NOT_CHANGE = {"seed": "2", "exp_name": "other", "runs_dir": "elsewhere", "hidden_sizes": "32",
                         "activation": "relu", "frame_stack": "2", "norm_obs": False, "log_std_init": "-0.5",
                         "ortho_init": False, "recurrent": True}
RESUME_MAY_CHANGE = {"num_envs": "4", "async_envs": True, "num_steps": "32", "norm_reward": False,
                     "learning_rate": "1e-3", "anneal_lr": False, "gamma": "0.9", "gae_lambda": "0.9",
                     "num_minibatches": "2", "update_epochs": "2", "norm_adv": False, "recompute_adv": True,
                     "clip_coef": "0.1", "clip_vloss": True, "ent_coef": "0.01", "vf_coef": "0.25",
                     "max_grad_norm": "1.0", "target_kl": "0.02", "action_mask": False, "torch_deterministic": False,
                     "torch_threads": "2", "save_every": "5", "eval_episodes": "3", "eval_stochastic": True,
                     "eval_video_episodes": "2", "quiet": False}


def test_resume_refuses_what_made_the_run_and_takes_every_other_flag(small_checkpoint, tmp_path, capsys, monkeypatch):
    checked = ppo.Run._check_resumable

    def accept(self, checkpoint):                  # past the resume checks: the run would go on
        checked(self, checkpoint)
        raise Accepted()
    monkeypatch.setattr(ppo.Run, "_check_resumable", accept)
    recurrent = ppo.train(ppo.Args(total_timesteps=256, num_envs=2, num_steps=64, recurrent=True, recurrent_size=8,
                                   recurrent_seq_len=16, num_minibatches=2, runs_dir=str(tmp_path), quiet=True,
                                   tensorboard=False, torch_threads=1))
    changes = [(small_checkpoint, name, value) for name, value in {**RESUME_MAY_NOT_CHANGE,
                                                                   **RESUME_MAY_CHANGE}.items()]
    changes += [(recurrent["checkpoint"], "recurrent_size", "16"), (recurrent["checkpoint"], "recurrent_seq_len", "8")]
    changes += [(small_checkpoint, "compile", True)] + [      # and those that need an optional package, where it is
        (small_checkpoint, name, True) for name, packages in [("capture_video", ("moviepy", "pygame")),
                                                              ("tensorboard", ("tensorboard",)), ("track", ("wandb",))]
        if installed(*packages)]
    assert {name for _, name, _ in changes} | {"env_id", "total_timesteps", "preset", "resume", "evaluate", "cuda",
                                               "compile", "capture_video", "tensorboard", "track",
                                               "wandb_project_name", "wandb_entity"} == set(ppo.ARGS_DEFAULTS)
    for checkpoint, name, value in changes:
        words = ([ppo.flag(name, value)] if isinstance(value, bool) else [ppo.flag(name), value])
        argv = ["--resume", str(checkpoint), "--total-timesteps", "4096",
                *(["--no-tensorboard"] if name != "tensorboard" else []), *words]
        refused = name in RESUME_MAY_NOT_CHANGE or name == "recurrent_size"
        try:
            code = ppo.main(argv)
        except Accepted:
            assert not refused, words
            continue
        err = capsys.readouterr().err
        if name == "action_mask":                    # CartPole gives no mask to ignore: refused as a new run is
            assert code == 2 and one_error_line(err, "--no-action-mask", "gives no action mask"), err
            continue
        assert refused and code == 2, (words, err)
        assert one_error_line(err, words[0], "--resume continues the run as it was made"), (words, err)


def test_resume_takes_the_env_id_with_or_without_its_module_and_only_a_run_directorys_checkpoint(
        small_checkpoint, tmp_path, capsys, monkeypatch):
    checked = ppo.Run._check_resumable

    def accept(self, checkpoint):
        checked(self, checkpoint)
        raise Accepted()
    monkeypatch.setattr(ppo.Run, "_check_resumable", accept)
    module_id = "gymnasium.envs.classic_control:CartPole-v1"           # the same env, its module named
    moduled = ppo.train(ppo.Args(env_id=module_id, total_timesteps=128, num_envs=2, num_steps=64, quiet=True,
                                 runs_dir=str(tmp_path / "runs"), tensorboard=False))["checkpoint"]
    for checkpoint, env_id in [(small_checkpoint, module_id), (moduled, "CartPole-v1"), (moduled, module_id)]:
        with pytest.raises(Accepted):
            ppo.main(["--resume", str(checkpoint), "--env-id", env_id, "--total-timesteps", "4096", "--no-tensorboard"])
    lone = tmp_path / "lone" / "checkpoint.pt"                           # named checkpoint.pt, but no run's logs
    lone.parent.mkdir()
    lone.write_bytes(small_checkpoint.read_bytes())
    assert ppo.main(["--resume", str(lone), "--total-timesteps", "4096", "--no-tensorboard"]) == 2
    assert one_error_line(capsys.readouterr().err, "not a run directory's checkpoint.pt")


def test_resume_past_its_target_or_outside_a_run_directory_is_refused(small_checkpoint, tmp_path, capsys):
    assert ppo.main(["--resume", str(small_checkpoint)]) == 2             # a finished run: nothing left to train
    assert one_error_line(capsys.readouterr().err, "has trained 128 steps", "give a larger --total-timesteps")
    elsewhere = tmp_path / "model.pt"
    elsewhere.write_bytes(small_checkpoint.read_bytes())
    assert ppo.main(["--resume", str(elsewhere), "--total-timesteps", "4096"]) == 2
    assert one_error_line(capsys.readouterr().err, "not a run directory's checkpoint.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_resume_trains_while_a_whole_iteration_fits_and_from_a_run_no_episode_has_ended_in(small_checkpoint, tmp_path,
                                                                                             capsys):
    # 128 steps trained in iterations of 2 x 64: a target of 255 leaves no whole iteration, 256 leaves exactly one.
    # And a run directory is known by its args.json alone: episodes.csv appears only once an episode has ended.
    run_dir = tmp_path / small_checkpoint.parent.name
    shutil.copytree(small_checkpoint.parent, run_dir)
    (run_dir / "episodes.csv").unlink()
    assert ppo.main(["--resume", str(run_dir / "checkpoint.pt"), "--total-timesteps", "255"]) == 2
    assert one_error_line(capsys.readouterr().err, "has trained 128 steps", "leaves no whole iteration of 128 more")
    assert ppo.main(["--resume", str(run_dir / "checkpoint.pt"), "--total-timesteps", "256", "--quiet"]) == 0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == 256


FEATURES = {"recurrent": ["--recurrent", "--recurrent-size", "8", "--recurrent-seq-len", "16"],
            "frame_stack": ["--frame-stack", "2"], "recompute_adv": ["--recompute-adv"]}
ENVS_OF_EACH_KIND = {"vector": "CartPole-v1", "image": "PixelSide-v0", "masked": TAXI, "continuous": "Pendulum-v1"}


@pytest.mark.parametrize("kind", ENVS_OF_EACH_KIND)
def test_every_pair_of_features_trains_or_is_refused_naming_both(kind, tmp_path, capsys):
    # Generated from EXCLUSIVE: each feature alone and each pair, on each kind of env; a pair EXCLUSIVE names is
    # refused in one line naming both flags before anything is made, every other one trains an iteration.
    for size in (1, 2):
        for combination in itertools.combinations(FEATURES, size):
            flags = [w for feature in combination for w in FEATURES[feature]]
            runs = tmp_path / "-".join(combination)
            code = ppo.main(["--env-id", ENVS_OF_EACH_KIND[kind], *flags, "--num-envs", "2", "--num-steps", "32",
                             "--num-minibatches", "2", "--total-timesteps", "64", "--runs-dir", str(runs), "--quiet",
                             "--no-tensorboard"])
            err = capsys.readouterr().err
            refused = any(set(pair) <= set(combination) for pair in ppo.EXCLUSIVE)
            if refused:
                assert code == 2 and one_error_line(err, *(ppo.flag(f) for f in combination)), (combination, err)
                assert not runs.exists()
            else:
                assert code == 0, (combination, err)
                assert len(read_csv(next(runs.glob("*/updates.csv")))) == 1, combination


# Property-based: every numeric and string flag, every path and checkpoint field, with values drawn by hypothesis
# (NaN, inf, negative, zero, huge, wrong type, empty). The invariant: the run is accepted (it reaches Run.start, where
# the run directory would be made), or it exits 2 with one `error:` line naming the flag, having made nothing.
class Accepted(Exception):
    pass


def accepted_or_refused_in_one_line(argv, runs, capsys, monkeypatch, flag_name):
    monkeypatch.setattr(ppo.Run, "start", lambda self, agent, optimizer: (_ for _ in ()).throw(Accepted()))
    existed = runs.exists()
    try:
        code = ppo.main([*argv, "--runs-dir", str(runs), "--quiet", "--no-tensorboard"])
    except Accepted:
        capsys.readouterr()
        return "accepted"
    err = capsys.readouterr().err
    assert code == 2 and one_error_line(err, flag_name), (argv, code, err)
    assert runs.exists() == existed, argv
    return "refused"


NUMBERS = {f.name for f in dataclasses.fields(ppo.Args) if f.type in ("int", "float", "float | None", int, float)}
WEIRD = ["nan", "inf", "-inf", "0", "-1", "-0.0", "1e30", "1e6", str(10**20), "", "abc", "0x10", "1,5", "2.5", "True"]


# The documented range of each numeric flag on CartPole-v1 (its defaults: 16 envs x 64 steps, 4 minibatches; the
# test gives --total-timesteps 2048), from Args's help and notes/README.md's bad-input table, written out here and
# not read from ppo.py: (smallest, largest) accepted, None where there is no bound, open=True where the low end
# itself is refused. An int flag takes whole numbers only.
DOCUMENTED = dict(
    num_envs=(1, 32), num_steps=(1, 128),                      # one batch (16 x 64 = 1024) must fit in 2048 steps
    total_timesteps=(1024, None), num_minibatches=(1, 512),   # and must divide 1024, leaving minibatches of 2 or more
    update_epochs=(1, None), save_every=(1, None), eval_episodes=(1, 10**6), torch_threads=(1, 1024),
    frame_stack=(1, 1024), seed=(0, 2**31 - 1), eval_video_episodes=(-1, None),
    recurrent_size=(128, 128), recurrent_seq_len=(32, 32),    # other values need --recurrent
    gamma=(0.0, 1.0, "open"), gae_lambda=(0.0, 1.0), clip_coef=(0.0, None, "open"),
    learning_rate=(0.0, None, "open"), max_grad_norm=(0.0, None, "open"), target_kl=(0.0, None, "open"),
    ent_coef=(0.0, None), vf_coef=(0.0, None), log_std_init=(None, None))
INTEGER, DECIMAL = r"-?[0-9]+", r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"


def documented_outcome(name, text):
    """'accepted' or 'refused' for --name text, from DOCUMENTED alone; None for text it does not decide (odd
    spellings a parser may read either way: '+5', ' 5', '1_0', '1e3' for a whole number, ...)."""
    low, high, *open_low = DOCUMENTED[name]
    integer = isinstance(ARGS_EXAMPLE[name], int) and not isinstance(ARGS_EXAMPLE[name], bool)
    if not re.fullmatch(INTEGER if integer else DECIMAL, text):
        return "refused" if not re.search(r"[0-9]", text) and text.lower() not in ("nan", "inf", "-inf", "infinity",
                                                                                      "-infinity") else None
    value = int(text) if integer else float(text)
    if not math.isfinite(value):
        return "refused"
    if name == "num_minibatches" and value > 0 and 1024 % value:
        return "refused"
    ok = (low is None or (value > low if open_low else value >= low)) and (high is None or value <= high)
    return "accepted" if ok else "refused"


ARGS_EXAMPLE = {**dict(seed=1, total_timesteps=1, num_envs=1, num_steps=1, num_minibatches=1, update_epochs=1,
                       save_every=1, eval_episodes=1, torch_threads=1, frame_stack=1, eval_video_episodes=1,
                       recurrent_size=1, recurrent_seq_len=1), **{n: 0.5 for n in ("gamma", "gae_lambda", "clip_coef",
                       "learning_rate", "max_grad_norm", "target_kl", "ent_coef", "vf_coef", "log_std_init")}}


def test_numeric_and_string_flags_are_accepted_or_refused_in_one_line(tmp_path_factory, capsys):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    assert set(DOCUMENTED) == NUMBERS                                  # every numeric flag has its documented range
    outcomes = []

    def near(name):                                                    # values around the range's ends, and inside
        low, high, *_ = DOCUMENTED[name]
        ends = [e for e in (low, high) if e is not None] or [0]
        if isinstance(ARGS_EXAMPLE[name], float):
            return st.one_of(st.sampled_from(ends).flatmap(lambda e: st.sampled_from([e, e - 1e-3, e + 1e-3])),
                             st.floats(min(ends) - 2, max(ends) + 2)).map(repr)
        return st.one_of(st.sampled_from(ends).flatmap(lambda e: st.sampled_from([e, e - 1, e + 1])),
                         st.integers(min(ends) - 3, max(ends) + 3)).map(str)

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(data=st.data(), name=st.sampled_from(sorted(NUMBERS | {"exp_name", "env_id", "activation",
                                                                             "hidden_sizes"})))
    def check(data, name):
        odd = st.one_of(st.sampled_from(WEIRD), st.integers(-10**20, 10**20).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(min_size=0, max_size=6))
        value = data.draw(st.one_of(near(name), odd) if name in DOCUMENTED else odd)
        with pytest.MonkeyPatch.context() as monkeypatch:
            runs = tmp_path_factory.mktemp("runs") / "runs"
            argv = ["--" + name.replace("_", "-"), value]
            if name != "total_timesteps":
                argv += ["--total-timesteps", "2048"]
            if name == "log_std_init":                 # a Gaussian policy's: refused for discrete actions (CartPole)
                argv += ["--env-id", "Pendulum-v1"]
            got = accepted_or_refused_in_one_line(argv, runs, capsys, monkeypatch, name.replace("_", "-"))
        expected = documented_outcome(name, value) if name in DOCUMENTED else None
        assert expected in (None, got), (name, value, got)
        outcomes.append((name, expected))
    check()
    decided = {(name, expected) for name, expected in outcomes if expected}
    for name in ("gamma", "gae_lambda", "num_envs", "num_minibatches", "seed"):   # each drawn both ways
        assert {(name, "accepted"), (name, "refused")} <= decided, name


def test_gamma_and_lambda_bounds_are_as_documented(tmp_path, capsys, monkeypatch):
    # gamma in (0, 1], lambda in [0, 1]: both ends of each, explicitly (1 is a legitimate undiscounted return).
    for words, expected in [(["--gamma", "1"], "accepted"), (["--gamma", "0"], "refused"),
                            (["--gamma", "1.0001"], "refused"), (["--gae-lambda", "0"], "accepted"),
                            (["--gae-lambda", "1"], "accepted"), (["--gae-lambda", "-0.0001"], "refused"),
                            (["--gae-lambda", "1.0001"], "refused")]:
        assert accepted_or_refused_in_one_line([*words, "--total-timesteps", "2048"], tmp_path / "runs", capsys,
                                               monkeypatch, words[0]) == expected, words


def test_layer_sizes_and_minibatch_counts_are_refused_with_what_would_be_valid(tmp_path, capsys, monkeypatch):
    # The smallest layer, 1 unit, is a layer; and with --recurrent the valid minibatch counts are those that divide
    # the number of sequences (2 envs x 64 steps / 16 = 8), not the number of transitions (128).
    assert accepted_or_refused_in_one_line(["--hidden-sizes", "1", "1"], tmp_path / "runs", capsys, monkeypatch,
                                           "--hidden-sizes") == "accepted"
    recurrent = ["--recurrent", "--num-envs", "2", "--num-steps", "64", "--recurrent-seq-len", "16"]
    for words, message in [
            (["--hidden-sizes", "64", "0"], "error: --hidden-sizes 64 0: layer sizes must be positive, e.g. 64 64 "
                                            "(none: one linear layer per head)"),
            ([*recurrent, "--num-minibatches", "3"], "error: --num-minibatches 3: must divide the batch of num-envs * "
                                                     "num-steps = 128 transitions; valid: 1, 2, 4, 8"),
            ([*recurrent, "--num-minibatches", "16"], "error: --num-minibatches 16: with --recurrent, minibatches are "
                                                      "sets of the 8 sequences (num-envs * num-steps / "
                                                      "recurrent-seq-len): it must divide 8")]:
        assert ppo.main([*words, "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2, words
        assert capsys.readouterr().err == message + "\n"
    assert not (tmp_path / "runs").exists()


def test_refusals_under_torchrun_count_every_process_and_keep_evaluation_to_one(monkeypatch):
    monkeypatch.setattr(ppo, "rank_and_world", lambda: (0, 2))                     # as under torchrun, 2 processes
    cartpole = dict(env_id="CartPole-v1", num_envs=2, num_steps=64)
    for args, message in [
            (ppo.Args(**cartpole, total_timesteps=255), "--total-timesteps 255: smaller than one batch of 2 processes "
                                                        "x num-envs * num-steps = 256; use at least that"),
            (ppo.Args(evaluate="runs/a/checkpoint.pt"), "--evaluate runs/a/checkpoint.pt: plays in one process; run "
                                                        "it without torchrun")]:
        with pytest.raises(ppo.UsageError) as refused:
            ppo.check_args(args)
        assert str(refused.value) == message
    ppo.check_args(ppo.Args(**cartpole, total_timesteps=256))                      # one batch in each process
    monkeypatch.setattr(ppo, "rank_and_world", lambda: (0, 1))
    with pytest.raises(ppo.UsageError, match=r"^--total-timesteps 127: smaller than one batch of num-envs \* "):
        ppo.check_args(ppo.Args(**cartpole, total_timesteps=127))


def test_paths_and_checkpoints_are_accepted_or_refused_in_one_line(small_checkpoint, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for runs in (a_file, a_file / "below"):                        # a file, and a folder that cannot be made
        assert accepted_or_refused_in_one_line([], runs, capsys, monkeypatch, "--runs-dir") == "refused"
    assert a_file.read_text() == "mine"
    checkpoint = torch.load(small_checkpoint)
    for key in ppo.CHECKPOINT_KEYS:                                # a checkpoint without each of its fields
        broken = {k: v for k, v in checkpoint.items() if k != key}
        path = tmp_path / key / "checkpoint.pt"
        path.parent.mkdir()
        torch.save(broken, path)
        (path.parent / "episodes.csv").write_text("global_step,wall_time,episodic_return,episodic_length\n")
        for mode in ("--resume", "--evaluate"):
            argv = [mode, str(path)] + (["--total-timesteps", "4096"] if mode == "--resume" else [])
            outcome = accepted_or_refused_in_one_line(argv, tmp_path / "runs", capsys, monkeypatch, mode) \
                if mode == "--resume" else None
            if mode == "--resume":
                assert outcome == "refused", key
            else:
                code = ppo.main([*argv, "--eval-episodes", "1"])
                err = capsys.readouterr().err
                assert (code == 0) == (key not in ppo.CHECKPOINT_KEYS[:4]), (key, err)
                assert code == 0 or one_error_line(err, "--evaluate"), (key, err)
    nan = dict(checkpoint, agent={k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                  for k, v in checkpoint["agent"].items()})
    torch.save(nan, tmp_path / "nan.pt")
    assert ppo.main(["--evaluate", str(tmp_path / "nan.pt")]) == 2
    assert one_error_line(capsys.readouterr().err, "NaN or infinite weights")
    other = dict(checkpoint, observation_space="Box(-1.0, 1.0, (7,), float32)")
    torch.save(other, tmp_path / "other.pt")                       # made for another env
    assert ppo.main(["--evaluate", str(tmp_path / "other.pt")]) == 2
    assert one_error_line(capsys.readouterr().err, "differs")


def test_train_gives_back_the_callers_torch_threads(tmp_path):
    torch.set_num_threads(2)
    try:
        ppo.train(ppo.Args(total_timesteps=128, num_envs=2, num_steps=64, runs_dir=str(tmp_path), quiet=True,
                           tensorboard=False, torch_threads=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_pictures_draw_from_ppo_functions(tmp_path, monkeypatch):
    """notes/pictures.py draws the walkthrough's ideas by calling ppo.py: the fast figures come from
    clipped_policy_loss and compute_gae as they are now, so a change to either shows here."""
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    pictures = importlib.import_module("pictures")
    eps = 0.2
    for advantage in (1.0, -1.0):         # flat (gradient 0) exactly beyond the edge the advantage favours
        c = pictures.clip_curves(eps, advantage)
        r, flat = c["ratio"], np.isclose(c["gradient"], 0.0)
        beyond = r > 1 + eps if advantage > 0 else r < 1 - eps
        assert np.array_equal(flat, beyond), advantage
        assert np.allclose(c["objective"], np.minimum(r * advantage, np.clip(r, 1 - eps, 1 + eps) * advantage))
        assert np.allclose(c["gradient"][~flat], advantage)         # elsewhere the full slope, the wrong way too
    n = np.arange(1, 30)
    for lam in (0.0, 0.5, 0.95, 1.0):     # GAE puts (1 - lam) lam^(n-1) on the n-step estimate, the rest on the last
        for gamma in (0.9, 0.99):
            w = pictures.gae_weights(lam, gamma, steps=30)
            assert np.allclose(w[:-1], (1 - lam) * lam ** (n - 1)) and np.isclose(w[-1], lam ** 29), (lam, gamma)
            assert np.isclose(w.sum(), 1.0)
    assert pictures.main(["--fast", "--out", str(tmp_path)]) == 0
    for name in pictures.FAST:
        png = (tmp_path / f"idea-{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name
    assert {f"img/idea-{name}.png" for name in pictures.ALL} <= set(
        re.findall(r"\]\((img/idea-[\w-]+\.png)\)", (HERE / "notes" / "walkthrough.md").read_text()))


def test_a_flag_that_acts_only_through_another_is_refused_without_it(tmp_path, capsys):
    # Generated from REQUIRES, and from this hand-written list of its documented entries, so a dropped one fails too.
    documented = dict(recurrent_size="recurrent", recurrent_seq_len="recurrent", wandb_project_name="track",
                      wandb_entity="track")
    for name, needed in {**documented, **ppo.REQUIRES}.items():
        words = {"recurrent_size": ["--recurrent-size", "64"], "recurrent_seq_len": ["--recurrent-seq-len", "16"],
                 "wandb_project_name": ["--wandb-project-name", "mine"],
                 "wandb_entity": ["--wandb-entity", "me"]}[name]
        assert ppo.main([*words, "--runs-dir", str(tmp_path / "runs")]) == 2, name
        assert one_error_line(capsys.readouterr().err, words[0], ppo.flag(needed, True)), name
    assert not (tmp_path / "runs").exists()


def test_frame_stack_on_images_stacks_channels_and_keeps_the_cnn():
    plain, stacked = ppo.make_env("PixelSide-v0"), ppo.make_env("PixelSide-v0", frame_stack=3)
    channels, height, width = plain.observation_space.shape
    assert stacked.observation_space.shape == (3 * channels, height, width)
    assert stacked.observation_space.dtype == np.uint8
    agent = ppo.build_agent(ppo.default_args("PixelSide-v0", frame_stack=3), *ppo.env_spaces("PixelSide-v0",
                                                                                            frame_stack=3))
    assert isinstance(agent.encoder, ppo.NatureCNN) and agent.encoder[0].in_channels == 3 * channels
    first, _ = stacked.reset(seed=0)
    second, *_ = stacked.step(0)
    np.testing.assert_array_equal(second[:-channels], first[channels:])   # the oldest frame leaves, the newest enters


def test_memory_benchmark_replays_the_starts_a_vector_env_drew(monkeypatch):
    """same_starts replays training's episode starts: sub-env i's k-th episode starts where reset_to_start(env,
    seed + i, k) puts a fresh env, because the vector env seeds sub-env i with seed + i and its later resets draw
    from that generator alone (Pendulum's steps draw nothing)."""
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    benchmark = importlib.import_module("memory_benchmark")
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("PendulumNoVel-v1", max_episode_steps=5)] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=7)
    starts = [[obs[0]], [obs[1]]]
    for _ in range(3 * 5):
        obs, _, terminated, truncated, _ = envs.step(np.zeros((2, 1), np.float32))
        for i in np.flatnonzero(terminated | truncated):
            starts[i].append(obs[i])                             # the same step's reset: the next episode's start
    env = gym.make("PendulumNoVel-v1", max_episode_steps=5)
    for i, k in itertools.product(range(2), range(4)):
        np.testing.assert_array_equal(benchmark.reset_to_start(env, 7 + i, k)[0], starts[i][k])
    assert not np.array_equal(starts[0][1], starts[0][2]) and not np.array_equal(starts[0][1], starts[1][1])


def test_memory_benchmark_table_names_the_commit_and_shows_unfinished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    benchmark = importlib.import_module("memory_benchmark")
    run = tmp_path / "CartPoleNoVel-v1__recurrent__1__1796406890"          # a run stopped at 4,096 of 20,000 steps
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"total_timesteps": 20_000, "num_envs": 16, "num_steps": 64}))
    (run / "episodes.csv").write_text("global_step,wall_time,episodic_return,episodic_length\n100,1.0,20.0,20\n")
    (run / "updates.csv").write_text("global_step,wall_time\n4096,2.0\n")
    (run / "commit.txt").write_text("abc1234\n")
    done = tmp_path / "CartPoleNoVel-v1__recurrent__2__1796406891"  # whole iterations of 4,096: 16,384 is the end
    done.mkdir()
    (done / "args.json").write_text(json.dumps({"total_timesteps": 20_000, "num_envs": 16, "num_steps": 256}))
    (done / "episodes.csv").write_text("global_step,wall_time,episodic_return,episodic_length\n" +
                                       "".join(f"{100 * i},1.0,{i}.0,20\n" for i in range(1, 121)))
    (done / "updates.csv").write_text("global_step,wall_time\n16384,2.0\n")
    benchmark.table(str(tmp_path))
    out = capsys.readouterr().out
    assert "ppo.py commit of the runs: abc1234" in out and "unfinished: 4,096 of 20,000" in out
    assert "| CartPoleNoVel-v1 | recurrent | 2 | 16,384 | 70.5 | 70.5 (12,000) | yes | 100% |" in out  # 1..120


def test_memory_benchmark_holds_means_within_ten_percent_of_the_best(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    benchmark = importlib.import_module("memory_benchmark")
    assert benchmark.holds(450.0, 500.0) and not benchmark.holds(449.0, 500.0)
    assert benchmark.holds(-220.0, -200.0) and not benchmark.holds(-221.0, -200.0)   # negative: at most 10% below
    np.testing.assert_allclose(benchmark.last_100_means(np.arange(101.0)), [49.5, 50.5])
    # kept: the share of the gain over the start. Pendulum from random play's -1200 to a best of -200, ending at
    # -300, kept 900 of 1000; the same run with 1300 added to every reward reads the same, where end / best does not.
    assert benchmark.kept(-300.0, -200.0, -1200.0) == pytest.approx(0.9)
    assert benchmark.kept(1000.0, 1100.0, 100.0) == pytest.approx(0.9)
    assert benchmark.kept(5.0, 5.0, 5.0) is None and benchmark.kept(80.0, 100.0, 0.0) == pytest.approx(0.8)
    # above_share, every pair: 3 beats 2 and 1, 1 loses to 2 and ties 1 (a half): 2.5 of 4
    assert benchmark.above_share([3.0, 1.0], [2.0, 1.0]) == 0.625 and benchmark.above_share([1.0], [2.0]) == 0.0


def test_memory_benchmark_snapshots_leave_the_run_unchanged_and_play_as_evaluate_does(tmp_path, monkeypatch, capsys):
    """run --snapshots keeps the agent as it trains without changing the run (checkpoints draw no random numbers);
    play scores a snapshot as ppo.evaluate does, its episodes side by side; evals reads the snapshots."""
    monkeypatch.syspath_prepend(str(HERE / "notes"))
    benchmark = importlib.import_module("memory_benchmark")
    save = ppo.Run.save
    for snapshots, runs in ((0, tmp_path / "plain"), (2, tmp_path / "kept")):
        benchmark.run("cartpole", "recurrent", 1, str(runs), steps=3 * 16 * 128, snapshots=snapshots)
    assert ppo.Run.save is save                                      # the patch is undone once the run ends
    plain, run = (next(runs.glob("*__recurrent__1__*")) for runs in (tmp_path / "plain", tmp_path / "kept"))
    assert not (plain / "snapshots").exists()
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [f"step-{s:09d}.pt" for s in (2048, 4096, 6144)]
    steps_and_returns = [[r.split(",")[0::2] for r in (d / "episodes.csv").read_text().splitlines()]
                         for d in (plain, run)]                      # global_step and episodic_return (not wall_time)
    assert steps_and_returns[0] == steps_and_returns[1]
    first = run / "snapshots" / "step-000002048.pt"
    np.testing.assert_allclose(benchmark.play(first, 3), ppo.evaluate(first, 3, seed=0), atol=1e-4)
    benchmark.evals(str(tmp_path / "kept"), 3)
    out = capsys.readouterr().out
    curve = benchmark.snapshot_returns(run, 3)                       # read back from evaluations-3.csv
    assert [step for step, _ in curve] == [2048, 4096, 6144] and (run / "evaluations-3.csv").exists()
    assert f"| CartPoleNoVel-v1 | recurrent | 1 | 3 | {curve[-1][1]:.1f} | {max(r for _, r in curve):.1f} (" in out
    if importlib.util.find_spec("matplotlib"):                       # evalplot draws what evals scored
        benchmark.evals_plot(str(tmp_path / "kept"), 3, str(tmp_path / "evals.png"))
        assert (tmp_path / "evals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------------
# Every flag does something where it is accepted (issue 37): generated over dataclasses.fields(Args), for training and
# for --evaluate. A non-default valid value either changes something observable in that mode (the agent, the logs,
# the files, the printed lines, how the run ran), or is refused in one line naming it, having made nothing.
# ---------------------------------------------------------------------------------------------------------------------
TINY = {"num_envs": ["--num-envs", "2"], "num_steps": ["--num-steps", "32"],              # 2 iterations of 2 x 32
        "num_minibatches": ["--num-minibatches", "2"], "total_timesteps": ["--total-timesteps", "128"],
        "tensorboard": ["--no-tensorboard"]}
# The value each field takes in training, where the default would do little: a target KL that stops early, ...
TRAINING_VALUES = {"env_id": ["Acrobot-v1"], "seed": ["2"], "total_timesteps": ["192"], "num_envs": ["4"],
                   "num_steps": ["64"], "hidden_sizes": ["8"], "activation": ["relu"], "log_std_init": ["-1"],
                   "learning_rate": ["0.01"], "gamma": ["0.9"], "gae_lambda": ["0.5"], "num_minibatches": ["4"],
                   "update_epochs": ["2"], "clip_coef": ["0.05"], "ent_coef": ["0.1"], "vf_coef": ["1.0"],
                   "max_grad_norm": ["0.01"], "target_kl": ["1e-9"], "exp_name": ["other"], "preset": ["mountaincar"],
                   "recurrent_size": ["8"], "recurrent_seq_len": ["16"], "frame_stack": ["2"], "torch_threads": ["2"],
                   "save_every": ["1"], "eval_episodes": ["3"], "eval_video_episodes": ["2"], "wandb_project_name":
                   ["mine"], "wandb_entity": ["me"], "runs_dir": ["(set per case)"]}
# Where a flag acts only in company (another env, another flag), it is also tried there, beside the plain CartPole run.
TRAINING_CONTEXTS = {"log_std_init": ["--env-id", "Pendulum-v1"], "action_mask": ["--env-id", TAXI],
                     "recurrent_size": ["--recurrent"], "recurrent_seq_len": ["--recurrent"],
                     "wandb_project_name": ["--track"], "wandb_entity": ["--track"]}


def non_default_words(field, values, default_args):
    """The flag's words for a value other than the mode's default."""
    name = "--" + field.name.replace("_", "-")
    value = getattr(default_args, field.name)
    if isinstance(value, bool) or field.type in ("bool", bool):
        return [name] if not value else ["--no-" + field.name.replace("_", "-")]
    return [name, *values[field.name]]


def observe(argv, tmp, capsys, monkeypatch, evaluate_checkpoint=None):
    """What one run shows: the exit code and one error line, or its files, logs, weights, printed lines (numbers of
    seconds masked), what --evaluate would then default to, and how it ran (envs, threads, device, compile, saves)."""
    how = {"saves": 0}
    end_iteration, save, make_vector_env, torch_threads = (ppo.Run.end_iteration, ppo.Run.save, ppo.make_vector_env,
                                                           ppo.torch_threads)

    def recording_end_iteration(self, *a, **k):
        how.update(threads=torch.get_num_threads(), device=str(self.device), dir=self.dir,
                   deterministic=torch.backends.cudnn.deterministic)
        return end_iteration(self, *a, **k)

    def recording_save(self):
        how["saves"] += 1
        return save(self)

    def recording_make_vector_env(*a, **k):
        envs = make_vector_env(*a, **k)
        how["envs"] = type(envs.unwrapped).__name__
        return envs

    def recording_threads(n):                                      # what evaluate acts with
        how["threads"] = n
        return torch_threads(n)
    monkeypatch.setattr(ppo.Run, "end_iteration", recording_end_iteration)
    monkeypatch.setattr(ppo.Run, "save", recording_save)
    monkeypatch.setattr(ppo, "make_vector_env", recording_make_vector_env)
    monkeypatch.setattr(ppo, "torch_threads", recording_threads)
    monkeypatch.setattr(torch, "compile", lambda fn, **k: how.update(compiled=True) or fn)
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    code = ppo.main(argv)
    out, err = capsys.readouterr()
    made = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    if code == 2:
        assert one_error_line(err), (argv, err)
        assert made == before, argv                                     # refused: nothing made
        return {"refused": err}
    assert code == 0, (argv, err)
    seen = {"printed": [re.sub(r"[\d.]+s\b|[\d,]+ SPS|ETA +\d+s|__\d{10}", "#", line.replace(str(tmp), "<tmp>"))
                        for line in out.splitlines()],
            "made": [re.sub(r"__\d{10}|events\.out.*|\d{8}-\d{6}", "#", str(p)) for p in made if p not in before],
            "how": {k: v for k, v in how.items() if k != "dir"}}
    run_dir = how.get("dir")
    if run_dir is not None:                                          # training: the logs, the agent, its evaluation
        logs = {name: read_csv(run_dir / name) if (run_dir / name).exists() else [] for name in
                ("updates.csv", "episodes.csv")}                     # a log is made with its first row
        seen["updates"] = [{k: v for k, v in row.items() if k not in ("wall_time", "SPS")} for row in
                           logs["updates.csv"]]
        seen["episodes"] = [row["episodic_return"] for row in logs["episodes.csv"]]
        checkpoint = torch.load(run_dir / "checkpoint.pt")
        seen["agent"] = {k: (tuple(v.shape), round(float(v.double().sum()), 6)) for k, v in checkpoint["agent"].items()}
        evaluated = ppo.parse_args(["--evaluate", str(run_dir / "checkpoint.pt")])
        seen["evaluate defaults"] = {k: getattr(evaluated, k) for k in ppo.EVALUATE_FLAGS if k != "evaluate"}
        observe.checkpoint = run_dir / "checkpoint.pt"
    return seen


def test_every_flag_changes_something_in_training_or_is_refused(tmp_path, capsys):
    defaults = ppo.default_args("CartPole-v1")
    resumable = tmp_path / "resumable"                         # a run of 1 iteration, for --resume to take further
    assert ppo.main(["--total-timesteps", "64", *TINY["num_envs"], *TINY["num_steps"], *TINY["num_minibatches"],
                     "--no-tensorboard", "--quiet", "--runs-dir", str(resumable)]) == 0
    values = {**TRAINING_VALUES, "resume": [str(next(resumable.glob("*/checkpoint.pt")))]}
    cases = []
    for field in dataclasses.fields(ppo.Args):
        if field.name == "evaluate":                                       # the other mode: the test below
            continue
        words = non_default_words(field, values, defaults)
        if field.name == "tensorboard":          # the baselines run without it (TINY): the other value is to write
            words = ["--tensorboard"]            # its files (refused where the package is missing)
        cases.append((field.name, [], words))
        if field.name in TRAINING_CONTEXTS:
            cases.append((field.name, TRAINING_CONTEXTS[field.name], words))
    outcomes, baselines = {}, {}
    for i, (name, context, words) in enumerate(cases):
        tiny = [w for key, flag_words in TINY.items() if key != name for w in flag_words]
        where = [] if name == "resume" else ["--runs-dir", str(tmp_path / f"case{i}" / "runs")]
        if name == "runs_dir":                                          # another folder beside the usual one
            words, where = ["--runs-dir", str(tmp_path / f"case{i}" / "elsewhere")], []
        with pytest.MonkeyPatch.context() as monkeypatch:
            changed = observe([*tiny, *context, *words, *where], tmp_path / f"case{i}", capsys, monkeypatch)
        key = tuple(context)
        if key not in baselines:                                        # the same run without the flag
            with pytest.MonkeyPatch.context() as monkeypatch:
                baselines[key] = observe([*(w for words in TINY.values() for w in words), *context, "--runs-dir",
                                          str(tmp_path / f"base{i}" / "runs")], tmp_path / f"base{i}", capsys,
                                         monkeypatch)
        if "refused" in baselines[key]:                                  # --track without wandb installed
            assert "refused" in changed, (name, context)
            continue
        if "refused" in changed:
            assert words[0] in changed["refused"] or name == "resume", (name, changed)
            outcomes[(name, *context)] = "refused"
            continue
        if name in ("runs_dir", "resume"):                             # the same run, elsewhere: where the files go
            assert changed["made"] != baselines[key]["made"], name
        else:
            assert changed != baselines[key], (name, context, words)
        outcomes[(name, *context)] = "changes"
        if changed["evaluate defaults"] != baselines[key]["evaluate defaults"]:   # the checkpoint plays with them
            assert ppo.main(["--evaluate", str(observe.checkpoint), "--eval-episodes", "1", "--quiet"]) == 0, \
                (name, capsys.readouterr().err)
            capsys.readouterr()
        if {k for k in changed if changed[k] != baselines[key].get(k)} <= {"how", "evaluate defaults"}:
            outcomes[(name, *context)] = "changes how it ran"
    # The two that once were accepted in silence, and the refusals that hold wherever optional packages are missing.
    assert outcomes[("log_std_init",)] == "refused" and outcomes[("log_std_init", "--env-id", "Pendulum-v1")] == \
        "changes"
    assert outcomes[("action_mask",)] == "refused" and outcomes[("action_mask", "--env-id", TAXI)] == "changes"
    assert outcomes[("recurrent_size", "--recurrent")] == outcomes[("recurrent_seq_len", "--recurrent")] == "changes"
    assert outcomes[("cuda",)] in (("changes", "changes how it ran") if torch.cuda.is_available() else ("refused",))
    # The flags that leave what the run computed alone, each with the reason it is accepted all the same.
    assert {case for case, outcome in outcomes.items() if outcome == "changes how it ran"} <= set(NOTED)


NOTED = {("async_envs",): "the same episodes, stepped in worker processes: a speed setting",
         ("compile",): "the same arithmetic, compiled: a speed setting for long runs",
         ("torch_threads",): "the same numbers, on more CPU threads: a speed setting",
         ("torch_deterministic",): "deterministic kernels matter on a GPU only (its --help says so)",
         ("save_every",): "checkpoints more often: what a crash loses; the files at the end are the same",
         ("eval_episodes",): "saved with the run: what --evaluate of its checkpoint defaults to",
         ("eval_stochastic",): "saved with the run: what --evaluate of its checkpoint defaults to",
         ("eval_video_episodes",): "saved with the run: what --evaluate --capture-video defaults to",
         ("cuda",): "the same run on the GPU (where one is visible)"}


EVALUATE_VALUES = {"env_id": ["CartPole-v0"], "seed": ["2"], "eval_episodes": ["3"], "eval_video_episodes": ["2"],
                   "torch_threads": ["2"]}


def test_every_flag_changes_something_in_evaluate_or_is_refused(small_checkpoint, tmp_path, capsys):
    saved = ppo.args_from_checkpoint(torch.load(small_checkpoint), evaluate=True)
    values = {**{f.name: a_valid_value(f)[1:] for f in dataclasses.fields(ppo.Args)}, **EVALUATE_VALUES}
    evaluate = ["--evaluate", str(small_checkpoint), "--eval-episodes", "2"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        baseline = observe(evaluate, small_checkpoint.parent, capsys, monkeypatch)
    outcomes = {}
    for field in dataclasses.fields(ppo.Args):
        if field.name == "evaluate":
            continue
        words = non_default_words(field, values, saved)
        with pytest.MonkeyPatch.context() as monkeypatch:
            changed = observe([*evaluate, *words], small_checkpoint.parent, capsys, monkeypatch)
        if "refused" in changed:
            assert words[0] in changed["refused"], (field.name, changed)
            outcomes[field.name] = "refused"
        else:
            assert changed != baseline, (field.name, words)
            outcomes[field.name] = "changes"
    assert outcomes["eval_video_episodes"] == "refused"          # without --capture-video it would film nothing
    assert {name for name, outcome in outcomes.items() if outcome == "changes"} <= set(ppo.EVALUATE_FLAGS)
    assert {"env_id", "seed", "eval_episodes", "eval_stochastic", "quiet", "torch_threads"} <= {
        name for name, outcome in outcomes.items() if outcome == "changes"}


# ---------------------------------------------------------------------------------------------------------------------
# Python's Args: typed as the command line types them, and the same resolved settings from both (issue 37, item 5)
# ---------------------------------------------------------------------------------------------------------------------
WRONG_TYPES = {"int": [2.5, "8", True, None], "float": ["0.9", True, None], "bool": [1, "yes", None],
               "str": [5, None], "str | None": [5], "float | None": ["x"], "tuple[int, ...]": [64, [64, 2.5], "64"],
               "Literal['tanh', 'relu']": ["gelu", None]}


def test_python_args_are_typed_as_the_command_line_types_them_or_refused_in_one_line(tmp_path):
    runs = tmp_path / "runs"
    args = ppo.fill_auto(ppo.Args(num_envs=8.0, total_timesteps=1e6, hidden_sizes=[32, 32], gamma=1, runs_dir=runs))
    typed = (args.num_envs, args.total_timesteps, args.hidden_sizes, args.gamma, args.runs_dir)
    assert typed == (8, 1_000_000, (32, 32), 1.0, str(runs)) and list(map(type, typed)) == [int, int, tuple, float, str]
    assert args == ppo.parse_args(["--num-envs", "8.0", "--total-timesteps", "1e6", "--hidden-sizes", "32", "32",
                                   "--gamma", "1", "--runs-dir", str(runs)])
    for field in dataclasses.fields(ppo.Args):                    # generated from the annotations
        for value in WRONG_TYPES[str(field.type)]:
            if value is None and field.default is None:                     # AUTO: None is its marker
                continue
            with pytest.raises(ppo.UsageError) as refused:
                ppo.train(ppo.Args(**{"runs_dir": str(runs), field.name: value}))
            message = str(refused.value)
            assert message.startswith(ppo.flag(field.name) + " ") and "\n" not in message, (field.name, message)
    with pytest.raises(ppo.UsageError, match=r"^--evaluate x\.pt: train\(\) trains; .*evaluate\(path\)"):
        ppo.train(ppo.Args(evaluate="x.pt", runs_dir=str(runs)))
    with pytest.raises(ppo.UsageError, match=r"^--hidden-sizes 64: .*hidden_sizes=\(64,\)"):
        ppo.train(ppo.Args(hidden_sizes=64, runs_dir=str(runs)))
    assert not runs.exists()


def test_a_preset_from_python_is_what_the_command_line_gives_or_is_refused(tmp_path):
    cli = ppo.parse_args(["--env-id", "Pendulum-v1", "--preset", "halfcheetah-zoo", "--gamma", "0.99", "--anneal-lr"])
    assert (cli.gamma, cli.anneal_lr) == (0.99, True)                         # flags win over the preset
    assert ppo.default_args("Pendulum-v1", preset="halfcheetah-zoo", gamma=0.99, anneal_lr=True) == cli
    runs = tmp_path / "runs"
    with pytest.raises(ppo.UsageError, match=r"^--preset halfcheetah-zoo: also sets anneal_lr, gamma.*default_args"):
        ppo.train(ppo.Args(env_id="Pendulum-v1", preset="halfcheetah-zoo", gamma=0.99, anneal_lr=True,
                           runs_dir=str(runs)))
    assert not runs.exists()
    # A preset of AUTO fields alone is taken from Args, and a value given for one of them wins, as a flag does.
    assert ppo.fill_auto(ppo.Args(env_id="MountainCar-v0", preset="mountaincar", ent_coef=0.0)) == \
        ppo.parse_args(["--env-id", "MountainCar-v0", "--preset", "mountaincar", "--ent-coef", "0.0"])


# Values each flag may take in the property below, the defaults among them (a value equal to Args's default is the
# case a preset once overrode from Python).
DRAWN = {"seed": [1, 7], "total_timesteps": [500_000, 1e6], "num_envs": [1, 8, 16], "num_steps": [32, 64],
         "gamma": [0.99, 0.9], "gae_lambda": [0.95, 0.8], "learning_rate": [2.5e-3, 3e-4], "anneal_lr": [True, False],
         "norm_obs": [True, False], "norm_adv": [True, False], "clip_vloss": [True, False], "ent_coef": [0.0, 0.01],
         "hidden_sizes": [(64, 64), (32,)], "activation": ["tanh", "relu"], "ortho_init": [True, False],
         "max_grad_norm": [0.5, 0.8], "update_epochs": [4, 10], "target_kl": [0.015], "recurrent": [True, False],
         "exp_name": ["ppo", "mine"], "log_std_init": [0.0, -0.5]}


def test_python_and_the_command_line_resolve_the_same_args_for_any_flags():
    # args.json is dataclasses.asdict of the Args that Run resolved (fill_auto; Run.start writes it), so comparing
    # the resolved Args compares the args.json each would write, without training.
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=25, deadline=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(env_id=st.sampled_from(["CartPole-v1", "Pendulum-v1", "MountainCar-v0"]),
                      preset=st.sampled_from([None, "mountaincar", "halfcheetah-zoo"]), data=st.data())
    def check(env_id, preset, data):
        names = data.draw(st.sets(st.sampled_from(sorted(DRAWN)), max_size=6))
        given = {name: data.draw(st.sampled_from(DRAWN[name])) for name in sorted(names)}
        argv = ["--env-id", env_id, *(["--preset", preset] if preset else []),
                *(w for name, value in given.items() for w in ppo.flag(name, value).split())]
        resolved = lambda args: json.loads(json.dumps(dataclasses.asdict(ppo.fill_auto(args))))   # noqa: E731
        cli = resolved(ppo.parse_args(argv))
        assert resolved(ppo.default_args(env_id, preset, **given)) == cli, argv
        plain = [k for k in ppo.PRESETS.get(preset, {}) if ppo.ARGS_DEFAULTS[k] is not ppo.Args.AUTO]
        try:
            python = resolved(ppo.Args(env_id=env_id, preset=preset, **given))
        except ppo.UsageError as e:
            assert plain and str(e).startswith(f"--preset {preset}: "), (argv, e)
        else:
            assert not plain and python == cli, argv
    check()


def test_sizes_beyond_memory_and_names_beyond_the_file_system_are_refused_before_anything_is_made(
        tmp_path, capsys, monkeypatch):
    # memory_needed counts the agent's parameters exactly (four copies: weights, gradients, Adam's two moments).
    for env_id, args in [("CartPole-v1", ppo.default_args("CartPole-v1")),
                         ("Pendulum-v1", ppo.default_args("Pendulum-v1", recurrent=True, recurrent_size=16)),
                         ("PixelSide-v0", ppo.default_args("PixelSide-v0", hidden_sizes=(8,))),
                         (TAXI, ppo.default_args(TAXI, recurrent=True, hidden_sizes=(5, 3)))]:
        spaces = ppo.env_spaces(env_id)
        agent = ppo.build_agent(args, *spaces)
        needed = ppo.memory_needed(args, *spaces)
        assert needed["recurrent_size"] + needed["hidden_sizes"] == 16 * sum(p.numel() for p in agent.parameters())
    runs = tmp_path / "runs"
    monkeypatch.setattr(ppo.os, "sysconf", lambda name: {"SC_PHYS_PAGES": 2 ** 21, "SC_PAGE_SIZE": 4096}[name])
    for words, named in [(["--recurrent", "--recurrent-size", "65536"], "--recurrent-size 65536: needs about 20"),
                         (["--hidden-sizes", "65536", "65536"], "--hidden-sizes 65536 65536: needs about 13"),
                         (["--num-envs", "1024", "--num-steps", "1000000", "--total-timesteps", "1024000000"],
                          "--num-envs 1024 --num-steps 1000000: needs about 5"),
                         (["--exp-name", "a" * 248], "--exp-name aaaaaaaaaaaaaaaaaaaa... (248 bytes)"),
                         (["--runs-dir", str(tmp_path / ("b" * 300))], "--runs-dir")]:
        assert ppo.main([*words, "--runs-dir", str(runs)] if words[0] != "--runs-dir" else words) == 2, words
        assert one_error_line(capsys.readouterr().err, named, "8.6 GB" if "needs" in named else ""), words
    assert not runs.exists() and list(tmp_path.iterdir()) == []
    longest = int(re.search(r"give at most (\d+) bytes", str(pytest.raises(ppo.UsageError, ppo.check_args, ppo.Args(
        exp_name="a" * 248, runs_dir=str(runs))).value)).group(1))
    assert ppo.main(["--exp-name", "a" * longest, "--total-timesteps", "64", "--num-envs", "2", "--num-steps", "32",
                     "--num-minibatches", "2", "--runs-dir", str(runs), "--quiet", "--no-tensorboard"]) == 0
    assert len(next(runs.iterdir()).name.encode()) <= os.pathconf(runs, "PC_NAME_MAX")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_run_trained_with_cuda_resumes_on_the_cpu_with_no_cuda(small_checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for p in small_checkpoint.parent.iterdir():
        if p.is_file():
            (run / p.name).write_bytes(p.read_bytes())
    checkpoint = torch.load(run / "checkpoint.pt")
    checkpoint["args"]["cuda"] = True                                     # as a GPU machine would have saved it
    torch.save(checkpoint, run / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert ppo.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "256"]) == 2
    assert one_error_line(capsys.readouterr().err, "--cuda: no CUDA GPU", "the run was trained with --cuda",
                          "add --no-cuda to continue it on the CPU")
    assert before == {p.name: p.read_bytes() for p in run.iterdir()}
    assert ppo.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "256", "--no-cuda", "--quiet"]) == 0
    assert json.loads((run / "args.json").read_text())["resumed"][0]["changed"]["cuda"] == [True, False]
