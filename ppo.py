"""ppo.py: Proximal Policy Optimization (PPO) in one file, written to be read from top to bottom.

PPO trains an *agent* that acts in an *environment*. At every step the agent sees the *state* (an observation),
picks an *action*, and the environment answers with the next state and a *reward*. The agent's *policy* is a
neural network that turns a state into action probabilities; PPO improves it by repeating one loop:

    1. collect experience: run the current policy in many environments at once for a few steps;
    2. compute advantages: how much better each action did than expected (GAE);
    3. clipped update: push up the probability of good actions, but never too far from the old policy;
       an entropy bonus keeps the policy curious (exploration);
    4. repeat with the improved policy.

Run it:
    pip install -r requirements.txt
    python ppo.py --env-id CartPole-v1                     # discrete actions: solves in seconds
    python ppo.py --env-id HalfCheetah-v4                  # continuous actions: MuJoCo defaults
    python ppo.py --env-id HalfCheetah-v4 --preset halfcheetah-zoo   # one env's tuned settings (PRESETS)
    python ppo.py --env-id CartPole-v1 --help              # every flag, with the values that will be used
    python ppo.py --evaluate runs/<run>/checkpoint.pt      # score a saved agent

What it leaves out on purpose: images and CNN encoders (Atari), recurrent policies, multi-GPU training, experiment
trackers, hyperparameter search. `notes/` explains each idea in more depth and says how to add those.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import io
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Distribution, Independent, Normal


# ======================================================================================================================
# Hyperparameters. tyro turns every field into a command-line flag (`num_envs` -> `--num-envs`) and every docstring
# into its `--help` text. Names and meanings follow CleanRL's ppo.py so that its users feel at home.
# ======================================================================================================================
@dataclass
class Args:
    # --- the experiment ---
    env_id: str = "CartPole-v1"
    """gymnasium environment id, or `module:EnvId-v0` to import your own module first (it must register the id)"""
    exp_name: str = "ppo"
    """a name for this experiment; part of the run directory's name"""
    seed: int = 1
    """seed for torch, numpy, random and the environments; the same seed on the CPU gives the same run"""
    total_timesteps: int = 500_000
    """environment steps to train for, summed over all parallel environments"""
    preset: str | None = None
    """named settings for one env, put on top of the defaults (flags still win): mountaincar, halfcheetah-zoo,
    hopper-zoo, walker2d-zoo. See PRESETS below"""

    # --- the environments ---
    num_envs: int = 16
    """parallel environments (N). More envs = more varied experience per update, and cheaper steps"""
    async_envs: bool = False
    """run each environment in its own process (AsyncVectorEnv). Pays off only when one env step is slow"""
    num_steps: int = 64
    """steps taken in each environment per rollout (T); one update uses T * N transitions. Usually 16 to 2048"""
    norm_obs: bool = False
    """normalize observations with running mean and std (stored in the agent, so a saved agent sees the same)"""
    norm_reward: bool = False
    """scale rewards by the running std of the discounted return; helps when rewards are large (MuJoCo)"""

    # --- the agent ---
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer sizes of the policy (actor) and the value (critic) networks"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the hidden layers' nonlinearity"""
    log_std_init: float = 0.0
    """continuous actions: the Gaussian policy's starting log std (0 = std 1; -2 = std 0.14, less exploration)"""
    ortho_init: bool = True
    """orthogonal initial weights, with a tiny last policy layer (see layer_init); off = PyTorch's default init"""

    # --- the PPO update ---
    learning_rate: float = 2.5e-3
    """Adam step size. Usually 1e-4 to 3e-3; too high and the policy collapses, too low and it learns slowly"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run; steadies the end of training"""
    gamma: float = 0.99
    """discount factor: how much a reward one step later is worth (0.99 ~ a horizon of 100 steps). 0.9 to 0.999"""
    gae_lambda: float = 0.95
    """GAE lambda: 0 = one-step TD advantage (low variance, biased), 1 = Monte Carlo return (unbiased, noisy)"""
    num_minibatches: int = 4
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: int = 4
    """passes over the same rollout per update. More squeezes more from each sample, but drifts further"""
    norm_adv: bool = True
    """normalize advantages to mean 0 and std 1 within each minibatch"""
    clip_coef: float = 0.2
    """the PPO clip range epsilon: the new/old probability ratio is kept within [1 - eps, 1 + eps]. 0.1 to 0.3"""
    clip_vloss: bool = False
    """also clip the value update to +-clip_coef around the old prediction (CleanRL, the original PPO code). In
    return units: with unnormalized rewards it holds the critic back (off for discrete, on for continuous)"""
    ent_coef: float = 0.0
    """weight of the entropy bonus, which rewards uncertainty and so keeps the agent exploring. 0 to 0.01;
    0.01 helps tasks where exploration is hard, but slows the last steps to a precise policy (CartPole)"""
    vf_coef: float = 0.5
    """weight of the value loss in the total loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this; guards against the occasional huge gradient"""
    target_kl: float | None = None
    """stop this update's epochs early once the approximate KL to the old policy exceeds this (e.g. 0.015)"""

    # --- running, saving, watching ---
    torch_deterministic: bool = True
    """ask torch for deterministic kernels (matters on a GPU; the CPU path is deterministic anyway)"""
    cuda: bool = False
    """train on the GPU. Off by default: networks this small run faster on the CPU. Refused if no GPU is present"""
    compile: bool = False
    """compile the PPO loss with torch.compile: ~20 s to compile, then each gradient step ~1.6x faster on a CPU.
    Pays off only for long runs with many minibatches (MuJoCo defaults); needs a C++ compiler"""
    torch_threads: int = 1
    """CPU threads for torch. One is fastest for 64x64 networks: more threads cost more to start than they save"""
    capture_video: bool = False
    """record videos of the first environment to <run_dir>/videos (needs `pip install moviepy`, and pygame for
    the classic-control envs)"""
    runs_dir: str = "runs"
    """folder under which each run gets its own directory"""
    save_every: int = 25
    """write a checkpoint every this many iterations (and always at the end); a crash loses at most that much"""
    resume: str | None = None
    """path to a checkpoint.pt: continue that run in its directory, up to --total-timesteps"""
    evaluate: str | None = None
    """path to a checkpoint.pt: do not train; play --eval-episodes episodes with it and print the mean return"""
    eval_episodes: int = 10
    """episodes played by --evaluate"""
    eval_stochastic: bool = False
    """with --evaluate: sample actions from the policy instead of taking the most likely (mean) action"""
    tensorboard: bool = True
    """also write TensorBoard event files, if the optional `tensorboard` package is installed"""
    quiet: bool = False
    """no progress line; only the first and last lines of the run"""

    @property
    def batch_size(self) -> int:
        """transitions per update: B = T * N"""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        """how many collect-then-update loops fit in total_timesteps"""
        return self.total_timesteps // self.batch_size


# Defaults follow the action space. The dataclass defaults above are for discrete actions (CartPole, Acrobot):
# 16 envs x 64 steps give 1024 transitions per update, used in 4 epochs of 4 minibatches of 256 with a high
# learning rate, no value clipping and no entropy bonus. Of the settings we measured (notes/README.md) they solve
# CartPole fastest without losing on Acrobot; large minibatches are what a CPU runs efficiently.
# Continuous control (MuJoCo) uses CleanRL's ppo_continuous_action.py settings: one long rollout, many small
# minibatches, normalized observations and rewards, value clipping, and no entropy bonus.
CONTINUOUS_DEFAULTS = dict(
    total_timesteps=1_000_000, num_envs=1, num_steps=2048, learning_rate=3e-4, num_minibatches=32,
    update_epochs=10, ent_coef=0.0, norm_obs=True, norm_reward=True, clip_vloss=True,
)

# Presets: named settings for one env, for when its best-known return matters more than one setting for all.
# `--preset NAME` puts them on top of the defaults, and flags given explicitly still win. The *-zoo presets are the
# tuned hyperparameters of the SB3 zoo (rl-baselines3-zoo, hyperparams/ppo.yml; its batch_size of B transitions is
# our num_minibatches = num_steps / B). notes/results.md has what each one scores beside the defaults, and
# notes/README.md why the defaults stay general.
PRESETS = {
    "mountaincar": dict(norm_obs=True, ent_coef=0.01),      # scale the tiny velocity; keep trying until one success
    "halfcheetah-zoo": dict(
        num_envs=1, num_steps=512, num_minibatches=8, update_epochs=20, learning_rate=2.0633e-5, anneal_lr=False,
        gamma=0.98, gae_lambda=0.92, clip_coef=0.1, clip_vloss=False, ent_coef=4.01762e-4, vf_coef=0.58096,
        max_grad_norm=0.8, hidden_sizes=(256, 256), activation="relu", log_std_init=-2.0, ortho_init=False),
    "hopper-zoo": dict(     # the zoo's settings, which here get stuck standing still (notes/results.md)
        num_envs=1, num_steps=512, num_minibatches=16, update_epochs=5, learning_rate=9.80828e-5, anneal_lr=False,
        gamma=0.999, gae_lambda=0.99, clip_coef=0.2, clip_vloss=False, ent_coef=2.29519e-3, vf_coef=0.835671,
        max_grad_norm=0.7, hidden_sizes=(256, 256), activation="relu", log_std_init=-2.0, ortho_init=False),
    "walker2d-zoo": dict(
        num_envs=1, num_steps=512, num_minibatches=16, update_epochs=20, learning_rate=5.05041e-5, anneal_lr=False,
        gamma=0.99, gae_lambda=0.95, clip_coef=0.1, clip_vloss=False, ent_coef=5.85045e-4, vf_coef=0.871923,
        max_grad_norm=1.0),
}


# ======================================================================================================================
# Environments. N copies of the environment step together ("vectorized"): the policy acts on a batch of N states at
# once, which is far cheaper than N separate calls, and N independent episodes make each batch less correlated.
# ======================================================================================================================
class UsageError(ValueError):
    """A mistake in the flags or the inputs: reported as one line, before any training starts."""


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One environment, with observations made fit for an MLP and actions kept inside the bounds."""
    try:
        # render_mode is passed only when asked for: many custom envs' constructors do not accept it.
        env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        known = list(gym.registry)
        close = difflib.get_close_matches(env_id.split(":")[-1], known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see gymnasium.pprint_registry() for the ids"
        raise UsageError(f"--env-id {env_id}: cannot make this environment ({type(e).__name__}: {e}); {hint}")
    if isinstance(env.observation_space, gym.spaces.Discrete):
        # A Discrete state (FrozenLake, Taxi) is a category, not a quantity: feed the network a one-hot vector.
        n = int(env.observation_space.n)
        env = gym.wrappers.TransformObservation(
            env, lambda s: np.eye(n, dtype=np.float32)[s], gym.spaces.Box(0.0, 1.0, (n,), np.float32))
    if isinstance(env.action_space, gym.spaces.Box):
        # A Gaussian policy can sample outside the bounds. The env gets the clipped action; the buffer keeps the
        # unclipped sample, because that is the action whose log-probability the policy computed.
        env = gym.wrappers.ClipAction(env)
    return env


def check_spaces(obs_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """Refuse, in one line, the spaces this file does not handle."""
    if not (isinstance(obs_space, gym.spaces.Box) and np.issubdtype(obs_space.dtype, np.number)):
        raise UsageError(f"--env-id {env_id}: observation space {obs_space} is not supported; "
                         "use an env with Box (or Discrete) observations, or wrap it (e.g. FlattenObservation)")
    ok = (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1) or (
        isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        and np.all(action_space.start == 0) and np.ndim(action_space.nvec if hasattr(action_space, "nvec") else 0) <= 1)
    if not ok:
        raise UsageError(f"--env-id {env_id}: action space {action_space} is not supported; "
                         "supported are Discrete, MultiDiscrete (1-D, starting at 0) and 1-D Box")


def default_args(env_id: str, preset: str | None = None, **overrides) -> Args:
    """The defaults for `env_id`'s action space, then the preset's settings, then `overrides`:
    `train(default_args("Hopper-v4", seed=2))`, `default_args("HalfCheetah-v4", preset="halfcheetah-zoo")`.
    An unknown preset adds nothing here; check_args refuses it."""
    env = make_env(env_id)
    continuous = isinstance(env.action_space, gym.spaces.Box)
    env.close()
    return dataclasses.replace(Args(env_id=env_id, preset=preset), **{
        **(CONTINUOUS_DEFAULTS if continuous else {}), **PRESETS.get(preset, {}), **overrides})


def make_vector_env(args: Args, run_dir: Path | None) -> gym.vector.VectorEnv:
    def thunk(i: int):
        def make():
            if args.async_envs:   # this runs inside the worker process: leave Ctrl-C to the trainer, which stops them
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if args.capture_video and i == 0 and run_dir is not None:
                env = make_env(args.env_id, render_mode="rgb_array")
                return gym.wrappers.RecordVideo(env, str(run_dir / "videos"), disable_logger=True)
            return make_env(args.env_id)
        return make

    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    # The autoreset mode decides what step() returns when an episode ends. We use SAME_STEP: the env resets inside
    # that same step(), returns the first state of the *new* episode as the observation, and hands back the last
    # state of the *old* one in infos["final_obs"]. Every step in the buffer is then a real transition that the
    # policy chose an action for. (The default, NEXT_STEP, would add one step per episode whose action is ignored;
    # training on it would treat "end of episode -> start of the next" as if the agent had caused it.)
    return vector_env([thunk(i) for i in range(args.num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class RunningMeanStd(nn.Module):
    """Running mean and variance of a stream of batches (Chan et al.'s parallel algorithm).

    The statistics are buffers of the agent, so they are saved and loaded with it: a restored agent normalizes
    its inputs exactly as it did in training."""

    def __init__(self, shape: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:                     # x: (batch, *shape)
        x = x.double()
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + 1e-8)


NORM_CLIP = 10.0  # normalized observations and rewards are clipped to +-10, as in CleanRL and SB3's VecNormalize


# ======================================================================================================================
# The agent: a policy network (the "actor") that outputs a probability distribution over actions, and a value
# network (the "critic") that predicts the discounted return from a state. The critic is only used for training:
# it is the baseline that turns returns into advantages.
# ======================================================================================================================
def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    # Orthogonal weights keep activations at a steady scale through the layers (the PPO implementation details,
    # Huang et al. 2022, detail 2). The tiny std on the policy's last layer makes the first policy near-uniform
    # over discrete actions, and puts a Gaussian policy's first means near 0.
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(sizes: list[int], out_std: float, activation: str = "tanh", ortho_init: bool = True) -> nn.Sequential:
    init = layer_init if ortho_init else (lambda layer, std=None: layer)     # off: keep nn.Linear's own init
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [init(nn.Linear(n_in, n_out)), nn.Tanh() if activation == "tanh" else nn.ReLU()]
    return nn.Sequential(*layers, init(nn.Linear(sizes[-2], sizes[-1]), std=out_std))


class Agent(nn.Module):
    def __init__(self, obs_space: gym.spaces.Box, action_space: gym.Space, hidden_sizes=(64, 64),
                 norm_obs: bool = False, activation: str = "tanh", log_std_init: float = 0.0, ortho_init: bool = True):
        super().__init__()
        obs_dim = int(np.prod(obs_space.shape))
        # The policy head's size depends on the action space; after this the rest of the file never asks.
        if isinstance(action_space, gym.spaces.Box):               # continuous: the mean of a Gaussian per dim
            self.nvec = None
            n_out = action_space.shape[0]
            # State-independent log standard deviation: one learned number per action dimension (log std 0 = std 1).
            self.actor_logstd = nn.Parameter(torch.full((n_out,), float(log_std_init)))
        else:                                                       # discrete: one logit per choice per sub-action
            self.nvec = [int(n) for n in np.atleast_1d(getattr(action_space, "nvec", getattr(action_space, "n", 0)))]
            self.multi = isinstance(action_space, gym.spaces.MultiDiscrete)
            n_out = sum(self.nvec)
        self.actor = mlp([obs_dim, *hidden_sizes, n_out], out_std=0.01, activation=activation, ortho_init=ortho_init)
        self.critic = mlp([obs_dim, *hidden_sizes, 1], out_std=1.0, activation=activation, ortho_init=ortho_init)
        self.norm_obs = norm_obs
        self.obs_rms = RunningMeanStd(tuple(obs_space.shape))
        self.reward_rms = RunningMeanStd()      # statistics of the discounted return, used to scale rewards

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) raw observations -> (B, obs_dim) network input. The statistics are not changed here:
        training updates them once per rollout, so within one rollout the policy always sees the same scaling."""
        if self.norm_obs:
            obs = ((obs - self.obs_rms.mean) / self.obs_rms.std()).clamp(-NORM_CLIP, NORM_CLIP).float()
        return obs.reshape(len(obs), -1)

    def value(self, x: torch.Tensor) -> torch.Tensor:               # (B, obs_dim) -> (B,)
        return self.critic(x).squeeze(-1)

    def distribution(self, x: torch.Tensor) -> Distribution:
        """The policy pi(a|s): a distribution over actions for each state in the batch.

        Every distribution returned here has log_prob(a) and entropy() of shape (B,), summed over the action's
        dimensions, so the rest of the file treats all three action spaces alike."""
        out = self.actor(x)                                          # (B, n_out)
        if self.nvec is None:                                        # Box: independent Gaussians per dimension
            return Independent(Normal(out, self.actor_logstd.exp().expand_as(out), validate_args=False), 1)
        if not self.multi:                                           # Discrete: softmax over n logits
            return Categorical(logits=out, validate_args=False)
        # MultiDiscrete: one Categorical per sub-action, padded to the widest with logits of -inf (probability 0).
        widest = max(self.nvec)
        logits = torch.stack([nn.functional.pad(chunk, (0, widest - n), value=-torch.inf)
                              for chunk, n in zip(out.split(self.nvec, dim=-1), self.nvec)], dim=1)  # (B, K, widest)
        return Independent(Categorical(logits=logits, validate_args=False), 1)

    def act(self, x: torch.Tensor, deterministic: bool = False):
        """One call per env step: sample a ~ pi(.|s), its log-probability, and the critic's value V(s)."""
        dist = self.distribution(x)
        action = dist.mode if deterministic else dist.sample()
        return action, dist.log_prob(action), self.value(x)


def build_agent(args: Args, obs_space: gym.Space, action_space: gym.Space) -> Agent:
    """The agent that `args` describes: used by training and, identically, to rebuild a saved one."""
    return Agent(obs_space, action_space, args.hidden_sizes, args.norm_obs, args.activation, args.log_std_init,
                 args.ortho_init)


# ======================================================================================================================
# Advantages. The agent wants the most total reward, but a reward now is worth more than the same reward later:
# the discount factor gamma (~0.99) weighs a reward k steps ahead by gamma^k, so the critic's value V(s) predicts
# the discounted sum of future rewards. The advantage A(s, a) says how much better action a turned out than the
# policy's average behaviour in state s. Generalized Advantage Estimation (Schulman et al. 2016, eq. 16) blends the
# one-step TD errors
#     delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
# into  A_t = delta_t + (gamma * lambda) * A_{t+1}, computed backwards from the end of the rollout.
# ======================================================================================================================
def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminations: np.ndarray,
                truncations: np.ndarray, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns, all arrays (T, N).

    next_values[t] is V of the state that step t led to: the next state in the buffer, or for a step that ended
    an episode, the *final* state of that episode (infos["final_obs"]), not the first state of the next one."""
    advantages = np.zeros_like(rewards)
    last_gae_lam = np.zeros_like(rewards[0])                        # (N,)
    for t in reversed(range(len(rewards))):
        # Termination (the pole fell, the robot crashed): there is no future, so nothing to bootstrap from.
        # Truncation (the time limit ran out): the episode was cut short from outside, not ended by the agent.
        # The future still exists, so we bootstrap with V(final state). Treating a time limit as a failure would
        # teach the agent that states near the clock's end are bad (Pardo et al. 2018, "Time Limits in RL").
        next_non_terminal = 1.0 - terminations[t]
        delta = rewards[t] + gamma * next_values[t] * next_non_terminal - values[t]
        # Either way the episode is over: the GAE sum must not reach into the next episode's steps.
        episode_continues = 1.0 - np.maximum(terminations[t], truncations[t])
        last_gae_lam = delta + gamma * gae_lambda * episode_continues * last_gae_lam
        advantages[t] = last_gae_lam
    return advantages, advantages + values                          # returns = the critic's regression target


# ======================================================================================================================
# The clipped update. The policy learns from experience that the *old* policy collected; if one update moves it
# far away, that experience no longer describes what the new policy does and learning can collapse. PPO keeps each
# update "proximal" by clipping the probability ratio (Schulman et al. 2017, eq. 7):
#     ratio = pi_new(a|s) / pi_old(a|s) = exp(logp_new - logp_old)
#     L_clip = mean( min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) )
# Once the ratio leaves [1 - eps, 1 + eps] in the direction the advantage favours, the clipped term is flat and
# its gradient is zero: the sample stops pulling the policy further.
# ======================================================================================================================
def clipped_policy_loss(logratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    ratio = logratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()                    # minus: the optimizer minimizes


def value_loss(new_values, old_values, returns, clip_coef: float | None) -> torch.Tensor:
    """0.5 * (V(s) - return)^2; with clip_coef, the new value may not move more than clip_coef from the old."""
    loss = (new_values - returns) ** 2
    if clip_coef is not None:
        clipped = old_values + (new_values - old_values).clamp(-clip_coef, clip_coef)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return 0.5 * loss.mean()


def ppo_loss(agent: Agent, mb: dict[str, torch.Tensor], args: Args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PPO loss on one minibatch `mb`; returns (loss, its parts for logging, log ratio)."""
    dist = agent.distribution(mb["obs"])
    logratio = dist.log_prob(mb["actions"]) - mb["logprobs"]       # log pi_new(a|s) - log pi_old(a|s)
    advantages = mb["advantages"]
    if args.norm_adv:  # mean 0, std 1 within the minibatch: the step size no longer depends on the reward scale
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = clipped_policy_loss(logratio, advantages, args.clip_coef)
    v_loss = value_loss(agent.value(mb["obs"]), mb["values"], mb["returns"],
                        args.clip_coef if args.clip_vloss else None)
    # Entropy bonus: subtracting the policy's entropy rewards keeping some randomness, so the agent keeps trying
    # actions it is unsure of (exploration) instead of settling early on what it already knows (exploitation).
    entropy = dist.entropy().mean()
    loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
    return loss, torch.stack([pg_loss, v_loss, entropy]).detach(), logratio.detach()


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], args: Args,
               loss_fn=ppo_loss) -> dict:
    """Several epochs of minibatch gradient steps on one rollout. `batch` holds the whole flattened rollout
    (B = T * N transitions, each tensor (B, ...)); each epoch reshuffles it into minibatches `mb` of B /
    num_minibatches. Returns the diagnostics of the last epoch."""
    for epoch in range(args.update_epochs):
        losses, logratios = [], []       # kept per minibatch; summarized once per epoch (fewer small ops)
        for mb_inds in torch.randperm(args.batch_size).split(args.minibatch_size):
            loss, parts, logratio = loss_fn(agent, {k: b_v[mb_inds] for k, b_v in batch.items()}, args)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Rescale the whole gradient if its norm exceeds max_grad_norm: one odd minibatch cannot fling the policy.
            grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
            optimizer.step()
            losses.append(torch.cat([parts, grad_norm[None]]))
            logratios.append(logratio)

        # How far did this epoch move the policy? approx_kl estimates KL(old || new) by the mean of
        # (ratio - 1) - log(ratio), which is never negative (Schulman, "Approximating KL divergence");
        # clipfrac is the share of samples whose ratio fell outside the clip range.
        logratio = torch.cat(logratios)
        approx_kl = ((logratio.exp() - 1) - logratio).mean()
        clipfrac = ((logratio.exp() - 1).abs() > args.clip_coef).float().mean()
        if args.target_kl is not None and approx_kl.item() > args.target_kl:
            break                        # early stop: the policy has moved as far as we allow for one update
    pg_loss, v_loss, entropy, grad_norm = torch.stack(losses).mean(0).tolist()   # one sync per update
    return dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy, approx_kl=approx_kl.item(),
                clipfrac=clipfrac.item(), grad_norm=grad_norm)


# ======================================================================================================================
# Run machinery: what a long run needs to survive its user. Logs, checkpoints, signals, argument checks.
# ======================================================================================================================
class NonFiniteError(RuntimeError):
    """Training produced, or the env returned, a NaN or an infinity."""


EPISODE_FIELDS = ["global_step", "wall_time", "episodic_return", "episodic_length"]
UPDATE_FIELDS = ["global_step", "wall_time", "SPS", "learning_rate", "policy_loss", "value_loss", "entropy",
                 "approx_kl", "clipfrac", "explained_variance", "grad_norm"]


class RunLog:
    """episodes.csv and updates.csv (plus TensorBoard if installed), the console progress line, all in one place."""

    def __init__(self, run_dir: Path, args: Args, resume_step: int | None):
        self.files, self.writers = {}, {}
        for name, fields in (("episodes", EPISODE_FIELDS), ("updates", UPDATE_FIELDS)):
            path = run_dir / f"{name}.csv"
            if resume_step is not None and path.exists():
                # Rows written after the checkpoint belong to steps that will be replayed: drop them.
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["global_step"]) <= resume_step]
                atomic_write(path, lambda p: _write_csv(p, fields, rows))
            self.files[name] = open(path, "a", newline="")
            self.writers[name] = csv.DictWriter(self.files[name], fieldnames=fields)
            if self.files[name].tell() == 0:
                self.writers[name].writeheader()
        self.tb = None
        if args.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: pip install tensorboard
                self.tb = SummaryWriter(str(run_dir))
            except ImportError:
                pass
        self.quiet, self.total, self.last_print, self.tty = args.quiet, args.total_timesteps, 0.0, sys.stdout.isatty()
        self.recent = deque(maxlen=100)                             # returns of the last 100 episodes

    def episode(self, global_step: int, wall_time: float, ret: float, length: int) -> None:
        self.writers["episodes"].writerow(dict(global_step=global_step, wall_time=round(wall_time, 3),
                                               episodic_return=ret, episodic_length=length))
        self.recent.append(ret)
        if self.tb:
            self.tb.add_scalar("charts/episodic_return", ret, global_step)
            self.tb.add_scalar("charts/episodic_length", length, global_step)

    def update(self, row: dict) -> None:
        self.writers["updates"].writerow({k: row[k] for k in UPDATE_FIELDS})
        for f in self.files.values():
            f.flush()                                               # a crash loses nothing already logged
        if self.tb:
            for k, v in row.items():
                if k not in ("global_step", "wall_time"):
                    tag = "charts" if k in ("SPS", "learning_rate") else "losses"
                    self.tb.add_scalar(f"{tag}/{k}", v, row["global_step"])
        now = time.time()
        # On a terminal one line is redrawn twice a second; into a log file, a new line every 5 seconds.
        if not self.quiet and now - self.last_print >= (0.5 if self.tty else 5.0):
            self.last_print, step, sps = now, row["global_step"], row["SPS"]
            eta = (self.total - step) / max(sps, 1)
            ret = f"{np.mean(self.recent):8.1f}" if self.recent else "     n/a"
            print(f"step {step:>10,} ({100 * step / self.total:3.0f}%) | {sps:7,.0f} SPS | "
                  f"return {ret} (last {len(self.recent)} ep) | ETA {eta:5.0f}s", end="\r" if self.tty else "\n",
                  flush=True)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.tb:
            self.tb.close()


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file, then rename it over `path`: a crash mid-write never leaves a half file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, agent: Agent, optimizer, args: Args, global_step: int, iteration: int,
                    wall_time: float, spaces: tuple[gym.Space, gym.Space]) -> None:
    # A plain dict of tensors and Python values: `torch.load(path)` reads it without this file's help.
    checkpoint = dict(
        agent=agent.state_dict(), optimizer=optimizer.state_dict(), args=dataclasses.asdict(args),
        global_step=global_step, iteration=iteration, wall_time=wall_time,
        observation_space=str(spaces[0]), action_space=str(spaces[1]),
        rng=dict(torch=torch.get_rng_state(), numpy=_numpy_rng_state(), python=random.getstate()),
    )
    atomic_write(path, lambda p: torch.save(checkpoint, p))


def _numpy_rng_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), pos, has_gauss, cached                 # plain Python values: loads with weights_only


def load_checkpoint(path: str | Path, flag: str = "--resume") -> dict:
    if not Path(path).is_file():
        raise UsageError(f"{flag} {path}: no such file; give the path of a run's checkpoint.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu")
        args_from_checkpoint(checkpoint)                            # its arguments must still make an Args
        return checkpoint
    except Exception as e:
        raise UsageError(f"{flag} {path}: not a readable ppo.py checkpoint ({type(e).__name__}); "
                         "give a checkpoint.pt written by ppo.py")


def args_from_checkpoint(checkpoint: dict) -> Args:
    saved = dict(checkpoint["args"])
    saved["hidden_sizes"] = tuple(saved["hidden_sizes"])
    return Args(**saved)


def new_run_dir(path: Path) -> Path:
    """Create `path`, or `path-1`, `path-2`, ... if two runs start in the same second with the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
        try:
            (candidate := path.with_name(path.name + suffix)).mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UsageError(f"--runs-dir {path.parent}: could not create a new run directory for {path.name}")


class GracefulStop:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the run to stop at the end of the current step; the run then saves
    a checkpoint and returns. A second one raises KeyboardInterrupt at once."""

    def __init__(self):
        self.signum: int | None = None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
              "(send it again to quit at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():   # Python allows handlers only there
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def check_args(args: Args) -> None:
    """Catch impossible settings before any environment step, with the flag and what would be valid."""
    def require(ok: bool, flag: str, value, problem: str) -> None:
        if not ok:
            raise UsageError(f"--{flag}{f' {value}' if value != '' else ''}: {problem}")

    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps", "save_every",
                 "eval_episodes", "torch_threads"):
        value = getattr(args, name)
        require(value > 0, name.replace("_", "-"), value, "must be a positive integer")
    require(all(h > 0 for h in args.hidden_sizes) and len(args.hidden_sizes) > 0, "hidden-sizes",
            " ".join(map(str, args.hidden_sizes)), "must be one or more positive layer sizes, e.g. 64 64")
    require(args.batch_size % args.num_minibatches == 0, "num-minibatches", args.num_minibatches,
            f"must divide the batch of num-envs * num-steps = {args.batch_size} transitions; "
            f"valid: {', '.join(str(d) for d in range(1, min(args.batch_size, 64) + 1) if args.batch_size % d == 0)}")
    if args.evaluate is None:
        require(args.total_timesteps >= args.batch_size, "total-timesteps", args.total_timesteps,
                f"smaller than one batch of num-envs * num-steps = {args.batch_size}; use at least that")
    for name in ("gamma", "gae_lambda"):
        value = getattr(args, name)
        low_ok = value > 0 if name == "gamma" else value >= 0            # lambda = 0 is the one-step TD advantage
        require(low_ok and value <= 1, name.replace("_", "-"), value,
                f"must be in {'(0' if name == 'gamma' else '[0'}, 1]; typical: gamma 0.99, lambda 0.95")
    require(args.clip_coef > 0, "clip-coef", args.clip_coef, "must be > 0; typical 0.1 to 0.3")
    require(args.learning_rate > 0, "learning-rate", args.learning_rate, "must be > 0; typical 1e-4 to 3e-3")
    require(args.max_grad_norm > 0, "max-grad-norm", args.max_grad_norm, "must be > 0; typical 0.5")
    for name in ("ent_coef", "vf_coef"):
        value = getattr(args, name)
        require(value >= 0, name.replace("_", "-"), value, "must be >= 0")
    require(args.preset is None or args.preset in PRESETS, "preset", args.preset,
            f"no such preset; valid: {', '.join(PRESETS)}")
    require(args.target_kl is None or args.target_kl > 0, "target-kl", args.target_kl, "must be > 0, e.g. 0.015")
    require(not args.cuda or torch.cuda.is_available(), "cuda", "", "no CUDA GPU is visible to torch; "
            "drop --cuda to train on the CPU (for these small networks the CPU is as fast)")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (gymnasium's RecordVideo writes the mp4 files with it)
        except ImportError:
            require(False, "capture-video", "", "needs the optional package moviepy; pip install moviepy")


# ======================================================================================================================
# Training: the loop that ties it all together. collect experience -> compute advantages -> clipped update -> repeat.
# ======================================================================================================================
def train(args: Args) -> dict:
    """Train an agent; returns {"agent", "run_dir", "checkpoint", "episode_returns", "episode_steps", ...}.

    Raises UsageError for bad arguments (before anything is created) and NonFiniteError if training diverges."""
    check_args(args)
    probe = make_env(args.env_id)
    spaces = (probe.observation_space, probe.action_space)
    probe.close()
    check_spaces(*spaces, args.env_id)
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        if checkpoint["args"]["env_id"] != args.env_id:
            raise UsageError(f"--resume {args.resume}: the checkpoint was trained on {checkpoint['args']['env_id']}, "
                             f"not {args.env_id}; resume it without --env-id or start a new run")
        if (checkpoint["observation_space"], checkpoint["action_space"]) != tuple(map(str, spaces)):
            raise UsageError(f"--resume {args.resume}: the checkpoint's spaces ({checkpoint['observation_space']}, "
                             f"{checkpoint['action_space']}) differ from this env's; start a new run")

    torch.set_num_threads(args.torch_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if args.cuda else "cpu")
    agent = build_agent(args, *spaces).to(device)
    # eps=1e-5 instead of Adam's 1e-8, as in the original PPO code (implementation details, detail 3).
    # fused=True does the same arithmetic in one kernel instead of a dozen small ops per parameter tensor.
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    global_step, iteration, wall_offset = 0, 0, 0.0
    if checkpoint is not None:
        try:
            agent.load_state_dict(checkpoint["agent"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError) as e:
            raise UsageError(f"--resume {args.resume}: the saved agent does not fit this agent's shape "
                             f"({str(e).splitlines()[0]}); resume without changing --hidden-sizes")
        global_step, iteration, wall_offset = (checkpoint[k] for k in ("global_step", "iteration", "wall_time"))
        torch.set_rng_state(checkpoint["rng"]["torch"])
        name, keys, *rest = checkpoint["rng"]["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        random.setstate(checkpoint["rng"]["python"])
        run_dir = Path(args.resume).parent
    else:
        safe_env_id = re.sub(r"[^\w.-]", "_", args.env_id)           # "ale_py:ALE/Pong-v5" -> a folder name
        run_dir = new_run_dir(Path(args.runs_dir) / f"{safe_env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")

    envs = make_vector_env(args, run_dir)
    log = RunLog(run_dir, args, resume_step=global_step if checkpoint else None)
    try:
        with GracefulStop() as stop:
            return _train_loop(args, envs, agent, optimizer, log, stop, run_dir, spaces, device,
                               global_step, iteration, wall_offset)
    finally:
        log.close()
        envs.close()


def _train_loop(args, envs, agent, optimizer, log, stop, run_dir, spaces, device, global_step, iteration,
                wall_offset) -> dict:
    T, N = args.num_steps, args.num_envs
    # Rollout buffers, allocated once and overwritten every iteration. They are numpy arrays: the env speaks numpy,
    # and writing into numpy costs far less per step than a torch indexing op.
    obs_buf = np.zeros((T, N, *spaces[0].shape), dtype=np.float32)                  # (T, N, *obs_shape), raw
    actions = np.zeros((T, N, *spaces[1].shape), dtype=spaces[1].dtype)             # (T, N, *action_shape)
    logprobs = np.zeros((T, N), dtype=np.float32)                                   # (T, N) log pi_old(a|s)
    rewards = np.zeros((T, N), dtype=np.float32)                                    # (T, N) raw, then scaled
    discounted = np.zeros((T, N), dtype=np.float32)                                 # (T, N) return so far
    values = np.zeros((T, N), dtype=np.float32)                                     # (T, N) V(s_t)
    terminations = np.zeros((T, N), dtype=np.float32)                               # (T, N) 1 = episode failed/won
    truncations = np.zeros((T, N), dtype=np.float32)                                # (T, N) 1 = time limit hit
    final_values = np.zeros((T, N), dtype=np.float32)                               # (T, N) V(final state) if truncated

    episode_return, episode_length = np.zeros(N), np.zeros(N, dtype=np.int64)        # raw reward, for the logs
    discounted_return = np.zeros(N)                                                 # for reward normalization
    episode_returns, episode_steps = [], []
    # On resume the envs restart with a seed derived from the step, so the resumed run does not replay old episodes.
    next_obs, _ = envs.reset(seed=args.seed + global_step)
    checkpoint_path = run_dir / "checkpoint.pt"
    print(f"run directory: {run_dir}" + (f" (resuming at step {global_step:,})" if global_step else ""), flush=True)
    start_time = time.time() - wall_offset
    start_step = global_step

    loss_fn = torch.compile(ppo_loss) if args.compile else ppo_loss

    def save():
        save_checkpoint(checkpoint_path, agent, optimizer, args, global_step, iteration,
                        time.time() - start_time, spaces)

    while iteration < args.num_iterations and stop.signum is None:
        # Learning-rate annealing: decay linearly from learning_rate to 0 over the run.
        lr = args.learning_rate * (1.0 - global_step / args.total_timesteps) if args.anneal_lr else args.learning_rate
        optimizer.param_groups[0]["lr"] = lr
        pending_episodes = []          # logged once the iteration completes, so an interrupted one leaves no rows

        # --- 1. Collect experience: the current policy acts in N envs for T steps. ---------------------------------
        # Each step: the agent sees the state of every env, samples an action from its policy's probabilities
        # (sampling, not always taking the best-looking action, is how it keeps exploring), and each env answers
        # with a reward and the next state. We record everything the update will need.
        with torch.inference_mode():                                # no autograd bookkeeping while acting
            for t in range(T):
                obs_buf[t] = next_obs
                x = agent.normalize(torch.as_tensor(next_obs, dtype=torch.float32, device=device))
                action, logprob, value = agent.act(x)                   # one call: sample, log pi(a|s), V(s)
                actions[t] = action.cpu().numpy()
                logprobs[t], values[t] = logprob.cpu().numpy(), value.cpu().numpy()

                next_obs, reward, terminated, truncated, infos = envs.step(actions[t])
                global_step += N
                if not (np.isfinite(next_obs).all() and np.isfinite(reward).all()):
                    raise NonFiniteError(f"env {args.env_id} returned a non-finite observation or reward at global "
                                         f"step {global_step}; check the environment's step()")
                done = terminated | truncated
                episode_return += reward
                episode_length += 1
                for i in np.flatnonzero(done):
                    pending_episodes.append((global_step, time.time() - start_time, float(episode_return[i]),
                                             int(episode_length[i])))
                episode_return[done], episode_length[done] = 0.0, 0

                rewards[t], terminations[t], truncations[t] = reward, terminated, truncated
                discounted_return = discounted_return * args.gamma + reward
                discounted[t] = discounted_return                       # its spread scales rewards (--norm-reward)
                discounted_return[done] = 0.0

                if truncated.any():
                    # Bootstrap a time-limit cut with the value of the episode's real final state (see compute_gae).
                    idx = np.flatnonzero(truncated)
                    final_obs = torch.as_tensor(np.stack(infos["final_obs"][idx]), dtype=torch.float32, device=device)
                    final_values[t, idx] = agent.value(agent.normalize(final_obs)).cpu().numpy()
                if stop.signum is not None:
                    break
        if stop.signum is not None:
            global_step -= (t + 1) * N                              # this iteration is dropped: resume redoes it
            break

        # Close the rollout: V(state after the last step) and the batch's observations are computed with the
        # normalization the policy acted with. Only then do the statistics take in this rollout (once per rollout,
        # not per step), ready for the next one.
        with torch.inference_mode():
            next_value = agent.value(agent.normalize(torch.as_tensor(next_obs, dtype=torch.float32, device=device)))
        raw_obs = torch.from_numpy(obs_buf.reshape(T * N, *spaces[0].shape)).to(device)  # (B, *obs_shape)
        b_obs = agent.normalize(raw_obs)                                                # (B, obs_dim)
        if args.norm_obs:
            agent.obs_rms.update(raw_obs)
        if args.norm_reward:
            # Divide rewards by the running std of the discounted return, so the critic's targets stay near 1
            # whatever the reward scale (as CleanRL and SB3 do; the mean is not subtracted).
            agent.reward_rms.update(torch.from_numpy(discounted.reshape(-1)))
            rewards[:] = (rewards / agent.reward_rms.std().item()).clip(-NORM_CLIP, NORM_CLIP)

        # --- 2. Compute advantages with GAE. -----------------------------------------------------------------------
        next_values = np.concatenate([values[1:], next_value.cpu().numpy()[None]])   # (T, N) V(s_{t+1})
        next_values = np.where(truncations == 1, final_values, next_values)
        advantages, returns = compute_gae(rewards, values, next_values, terminations, truncations,
                                          args.gamma, args.gae_lambda)

        # --- 3. The clipped update, on the rollout flattened to B = T * N transitions. -----------------------------
        batch = {k: torch.from_numpy(v.reshape(T * N, *v.shape[2:])).to(device) for k, v in dict(
            actions=actions, logprobs=logprobs, advantages=advantages, returns=returns, values=values).items()}
        batch["obs"] = b_obs
        diagnostics = ppo_update(agent, optimizer, batch, args, loss_fn)
        iteration += 1

        if not all(map(math.isfinite, diagnostics.values())) or not all(
                torch.isfinite(p).all() for p in agent.parameters()):
            raise NonFiniteError(
                f"iteration {iteration}: the loss, gradients or parameters became NaN/inf ({diagnostics}). "
                f"Likely causes: a learning rate too high, unnormalized large rewards or observations "
                f"(try --norm-obs --norm-reward), or an env returning extreme values. "
                f"The last good checkpoint is {run_dir / 'checkpoint.pt'} (if one was written)")

        # --- 4. Log, checkpoint, and go round again. ---------------------------------------------------------------
        # Explained variance: 1 = the critic predicts the returns perfectly, 0 = no better than their mean.
        var_returns = np.var(returns)
        explained_var = float("nan") if var_returns == 0 else float(1 - np.var(returns - values) / var_returns)
        wall_time = time.time() - start_time
        for row in pending_episodes:
            log.episode(*row)
            episode_steps.append(row[0])
            episode_returns.append(row[2])
        log.update(dict(global_step=global_step, wall_time=round(wall_time, 3),
                        SPS=int((global_step - start_step) / max(wall_time - wall_offset, 1e-9)),
                        learning_rate=lr, explained_variance=explained_var, **diagnostics))
        if iteration % args.save_every == 0:
            save()

    save()
    if log.tty and not args.quiet:
        print()                                                     # end the redrawn progress line
    wall_time = time.time() - start_time
    recent = f"{np.mean(log.recent):.1f}" if log.recent else "n/a"
    print(f"{'stopped' if stop.signum else 'done'}: {global_step:,} steps in {wall_time:.1f}s, mean return of the "
          f"last {len(log.recent)} episodes {recent}; run directory {run_dir}", flush=True)
    return dict(agent=agent, run_dir=run_dir, checkpoint=checkpoint_path, global_step=global_step,
                wall_time=wall_time, episode_returns=episode_returns, episode_steps=episode_steps,
                stopped_by=signal.Signals(stop.signum).name if stop.signum else None)


# ======================================================================================================================
# Evaluation: play a saved agent with its normalization statistics frozen.
# ======================================================================================================================
def load_agent(path: str | Path) -> tuple[Agent, Args]:
    """Rebuild the agent saved in a checkpoint.pt: `agent, args = load_agent(path)`."""
    checkpoint = load_checkpoint(path, flag="--evaluate")
    args = args_from_checkpoint(checkpoint)
    env = make_env(args.env_id)
    agent = build_agent(args, env.observation_space, env.action_space)
    env.close()
    agent.load_state_dict(checkpoint["agent"])
    return agent.eval(), args


def evaluate(path: str | Path, episodes: int = 10, deterministic: bool = True, seed: int = 0,
             video_dir: Path | None = None) -> list[float]:
    agent, args = load_agent(path)
    env = make_env(args.env_id, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda e: True, disable_logger=True)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            with torch.inference_mode():
                x = agent.normalize(torch.as_tensor(obs[None], dtype=torch.float32))
                action = agent.act(x, deterministic=deterministic)[0][0].numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


# ======================================================================================================================
# Command line: `python ppo.py --env-id CartPole-v1`. Everything above can also be imported and called.
# ======================================================================================================================
def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_args(argv: list[str]) -> Args:
    """Parse flags on top of the defaults for the chosen env (or the resumed run), so --help shows real values."""
    import tyro

    if _flag_value(argv, "--resume") or _flag_value(argv, "--evaluate"):
        flag = "--resume" if _flag_value(argv, "--resume") else "--evaluate"
        if _flag_value(argv, "--preset"):
            raise UsageError(f"--preset: {flag} uses the settings saved in the checkpoint; drop --preset")
        default = args_from_checkpoint(load_checkpoint(_flag_value(argv, flag), flag))
    else:
        default = default_args(_flag_value(argv, "--env-id") or Args.env_id, _flag_value(argv, "--preset"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return tyro.cli(Args, args=argv, default=default, description=__doc__.split("\n\n")[0])
    except SystemExit as e:
        if e.code in (0, None):
            raise
        # tyro draws its error as a titled box split by rules; keep the message and any suggestion, on one line.
        sections = [[]]
        for raw in err.getvalue().splitlines()[1:]:                 # line 0 holds the title
            line = raw.strip().strip("│|").strip()
            if line and set(line) <= set("─-╰╯+ "):                  # a rule or the bottom edge
                sections.append([])
            elif line:
                sections[-1].append(line)
        sections = [s for s in sections if s] or [["could not parse the flags"]]
        message = " ".join(sections[0]).removeprefix("Error parsing ")
        hints = [s[1].split()[0] for s in sections if s[:1] == ["Perhaps you meant:"] and len(s) > 1]
        raise UsageError(f"{message}{'; did you mean ' + hints[0] if hints else ''}; see --help")


def main(argv: list[str]) -> int:
    # `--env-id my_envs:MyEnv-v0` imports my_envs: look for it in the current folder too, as `python -m` would.
    sys.path.insert(1, os.getcwd())
    try:
        args = parse_args(argv)
        if args.evaluate:
            check_args(args)
            returns = evaluate(args.evaluate, args.eval_episodes, not args.eval_stochastic, args.seed,
                               Path(args.evaluate).parent / "videos-eval" if args.capture_video else None)
            print(f"{args.env_id}: mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over {len(returns)} "
                  f"{'stochastic' if args.eval_stochastic else 'deterministic'} episodes", flush=True)
            return 0
        result = train(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except gym.error.DependencyNotInstalled as e:
        print(f"error: a missing optional package: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted twice: quit at once; files written so far are intact", file=sys.stderr)
        return 130
    if result["stopped_by"]:
        print(f"checkpoint saved; resume with:\n    python ppo.py --resume {result['checkpoint']}", flush=True)
        return 128 + signal.Signals[result["stopped_by"]].value
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
