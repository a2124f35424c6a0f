"""ppo.py: Proximal Policy Optimization (PPO) in one file, written to be read from top to bottom.

PPO trains an *agent* that acts in an *environment*. At every step the agent sees the *state* (an observation),
picks an *action*, and the environment answers with the next state and a *reward*. The agent's *policy* is a
neural network that turns a state into action probabilities; PPO improves it by repeating one loop:

    1. collect experience: run the current policy in many environments at once for a few steps;
    2. compute advantages: how much better each action did than expected (GAE);
    3. clipped update: push up the probability of good actions, but never too far from the old policy;
    4. entropy bonus: inside that update, reward some randomness so the agent keeps exploring;
    5. repeat with the improved policy.

Run it:
    pip install -r requirements.txt
    python ppo.py --env-id CartPole-v1                     # discrete actions: solves in seconds
    python ppo.py --env-id HalfCheetah-v5                  # continuous actions: MuJoCo defaults
    python ppo.py --env-id CartPole-v1 --help              # every flag, with the values that will be used
    python ppo.py --evaluate runs/<run>/checkpoint.pt      # score a saved agent

Three parts. Part I, PPO, is the chapter to read, for vector observations and every action space: Args ->
Environments -> Normalization -> The agent -> The rollout -> Advantages (GAE) -> The clipped update -> train(), the
five steps above. Part II, beyond vectors: other observations, legal actions, memory, several processes, each entering
Part I through one named call that changes nothing when its feature is off. Part III, running it for real: run
directory, logs, checkpoints, Ctrl-C, checks, defaults, evaluation, command line. To use it, copy it; edit Part I.

To change the loss or add a logged term: ppo_loss, whose docstring has the recipe. The network: Agent, whose
docstring is the contract the rest relies on. The advantages: compute_gae, called from gae() in train. The env:
register yours with gymnasium, then train(default_args("MyEnv-v0")).

What it leaves out on purpose: hyperparameter search. README.md has more on running it; `notes/`, on each idea."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys

if __name__ == "__main__":   # Ctrl-C while torch loads (a second or two) or before training starts: one line, exit 130
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(print("interrupted: quit before training started",
                                                                      file=sys.stderr) or 130))
from dataclasses import dataclass
from typing import Callable, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence, register_kl

# ######################################################################################################################
#
#                                                   PART I: PPO
#
# ######################################################################################################################


# ======================================================================================================================
# Hyperparameters, named as in CleanRL's ppo.py: tyro makes each field a flag (`num_envs` -> `--num-envs`), its
# docstring the `--help` text (Part III adds the flags for running a run). AUTO: the env's value, from this table,
# filled in before training by env_defaults (Part III); a row that applies overrides those above (blank: as above):
#              total_    num_ num_  learning_ num_        update_ norm_ clip_ clip_ ent_ vf_  log_std_ hidden_
#              timesteps envs steps rate      minibatches epochs  adv   coef  vloss coef coef init     sizes
#  every env   500k      16   64    2.5e-3    4           4       on    0.2   off   0    0.5  0        64 64
#  continuous  1M        8    256   3e-4      32          10      off                    0.25 -0.5
#  images      10M       8    128   2.5e-4    4           4       on    0.1   on    0.01 0.5  0        none
#  norm_obs, norm_reward: on for real-valued vector observations (CartPole's, MuJoCo's), else off
#  --recurrent, not images: learning_rate 1e-3, num_minibatches 4; with discrete actions, num_steps 128 too
# ======================================================================================================================
@dataclass
class Args:
    AUTO = None   # not a field (no type): the marker, as Args.AUTO
    # --- the experiment ---
    env_id: str = "CartPole-v1"
    """gymnasium environment id, e.g. CartPole-v1, HalfCheetah-v5, ALE/Breakout-v5 (Atari).
    `module:EnvId-v0` imports your own module first (it must register the id)"""
    seed: int = 1
    """seed for torch, numpy, random and the environments; the same seed on the CPU gives the same run.
    Under torchrun, process r draws from seed + r, so the processes collect different episodes"""
    total_timesteps: int = AUTO
    """environment steps to train for (500k; continuous 1M; images 10M), summed over all parallel envs.
    Under torchrun, over all processes too. Rounded down to whole iterations of num_envs * num_steps"""

    # --- the environments ---
    num_envs: int = AUTO
    """parallel environments (N) in each process (16; continuous and images 8): more varied batches, cheaper steps.
    Under torchrun each of the K processes runs N of its own, so one update learns from K * N * T transitions"""
    async_envs: bool = False
    """run each environment in its own process (AsyncVectorEnv). Pays off only when one env step is slow"""
    num_steps: int = AUTO
    """steps in each env per rollout (T: 64; discrete --recurrent 128; continuous 256; images 128); T * N per update"""
    norm_obs: bool = AUTO
    """normalize observations with running mean and std, kept in the agent (on for real-valued vectors, else off)"""
    norm_reward: bool = AUTO
    """scale rewards by the running std of the discounted return (on for real-valued vectors, else off)"""

    # --- the agent ---
    hidden_sizes: tuple[int, ...] = AUTO
    """hidden layer sizes of the actor and the critic (64 64); images: layers on the CNN's 512 features (none)"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the hidden layers' nonlinearity"""
    log_std_init: float = AUTO
    """continuous actions: the Gaussian policy's starting log std (-0.5 = std 0.6; 0 = std 1; -2 = std 0.14)"""
    ortho_init: bool = True
    """orthogonal initial weights, with a tiny last policy layer (see layer_init); off = PyTorch's default init"""

    # --- the PPO update ---
    learning_rate: float = AUTO
    """Adam step size (2.5e-3; continuous 3e-4; images 2.5e-4; --recurrent, not images, 1e-3); too high collapses"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run; steadies the end of training"""
    gamma: float = 0.99
    """discount factor: how much a reward one step later is worth (0.99 ~ a horizon of 100 steps). 0.9 to 0.999"""
    gae_lambda: float = 0.95
    """GAE lambda: 0 = one-step TD advantage (low variance, biased), 1 = Monte Carlo return (unbiased, noisy)"""
    num_minibatches: int = AUTO
    """minibatches per epoch (4; continuous 32; --recurrent 4); must divide N * T (--recurrent: its sequences)"""
    update_epochs: int = AUTO
    """passes over the same rollout per update (4; continuous 10). More squeezes more from each sample, but drifts"""
    norm_adv: bool = AUTO
    """normalize advantages to mean 0 and std 1 within each minibatch (on; continuous off: rewards are scaled)"""
    recompute_adv: bool = False
    """recompute advantages and value targets before every epoch, with the critic as the last epoch left it"""
    clip_coef: float = AUTO
    """the PPO clip range epsilon: the new/old probability ratio is kept within [1 - eps, 1 + eps] (0.2; images 0.1)"""
    clip_vloss: bool = AUTO
    """also clip the value update to +-clip_coef around the old prediction (CleanRL, the original PPO code).
    It acts in return units, so with unnormalized rewards it holds the critic back: off (images: on)"""
    ent_coef: float = AUTO
    """weight of the entropy bonus, which rewards uncertainty and so keeps the agent exploring (0; images 0.01).
    0.01 helps tasks where exploration is hard, but slows the last steps to a precise policy (CartPole)"""
    vf_coef: float = AUTO
    """weight of the value loss in the total loss (0.5; continuous 0.25)"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this; guards against the occasional huge gradient"""
    target_kl: float | None = None
    """stop this update's epochs early once the approximate KL to the old policy exceeds this (e.g. 0.015)"""

    @property
    def batch_size(self) -> int:
        """transitions per update collected by one process: B = T * N (under torchrun, each of the K collects B)"""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches


# ======================================================================================================================
# Environments. N copies of the environment step together ("vectorized"): the policy acts on a batch of N states at
# once, which is far cheaper than N separate calls, and N independent episodes make each batch less correlated.
# ======================================================================================================================
def make_env(env_id: str, render_mode: str | None = None, frame_stack: int = 1) -> gym.Env:
    """One environment, with observations made fit for the agent's network and actions kept inside the bounds."""
    env = adapted_env(env_id, render_mode, frame_stack)   # Part II: gym.make, then what is not a vector made one
    if isinstance(env.action_space, gym.spaces.Box):
        # A Gaussian policy can sample outside the bounds. The env gets the clipped action; the rollout keeps the
        # unclipped sample, because that is the action whose log-probability the policy computed.
        env = gym.wrappers.ClipAction(env)
    return env


def make_vector_env(args: Args, run: Run | None = None) -> gym.vector.VectorEnv:
    """N copies of make_env(args.env_id) stepping together, in one process or each in its own (--async-envs). Given
    the run (Part III), they are its envs: it may film env 0, and watches each step (logs, stops, non-finite values)."""
    # args.frame_stack is a Part III flag, --frame-stack K (1: off): the last K observations side by side (Part II).
    env_fns = [lambda: make_env(args.env_id, frame_stack=args.frame_stack) for i in range(args.num_envs)]
    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    # Autoreset mode SAME_STEP: when an episode ends, step() resets that env at once and returns the new episode's
    # first state, with the old episode's last in infos["final_obs"]: every step in the rollout is a real transition
    # whose action the policy chose. (NEXT_STEP, the default, adds a step per episode whose action is ignored.)
    envs = vector_env(run.env_fns(env_fns) if run else env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = run.watch(envs) if run else envs
    return learning_signals(envs, args.env_id)    # Part II: Atari's reward sign and lost lives; others unchanged


# ======================================================================================================================
# Normalization, all of it in one place. Networks learn best from inputs near mean 0 and std 1, and the critic from
# targets near 1 whatever the reward scale (MuJoCo returns reach thousands). The statistics live in the agent (saved
# with it) and take in new data once per rollout, so the policy that collected it and the update see one scaling.
# ======================================================================================================================
NORM_CLIP = 10.0  # normalized observations and rewards are clipped to +-10, as in CleanRL and SB3's VecNormalize


class RunningMeanStd(nn.Module):
    """Running mean and variance of a stream of batches (Chan et al.'s parallel algorithm). Its statistics are
    buffers, so they are saved and loaded with the agent that holds them."""
    def __init__(self, shape: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, x: torch.Tensor) -> None:                     # x: (batch, *shape)
        x = x.double()
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        batch_mean, batch_var, n = processes.pool(batch_mean, batch_var, n)   # Part II: every process's batch
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + 1e-8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:          # (x - mean) / std, clipped; float32 out
        return ((x - self.mean) / self.std()).clamp(-NORM_CLIP, NORM_CLIP).float()


class RewardScaler:
    """--norm-reward: divide rewards by the running std of the *discounted return*, so the critic's targets stay
    near 1 whatever the reward scale (as CleanRL and SB3 do; no mean is subtracted, so rewards keep their sign).
    observe() follows each env's discounted return; scale(), once per rollout, updates the std and divides rewards."""

    def __init__(self, rms: RunningMeanStd, gamma: float, num_envs: int, enabled: bool = True):
        self.rms, self.gamma, self.enabled = rms, gamma, enabled
        self.running = np.zeros(num_envs)           # (N,) discounted return of each env's episode so far
        self.seen: list[np.ndarray] = []            # this rollout's running returns, one (N,) array per step

    def observe(self, reward: np.ndarray, done: np.ndarray) -> None:
        if self.enabled:
            self.running = self.running * self.gamma + reward
            self.seen.append(self.running.astype(np.float32))
            self.running[done] = 0.0                # a new episode starts from nothing

    def scale(self, rewards: np.ndarray) -> np.ndarray:           # (T, N) raw -> (T, N) scaled
        if not self.enabled:
            return rewards
        self.rms.update(torch.from_numpy(np.stack(self.seen).reshape(-1)))
        self.seen.clear()
        return (rewards / self.rms.std().item()).clip(-NORM_CLIP, NORM_CLIP)


# ======================================================================================================================
# The agent: a policy network (the "actor") that outputs a probability distribution over actions, and a value
# network (the "critic") that predicts the discounted return from a state. The critic is only used for training:
# it is the baseline that turns returns into advantages.
# ======================================================================================================================
def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    # Orthogonal weights keep activations at a steady scale through the layers (Huang et al. 2022, detail 2). A small
    # std for the policy's last layer starts it near uniform (discrete actions), or with means near 0 (Box actions).
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
    """The actor-critic. Its whole contract, for every action space (with nn.Module's methods, all the file uses):

        agent(obs)              -> (pi, value)    pi = pi(.|s), a torch Distribution over B states; value (B,)
        agent.act(obs)          -> (action, logprob): a ~ pi(.|s) and log pi(a|s) (B,), all that acting needs
        agent.distribution(obs) -> pi;   agent.value(obs) -> V(s), (B,)
        agent.obs_rms, agent.reward_rms: the normalization statistics; agent.core: the memory (Part II; --recurrent);
        agent.nvec: how many choices each discrete sub-action has (None for Box actions)

    obs is a batch of *raw* observations, (B, *obs_shape), as the env returns them; the agent normalizes them
    itself (--norm-obs) and encodes them, so every caller passes what the env gave. action is (B,) for Discrete,
    (B, K) for MultiDiscrete with K sub-actions, (B, action_dim) for Box. pi.log_prob(action) and pi.entropy() are
    (B,), summed over an action's parts, so the rollout and the update never ask which kind of action space it is.
    Part II: calls also take `mask`, the legal actions (None: all), and `mem`, a GRU's memory (None: zeros)."""

    def __init__(self, obs_space: gym.spaces.Box, action_space: gym.Space, hidden_sizes=(64, 64),
                 norm_obs: bool = False, activation: str = "tanh", log_std_init: float = 0.0, ortho_init: bool = True,
                 memory_size: int = 0):
        super().__init__()
        # The encoder turns an observation into the features both heads read. A vector is only flattened (no weights),
        # so the actor and critic stay two MLPs, which do not pull one set of weights two ways. Part II: other inputs.
        self.encoder, n_features = encoder_for(obs_space)
        self.core, n_features = memory.core(n_features, memory_size)    # Part II: a GRU with --recurrent
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
        self.actor = mlp([n_features, *hidden_sizes, n_out], out_std=0.01, activation=activation, ortho_init=ortho_init)
        self.critic = mlp([n_features, *hidden_sizes, 1], out_std=1.0, activation=activation, ortho_init=ortho_init)
        self.norm_obs = norm_obs
        self.obs_rms = RunningMeanStd(tuple(obs_space.shape))     # observation statistics (--norm-obs)
        self.reward_rms = RunningMeanStd()      # statistics of the discounted return, used by RewardScaler

    def normalize(self, obs: torch.Tensor, mem=None) -> torch.Tensor:
        """(B, *obs_shape) raw observations -> (B, n_features), what the policy and value heads read. The statistics
        are not changed here: training updates them once per rollout, so within one rollout the policy always sees
        the same scaling."""
        obs = obs.to(torch.float32)
        if self.norm_obs:
            obs = self.obs_rms.normalize(obs)
        return self.core(self.encoder(obs), mem)

    def policy(self, x: torch.Tensor, mask=None) -> Distribution:
        """pi(a|s) from the features x (B, n_features): Gaussian, Categorical, or one Categorical per part."""
        out = LegalActions.mask(self.actor(x), mask)                 # (B, n_out); Part II: illegal actions out
        if self.nvec is None:                                        # Box: independent Gaussians per dimension
            return DiagonalGaussian(out, self.actor_logstd.exp().expand_as(out))
        if not self.multi:                                           # Discrete: softmax over n logits
            return Categorical(out)
        # MultiDiscrete: one Categorical per sub-action, padded to the widest with logits of -inf (probability 0).
        widest = max(self.nvec)
        logits = torch.stack([nn.functional.pad(chunk, (0, widest - n), value=-torch.inf)
                              for chunk, n in zip(out.split(self.nvec, dim=-1), self.nvec)], dim=1)  # (B, K, widest)
        return Independent(Categorical(logits), 1)

    def forward(self, obs: torch.Tensor, mask=None, mem=None) -> tuple[Distribution, torch.Tensor]:
        x = self.normalize(obs, mem)                                 # one encoding feeds both heads
        return self.policy(x, mask), self.critic(x).squeeze(-1)

    def act(self, obs: torch.Tensor, mask=None, deterministic: bool = False, mem=None):
        """One call per env step: sample a ~ pi(.|s) (or take the most likely action), and log pi(a|s). Sampling,
        rather than always taking the best-looking action, is how the agent keeps exploring."""
        dist = self.distribution(obs, mask, mem)
        action = dist.mode if deterministic else dist.sample()
        return action, dist.log_prob(action)

    def distribution(self, obs: torch.Tensor, mask=None, mem=None) -> Distribution:
        return self.policy(self.normalize(obs, mem), mask)

    def value(self, obs: torch.Tensor, mem=None) -> torch.Tensor:   # (B, *obs_shape) -> (B,)
        return self.critic(self.normalize(obs, mem)).squeeze(-1)


# ======================================================================================================================
# The rollout: T steps of the current policy in each of N environments (T = num_steps, N = num_envs). Everything the
# update will need is recorded as the agent acts. Arrays are (T, N, ...) while we collect; the update flattens them
# into one batch of B = T * N transitions (names `b_...`), cut into minibatches of B / num_minibatches (`mb_...`).
# ======================================================================================================================
@dataclass
class Rollout:
    """What one rollout holds: numpy arrays, made once and overwritten each iteration (a numpy write is cheap)."""
    obs: np.ndarray              # (T, N, *obs_shape)     s_t, raw, as the env returned it
    actions: np.ndarray          # (T, N, *action_shape)  a_t, sampled from pi_old(.|s_t)
    logprobs: np.ndarray         # (T, N)  log pi_old(a_t|s_t): the denominator of the ratio in the update
    values: np.ndarray           # (T, N)  V(s_t), the critic's prediction before the update (critic_values)
    rewards: np.ndarray          # (T, N)  r_t, raw
    terminations: np.ndarray     # (T, N)  1 = the episode ended at this step (the pole fell, the goal was reached)
    truncations: np.ndarray      # (T, N)  1 = a time limit cut the episode off at this step
    final_values: np.ndarray     # (T, N)  where truncated: V(the episode's last state); else 0
    final_obs: dict              # {(t, n): the last state of env n's episode cut off at step t}
    next_obs: np.ndarray         # (N, *obs_shape) the states after the last step: the next rollout starts here
    legal: LegalActions          # Part II: the actions legal in each s_t, where the env says (else it keeps nothing)
    memory: memory.Store         # Part II: a recurrent policy's state at each s_t (else it keeps nothing)

    @classmethod
    def start(cls, T: int, obs_space: gym.Space, action_space: gym.Space, first: tuple, core=None) -> Rollout:
        """An empty rollout of T steps; first = (s_0 of the N envs, the reset's infos), from the run's reset."""
        next_obs, infos = first
        N = len(next_obs)
        per_step = ("logprobs", "values", "rewards", "terminations", "truncations", "final_values")   # (T, N) each
        # Integer observations are kept as they come (uint8 frames: a quarter of float32's memory), others as float32.
        obs_dtype = np.float32 if np.issubdtype(obs_space.dtype, np.floating) else obs_space.dtype
        return cls(obs=np.zeros((T, N, *obs_space.shape), dtype=obs_dtype),
                   actions=np.zeros((T, N, *action_space.shape), dtype=action_space.dtype),
                   **{name: np.zeros((T, N), dtype=np.float32) for name in per_step}, final_obs={}, next_obs=next_obs,
                   legal=LegalActions(T, action_space, infos), memory=memory.Store(T, N, core))

    def flatten(self, advantages: np.ndarray, returns: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """The update's batch: each (T, N, ...) array becomes a (B, ...) tensor, the `b_` of every name."""
        T, N = self.rewards.shape
        arrays = dict(obs=self.obs, actions=self.actions, logprobs=self.logprobs, advantages=advantages,
                      returns=returns, values=self.values, **self.legal.stored(), **self.memory.stored())
        return {k: torch.from_numpy(v.reshape(T * N, *v.shape[2:])).to(device) for k, v in arrays.items()}


def collect_rollout(envs: gym.vector.VectorEnv, agent: Agent, rollout: Rollout, reward_scaler: RewardScaler) -> None:
    """Step 1, collect experience: the current policy acts in N envs for T steps, filling `rollout` in place.
    (The run watches the envs: it logs the episodes that end, and may stop the loop between two steps.)"""
    T, N = rollout.rewards.shape
    device = next(agent.parameters()).device
    rollout.final_obs.clear()
    with torch.inference_mode():                                   # no autograd bookkeeping while acting
        for t in range(T):
            rollout.obs[t] = rollout.next_obs
            # The agent sees the state of every env, and samples an action from its policy's probabilities.
            obs = torch.as_tensor(rollout.next_obs, device=device)
            action, logprob = agent.act(obs, rollout.legal.next, mem=rollout.memory.at_step(t))
            rollout.actions[t], rollout.logprobs[t] = action.cpu().numpy(), logprob.cpu().numpy()

            # Each env answers with a reward and its next state.
            rollout.next_obs, reward, terminated, truncated, infos = envs.step(rollout.actions[t])
            rollout.rewards[t], rollout.terminations[t], rollout.truncations[t] = reward, terminated, truncated
            rollout.legal.step(t, infos)
            rollout.memory.step(t, terminated | truncated)
            reward_scaler.observe(reward, terminated | truncated)
            # A time limit cut these episodes: keep their real last states, to bootstrap from (see GAE below).
            rollout.final_obs.update({(t, n): np.array(infos["final_obs"][n]) for n in np.flatnonzero(truncated)})


# ======================================================================================================================
# Advantages. The agent wants the most total reward, but a reward now is worth more than the same reward later:
# the discount factor gamma (~0.99) weighs a reward k steps ahead by gamma^k, so the critic's value V(s) predicts
# the discounted sum of future rewards. The advantage A(s, a) says how much better action a turned out than the
# policy's average behaviour in state s. Generalized Advantage Estimation (Schulman et al. 2016, eq. 16) blends the
# one-step TD errors
#     delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
# into  A_t = delta_t + (gamma * lambda) * A_{t+1}, computed backwards from the end of the rollout.
# ======================================================================================================================
def next_state_values(agent: Agent, rollout: Rollout, values: np.ndarray, final_values: np.ndarray) -> np.ndarray:
    """V(s_{t+1}) for every step, (T, N), given values = V(s_t): the next step's V(s_t); after the last step,
    V(rollout.next_obs); and where a time limit cut an episode, final_values = V(that episode's *final* state), not
    V(the first state of the next episode, which the env has already reset to)."""
    with torch.inference_mode():
        device = next(agent.parameters()).device
        last = agent.value(torch.as_tensor(rollout.next_obs, device=device), rollout.memory.peek()).cpu().numpy()
    next_values = np.concatenate([values[1:], last[None]])                                   # (T, N)
    return np.where(rollout.truncations == 1, final_values, next_values)


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminations: np.ndarray,
                truncations: np.ndarray, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns, all arrays (T, N); next_values from next_state_values above."""
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
    return advantages, advantages + values       # A = G - V, so G = A + V: the lambda-return the critic learns


def critic_values(agent: Agent, rollout: Rollout) -> tuple[np.ndarray, np.ndarray]:
    """(V(s_t), V(final state) where truncated, else 0), (T, N) each: the critic on a whole rollout in one batch.
    Again before each epoch under --recompute-adv: the critic improves as it learns (Andrychowicz et al. 2021)."""
    T, N = rollout.values.shape
    final_values = np.zeros((T, N), dtype=np.float32)
    with torch.inference_mode():
        device = next(agent.parameters()).device
        obs = torch.from_numpy(rollout.obs.reshape(T * N, *rollout.obs.shape[2:])).to(device)
        values = agent.value(obs, rollout.memory.every_step(device)).reshape(T, N).cpu().numpy()   # Part II: memory
        if rollout.final_obs:
            where, final_obs = zip(*rollout.final_obs.items())                  # (t, n) of each, and the states
            final_obs = torch.as_tensor(np.stack(final_obs), device=device)
            final_values[tuple(zip(*where))] = agent.value(final_obs, rollout.memory.after_step(where, device)
                                                           ).cpu().numpy()
    return values, final_values


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


def ppo_loss(agent: Agent, mb: dict[str, torch.Tensor], args: Args,
             terms: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO loss on one minibatch `mb`: (loss to minimize, its named parts for the logs). To add a term: compute
    it, add `coef * term` to `loss`, and put it in the returned dict; the update averages and logs whatever this dict
    holds. A loss of your own can call this one with `terms={}`: it comes back holding dist (pi_new), new_values,
    logratio and advantages, with their gradients, from this same forward pass."""
    # pi_new sees the legal actions pi_old saw (Part II; the batch holds them only where the env gives them).
    dist, new_values = agent(mb["obs"], mb.get("action_masks"), memory.replay(mb, args))   # Part II: memory
    logratio = dist.log_prob(mb["actions"]) - mb["logprobs"]       # log pi_new(a|s) - log pi_old(a|s)
    advantages = mb["advantages"]
    # Normalized to mean 0, std 1 within the minibatch: the step size no longer depends on the reward scale.
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    if terms is not None:
        terms.update(dist=dist, new_values=new_values, logratio=logratio, advantages=advantages)
    pg_loss = clipped_policy_loss(logratio, advantages, args.clip_coef)
    v_loss = value_loss(new_values, mb["values"], mb["returns"], args.clip_coef if args.clip_vloss else None)
    # Entropy bonus: subtracting the policy's entropy rewards keeping some randomness, so the agent keeps trying
    # actions it is unsure of (exploration) instead of settling early on what it already knows (exploitation).
    entropy = dist.entropy().mean()
    loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
    # How far has the policy moved? approx_kl estimates KL(old || new) by the mean of (ratio - 1) - log(ratio),
    # which is never negative (Schulman, "Approximating KL divergence"); clipfrac is the share of samples whose
    # ratio fell outside the clip range.
    logratio = logratio.detach()
    approx_kl = ((logratio.exp() - 1) - logratio).mean()
    clipfrac = ((logratio.exp() - 1).abs() > args.clip_coef).float().mean()
    return loss, dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy, approx_kl=approx_kl, clipfrac=clipfrac)


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], args: Args,
               loss_fn=ppo_loss, recompute: Callable[[], dict] | None = None) -> dict[str, float]:
    """Steps 3 and 4: several epochs of minibatch gradient steps on one rollout, `batch` (each tensor (B, ...)).
    Returns the mean of every part loss_fn reports, and the gradient norm, over the last epoch's minibatches.
    recompute(), if given, returns the batch with fresh advantages and returns before every epoch after the first."""
    params = list(agent.parameters())    # listed once: agent.parameters() walks every module each time it is called
    for epoch in range(args.update_epochs):
        if epoch > 0 and recompute is not None:
            batch = recompute()
        parts = []                       # kept per minibatch as tensors; summarized once per epoch (fewer syncs)
        # Shuffle the B transitions (Part II: --recurrent shuffles whole sequences); each minibatch is a slice of it.
        order = torch.cat(memory.minibatches(args) or [torch.randperm(args.batch_size)])
        shuffled = {k: b_v[order] for k, b_v in batch.items()}
        for i in range(0, args.batch_size, args.minibatch_size):              # minibatch: shuffled rows i to i + size
            loss, mb_parts = loss_fn(agent, {k: v[i:i + args.minibatch_size] for k, v in shuffled.items()}, args)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            processes.average_gradients(agent)      # Part II: several processes take one step together
            # Rescale the whole gradient if its norm exceeds max_grad_norm: one odd minibatch cannot fling the policy.
            mb_parts["grad_norm"] = nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
            optimizer.step()
            parts.append(torch.stack([v.detach() for v in mb_parts.values()]))
        # parts: one row per minibatch, one column per name in mb_parts (policy_loss, ..., grad_norm); average
        # each column (Part II: over the processes too), and name the means: the epoch's approx_kl, for --target-kl.
        means = processes.mean(torch.stack(parts).mean(0))        # (number of parts,)
        epoch_means = dict(zip(mb_parts, means))                   # name -> its mean, a 0-d tensor
        if args.target_kl is not None and epoch_means["approx_kl"].item() > args.target_kl:
            break                        # early stop: the policy has moved as far as we allow for one update
    return dict(zip(epoch_means, means.tolist()))                 # one sync per update


# ======================================================================================================================
# Training: the loop that ties it all together, the five steps of the module docstring.
# ======================================================================================================================
def build_agent(args: Args, obs_space: gym.Space, action_space: gym.Space) -> Agent:
    """The agent that `args` describes: used by training and, identically, to rebuild a saved one. args.recurrent
    and args.recurrent_size are Part III flags, --recurrent (off) and its GRU's units: a memory (Part II)."""
    return Agent(obs_space, action_space, args.hidden_sizes, args.norm_obs, args.activation, args.log_std_init,
                 args.ortho_init, memory_size=args.recurrent_size if args.recurrent else 0)


def train(args: Args, loss_fn=ppo_loss) -> dict:
    """Train an agent; returns {"agent", "run_dir", "checkpoint", "episode_returns", "episode_steps", ...}.

    Raises UsageError for bad arguments (before anything is created) and NonFiniteError if training diverges.
    `loss_fn(agent, mb, args) -> (loss, parts)` replaces ppo_loss, e.g. to try a new loss term."""
    # Set up (Part III): fill in the AUTO defaults, check the flags and the env, join the other processes if any. `run`
    # holds args (filled in), spaces (the env's observation and action spaces), device, world and rank (alone: 1 and 0).
    run = Run(args)
    args = run.args
    seed = args.seed + run.rank     # each process r its own random streams: actions, minibatches, first weights
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    agent = build_agent(args, *run.spaces).to(run.device)
    # eps=1e-5, not Adam's 1e-8, as the original PPO code (implementation details, detail 3); fused: one kernel.
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    loss_fn = torch.compile(loss_fn) if args.compile else loss_fn  # --compile, a Part III flag: off by default

    # The run owns the run directory, logs, checkpoints and Ctrl-C; with --resume it restores agent and optimizer,
    # and run.global_step, the env steps taken so far by all processes together (else 0).
    with run.start(agent, optimizer), contextlib.closing(make_vector_env(args, run)) as envs:
        # Env n of process r is seeded with seed + r * N + n; a resumed run adds its step, to play new episodes.
        first = run.reset(envs, seed=args.seed + run.global_step + run.rank * args.num_envs)
        rollout = Rollout.start(args.num_steps, *run.spaces, first=first, core=agent.core)
        reward_scaler = RewardScaler(agent.reward_rms, args.gamma, args.num_envs, enabled=args.norm_reward)
        steps_per_iteration = run.world * args.batch_size                  # T * N steps in each of the K processes
        last_step = args.total_timesteps // steps_per_iteration * steps_per_iteration   # the last whole iteration's end
        while run.global_step + steps_per_iteration <= args.total_timesteps and not run.should_stop():  # or Ctrl-C
            # Learning-rate annealing: decay linearly from learning_rate to 0 at the end of the last iteration.
            lr = args.learning_rate * ((1 - run.global_step / last_step) if args.anneal_lr else 1.0)
            optimizer.param_groups[0]["lr"] = lr

            # 1. Collect experience with the current policy; then the critic judges every state met, in one batch.
            collect_rollout(envs, agent, rollout, reward_scaler)
            rollout.values, rollout.final_values = critic_values(agent, rollout)

            # 2. Compute advantages with GAE (on scaled rewards, under --norm-reward).
            rewards = reward_scaler.scale(rollout.rewards)

            def gae(values: np.ndarray, final_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:   # (T, N) each
                return compute_gae(rewards, values, next_state_values(agent, rollout, values, final_values),
                                   rollout.terminations, rollout.truncations, args.gamma, args.gae_lambda)
            advantages, returns = gae(rollout.values, rollout.final_values)

            def recompute() -> dict[str, torch.Tensor]:            # --recompute-adv: step 2 again, with V as it is now
                return rollout.flatten(*gae(*critic_values(agent, rollout)), run.device)

            # 3 and 4. The clipped update, with the entropy bonus inside the loss.
            diagnostics = ppo_update(agent, optimizer, rollout.flatten(advantages, returns, run.device), args,
                                     loss_fn, recompute if args.recompute_adv else None)
            if args.norm_obs:                                      # the statistics take in this rollout, for the next
                agent.obs_rms.update(torch.from_numpy(rollout.obs.reshape(-1, *run.spaces[0].shape)).to(run.device))

            # 5. Repeat, after logging what happened (and saving a checkpoint every --save-every iterations).
            run.end_iteration(lr, diagnostics, rollout.values, returns)    # also logs the critic's explained variance
    return run.result()


class Categorical(torch.distributions.Categorical):
    """pi(.|s) over discrete actions: torch's, with fast paths for the call at every step (notes/performance.md)."""
    def __init__(self, logits: torch.Tensor):
        self.logits = self._param = logits.log_softmax(-1)          # log pi(.|s): the logits, normalized
        self._num_events = logits.shape[-1]
        Distribution.__init__(self, logits.shape[:-1], validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        # The exponential race: action i arrives at E_i / p_i, E_i = -log(uniform) ~ Exp(1); the first to arrive is
        # i with probability exactly p_i, and an illegal action (p_i = 0) never arrives. Faster than multinomial.
        probs = self.probs.expand(*sample_shape, *self.probs.shape)
        return (probs / -torch.rand_like(probs).clamp_min(torch.finfo(probs.dtype).tiny).log()).argmax(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:      # one gather; other shapes: torch's, which expands
        return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1) if action.shape == self.batch_shape \
            else super().log_prob(action)


class DiagonalGaussian(Normal):
    """pi(.|s) over Box actions, a Normal per dimension: torch's Independent(Normal(mean, std), 1), bit for bit."""
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):                  # (B, action_dim) each
        self.loc, self.scale = mean, std
        Distribution.__init__(self, mean.shape[:-1], mean.shape[-1:], validate_args=False)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return super().log_prob(action).sum(-1)

    def entropy(self) -> torch.Tensor:
        return super().entropy().sum(-1)


@register_kl(DiagonalGaussian, DiagonalGaussian)      # without this, torch would use Normal's KL, one per dimension
def kl_diagonal_gaussians(p: DiagonalGaussian, q: DiagonalGaussian) -> torch.Tensor:    # summed, as Independent's
    return kl_divergence(Normal(p.loc, p.scale), Normal(q.loc, q.scale)).sum(-1)

# Part I ends here, with all of PPO. Part II adds other inputs and processes, each through one call; Part III runs it.


# ######################################################################################################################
#
#                                           PART II: BEYOND VECTORS
#
# ######################################################################################################################
# Part I is PPO for vector observations. What other kinds of env need enters it through these calls, each one line
# where Part I makes it, and each changing nothing when its feature is off:
#
#   adapted_env(env_id, ...)          in make_env: gym.make, then Atari's frames, images channels first, a Dict
#                                     observation's action mask moved to the info, Discrete states one-hot, Dict/Tuple
#                                     flattened, --frame-stack. A Box vector passes unchanged.
#   encoder_for(obs_space)            in Agent: the Nature CNN for images. A vector is only flattened.
#   learning_signals(envs, env_id)    in make_vector_env: Atari's reward sign and lost lives, for the update only.
#                                     Other envs pass unchanged.
#   LegalActions                      in the rollout and the policy: where the env says which actions are legal,
#                                     the policy chooses among those only. Without a mask it stores nothing and
#                                     LegalActions.mask returns the logits unchanged.
#   memory.core/Store/replay/minibatches   in Agent, the rollout, ppo_loss and ppo_update: with --recurrent, a GRU
#                                     between the encoder and the heads, its state carried through the rollout, and
#                                     minibatches of sequences. Without it: no core, nothing stored, and
#                                     minibatches() returns None, so ppo_update shuffles single transitions.
#   processes.average_gradients/mean/pool   in the update and the normalization: K processes under torchrun train
#                                     one agent. In one process each returns its input.
#
# Parts II and III import what they use here, so that Part I's imports are all that Part I needs.
import dataclasses
import csv
import difflib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import numbers
import os
import re
import shlex
import threading
import time
import traceback
import types
import typing
import warnings
from collections import deque
from pathlib import Path

import torch.distributed as dist


# ======================================================================================================================
# Images and Atari. An image observation gets a CNN; an Atari game also gets the standard preprocessing and the
# learning signals of the Nature DQN, so that scores compare with CleanRL's and the SB3 zoo's.
# ======================================================================================================================
def is_image(space: gym.Space) -> bool:
    """A 3-D Box of uint8 is an image: (channels, height, width) once make_env is done. The agent gives it a CNN."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def is_atari(env_id: str) -> bool:
    """An Arcade Learning Environment game (ALE/Breakout-v5, BreakoutNoFrameskip-v4). gymnasium 1.x knows these ids
    only once ale_py is imported, so this imports it, or says in one line how to install it."""
    name = env_id.split(":")[-1]
    if name.startswith("ALE/") or "NoFrameskip" in name:
        try:
            import ale_py
            import cv2  # noqa: F401  (AtariPreprocessing resizes the frames with it)
        except ImportError:
            raise UsageError(f"--env-id {env_id}: Atari needs the optional packages ale-py and opencv; "
                             'pip install "gymnasium[atari]" opencv-python-headless') from None
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)     # no emulator banner on stderr
        gym.register_envs(ale_py)
    spec = gym.registry.get(name)
    return spec is not None and str(spec.entry_point).startswith("ale_py")


def adapted_env(env_id: str, render_mode: str | None = None, frame_stack: int = 1) -> gym.Env:
    """The seam in make_env: gym.make (Part III's gym_make, with its one-line errors), then observations made fit for
    the agent's network. A Box vector passes unchanged, unless --frame-stack K > 1 puts the last K side by side."""
    env = kept_to_the_api(gym_make(env_id, render_mode), env_id)
    if is_atari(env_id):
        # The Nature DQN's preprocessing (Mnih et al. 2015), with gymnasium's own wrappers: act on every 4th frame
        # (the action repeats in between; the last two frames are max-pooled, because Atari sprites flicker), grey
        # 84x84 frames, 0 to 30 no-op actions at reset so that no two games start alike, and the last 4 frames
        # stacked, so that one observation shows which way the ball moves. The result is a (4, 84, 84) uint8 image.
        # No FIRE at reset (CleanRL's FireResetEnv): Breakout waits for FIRE to serve the ball, but FIRE is one of
        # its 4 actions, so even the first random policy serves within a few steps, and the agent learns it as a
        # part of the game rather than being handed game-specific knowledge (Machado et al. 2018). A lost life is
        # handled in learning_signals, where it can end the training episode without ending the game.
        # (gym_make made the emulator step one frame at a time, frameskip=1: AtariPreprocessing skips frames.)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
        env = gym.wrappers.FrameStackObservation(env, 4)
    elif is_image(env.observation_space) and np.argmin(env.observation_space.shape) == 2:
        # Most envs give images channels-last, (height, width, channels), e.g. CarRacing-v3's 96x96x3; torch's Conv2d
        # wants channels first. The channels are taken to be the smallest axis (as in SB3); check_spaces refuses an
        # image whose smallest axis is the middle one.
        space = env.observation_space
        env = gym.wrappers.TransformObservation(env, lambda o: o.transpose(2, 0, 1), gym.spaces.Box(
            space.low.transpose(2, 0, 1), space.high.transpose(2, 0, 1), dtype=np.uint8))
    if isinstance(env.observation_space, gym.spaces.Dict) and "action_mask" in env.observation_space.spaces:
        env = ActionMaskToInfo(env)                 # which actions are legal is for the policy, not the network's input
    if isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.shape == ():
        env = gym.wrappers.ReshapeObservation(env, (1,))      # one number: a vector of one, for the network
    if isinstance(env.observation_space, gym.spaces.Discrete):
        # A Discrete state (FrozenLake, Taxi) is a category, not a quantity: feed the network a one-hot vector.
        n, start = int(env.observation_space.n), int(env.observation_space.start)   # states start..start + n - 1
        env = gym.wrappers.TransformObservation(
            env, lambda s: np.eye(n, dtype=np.float32)[s - start], gym.spaces.Box(0.0, 1.0, (n,), np.float32))
    elif not isinstance(env.observation_space, gym.spaces.Box) and flattenable(env.observation_space):
        # A structured state, such as Blackjack's (player's sum, dealer's card, usable ace) or a goal-conditioned
        # env's {observation, desired_goal}, becomes one vector: the parts end to end, each Discrete part one-hot.
        env = gym.wrappers.FlattenObservation(env)
    if frame_stack > 1 and is_image(env.observation_space):
        # Images: the last K frames' channels stacked, (K * C, H, W), so the CNN still sees one image (as Atari's 4).
        channels, height, width = env.observation_space.shape
        env = gym.wrappers.ReshapeObservation(gym.wrappers.FrameStackObservation(env, frame_stack),
                                              (frame_stack * channels, height, width))
    elif frame_stack > 1:
        # The cheapest memory: the last K observations side by side, one vector (the first state repeated at a reset).
        env = gym.wrappers.FlattenObservation(gym.wrappers.FrameStackObservation(env, frame_stack))
    return adapted_actions(env)


def flattenable(space: gym.Space) -> bool:
    """Whether FlattenObservation can turn this observation into an MLP's input: Discrete, MultiDiscrete,
    MultiBinary and 1-D Box parts, inside any Dict or Tuple. A Box of 2 or more dimensions (an image) is not:
    flattened, its pixels would lose their neighbours, and a CNN is not what this file builds."""
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        parts = space.spaces.values() if isinstance(space, gym.spaces.Dict) else space.spaces
        return all(flattenable(part) for part in parts)
    return isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)) or (
        isinstance(space, gym.spaces.Box) and len(space.shape) <= 1)


def adapted_actions(env: gym.Env) -> gym.Env:
    """Actions as the policy gives them: Discrete and MultiDiscrete counted from 0 in one row, MultiBinary as
    MultiDiscrete choices of 2, and a Box as a float32 vector. The env still gets its own: the start added back, the
    shape and dtype restored (an integer or bool Box's sample rounded), inside its bounds. The rollout keeps the
    policy's float32 sample, the action whose log-probability it computed. Other spaces pass unchanged."""
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete) and space.start != 0:
        return gym.wrappers.TransformAction(env, lambda a: space.start + a, gym.spaces.Discrete(space.n))
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)) and (
            isinstance(space, gym.spaces.MultiBinary) or np.any(space.start != 0) or len(space.shape) != 1):
        nvec, start = (np.full(space.shape, 2), 0) if isinstance(space, gym.spaces.MultiBinary) else (space.nvec,
                                                                                                        space.start)
        return gym.wrappers.TransformAction(env, lambda a: (start + np.reshape(a, space.shape)).astype(space.dtype),
                                            gym.spaces.MultiDiscrete(nvec.reshape(-1)))
    if isinstance(space, gym.spaces.Box) and np.prod(space.shape) and (space.dtype != np.float32 or space.shape[1:]
                                                                     or not space.shape):
        low, high = space.low.astype(np.float64).reshape(-1), space.high.astype(np.float64).reshape(-1)
        whole = space.dtype.kind in "biu"                        # integers or bools: the sample is rounded
        if space.dtype.kind in "iu":                             # and kept where the dtype can hold it
            low = np.maximum(low, np.nextafter(float(np.iinfo(space.dtype).min), np.inf))
            high = np.minimum(high, np.nextafter(float(np.iinfo(space.dtype).max), -np.inf))

        def to_env(a: np.ndarray) -> np.ndarray:
            a = np.clip(np.asarray(a, np.float64), low, high)
            return (np.rint(a) if whole else a).reshape(space.shape).astype(space.dtype)
        with np.errstate(over="ignore"):                         # float64 bounds past float32's become infinite
            return gym.wrappers.TransformAction(env, to_env, gym.spaces.Box(low.astype(np.float32),
                                                                            high.astype(np.float32)))
    return env


class EnvContractError(RuntimeError):
    """An env broke gymnasium's API (found by kept_to_the_api). Before a run it is a UsageError; during one, an error
    that names the step."""


def kept_to_the_api(env: gym.Env, env_id: str) -> gym.Env:
    """env with every reset and step of the env itself checked against gymnasium's API and its own observation space,
    so that a broken env is named in one line rather than failing deep inside the vector env. The check goes
    innermost, under gym.make's own wrappers, which fail on an old-API env before anything outside could look."""
    inner = env
    while isinstance(getattr(inner, "env", None), gym.Wrapper):
        inner = inner.env
    if isinstance(inner, gym.Wrapper):
        inner.env = KeptToTheAPI(inner.env, env_id)
        return env
    return KeptToTheAPI(env, env_id)


FLOAT32_MAX = float(np.finfo(np.float32).max)      # the network's largest number


class KeptToTheAPI(gym.Wrapper):
    """reset gives (obs, info), step (obs, reward, terminated, truncated, info); info is a dict, the reward a number,
    and obs fits the observation space (see misfit). About 2 microseconds a step where all is as the space says."""
    OLD = " (gym's old API); gymnasium's reset returns (obs, info) and step (obs, reward, terminated, truncated, info)"

    def __init__(self, env: gym.Env, env_id: str):
        super().__init__(env)
        self.env_id, space = env_id, env.observation_space
        # The usual case, an array of the Box's own shape and dtype (a float64 one within float32's range: MuJoCo's),
        # is seen at once; anything else goes through misfit.
        self.usual = (space.shape, space.dtype) if isinstance(space, gym.spaces.Box) else None
        self.wide = self.usual is not None and space.dtype == np.float64

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            self._broke(f"reset() returned {self._length(result)}, not (obs, info)" + self.OLD)
        self._check("reset()", result[0], result[1])
        return result

    def step(self, action):
        result = self.env.step(action)
        if not (isinstance(result, tuple) and len(result) == 5):
            self._broke(f"step() returned {self._length(result)}" + self.OLD)
        obs, reward, _, _, info = result
        if not isinstance(reward, (float, int)) and (np.ndim(reward) or np.asarray(reward).dtype.kind not in "biuf"):
            self._broke(f"step() returned the reward {reward!r:.40}, not a number")
        self._check("step()", obs, info)
        return result

    def _check(self, call: str, obs, info) -> None:
        if not isinstance(info, dict):
            self._broke(f"{call} returned an info of type {type(info).__name__}, not a dict")
        if type(obs) is np.ndarray and (obs.shape, obs.dtype) == self.usual and (
                not self.wide or np.abs(obs).max(initial=0.0) <= FLOAT32_MAX):        # (NaN: on to misfit)
            return
        problem = misfit(self.env.observation_space, obs)
        if problem:
            self._broke(f"{call} returned an observation that does not fit its observation space "
                        f"{one_line(self.env.observation_space)}: {problem}")

    @staticmethod
    def _length(result) -> str:
        return f"{len(result)} values" if isinstance(result, tuple) else f"one {type(result).__name__}"

    def _broke(self, problem: str):
        raise EnvContractError(f"env {self.env_id}: {problem}")


def misfit(space: gym.Space, x) -> str | None:
    """Why x cannot be an observation of `space`, or None if it can: a Box, MultiDiscrete or MultiBinary wants its
    shape and a dtype that its own can hold (a Box's bounds are not checked: many envs stray past them a little); a
    Discrete, MultiDiscrete or MultiBinary values inside it; float64 values within float32's range (the network's);
    a Dict or Tuple each part so. Other spaces are refused before a run."""
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else list(range(len(space.spaces)))
        if not (isinstance(x, dict) and set(x) == set(keys) if isinstance(space, gym.spaces.Dict) else
                isinstance(x, (tuple, list)) and len(x) == len(keys)):
            return f"a {type(x).__name__} where its parts {keys} were due"
        return next((f"its part {k!r}: {why}" for k in keys if (why := misfit(space[k], x[k]))), None)
    if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return None
    a = np.asarray(x)
    if a.shape != space.shape or not np.can_cast(a.dtype, space.dtype, "same_kind"):
        return f"shape {a.shape} and dtype {a.dtype}, where it holds shape {space.shape} and dtype {space.dtype}"
    if not isinstance(space, gym.spaces.Box) and not space.contains(x if a.dtype == space.dtype else a.astype(
            space.dtype)):
        return f"{a.tolist()!r:.40} is outside it"
    if a.dtype.kind == "f" and a.dtype.itemsize > 4 and (np.isfinite(a) & (np.abs(a) > FLOAT32_MAX)).any():
        return "values beyond float32's range, the network's precision"
    return None


class NatureCNN(nn.Sequential):
    """The Nature CNN (Mnih et al. 2015) for (C, H, W) uint8 images: (B, C, H, W) -> (B, 512) features. Pixels are
    scaled to [0, 1] first (they travel as uint8, a quarter of float32's memory, until here). Three convolutions find
    edges, then objects, then their arrangement; a linear layer mixes them into 512 numbers. For Atari's (4, 84, 84)
    frames the convolutions leave 64 maps of 7x7."""

    def __init__(self, obs_shape: tuple[int, int, int]):
        convs = [
            layer_init(nn.Conv2d(obs_shape[0], 32, kernel_size=8, stride=4)), nn.ReLU(),  # (B, 32, 20, 20) for 84x84
            layer_init(nn.Conv2d(32, 64, kernel_size=4, stride=2)), nn.ReLU(),            # (B, 64, 9, 9)
            layer_init(nn.Conv2d(64, 64, kernel_size=3, stride=1)), nn.ReLU(),            # (B, 64, 7, 7)
            nn.Flatten()]                                                                  # (B, 3136)
        with torch.no_grad():
            n_flat = nn.Sequential(*convs)(torch.zeros(1, *obs_shape)).shape[1]   # one dry run measures any H, W
        super().__init__(*convs, layer_init(nn.Linear(n_flat, 512)), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return super().forward(obs / 255.0)                               # pixels 0..255 -> [0, 1]


def encoder_for(obs_space: gym.Space) -> tuple[nn.Module, int]:
    """The seam in Agent: (encoder, number of features it gives). An image gets the Nature CNN, one network shared
    by the policy and the value heads, as in CleanRL and SB3: the convolutions are most of the cost, so sharing them
    halves it, and what the CNN learns to see serves both. A vector is only flattened."""
    if is_image(obs_space):
        return NatureCNN(obs_space.shape), 512
    return nn.Flatten(), int(np.prod(obs_space.shape))


def learning_signals(envs: gym.vector.VectorEnv, env_id: str) -> gym.vector.VectorEnv:
    """The seam in make_vector_env: Atari's learning signals, wrapped outside the run's episode statistics (which
    keep whole games and raw scores). Every other env passes unchanged."""
    return AtariLearningSignals(envs) if is_atari(env_id) else envs


class AtariLearningSignals(gym.vector.VectorWrapper):
    """What the *update* sees of an Atari game. It wraps the episode statistics from outside, so episodes.csv still
    logs whole games with their raw scores, as CleanRL and the SB3 zoo report them.

    - Each reward becomes its sign, -1, 0 or +1 (Mnih et al. 2015), so that one learning rate and one value scale
      fit every game, from Pong's single points to the hundreds that other games pay. The price: the agent no
      longer tells a small reward from a large one.
    - A lost life ends the *training* episode (terminated: no bootstrap from the state after it, and GAE stops
      there) but not the game, which plays on from that state until the last life is gone. Losing the ball then
      costs value at once, instead of only through the end of the game, four lives later. Machado et al. 2018
      argue against this signal as game-specific knowledge handed to the agent; we keep it because the Nature
      DQN, CleanRL's ppo_atari.py (EpisodicLifeEnv) and the SB3 zoo train with it, so our scores compare with
      theirs like for like. To train as Machado et al. recommend, drop `| lost_life` below."""

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        self.lives = infos["lives"]                                 # (N,) lives left in each game
        return obs, infos

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        lost_life = infos["lives"] < self.lives     # after a game over the new game's count is higher: no loss
        self.lives = infos["lives"]
        return obs, np.sign(rewards), terminated | lost_life, truncated, infos


# ======================================================================================================================
# Action masks. Some envs allow only some actions in some states (a board game's legal moves, Taxi's walls). They
# say which in info["action_mask"] (gymnasium's convention) or in an "action_mask" key of a Dict observation
# (PettingZoo's); the policy then chooses among the legal actions only (--no-action-mask ignores the mask).
# ======================================================================================================================
class ActionMaskToInfo(gym.Wrapper):
    """An "action_mask" key in a Dict observation (PettingZoo's convention) moved to info["action_mask"]
    (gymnasium's, as Taxi gives it): the rest of the file reads the mask from one place, and never as an input."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict(
            {key: part for key, part in env.observation_space.spaces.items() if key != "action_mask"})

    def reset(self, **kwargs):
        return self._move_mask(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._move_mask(obs, info)
        return obs, reward, terminated, truncated, info

    @staticmethod
    def _move_mask(obs: dict, info: dict) -> tuple[dict, dict]:
        obs = dict(obs)
        return obs, {**info, "action_mask": obs.pop("action_mask")}


class LegalActions:
    """The seam in the rollout: the legal actions of every state the policy acts in, kept for the update.
    `next` is the (N, n) bool mask of the states the envs are in now (True = legal; n = the number of actions,
    MultiDiscrete: sum(nvec), the sub-actions' masks end to end), or None where the env gives no mask (or
    --no-action-mask): then nothing is stored and every action stays legal."""

    def __init__(self, T: int, action_space: gym.Space, infos: dict):
        masked = "action_mask" in infos          # the run's reset leaves it out under --no-action-mask
        self.next = infos["action_mask"].astype(bool) if masked else None
        n, N = gym.spaces.flatdim(action_space), len(infos["action_mask"]) if masked else 0
        self.masks = np.ones((T, N, n), dtype=bool) if masked else None   # (T, N, n) the actions legal in s_t

    def step(self, t: int, infos: dict) -> None:
        """After step t: the mask the policy just chose under is kept with s_t, for the update; the new one goes
        with next_obs. Where an episode just ended, SAME_STEP has already reset that env, and gymnasium (1.4, sync
        and async alike) returns the *reset's* info in infos, the ended step's in infos["final_info"]: so, like
        next_obs, infos["action_mask"] belongs to the new episode's first state."""
        if self.masks is not None:
            self.masks[t], self.next = self.next, infos["action_mask"].astype(bool)

    def stored(self) -> dict[str, np.ndarray]:
        """For the update's batch: {"action_masks": (T, N, n)}, or nothing without a mask."""
        return {} if self.masks is None else {"action_masks": self.masks}

    @staticmethod
    def mask(logits: torch.Tensor, mask=None) -> torch.Tensor:
        """Invalid-action masking (Huang and Ontanon 2022): an illegal action's logit becomes the lowest float, so
        the softmax gives it probability 0. Sampling and the most likely action never pick it, it adds 0 to the
        entropy, and as a constant it gets no gradient: the policy learns only among legal actions. (Finite rather
        than -inf: 0 * -inf is NaN, and p * log p is how an entropy or a KL is written.) The update applies the
        mask pi_old acted under: a ratio of pi_new over all actions to pi_old over the legal ones would be below 1
        before any learning, and its gradient would push on actions that could never be chosen."""
        if mask is None:
            return logits
        legal = torch.as_tensor(mask, dtype=torch.bool, device=logits.device)             # (B, n_out)
        return logits.masked_fill(~legal, torch.finfo(logits.dtype).min)

# ======================================================================================================================
# Memory: a recurrent policy, for envs the agent cannot see whole. CartPole without its velocities is such an env:
# one observation gives the pole's angle but not which way it falls; two consecutive ones would. A recurrent policy
# carries a state h from step to step, a summary of what it has seen in this episode, and acts on
# (observation, h). Three things change in PPO, and nothing else:
#   acting:   h_{t+1} = GRU(features(s_t), h_t), and h starts from 0 at every episode's first state;
#   the rollout keeps h_t and "s_t starts an episode" for every step, so the update can rebuild the same h;
#   the update: the ratio pi_new(a|s, h) / pi_old(a|s, h) needs the h each action was chosen under, so minibatches
#             are sets of sequences (--recurrent-seq-len consecutive steps of one env), and the GRU runs over each
#             from the h stored at its first step, resetting at episode starts. With unchanged weights it rebuilds
#             the acting time's h: the ratio is 1 before the first gradient step.
# A GRU rather than an LSTM: one state tensor instead of two to carry, store and reset, and on these tasks the two
# do about as well (Chung et al. 2014). --frame-stack K (adapted_env) is the cheaper memory to try first: the last K
# observations side by side, enough when what matters happened in the last few steps (velocities).
# ======================================================================================================================
class NoMemory:
    """The core without --recurrent: features pass through, and there is no state. A plain object, not a module: it
    holds no weights (a checkpoint's keys are those of an agent without a core) and costs nothing to call."""
    size = 0

    def __call__(self, x: torch.Tensor, mem=None) -> torch.Tensor:
        return x


class GRUCore(nn.Module):
    """The recurrent core between the encoder and the heads: (T * n, n_features) features of n sequences in time
    order (row t * n + i is sequence i at step t) and their memory -> (T * n, size) features that have seen the past.
    mem.state (n, size) is h before the first step, and is left holding h after the last; mem.starts (T * n,) says
    which rows start an episode, where h restarts from 0."""

    def __init__(self, n_features: int, size: int):
        super().__init__()
        self.size, self.gru = size, nn.GRU(n_features, size)
        for name, param in self.gru.named_parameters():           # orthogonal weights, zero biases, as CleanRL's LSTM
            if "weight" in name:
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)
        self.register_load_state_dict_pre_hook(self.rename_gru_cell_weights)

    def forward(self, x: torch.Tensor, mem: MemoryState | None = None) -> torch.Tensor:
        if mem is None:                  # called without a memory (agent(obs) on a saved agent): B episodes' first step
            mem = MemoryState(x.new_zeros(len(x), self.size), x.new_ones(len(x)))
        n = len(mem.state)
        steps = x.view(-1, n, x.shape[-1])                           # (T, n, n_features)
        starts = mem.starts.view(len(steps), n)                      # (T, n): 1.0 where an episode starts
        # nn.GRU runs many steps in one call, but cannot restart h partway through. So cut the T steps where some
        # sequence starts an episode (after step 0): each piece between two cuts is one call, and at the start of a
        # piece h restarts from 0 in the sequences that start an episode there. One piece when acting (T = 1), and
        # in a minibatch with no episode start inside; the same steps, in the same order, as stepping one at a time.
        cuts = [0, *(starts[1:].any(1).nonzero().flatten() + 1).tolist(), len(steps)]
        h, out = mem.state, []
        for a, b in zip(cuts[:-1], cuts[1:]):
            out.append(self.gru(steps[a:b], (h * (1.0 - starts[a, :, None]))[None])[0])    # (b - a, n, size)
            h = out[-1][-1]                                          # h after step b - 1
        mem.state = h
        return torch.cat(out).view(-1, self.size)                    # (T * n, size)

    @staticmethod
    def rename_gru_cell_weights(module, state_dict, prefix, *_) -> None:
        """Checkpoints saved before the core was an nn.GRU (it stepped an nn.GRUCell) hold the same four tensors as
        cell.weight_ih, ...; nn.GRU calls them gru.weight_ih_l0, ...: renamed as they load, they still load."""
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if f"{prefix}cell.{name}" in state_dict:
                state_dict[f"{prefix}gru.{name}_l0"] = state_dict.pop(f"{prefix}cell.{name}")


@dataclass
class MemoryState:
    """What the core reads and writes: state (n, size) before the first step; starts (T * n,) 1.0 at episode starts."""
    state: torch.Tensor
    starts: torch.Tensor


class MemoryStore:
    """The seam in the rollout: the recurrent state while acting, and h_t and the episode starts of every step for the
    update. Without --recurrent (core None or NoMemory) every call returns None or nothing, and nothing is kept."""

    def __init__(self, T: int, N: int, core: nn.Module | None):
        self.size = getattr(core, "size", 0)
        if self.size:
            device = next(core.parameters()).device
            self.now = MemoryState(torch.zeros(N, self.size, device=device), torch.ones(N, device=device))
            self.states = np.zeros((T, N, self.size), np.float32)    # h_t, the state each action was chosen under
            self.starts = np.zeros((T, N), np.float32)               # 1 = s_t is the first state of an episode

    def at_step(self, t: int) -> MemoryState | None:
        """Keep h_t and the starts for step t; act() then advances self.now to h_{t+1}."""
        if not self.size:
            return None
        self.states[t], self.starts[t] = self.now.state.cpu().numpy(), self.now.starts.cpu().numpy()
        return self.now

    def step(self, t: int, done: np.ndarray) -> None:
        """After step t: where an episode ended, the next state starts a new one (SAME_STEP: already reset)."""
        if self.size:
            self.now.starts = torch.as_tensor(done, dtype=torch.float32, device=self.now.state.device)

    def peek(self) -> MemoryState | None:
        """For V(next_obs) after the rollout: the current memory, copied so that reading it advances nothing."""
        return MemoryState(self.now.state.clone(), self.now.starts.clone()) if self.size else None

    def every_step(self, device: torch.device) -> MemoryState | None:
        """For V(s_t) of all T * N steps at once (critic_values): each step's stored h_t and start, as T * N
        sequences of one step. The critic as it is now reads each state with the memory it was acted on: the
        core's last step and the heads are recomputed, the memory before it is the acting time's."""
        if not self.size:
            return None
        return MemoryState(torch.from_numpy(self.states.reshape(-1, self.size)).to(device),
                           torch.from_numpy(self.starts.reshape(-1)).to(device))

    def after_step(self, where: list[tuple[int, int]], device: torch.device) -> MemoryState | None:
        """For V(final state) of the episodes cut off at steps (t, n) (critic_values): the memory their last step
        left, continuing (no start). That is the h stored at step t + 1 (the reset that follows only marks a
        start), or after the rollout's last step, the memory now."""
        if not self.size:
            return None
        now, T = self.now.state.cpu().numpy(), len(self.states)
        h = np.stack([self.states[t + 1, n] if t + 1 < T else now[n] for t, n in where])
        return MemoryState(torch.from_numpy(h).to(device), torch.zeros(len(h), device=device))

    def stored(self) -> dict[str, np.ndarray]:
        """For the update's batch: {"memory_states": (T, N, size), "memory_starts": (T, N)}, or nothing."""
        return dict(memory_states=self.states, memory_starts=self.starts) if self.size else {}


def replay(mb: dict[str, torch.Tensor], args: Args) -> MemoryState | None:
    """The seam in ppo_loss: a minibatch's memory, to run the core over its sequences from the state each began with
    at acting time. minibatches() lays a minibatch out in time order, so its first n rows are its n sequences'
    first steps."""
    if "memory_states" not in mb:
        return None
    n = len(mb["memory_starts"]) // args.recurrent_seq_len         # sequences in this minibatch
    return MemoryState(mb["memory_states"][:n], mb["memory_starts"])


def minibatches(args: Args) -> list[torch.Tensor] | None:
    """The seam in ppo_update: with --recurrent, each epoch's minibatches, as indices into the flattened batch (row
    t * N + n): shuffled sets of sequences, each env's T steps cut into pieces of L = --recurrent-seq-len consecutive
    steps, laid out in time order (row i * n + j is step i of sequence j), so that the core can be re-run over each
    from the state stored at its first step. Without it None: ppo_update shuffles single transitions."""
    if not args.recurrent:
        return None
    T, N, L = args.num_steps, args.num_envs, args.recurrent_seq_len
    sequences = torch.randperm(N * T // L)                          # sequence k: env k % N, steps from (k // N) * L
    return [((((seqs // N) * L)[None, :] + torch.arange(L)[:, None]) * N + (seqs % N)[None, :]).reshape(-1)
            for seqs in sequences.split(len(sequences) // args.num_minibatches)]


def memory_core(n_features: int, size: int) -> tuple[nn.Module | NoMemory, int]:
    """The seam in Agent: (core, number of features it gives): a GRU of `size` units, or with size 0 nothing."""
    return (GRUCore(n_features, size), size) if size else (NoMemory(), n_features)


# What Part I calls, by one name (each looked up when called).
memory = types.SimpleNamespace(core=lambda n_features, size: memory_core(n_features, size),
                               Store=lambda T, N, core: MemoryStore(T, N, core),
                               replay=lambda mb, args: replay(mb, args), minibatches=lambda args: minibatches(args))

# ======================================================================================================================
# Several processes, one agent: `torchrun --nproc-per-node K ppo.py ...` starts K copies of this file, the "ranks"
# 0 to K-1, and tells each its rank and K in environment variables (RANK, WORLD_SIZE, LOCAL_RANK). Every rank steps
# its own envs; these helpers make them one training run: the same starting weights, the mean gradient before every
# step, pooled normalization statistics, one stop decision, and rank 0 writing the run directory. Without torchrun
# none of them sends anything, and a single process runs exactly as if this section were not here.
#
# --num-envs counts per process, as in CleanRL's ppo_atari_multigpu.py: K processes collect K times the transitions
# of one per iteration, in about the time one process takes for its own. Splitting N envs among the K instead would
# refuse the continuous defaults (one env cannot be split), and would barely speed anything up: what a process
# pays per env step is mostly fixed costs, one forward pass of the policy whatever the number of envs, one gradient
# step whatever the minibatch size (notes/performance.md), and halving its envs or its minibatch leaves those.
# Counting per process also keeps the other choices open: K processes with `--num-envs N/K` learn from the same
# batch and minibatch sizes as one process with N envs, and with `--num-minibatches K * M` take as many gradient
# steps per env step as one process with M minibatches (on CartPole it then learns as fast per step).
# ======================================================================================================================
def distributed() -> bool:
    """Is this process one of the ranks of a torch.distributed process group (joined by init_distributed)?"""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of ranks K): from the process group once joined, before that from torchrun's
    environment variables; (0, 1) without torchrun."""
    if distributed():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(args: Args) -> tuple[int, int]:
    """Join torchrun's process group if torchrun started this process; returns (rank, K). The gloo backend sends the
    messages through the CPU; with --cuda, nccl sends them between GPUs, one GPU per process on each machine."""
    if "RANK" in os.environ and not distributed():
        if args.cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if args.cuda else "gloo")
    return rank_and_world()


def close_distributed() -> None:
    if distributed():
        dist.destroy_process_group()


def _on_comm_device(x: torch.Tensor) -> torch.Tensor:
    """nccl only moves tensors that live on this process's GPU; gloo, CPU tensors."""
    return x.to(torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu")


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over all ranks, on every rank (x itself, alone)."""
    if not distributed():
        return x
    total = _on_comm_device(x).clone()                              # all_reduce sums in place
    dist.all_reduce(total)
    return (total / dist.get_world_size()).to(x.device)


def all_reduce_max(value: int) -> int:
    total = _on_comm_device(torch.tensor([value]))
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return int(total.item())


def average_gradients(module: nn.Module) -> None:
    """Replace every rank's gradients by their mean over all ranks, so that every rank takes the same optimizer step
    and the parameters stay identical. All gradients travel flattened into one vector: one message per gradient
    step instead of one per parameter tensor (as CleanRL's ppo_atari_multigpu.py does)."""
    if not distributed():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = all_reduce_mean(torch.cat([g.reshape(-1) for g in grads]))
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view_as(g))


def pool_across_ranks(mean: torch.Tensor, var: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and variance of all ranks' batches together, from each rank's own (mean, var) over n samples, the same n
    on every rank: the mean of the means, and the mean of (variance + squared distance of the mean from the pooled
    mean), the law of total variance."""
    if not distributed():
        return mean, var, n
    pooled_mean = all_reduce_mean(mean)
    return pooled_mean, all_reduce_mean(var + (mean - pooled_mean) ** 2), n * dist.get_world_size()


def broadcast_from_rank0(module: nn.Module) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's."""
    if distributed():
        for tensor in module.state_dict().values():                 # these share storage with the module's own
            dist.broadcast(tensor, src=0)


def broadcast_object(obj):
    """Rank 0's obj (any picklable value), on every rank."""
    if not distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather(obj) -> list:
    """[rank 0's obj, rank 1's obj, ...] on every rank."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# The three calls Part I makes, by one name: `processes.average_gradients(agent)` after every backward pass (every
# process then takes the same step: one update learns from the K processes' minibatches together),
# `processes.mean(x)` for the update's diagnostics (the processes must agree on stopping early at --target-kl, and
# the logs show all of them; each process normalizes advantages within its own minibatch, as large as a lone
# process's, so pooling those would cost a message per minibatch for nothing), and `processes.pool(mean, var, n)` for
# the normalization statistics (each process sees only its own envs: all keep the same statistics).
# (Each looks its function up when called, so that a test or a tool can replace all_reduce_mean and the others.)
processes = types.SimpleNamespace(average_gradients=lambda module: average_gradients(module),
                                  mean=lambda x: all_reduce_mean(x),
                                  pool=lambda mean, var, n: pool_across_ranks(mean, var, n))


# ######################################################################################################################
#
#                                           PART III: RUNNING IT FOR REAL
#
# ######################################################################################################################
class UsageError(ValueError):
    """A mistake in the flags or the inputs: reported as one line, before any training starts."""


class NonFiniteError(RuntimeError):
    """Training produced, or the env returned, a NaN or an infinity."""


class NoLegalActionError(RuntimeError):
    """The env's action mask left no legal action (for some sub-action): there is nothing the policy may choose."""


class QuitNow(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM during training: quit at once."""


class StopRequested(Exception):
    """Raised from inside an env step when Ctrl-C or SIGTERM asked a lone process to stop: the part-filled rollout
    is dropped, and the run ends as if its last iteration had been its last (saved, summarized)."""


# ======================================================================================================================
# Versions: the oldest of each package this file is tested with (.ci/constraints-oldest.txt pins them), and the oldest
# Python its code and those packages allow. Older ones fail far from the cause (gymnasium 1.0 lacks
# gym.vector.AutoresetMode), so they are refused first, in one line. tyro only for the command line: train() skips it.
# ======================================================================================================================
FLOORS = {"python": (3, 10), "torch": (2, 5), "gymnasium": (1, 1), "numpy": (1, 26), "tyro": (0, 9, 1)}


def installed_versions() -> dict[str, str | None]:
    """The running Python's version and each FLOORS package's installed one (None: no package metadata)."""
    versions = {"python": "{}.{}.{}".format(*sys.version_info)}
    for name in FLOORS.keys() - {"python"}:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def version_tuple(version: str) -> tuple[int, ...]:
    """Each part's leading digits: 2.13.0+cpu -> (2, 13, 0), 1.26.0rc1 -> (1, 26, 0). No `packaging` needed."""
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in version.split("+")[0].split("."))


def check_versions(command_line: bool = False) -> None:
    """Refuse a Python or package older than FLOORS, saying what was found and how to upgrade."""
    found = installed_versions()
    for name, floor in FLOORS.items():
        if name == "tyro" and not command_line:
            continue
        need = ".".join(map(str, floor))
        if found[name] is None:      # no metadata: run from a source tree (then it imports), or not installed
            if importlib.util.find_spec(name) is None:
                raise UsageError(f'{name} is not installed; ppo.py needs {need} or newer: pip install "{name}>={need}"')
        elif version_tuple(found[name]) < floor:
            upgrade = "run it with a newer Python" if name == "python" else f'pip install "{name}>={need}"'
            raise UsageError(f"{'Python' if name == 'python' else name} {found[name]} is older than ppo.py needs "
                             f"({need} or newer): {upgrade}")


# ======================================================================================================================
# The flags for running, saving and watching a run: Part I's Args, extended. From here on the name Args means this
# class, so the command line, train() and `Args(env_id=..., runs_dir=...)` have every flag.
# ======================================================================================================================
@dataclass
class RunArgs(Args):
    exp_name: str = "ppo"
    """a name for this experiment; part of the run directory's name"""
    preset: str | None = None
    """named settings for one env, put on top of the defaults (flags still win; notes/results.md scores them):
    mountaincar: MountainCar-v0, --norm-obs --ent-coef 0.01 (scale the tiny velocity, keep exploring)
    halfcheetah-zoo: HalfCheetah, the SB3 zoo's tuned settings (256x256 ReLU, lr 2.1e-5, 20 epochs, clip 0.1).
    From Python, Args(preset=...) fills only AUTO fields (an Args cannot tell gamma=0.99 given from 0.99 left alone).
    So there a preset that sets others (halfcheetah-zoo's gamma) is refused; default_args(env_id, preset=...) takes it.
    Your values win there, as flags do: default_args("HalfCheetah-v5", preset="halfcheetah-zoo", gamma=0.99)"""
    recurrent: bool = False
    """memory: a GRU between the encoder and the heads, for envs the agent cannot see whole in one observation.
    Minibatches become sets of sequences (see --recurrent-seq-len). Slower per step: fewer minibatches help"""
    recurrent_size: int = 128
    """units of the --recurrent GRU (its state's size)"""
    recurrent_seq_len: int = 32
    """with --recurrent: the update re-runs the GRU over sequences of this many steps (it must divide num-steps).
    Each starts from the state it had when acting, so the gradient reaches at most this far back"""
    frame_stack: int = 1
    """feed the agent the last K observations side by side (images: their channels), the cheap memory to try first"""
    action_mask: bool = True
    """where the env says which actions are legal, the policy chooses only among them.
    The env says so in info["action_mask"] or in an "action_mask" key of a Dict observation.
    --no-action-mask ignores the mask, to see the difference"""
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
    """record videos of the first environment to <run_dir>/videos.
    Needs moviepy, and pygame for the envs drawn with it (classic control, toy text): pip install moviepy pygame"""
    runs_dir: str = "runs"
    """folder under which each run gets its own directory"""
    save_every: int = 25
    """write a checkpoint every this many iterations (and always at the end); a crash loses at most that much"""
    resume: str | None = None
    """path to a checkpoint.pt: continue that run in its directory, up to --total-timesteps.
    It restores the agent, optimizer, statistics, step count, learning-rate schedule and random streams, not the envs:
    they start new episodes (seeded with seed + step), so the episodes under way at the stop are not logged"""
    evaluate: str | None = None
    """path to a checkpoint.pt: do not train; play --eval-episodes episodes with it and print the mean return"""
    eval_episodes: int = 10
    """episodes played by --evaluate"""
    eval_stochastic: bool = Args.AUTO
    """with --evaluate: sample actions from the policy instead of taking the most likely (mean) action.
    Image (Atari) agents save this as on: a deterministic policy can stall a game"""
    eval_video_episodes: int = 1
    """with --evaluate --capture-video: film the first this many episodes (-1: all of them).
    Filming is slow on a CPU: a MuJoCo frame takes ~0.1 s off-screen, ~2 minutes per 1000-step episode"""
    tensorboard: bool = Args.AUTO
    """also write TensorBoard event files (on where the optional package is installed: pip install tensorboard)"""
    track: bool = False
    """also log the TensorBoard scalars to Weights & Biases, as CleanRL does: pip install wandb, then wandb login.
    With WANDB_MODE=offline the W&B logs stay in the run directory (wandb sync uploads them later)"""
    wandb_project_name: str = "ppo"
    """the W&B project that --track logs to"""
    wandb_entity: str | None = None
    """the W&B team or user that owns the project; None means your own account"""
    quiet: bool = False
    """no progress line; only the first and last lines of the run"""


Args = RunArgs  # noqa: F811
ARGS_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Args)}   # Args's own defaults (AUTO where env-made)
ARG_TYPES = typing.get_type_hints(Args)          # each field's annotation, for typed_args


# ======================================================================================================================
# The run: its set-up, directory, logs, checkpoints, resume, signals, the NaN guard and the closing summary, in one
# object. train() makes it first (Run(args): the checks and the set-up), then opens it (run.start) around the loop.
# ======================================================================================================================
class Run:
    """One training run on disk: <runs_dir>/<env>__<exp_name>__<seed>__<time>/ holding episodes.csv, updates.csv,
    checkpoint.pt (and TensorBoard files, videos/). With args.resume it reopens that run instead: the agent,
    optimizer, step counters and random generators continue from the checkpoint, and log rows written after it
    are dropped (those steps will be replayed).

    As a context manager it also catches Ctrl-C and SIGTERM: the first one sets `stopping`, the loop ends at the
    next env step, and the run saves a checkpoint; a second one quits at once, unless a checkpoint is being saved:
    then it quits once the save is done.

    Its files survive a kill at any moment (SIGKILL: the OOM killer, a preempted job), in that --resume of the last
    checkpoint continues them with no row missing or twice: the logs reach the OS every iteration and before each
    checkpoint, a checkpoint replaces the last one whole (atomic_write) or not at all, and the resumed run drops
    what the kill cut short (a half last line, a temporary file) with the rows after the checkpoint.

    Under torchrun every rank holds a Run, but only rank 0 writes files and prints: the others send it their
    episodes, and all of them agree on when to stop."""

    def __init__(self, args: Args):
        """Set up: refuse bad flags and unsupported spaces before any work, join torchrun's processes (K processes,
        "ranks" 0 to K-1, train one agent: each steps its own --num-envs envs and they average their gradients; alone
        this is rank 0 of 1). train() then seeds every random stream."""
        check_versions()
        if args.evaluate is not None:                          # (the command line's --evaluate never comes here)
            raise UsageError(f"--evaluate {args.evaluate}: train() trains; to play a checkpoint call evaluate(path)")
        self.args = args = fill_auto(args)                     # Args.AUTO fields get the env's defaults
        check_args(args)
        self.spaces = env_spaces(args.env_id, args.action_mask, args.frame_stack)   # checked
        check_flags_for_spaces(args, *self.spaces)
        self.rank, self.world = init_distributed(args)
        self.caller_threads = torch.get_num_threads()          # given back at the end: train() may be one call of many
        torch.set_num_threads(args.torch_threads)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        self.device = torch.device("cuda" if args.cuda else "cpu")
        self.global_step, self.iteration, self.signum, self.pending = 0, 0, None, []
        self.saving, self.quit_after_save = False, False            # a second signal during a save waits for it

    def start(self, agent: nn.Module, optimizer: torch.optim.Optimizer) -> Run:
        """Open the run around the agent: every rank starts from rank 0's weights; with --resume, the saved agent,
        optimizer and random streams; then the run directory and its logs."""
        args, self.agent, self.optimizer, wall_offset = self.args, agent, optimizer, 0.0
        kept = first_existing(Path(args.runs_dir))               # made before this run (the rest, by it)
        broadcast_from_rank0(agent)
        if args.resume:
            checkpoint = load_checkpoint(args.resume)
            self._check_resumable(checkpoint)
            try:
                agent.load_state_dict(checkpoint["agent"])
                optimizer.load_state_dict(checkpoint["optimizer"])
            except (RuntimeError, ValueError) as e:
                raise UsageError(f"--resume {args.resume}: the saved agent does not fit this agent's shape "
                                 f"({str(e).splitlines()[0]}); resume without changing --hidden-sizes")
            self.global_step, self.iteration, wall_offset = (checkpoint[k] for k in ("global_step", "iteration",
                                                                                     "wall_time"))
            if self.rank == 0:  # the saved random streams are rank 0's; other ranks keep their own (seed + rank)
                restore_rng(checkpoint["rng"])
                if checkpoint["args"]["num_envs"] != args.num_envs:
                    print(f"warning: --num-envs {args.num_envs}: the run was trained with "
                          f"{checkpoint['args']['num_envs']} envs; each update now learns from a different batch",
                          file=sys.stderr)
            self.dir = Path(args.resume).parent
            before = checkpoint["args"]                    # the settings until now: what this resume changes is kept
            self.resumed = [*checkpoint.get("resumed", []), dict(step=self.global_step, changed={
                name: [before.get(name), value] for name, value in dataclasses.asdict(args).items()
                if name != "resume" and before.get(name) != value})]
            if self.rank == 0:
                remove_stray_tmp(self.dir)          # left by a kill during atomic_write; the file it replaced is whole
        else:
            self.resumed = []
            self.dir = broadcast_object(new_run_dir(Path(args.runs_dir) / run_dir_name(args, int(time.time())))
                                        if self.rank == 0 else None)
        self.checkpoint_path = self.dir / "checkpoint.pt"
        resume_step = self.global_step if args.resume else None
        self.episode_log = CsvLog(self.dir / "episodes.csv", resume_step) if self.rank == 0 else None
        self.update_log = CsvLog(self.dir / "updates.csv", resume_step) if self.rank == 0 else None
        # W&B first: if it refuses to start, no file is left
        self.wandb = open_wandb(args, self.dir, kept) if args.track and self.rank == 0 else None
        self.tb = open_tensorboard(self.dir, resume_step) if args.tensorboard and self.rank == 0 else None
        if self.rank == 0:
            self._write_settings()
        self.start_time, self.wall_offset, self.start_step = time.time() - wall_offset, wall_offset, self.global_step
        # Returns of the last 100 episodes; a resumed run starts with those its episodes.csv already holds, and knows
        # whether they reached the solve level.
        self.recent, self.solved, self.solve_level = deque(maxlen=100), None, solve_level(args.env_id)
        for row in self.episode_log.rows if self.episode_log else []:     # rank 0 alone keeps the logs
            self._note_return(float(row["episodic_return"]), row)
        self.episode_returns, self.episode_steps = [], []           # this session's episodes, for the caller
        self.last_print, self.tty = 0.0, sys.stdout.isatty()
        return self

    def _check_resumable(self, checkpoint: dict) -> None:
        args, saved_env, saved = self.args, checkpoint["args"]["env_id"], args_from_checkpoint(checkpoint)
        if saved_env.split(":")[-1] != args.env_id.split(":")[-1]:   # my_envs:GoRight-v0 is GoRight-v0
            raise UsageError(f"--resume {args.resume}: the checkpoint was trained on {saved_env}, not {args.env_id}; "
                             "resume it without --env-id or start a new run")
        path = Path(args.resume)
        # A run directory: args.json is written at its start, episodes.csv once an episode has ended
        if path.name != "checkpoint.pt" or not any((path.parent / name).is_file() for name in ("args.json",
                                                                                               "episodes.csv")):
            raise UsageError(f"--resume {path}: a resumed run continues the logs beside its checkpoint, and this is "
                             "not a run directory's checkpoint.pt; give runs/<run>/checkpoint.pt (copy the whole "
                             "run directory to move a run)")
        for name, why in RESUME_KEEPS.items():
            if getattr(args, name) != getattr(saved, name):
                raise UsageError(f"{flag(name, getattr(args, name))}: --resume continues the run as it was made, with "
                                 f"{flag(name, getattr(saved, name))}, which {why}; drop {flag(name)}, or start a "
                                 "new run without --resume")
        if (checkpoint["observation_space"], checkpoint["action_space"]) != tuple(map(str, self.spaces)):
            raise UsageError(f"--resume {args.resume}: the checkpoint's spaces ({checkpoint['observation_space']}, "
                             f"{checkpoint['action_space']}) differ from this env's; start a new run")
        if checkpoint["global_step"] + self.world * args.batch_size > args.total_timesteps:
            raise UsageError(f"--resume {path}: the run has trained {checkpoint['global_step']:,} steps, and "
                             f"--total-timesteps {args.total_timesteps:,} leaves no whole iteration of "
                             f"{self.world * args.batch_size:,} more; give a larger --total-timesteps to train on")

    # --- the envs: made for the run, watched by it, reset with the seeds train gives ---
    def env_fns(self, env_fns: list[Callable[[], gym.Env]]) -> list[Callable[[], gym.Env]]:
        """For make_vector_env: the run's makers of its N envs, from make_vector_env's. Env 0 films itself under
        --capture-video (rank 0 only). A maker travels to its worker process under --async-envs, so it holds only
        make_vector_env's maker, strings and a number."""
        env_id, frame_stack, trainer = self.args.env_id, self.args.frame_stack, os.getpid()
        video_dir = str(self.dir / "videos") if self.args.capture_video and self.rank == 0 else None

        def maker(i: int, make_one: Callable[[], gym.Env]) -> Callable[[], gym.Env]:
            def make() -> gym.Env:
                # In an env worker process (--async-envs), leave Ctrl-C, and the SIGTERM that torchrun sends to the
                # whole process group, to the trainer, which stops the workers. Only there: AsyncVectorEnv also
                # makes one env in the trainer itself, to read the spaces, and the trainer must keep hearing signals.
                if os.getpid() != trainer:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if video_dir is not None and i == 0:
                    return gym.wrappers.RecordVideo(make_env(env_id, "rgb_array", frame_stack), video_dir)
                return make_one()
            return make
        return [maker(i, make_one) for i, make_one in enumerate(env_fns)]

    def watch(self, envs: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
        return RunMonitor(envs, self)

    def reset(self, envs: gym.vector.VectorEnv, seed: int) -> tuple[np.ndarray, dict]:
        """The first states, from envs.reset(seed=seed) (train gives the seeds). Under --no-action-mask the env's action
        mask is left out, so the rollout keeps none."""
        next_obs, infos = envs.reset(seed=seed)
        if not self.args.action_mask:
            infos = {k: v for k, v in infos.items() if k not in ("action_mask", "_action_mask")}
        elif "action_mask" in infos:
            check_some_action_legal(infos["action_mask"], envs.single_action_space, self.args.env_id, "at the reset")
        return next_obs, infos

    # --- signals: the first Ctrl-C (SIGINT) or SIGTERM asks to stop; a second raises QuitNow at once, or, during a
    # save, as soon as the save is done ---
    @property
    def stopping(self) -> bool:
        return self.signum is not None

    def should_stop(self) -> bool:
        """Alone, stop as soon as a signal came (RunMonitor stops a rollout under way). Under torchrun the ranks must
        stop after the same iteration (a rank that left early would leave the others waiting in the next
        all-reduce), so they ask each other once per iteration, before a rollout, and stop together if any one of
        them got a signal (torchrun forwards Ctrl-C and SIGTERM to all); a rollout under way is finished and
        learned from first."""
        if not distributed():
            return self.stopping
        agreed = all_reduce_max(self.signum or 0)                  # 0: no rank got a signal
        self.signum = self.signum or agreed or None                 # a rank that got none stops for the others'
        return agreed != 0

    def _on_signal(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            if self.rank == 0:
                print(f"\n{signal.Signals(signum).name}: stopping after this "
                      f"{'iteration' if distributed() else 'step'} and saving a checkpoint (send it again to quit at "
                      "once)", file=sys.stderr, flush=True)
        elif not self.saving:
            raise QuitNow(str(self.checkpoint_path))
        elif not self.quit_after_save:
            self.quit_after_save = True
            if self.rank == 0:
                print(f"\n{signal.Signals(signum).name}: quitting once the checkpoint being saved is written",
                      file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def _quit_after(self):
        """A save that a second signal cannot cut short: the signal waits, and quits once the save is done."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False
        if self.quit_after_save:
            raise QuitNow(str(self.checkpoint_path))

    def _write_settings(self) -> None:
        """args.json: the settings, readable beside the logs (and in TensorBoard, as CleanRL). A resumed run keeps
        those it started with, then lists what each resume changed."""
        settings = dataclasses.asdict(self.args)
        for entry in reversed(self.resumed):
            settings.update({name: old for name, (old, new) in entry["changed"].items()}, resume=None)
        settings.update({"resumed": self.resumed} if self.resumed else {})
        atomic_write(self.dir / "args.json", lambda p: p.write_text(json.dumps(settings, indent=2) + "\n"))
        if self.tb:
            self.tb.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
                f"|{k}|{v}|" for k, v in settings.items()))

    def __enter__(self) -> Run:
        self.previous_handlers = {}
        if threading.current_thread() is threading.main_thread():   # Python allows handlers only there
            self.previous_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        notes = [f"resuming at step {self.global_step:,}"] if self.global_step else []
        per_iteration = self.world * self.args.batch_size                # all processes together
        iterations = self.args.total_timesteps // per_iteration
        if iterations * per_iteration != self.args.total_timesteps:   # only whole iterations run: say what that makes
            notes.append(f"trains {iterations * per_iteration:,} steps: {iterations:,} whole iterations of "
                         f"{per_iteration:,}")
        if self.world > 1:
            notes.append(f"{self.world} processes")
        # Empty --hidden-sizes: linear heads. On a vector that is a linear policy, worth a word; on the CNN's or the
        # GRU's features (images, --recurrent) it is the usual design.
        if not self.args.hidden_sizes and not self.args.recurrent and not is_image(self.spaces[0]):
            notes.append("a linear policy and value: --hidden-sizes is empty")
        if self.rank == 0:
            print(f"run directory: {self.dir}" + (f" ({'; '.join(notes)})" if notes else ""), flush=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        torch.set_num_threads(self.caller_threads)
        stopped = exc_type is StopRequested                         # a stop mid-rollout: the rollout is dropped
        # The run is ending: from here a second (or third) signal changes nothing, so that the last save and the
        # logs complete. Our handlers stay until the files are closed (the default SIGTERM would kill us mid-save).
        self.saving = True
        # A finished or stopped run saves; a crashed one keeps its last good save. Under torchrun rank 0 saves for
        # all: every rank holds the same agent and optimizer.
        if (exc_type is None or stopped) and self.rank == 0:
            self.save()
            self._print_summary()
        if exc_type is None and distributed():
            dist.barrier()      # no rank ends before rank 0 has saved: torchrun stops the rest when one process ends
        for log in (self.episode_log, self.update_log):
            if log:
                log.close()
        if self.tb:
            self.tb.close()
        for s, handler in self.previous_handlers.items():
            signal.signal(s, handler)
        if self.wandb:
            self.wandb.finish(exit_code=0 if exc_type is None or stopped else 1)
        return stopped

    # --- logs ---
    def end_iteration(self, lr: float, diagnostics: dict, values: np.ndarray, returns: np.ndarray) -> None:
        """Log one finished iteration: its episodes, one updates.csv row (with the explained variance of the returns
        by the critic's values), the progress line; save every --save-every iterations. The NaN guard is here: a
        diverged update raises before anything is saved."""
        explained_var = explained_variance(values, returns)
        self.iteration += 1
        self.global_step += self.world * self.args.batch_size
        episodes, self.pending = self.pending, []
        if not all(map(math.isfinite, diagnostics.values())) or not all(
                torch.isfinite(p).all() for p in self.agent.parameters()):
            raise NonFiniteError(
                f"iteration {self.iteration}: the loss, gradients or parameters became NaN/inf ({diagnostics}). "
                f"Likely causes: a learning rate too high, unnormalized large rewards or observations "
                f"(try --norm-obs --norm-reward), or an env returning extreme values. "
                + (f"The last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path.is_file() else
                   "No checkpoint was written before it"))
        if distributed():   # every rank's episodes, in step order, and the explained variance averaged over ranks
            gathered = all_gather((episodes, explained_var))
            episodes = sorted((ep for rank_episodes, _ in gathered for ep in rank_episodes),
                              key=lambda ep: ep["global_step"])
            explained_var = float(np.mean([ev for _, ev in gathered]))
        for ep in episodes:
            self._log_episode(ep)
        if self.rank != 0:
            return                                                  # the rest writes and prints: rank 0's job
        wall_time = time.time() - self.start_time
        sps = int((self.global_step - self.start_step) / max(wall_time - self.wall_offset, 1e-9))
        row = dict(global_step=self.global_step, wall_time=round(wall_time, 3), SPS=sps, learning_rate=lr,
                   **diagnostics, explained_variance=explained_var)
        self.update_log.write(row)
        self._flush_logs()                                          # a kill loses nothing already logged
        self._scalars("charts", row, self.global_step, ("SPS", "learning_rate"))
        self._scalars("losses", row, self.global_step, [*diagnostics, "explained_variance"])
        self._print_progress(sps)
        if self.iteration % self.args.save_every == 0:
            with self._quit_after():
                self.save()

    def _flush_logs(self) -> None:
        """Hand the logged rows to the OS, which writes them to disk even if this process is killed (SIGKILL) the
        next instant: ~5 us an iteration (a tiny CartPole iteration takes ~20 ms). Not fsync, which waits for the
        disk (0.3-7 ms an iteration, measured): a power cut may lose the last seconds of rows and checkpoints alike
        (out of scope)."""
        for log in (self.episode_log, self.update_log):
            if log:
                log.flush()

    def _log_episode(self, ep: dict) -> None:
        row = dict(global_step=ep["global_step"], wall_time=round(ep["time"] - self.start_time, 3),
                   episodic_return=ep["episodic_return"], episodic_length=ep["episodic_length"])
        if self.rank == 0:
            self.episode_log.write(row)
        self._note_return(row["episodic_return"], row, announce=self.rank == 0 and not self.args.quiet)
        self.episode_returns.append(row["episodic_return"])
        self.episode_steps.append(row["global_step"])
        self._scalars("charts", row, row["global_step"], ("episodic_return", "episodic_length"))

    def _note_return(self, episodic_return: float, row: dict, announce: bool = False) -> None:
        """Keep an episode's return among the last 100. The first time their mean reaches the env's solve level,
        keep the step and the time, and say so in a line (under --quiet, the last line says so)."""
        self.recent.append(episodic_return)
        if self.solved or self.solve_level is None or len(self.recent) < 100 or np.mean(self.recent) < self.solve_level:
            return
        self.solved = (int(row["global_step"]), float(row["wall_time"]))
        if announce:                                   # on a terminal, below the progress line, which is kept
            print(f"{chr(10) if self.tty and self.last_print else ''}solved: mean return of the last 100 episodes >= "
                  f"{self.solve_level} at step {self.solved[0]:,}, after {self.solved[1]:.1f}s", flush=True)

    def _scalars(self, group: str, row: dict, step: int, keys) -> None:
        if self.tb:
            for k in keys:
                self.tb.add_scalar(f"{group}/{k}", row[k], step)
        if self.wandb:                                  # the same scalars, plotted against global_step (open_wandb)
            self.wandb.log({"global_step": step, **{f"{group}/{k}": row[k] for k in keys}})

    def _print_progress(self, sps: int) -> None:
        # On a terminal one line is redrawn twice a second; into a log file, a new line every 5 seconds.
        now = time.time()
        if self.args.quiet or now - self.last_print < (0.5 if self.tty else 5.0):
            return
        per_iteration = self.world * self.args.batch_size         # the total the first line announced
        self.last_print, step, total = now, self.global_step, self.args.total_timesteps // per_iteration * per_iteration
        ret = f"{np.mean(self.recent):8.1f}" if self.recent else "     n/a"
        print(f"step {step:>10,} ({100 * step / total:3.0f}%) | {sps:7,.0f} SPS | return {ret} (last "
              f"{len(self.recent)} ep) | ETA {(total - step) / max(sps, 1):5.0f}s", end="\r" if self.tty else "\n",
              flush=True)

    def _print_summary(self) -> None:
        if self.tty and not self.args.quiet:
            print()                                                 # end the redrawn progress line
        recent = f"{np.mean(self.recent):.1f}" if self.recent else "n/a"
        solved = (f"solved (>= {self.solve_level}) at step {self.solved[0]:,} after {self.solved[1]:.1f}s; "
                  if self.solved else "")
        print(f"{'stopped' if self.stopping else 'done'}: {self.global_step:,} steps in "
              f"{time.time() - self.start_time:.1f}s, mean return of the last {len(self.recent)} episodes {recent}; "
              f"{solved}run directory {self.dir}", flush=True)

    # --- checkpoints ---
    def save(self) -> None:
        # The logs first: a checkpoint at step S promises the rows up to S, which --resume keeps (and those after S
        # it drops, as they will be replayed). TensorBoard keeps its events 2 minutes in memory unless told.
        self._flush_logs()
        if self.tb:
            self.tb.flush()
        # A plain dict of tensors and Python values: `torch.load(path)` reads it without this file's help.
        checkpoint = dict(
            agent=self.agent.state_dict(), optimizer=self.optimizer.state_dict(), args=dataclasses.asdict(self.args),
            global_step=self.global_step, iteration=self.iteration, wall_time=time.time() - self.start_time,
            env_module=env_module(self.args.env_id),    # what --evaluate imports to find an env registered in Python
            resumed=self.resumed,                       # each resume's step and the settings it changed (args.json)
            observation_space=str(self.spaces[0]), action_space=str(self.spaces[1]),
            rng=dict(torch=torch.get_rng_state(), numpy=_numpy_rng_state(), python=random.getstate()),
        )
        atomic_write(self.checkpoint_path, lambda p: torch.save(checkpoint, p))

    def result(self) -> dict:
        return dict(agent=self.agent, run_dir=self.dir, checkpoint=self.checkpoint_path, global_step=self.global_step,
                    wall_time=time.time() - self.start_time, episode_returns=self.episode_returns,
                    episode_steps=self.episode_steps, solved=self.solved,
                    stopped_by=signal.Signals(self.signum).name if self.signum else None)


def solve_level(env_id: str) -> float | None:
    """The mean return over 100 episodes at which gymnasium counts the env solved, its spec's reward_threshold (475
    for CartPole-v1, as the README quotes), or None where the env sets none."""
    try:
        return gym.spec(env_id.split(":")[-1]).reward_threshold
    except gym.error.Error:
        return None


class RunMonitor(gym.vector.VectorWrapper):
    """The run's eyes on every env step, so that the rollout loop holds only PPO: it refuses non-finite observations,
    final observations and rewards, and action masks that leave no legal action (naming the env and the step),
    keeps each episode's raw return and length and hands the run each episode that ends, and stops a lone process
    between two steps once Ctrl-C or SIGTERM came (StopRequested).
    gymnasium's RecordEpisodeStatistics also counts episodes, and times every one at ~15-19 us per step: a tenth
    of a CartPole step."""

    def __init__(self, envs: gym.vector.VectorEnv, run: Run):
        super().__init__(envs)
        self.run, self.steps = run, 0
        self.steps_per_step = self.num_envs * run.world              # global steps per env step, all ranks together

    def reset(self, **kwargs):
        self.episode_return, self.episode_length = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
        return self.env.reset(**kwargs)

    def step(self, actions):
        self.steps += 1
        global_step = self.run.start_step + self.steps * self.steps_per_step
        try:
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
        except EnvContractError as e:                               # names the env; the step is known here
            raise EnvContractError(f"{e}; at global step {global_step}") from None
        ended = np.flatnonzero(terminated | truncated)                # the envs whose episode ended at this step
        if not (np.isfinite(obs).all() and np.isfinite(rewards).all()):
            raise NonFiniteError(f"env {self._env_id()} returned a non-finite observation or reward at global "
                                 f"step {global_step}; check the environment's step()")
        if ended.size and not all(np.isfinite(infos["final_obs"][i]).all() for i in ended):
            raise NonFiniteError(f"env {self._env_id()} returned a non-finite final observation (the last state "
                                 f"of an episode) at global step {global_step}; check the environment's step()")
        if self.run.args.action_mask and "action_mask" in infos:
            check_some_action_legal(infos["action_mask"], self.single_action_space, self._env_id(),
                                    f"at global step {global_step}")
        self.episode_return += rewards
        self.episode_length += 1
        for i in ended:
            self.run.pending.append(dict(global_step=global_step, time=time.time(),
                                         episodic_return=float(self.episode_return[i]),
                                         episodic_length=int(self.episode_length[i])))
            self.episode_return[i], self.episode_length[i] = 0.0, 0
        if self.run.stopping and not distributed():
            raise StopRequested
        return obs, rewards, terminated, truncated, infos

    def _env_id(self) -> str:
        return self.env.unwrapped.get_attr("spec")[0].id


def check_some_action_legal(masks: np.ndarray, action_space: gym.Space, env_id: str, where: str) -> None:
    """Refuse action masks, (N, n) or (n,), that leave some env (or some sub-action of a MultiDiscrete) no legal
    choice: sampling from a policy with every logit masked would pick among illegal actions, silently."""
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    nvec = np.atleast_1d(getattr(action_space, "nvec", getattr(action_space, "n", masks.shape[-1])))
    for part in np.split(masks, np.cumsum(nvec)[:-1], axis=-1):
        if not part.any(axis=-1).all():
            env = int(np.flatnonzero(~part.any(axis=-1))[0])                 # which of several envs, if several
            which = f" (env {env} of the vector env)" if len(masks) > 1 else ""
            raise NoLegalActionError(f"env {env_id} gave an action mask with no legal action {where}{which}; every "
                                     "state needs one, or use --no-action-mask to ignore it")


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 = the critic predicts the returns perfectly, 0 = no better than their mean, < 0 = worse."""
    return float(1 - np.var(returns - values) / np.var(returns)) if np.var(returns) > 0 else float("nan")


class CsvLog:
    """One CSV file of rows with a global_step. Its columns are the keys of the first row written, so a new
    diagnostic needs no list to be kept in step. On resume, rows after `resume_step` are dropped (they will be
    replayed), and so is a last line that a kill cut short (no line end: it was being written after the checkpoint),
    at once: the file then ends at the checkpoint, even if the resumed run ends before it logs a row. The file keeps
    its own column order."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path, self.file, self.writer, self.fields, self.rows = path, None, None, [], []
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                text = f.read()
            reader = csv.DictReader(io.StringIO(text[:text.rfind("\n") + 1]))     # whole lines only
            self.rows = [r for r in reader if int(r["global_step"]) <= resume_step]
            self.fields = reader.fieldnames or []
            atomic_write(path, lambda p: _write_csv(p, self.fields, self.rows))

    def write(self, row: dict) -> None:
        if self.writer is None:                                     # first row: fix the columns, open the file
            fields = self.fields + [k for k in row if k not in self.fields]   # a resumed run may add a column
            if fields != self.fields:                               # (a new file has none)
                atomic_write(self.path, lambda p: _write_csv(p, fields, self.rows))
            self.file = open(self.path, "a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=fields, restval="")
        self.writer.writerow(row)

    def flush(self) -> None:
        if self.file:
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file, then rename it over `path`: a crash mid-write never leaves a half file. An
    exception removes the temporary file; a kill leaves it, and the run that resumes removes it (remove_stray_tmp).
    No fsync: the rename is atomic for any kill of this process, not for a power cut (out of scope)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


RUN_FILES = ("checkpoint.pt", "episodes.csv", "updates.csv", "args.json")   # what atomic_write writes in a run


def remove_stray_tmp(run_dir: Path) -> None:
    for name in RUN_FILES:
        (run_dir / f"{name}.tmp").unlink(missing_ok=True)


def installed(package: str) -> bool:
    """Whether an optional package is there (without importing it). --tensorboard's default is on where it is, so
    that a bare install runs quietly; --track and an explicit --tensorboard are refused where theirs is missing."""
    return importlib.util.find_spec(package) is not None


def open_tensorboard(run_dir: Path, resume_step: int | None = None):
    from torch.utils.tensorboard import SummaryWriter  # optional (check_args said how to install it)
    # purge_step: on resume, TensorBoard hides the events logged after the checkpoint (they will be replayed)
    return SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1)


def open_wandb(args: Args, run_dir: Path, kept: Path):
    """--track, as in CleanRL: a Weights & Biases run that Run._scalars sends the TensorBoard scalars to. If W&B
    refuses, the folders made for this run (those below `kept`) are removed: nothing is left."""
    import wandb  # optional, imported only when switched on (check_args said how to install it)

    try:
        # The run directory's name is also the W&B run's id, so that --resume continues the same W&B run.
        run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_dir.name,
                         id=re.sub(r"[^\w.-]", "_", run_dir.name), resume="allow", config=dataclasses.asdict(args),
                         dir=run_dir)
    except wandb.errors.Error as e:
        for folder in itertools.takewhile(lambda p: p != kept, [run_dir, *run_dir.parents]):
            with contextlib.suppress(OSError):
                folder.rmdir()                            # if this run made it: still empty (a resumed one is not)
        raise UsageError(f"--track: W&B could not start a run ({e}); log in with `wandb login`, or set "
                         "WANDB_MODE=offline to keep the W&B logs in the run directory")
    run.define_metric("*", step_metric="global_step")   # x axis: environment steps, as in TensorBoard
    return run


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


def _numpy_rng_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), pos, has_gauss, cached                 # plain Python values: loads with weights_only


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    random.setstate(rng["python"])


def load_checkpoint(path: str | Path, flag: str = "--resume") -> dict:
    if Path(path).is_dir():
        raise UsageError(f"{flag} {path}: a folder; give the checkpoint.pt in it, e.g. {Path(path) / 'checkpoint.pt'}")
    if not Path(path).is_file():
        raise UsageError(f"{flag} {path}: no such file; give the path of a run's checkpoint.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)   # tensors and plain values only
        args_from_checkpoint(checkpoint)                            # its arguments must still make an Args
    except Exception as e:
        raise UsageError(f"{flag} {path}: not a readable ppo.py checkpoint ({type(e).__name__}); "
                         "give a checkpoint.pt written by ppo.py")
    needed = CHECKPOINT_KEYS if flag == "--resume" else CHECKPOINT_KEYS[:4]   # playing needs the agent alone
    missing = [key for key in needed if key not in checkpoint]
    if missing:
        raise UsageError(f"{flag} {path}: the checkpoint lacks {', '.join(missing)}; give a checkpoint.pt written by "
                         f"ppo.py{' (to play it, --evaluate needs only the agent)' if flag == '--resume' else ''}")
    return checkpoint


CHECKPOINT_KEYS = ("agent", "args", "observation_space", "action_space", "optimizer", "global_step", "iteration",
                   "wall_time", "rng")


# Settings of the machine a run trained on, not of its agent: --evaluate plays with its own flags for these, never
# the checkpoint's (a run trained with --cuda or --capture-video evaluates on any CPU, filming only when asked).
TRAINING_ONLY = ("cuda", "compile", "capture_video", "tensorboard", "track", "quiet")


def args_from_checkpoint(checkpoint: dict, evaluate: bool = False) -> Args:
    """The saved run's settings: for --resume, less TensorBoard where this machine lacks it; for --evaluate, less
    TRAINING_ONLY."""
    saved = dict(checkpoint["args"])
    saved["hidden_sizes"] = tuple(saved["hidden_sizes"])
    saved["tensorboard"] = saved.get("tensorboard") and installed("tensorboard")
    if evaluate:
        saved.update(dict.fromkeys(TRAINING_ONLY, False))
    return Args(**saved)


def env_module(env_id: str) -> str | None:
    """The module that makes `env_id` exist: the one named in `module:EnvId-v0`, else the module of the env's entry
    point, which for an env registered by your own code is usually the module that registered it. None for an env
    defined in the training script itself (__main__), which no other process can import, or for an id that
    gym.spec cannot look up (an unversioned one, which gym.make resolves to the newest version)."""
    if ":" in env_id:
        return env_id.split(":")[0]
    try:
        entry_point = gym.spec(env_id).entry_point
    except gym.error.Error:
        return None
    module = entry_point.split(":")[0] if isinstance(entry_point, str) else getattr(entry_point, "__module__", None)
    return None if module == "__main__" else module


def import_env_module(checkpoint: dict, where: str) -> None:
    """A custom env trained from Python (`import my_envs; train(default_args("GoRight-v0"))`) is saved under its
    bare id, which exists in a new process only once the module that registers it is imported: import it here.
    Checkpoints written before env_module was saved work too, if their env is registered or given by --env-id."""
    env_id, module = checkpoint["args"]["env_id"], checkpoint.get("env_module")
    known = env_id in gym.registry or any(spec.name == env_id for spec in gym.registry.values())  # or unversioned
    if ":" in env_id or known:
        return
    if module is None:
        raise UsageError(f"{where}: its env {env_id} is not registered here and the checkpoint does not say which "
                         f"module registers it; give --env-id your_module:{env_id}")
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise UsageError(f"{where}: its env {env_id} is registered by the module {module}, which cannot be imported "
                         f"here ({type(e).__name__}: {e}); run from the folder that holds it, or add that folder "
                         "to PYTHONPATH")




# ======================================================================================================================
# Checks: impossible settings and unsupported spaces are refused in one line, before any environment step.
# ======================================================================================================================
def check_args(args: Args) -> None:
    """Catch impossible settings before any environment step, with the flag and what would be valid."""
    args = fill_auto(args)
    check_limits_and_combinations(args)
    def require(ok: bool, flag: str, value, problem: str) -> None:
        if not ok:
            raise UsageError(f"--{flag}{f' {value}' if value != '' else ''}: {problem}")

    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps", "save_every",
                 "eval_episodes", "torch_threads", "frame_stack", "recurrent_size", "recurrent_seq_len"):
        value = getattr(args, name)
        require(value > 0, name.replace("_", "-"), value, "must be a positive integer")
    require(all(h > 0 for h in args.hidden_sizes), "hidden-sizes", " ".join(map(str, args.hidden_sizes)),
            "layer sizes must be positive, e.g. 64 64 (none: one linear layer per head)")
    units = args.num_envs * args.num_steps // args.recurrent_seq_len if args.recurrent else args.batch_size
    require(args.batch_size % args.num_minibatches == 0, "num-minibatches", args.num_minibatches,
            f"must divide the batch of num-envs * num-steps = {args.batch_size} transitions; "
            f"valid: {', '.join(str(d) for d in range(1, min(units, 64) + 1) if units % d == 0)}")
    require(args.minibatch_size > 1 or not args.norm_adv, *minibatches_of_one(args, units))
    if args.recurrent:
        require(args.num_steps % args.recurrent_seq_len == 0, "recurrent-seq-len", args.recurrent_seq_len,
                f"must divide --num-steps {args.num_steps}")
        sequences = args.num_envs * args.num_steps // args.recurrent_seq_len
        require(sequences % args.num_minibatches == 0, "num-minibatches", args.num_minibatches, "with --recurrent, "
                f"minibatches are sets of the {sequences} sequences (num-envs * num-steps / recurrent-seq-len): it "
                f"must divide {sequences}")
    world = rank_and_world()[1]                                     # processes under torchrun, 1 without
    if args.evaluate is None:
        processes = f"{world} processes x " if world > 1 else ""
        require(args.total_timesteps >= world * args.batch_size, "total-timesteps", args.total_timesteps,
                f"smaller than one batch of {processes}num-envs * num-steps = {world * args.batch_size}; "
                "use at least that")
    else:
        require(world == 1, "evaluate", args.evaluate, "plays in one process; run it without torchrun")
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
    if args.cuda and not torch.cuda.is_available():
        raise UsageError(f"--cuda: no CUDA GPU is visible to torch; {no_gpu_advice(args)}")
    local_processes, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), torch.cuda.device_count()
    require(not args.cuda or local_processes <= gpus, "cuda", "", f"torchrun started {local_processes} processes "
            f"on this machine but {gpus} GPU(s) are visible, and nccl needs one per process; use --nproc-per-node "
            f"{gpus}, or drop --cuda")
    if args.capture_video:
        check_video(args.env_id)


# Which flags apply where, in one place; check_args, run_evaluation and Run.start enforce it, and the tests are
# generated from it. A flag given where it would have no effect is refused in one line, never dropped in silence.
# --evaluate plays the agent as it was saved: it reads these flags and no other.
EVALUATE_FLAGS = ("evaluate", "env_id", "seed", "eval_episodes", "eval_stochastic", "eval_video_episodes",
                  "capture_video", "quiet", "torch_threads")
# --resume continues a run as it was made. These it cannot change: the run's folder is named by the first three, and
# the saved agent was built by the rest. Every other flag applies from the resumed step on (args.json says so).
RESUME_KEEPS = dict(seed="names the run's folder", exp_name="names the run's folder", runs_dir="holds the run's folder",
                    hidden_sizes="built the saved agent", activation="built the saved agent",
                    recurrent="built the saved agent", recurrent_size="built the saved agent",
                    frame_stack="shaped the saved agent's input", norm_obs="built the saved agent",
                    log_std_init="started the saved agent, whose log std is loaded",
                    ortho_init="started the saved agent, whose weights are loaded")
# Features that do not combine, and why: none today (--recurrent with --recompute-adv re-values each state from
# the memory it was acted on). A test trains every pair of features, and refuses any pair listed here.
EXCLUSIVE: dict[tuple[str, str], str] = {}
# Flags that act only through another: given (a value other than its default) without it, they are refused.
REQUIRES = dict(recurrent_size="recurrent", recurrent_seq_len="recurrent", wandb_project_name="track",
                wandb_entity="track")
# The largest values that make sense: beyond them a run cannot fit in memory (or is a typo).
LIMITS = dict(num_envs=1024, num_steps=1_000_000, frame_stack=1024, recurrent_size=65_536, recurrent_seq_len=1_000_000,
              torch_threads=1024, hidden_sizes=65_536, eval_episodes=1_000_000)


def given_flags(argv: list[str]) -> dict[str, str]:
    """The Args fields the command line names, each with the flag as written: `--gae-lambda=0.9 --no-norm-obs` gives
    {"gae_lambda": "--gae-lambda", "norm_obs": "--no-norm-obs"}."""
    given = {}
    for written in (arg.split("=")[0] for arg in argv if arg.startswith("--")):
        name = written[2:].replace("-", "_")
        name = name if name in ARGS_DEFAULTS else name.removeprefix("no_")
        if name in ARGS_DEFAULTS:
            given[name] = written
    return given


def flag(name: str, value=None) -> str:
    """How the command line writes a setting: --num-envs 8, --recurrent, --no-norm-obs, --hidden-sizes 64 64."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{name.replace('_', '-')}"
    shown = "" if value is None else " " + (" ".join(map(str, value)) if isinstance(value, tuple) else str(value))
    return f"--{name.replace('_', '-')}{shown}"


def check_limits_and_combinations(args: Args) -> None:
    """check_args, continued: finite numbers, sizes that fit, optional packages, names and folders that can be made,
    and EXCLUSIVE."""
    for field in dataclasses.fields(Args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{flag(field.name, value)}: must be a finite number")
        if field.name in LIMITS and max(np.atleast_1d(value), default=0) > LIMITS[field.name]:
            raise UsageError(f"{flag(field.name, value)}: at most {LIMITS[field.name]:,}")
    if not 0 <= args.seed < 2**31:                          # numpy takes seeds below 2**32: room for seed + rank
        raise UsageError(f"--seed {args.seed}: must be in [0, 2**31)")
    for name, package in (("track", "wandb"), ("tensorboard", "tensorboard")):       # optional packages
        if getattr(args, name) and args.evaluate is None and not installed(package):
            raise UsageError(f"--{name}: needs the optional package {package}; pip install {package}, or --no-{name}")
    for name, needed in REQUIRES.items():
        if getattr(args, name) != ARGS_DEFAULTS[name] and not getattr(args, needed):
            raise UsageError(f"{flag(name, getattr(args, name))}: has no effect without {flag(needed, True)}; "
                             f"add {flag(needed, True)}, or drop {flag(name)}")
    for (a, b), why in EXCLUSIVE.items():
        if getattr(args, a) and getattr(args, b):
            raise UsageError(f"{flag(a)} and {flag(b)} do not combine: {why}")
    if args.recurrent and args.frame_stack > 1 and args.evaluate is None:
        print(f"note: --recurrent --frame-stack {args.frame_stack}: both apply, the GRU reads stacks of "
              f"{args.frame_stack} observations", file=sys.stderr)
    if args.eval_video_episodes < -1 or (args.capture_video and args.evaluate and args.eval_video_episodes == 0):
        raise UsageError(f"{flag('eval_video_episodes', args.eval_video_episodes)}: films the first N episodes; give "
                         "1 or more, or -1 for all (and drop --capture-video to film none)")
    if not re.fullmatch(r"[\w.-]+", args.exp_name):
        raise UsageError(f"--exp-name {args.exp_name!r}: one plain name (letters, digits, '.', '_', '-'), as it is "
                         "part of the run directory's name")
    if args.evaluate is None and args.resume is None:
        check_run_dir(args)


def check_run_dir(args: Args) -> None:
    """--runs-dir must be, or be makeable in, a writable folder; and the run directory's name (Run.start:
    <env>__<exp_name>__<seed>__<time>, maybe -N) and each folder --runs-dir will make must fit the file system's limit
    on a name (NAME_MAX, usually 255 bytes), or mkdir fails midway."""
    folder = Path(args.runs_dir)
    existing = first_existing(folder)                                      # the folders below it will be made
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is a file" if existing == folder else f"cannot be made: {existing} is not a writable folder"
        raise UsageError(f"--runs-dir {args.runs_dir}: {problem}; give a folder this user can write to")
    limit = None
    with contextlib.suppress(ValueError, OSError, AttributeError):      # not every system says (then no check)
        limit = os.pathconf(existing, "PC_NAME_MAX")
    for part in Path(args.runs_dir).parts[len(existing.parts):] if limit else []:   # the folders the run makes
        if len(part.encode()) > limit:
            raise UsageError(f"--runs-dir {args.runs_dir[:40]}...: the folder name {part[:20]}... is "
                             f"{len(part.encode())} bytes, over this file system's limit of {limit}; shorten it")
    others = len((run_dir_name(dataclasses.replace(args, exp_name=""), int(time.time())) + "-999").encode())
    if limit and others + len(args.exp_name.encode()) > limit:                  # (-999: new_run_dir's last try)
        shape = run_dir_name(dataclasses.replace(args, exp_name="<exp-name>"), "<time>")
        raise UsageError(f"--exp-name {args.exp_name[:20]}... ({len(args.exp_name.encode())} bytes): the run "
                         f"directory's name {shape} would pass this file system's limit of {limit} bytes; give at "
                         f"most {max(limit - others, 0)} bytes")


def run_dir_name(args: Args, started: int | str) -> str:
    """<env>__<exp_name>__<seed>__<unix time>, the env id without its module (as Python names the env once the module
    is imported): "ale_py:ALE/Pong-v5" -> "ALE_Pong-v5", the same name from the command line and from train()."""
    env = re.sub(r"[^\w.-]", "_", args.env_id.split(":")[-1])
    return f"{env}__{args.exp_name}__{args.seed}__{started}"


def first_existing(path: Path) -> Path:
    """path, or the nearest folder above it that exists (a name too long to exist raises OSError: it does not)."""
    for p in [path, *path.parents]:
        with contextlib.suppress(OSError):
            if p.exists():
                return p
    return Path(path.anchor or ".")


def no_gpu_advice(args: Args) -> str:
    """What to do about --cuda without a GPU: a resumed run may have it from its checkpoint, not from the user."""
    if args.resume and load_checkpoint(args.resume)["args"].get("cuda"):
        return "the run was trained with --cuda; add --no-cuda to continue it on the CPU"
    return "drop --cuda to train on the CPU (for these small networks the CPU is as fast)"


def check_flags_for_spaces(args: Args, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Flags that would change nothing for this env's spaces, refused in one line once the spaces are known (with
    --resume, RESUME_KEEPS refuses any new --log-std-init first)."""
    if args.norm_obs and is_image(obs_space):
        raise UsageError(f"--norm-obs: {args.env_id} gives images, which the agent scales to [0, 1] itself; "
                         "drop --norm-obs")
    usual = (DISCRETE_DEFAULTS["log_std_init"], PRESETS.get(args.preset, {}).get("log_std_init"))
    if not isinstance(action_space, gym.spaces.Box) and args.log_std_init not in usual and not args.resume:
        raise UsageError(f"{flag('log_std_init', args.log_std_init)}: sets a Gaussian policy's starting std, and "
                         f"{args.env_id}'s actions ({action_space}) are not continuous; drop --log-std-init")
    if not args.action_mask:                                       # one reset shows whether the env gives a mask
        with contextlib.closing(make_env(args.env_id, frame_stack=args.frame_stack)) as probe:
            if "action_mask" not in probe.reset(seed=args.seed)[1]:
                raise UsageError(f"--no-action-mask: {args.env_id} gives no action mask to ignore (the policy chooses "
                                 "among all its actions anyway); drop --no-action-mask")
    check_memory(args, obs_space, action_space)


def memory_needed(args: Args, obs_space: gym.Space, action_space: gym.Space) -> dict[str, int]:
    """Bytes that training with these settings takes, by the flag that sizes each part: the agent's parameters four
    times over (weights, gradients, Adam's two moments), counted exactly as Agent builds them, under recurrent_size
    (the GRU) and hidden_sizes (the rest); and the rollout under num_envs (observations as the env gives them, a few
    numbers per step, the GRU's state at each step under --recurrent)."""
    obs = int(np.prod(obs_space.shape))
    if is_image(obs_space):                                        # NatureCNN: three convolutions, then 512 features
        c, h, w = obs_space.shape
        side = lambda n: ((n - 8) // 4 + 1 - 4) // 2 + 1 - 2                                   # noqa: E731
        encoder = 32 * c * 64 + 64 * 32 * 16 + 64 * 64 * 9 + 64 * side(h) * side(w) * 512 + 32 + 64 + 64 + 512
        features = 512
    else:
        encoder, features = 0, obs
    size = args.recurrent_size if args.recurrent else 0
    gru = 3 * (features * size + size * size + 2 * size) if size else 0
    out = gym.spaces.flatdim(action_space)
    widths = [size or features, *args.hidden_sizes]
    heads = sum(2 * a * b + 2 * b for a, b in zip(widths, widths[1:])) + (widths[-1] + 1) * (out + 1)
    log_std = out if isinstance(action_space, gym.spaces.Box) else 0
    return {"recurrent_size": 16 * gru, "hidden_sizes": 16 * (encoder + heads + log_std),
            "num_envs": args.num_envs * args.num_steps * (obs * obs_space.dtype.itemsize + 4 * (out + 8) + 8 * size)}


def check_memory(args: Args, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Refuse sizes whose memory_needed is more than the machine has (or the GPU, under --cuda), before anything is
    allocated, naming the flag that asks the most."""
    parts = memory_needed(args, obs_space, action_space)
    gpu = args.cuda and torch.cuda.is_available()
    available, where = None, "the GPU's" if gpu else "this machine's"
    if gpu:
        available = torch.cuda.get_device_properties(0).total_memory
    else:
        with contextlib.suppress(ValueError, OSError, AttributeError):      # not every system says (then no check)
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if available is None or sum(parts.values()) <= available:
        return
    name = max(parts, key=parts.get)
    shown = (flag(name, getattr(args, name)) if name != "num_envs" else
             f"--num-envs {args.num_envs} --num-steps {args.num_steps}")
    agent = parts["recurrent_size"] + parts["hidden_sizes"]
    raise UsageError(f"{shown}: needs about {sum(parts.values()) / 1e9:,.1f} GB (agent {agent / 1e9:,.1f} GB with "
                     f"its gradients and Adam's moments, rollout {parts['num_envs'] / 1e9:,.1f} GB), more than "
                     f"{where} {available / 1e9:,.1f} GB of memory; make it smaller")


def typed_args(args: Args) -> Args:
    """Args made in Python, typed as the command line types them, or refused in one line naming the field: an int
    field takes an int or a whole float (total_timesteps=1e6, as `--total-timesteps 1e6`; 2.5 is refused), a float
    field any real number, hidden_sizes a list or tuple of ints (a single int is refused: (64,) is one layer), a path
    a str or a Path (kept as str). A value left AUTO (None) stays for fill_auto. Returns args itself if nothing
    changed."""
    changes = {}
    for field in dataclasses.fields(Args):
        value, hint = getattr(args, field.name), ARG_TYPES[field.name]
        if value is None and field.default is None:                        # AUTO, or an optional field's None
            continue
        typed, valid = _typed(value, hint)
        if typed is _WRONG:
            given = value if isinstance(value, (int, float, str)) else repr(value)
            raise UsageError(f"{flag(field.name)} {given}: must be {valid}" + (
                " (from Python: hidden_sizes=(64,) for one layer of 64, () for none)"
                if field.name == "hidden_sizes" else ""))
        if typed is not value:
            changes[field.name] = typed
    return dataclasses.replace(args, **changes) if changes else args


_WRONG = object()


def _typed(value, hint) -> tuple[object, str]:
    """(value as the type `hint` wants, or _WRONG; what would be valid, in words)."""
    origin, parts = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:                 # float | None, str | None
        inner = next(p for p in parts if p is not type(None))
        typed, valid = (None, "") if value is None else _typed(value, inner)
        return typed, f"{valid} or None"
    if origin is Literal:
        return (value if value in parts else _WRONG), f"one of {', '.join(map(str, parts))}"
    if origin is tuple:                                                     # tuple[int, ...]: the layer sizes
        if not isinstance(value, (list, tuple)):
            return _WRONG, "a list of layer sizes, e.g. 64 64"
        typed = [_typed(v, int)[0] for v in value]
        same = isinstance(value, tuple) and all(t is v for t, v in zip(typed, value))
        return (_WRONG if _WRONG in typed else value if same else tuple(typed)), "a list of whole numbers, e.g. 64 64"
    if hint is bool:
        return (bool(value) if isinstance(value, (bool, np.bool_)) else _WRONG), "True or False"
    if hint is int:
        if isinstance(value, (numbers.Integral)) and not isinstance(value, (bool, np.bool_)):
            return int(value), "a whole number"
        whole = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and \
            math.isfinite(value) and float(value).is_integer()
        return (int(value) if whole else _WRONG), "a whole number"
    if hint is float:
        real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        return (float(value) if real else _WRONG), "a number"
    if hint is str:
        return (value if isinstance(value, str) else os.fspath(value) if isinstance(value, os.PathLike) else
                _WRONG), "a str"
    return value, ""


def minibatches_of_one(args: Args, units: int) -> tuple[str, str | int, str]:
    """check_args's (flag, value, problem) for minibatches of 1 transition under --norm-adv, with advice that holds for
    the values given: fewer minibatches where there are several, else a batch larger than 1 (units: what a minibatch
    count must divide, transitions or --recurrent's sequences)."""
    why = "whose advantages cannot be normalized (the std of one number)"
    fewer = [str(d) for d in range(1, min(units, 64) + 1) if units % d == 0 and args.batch_size // d > 1]
    if fewer:
        return ("num-minibatches", args.num_minibatches, f"leaves minibatches of 1 transition, {why}; use fewer "
                f"minibatches (valid: {', '.join(fewer)}), or --no-norm-adv")
    return ("num-envs", f"{args.num_envs} --num-steps {args.num_steps}", f"a batch of 1 transition, {why}; raise "
            "--num-envs or --num-steps, or use --no-norm-adv")


def one_line(space: gym.Space) -> str:
    """A space as messages name it: on one line (numpy prints a 2-D MultiDiscrete's or a Box's bounds over several)."""
    return " ".join(str(space).split())


def check_spaces(obs_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """Refuse, in one line, the spaces this file does not handle (after make_env, which flattened what it could)."""
    if not (isinstance(obs_space, gym.spaces.Box) and obs_space.dtype.kind in "biuf"):
        raise UsageError(f"--env-id {env_id}: observation space {one_line(obs_space)} is not supported; supported are "
                         "Box, Discrete, MultiDiscrete, MultiBinary, and Dict or Tuple of those with 1-D Box parts "
                         "(no images)")
    if np.prod(obs_space.shape) == 0:
        raise UsageError(f"--env-id {env_id}: observation space {one_line(obs_space)} holds no numbers, nothing for "
                         "the policy to read; give observations of at least one number")
    if is_image(obs_space):                                        # make_env has moved the channels first
        channels, height, width = obs_space.shape
        if channels > min(height, width):
            raise UsageError(f"--env-id {env_id}: image observations {obs_space.shape} have their smallest axis, "
                             "taken for the channels, in the middle; give (C, H, W) or (H, W, C) images")
        if min(height, width) < 36:
            raise UsageError(f"--env-id {env_id}: images of {height}x{width} are too small for the Nature CNN, which "
                             "needs at least 36x36; enlarge them (gymnasium.wrappers.ResizeObservation)")
    # make_env gave the policy Discrete and MultiDiscrete from 0 in one row, MultiBinary as MultiDiscrete, float32 Box
    ok = (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1) or (
        isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        and np.all(action_space.start == 0) and np.ndim(action_space.nvec if hasattr(action_space, "nvec") else 0) <= 1)
    if not ok or np.prod(action_space.shape) == 0:
        raise UsageError(f"--env-id {env_id}: action space {one_line(action_space)} is not supported; supported "
                         "are Discrete, MultiDiscrete, MultiBinary and Box (any shape, any dtype), not empty")


def check_action_mask(mask, action_space: gym.Space, env_id: str) -> None:
    """Refuse an action mask (info["action_mask"] at a reset; None if the env gives none) that does not fit."""
    if mask is not None and (isinstance(action_space, gym.spaces.Box)
                             or np.shape(mask) != (gym.spaces.flatdim(action_space),)):
        raise UsageError(f"--env-id {env_id}: its action mask, shape {np.shape(mask)}, does not fit action space "
                         f"{one_line(action_space)}; a mask needs one 0/1 entry per discrete action (MultiDiscrete: "
                         "sum(nvec), the sub-actions' masks end to end), or ignore it with --no-action-mask")


def env_spaces(env_id: str, action_mask: bool = True, frame_stack: int = 1) -> tuple[gym.Space, gym.Space]:
    """Make the env once to read its (observation, action) spaces, and refuse the ones this file cannot handle. One
    reset shows that it keeps to gymnasium's API and, with action_mask, whether it gives an action mask, and
    check_action_mask checks it."""
    with contextlib.closing(make_env(env_id, frame_stack=frame_stack)) as probe:
        spaces = (probe.observation_space, probe.action_space)
        check_spaces(*spaces, env_id)
        try:
            info = probe.reset()[1]
        except EnvContractError as e:
            raise UsageError(f"--env-id {env_id}: {str(e).split(': ', 1)[1]}") from None
        if action_mask:
            check_action_mask(info.get("action_mask"), probe.action_space, env_id)
    return spaces


def check_video(env_id: str) -> None:
    """--capture-video: find everything the video needs before training starts, and name it all in one line.
    moviepy writes the mp4 files; drawing one frame finds what the env draws with (pygame, OpenGL for MuJoCo)."""
    # The frames are drawn off-screen (render_mode="rgb_array"), so no display is needed, but SDL (under pygame)
    # and MuJoCo look for one unless told otherwise: SDL then prints a false "error: XDG_RUNTIME_DIR is invalid or
    # not set" on a machine without a display, and MuJoCo cannot render at all. So, for this process only and only
    # where the user has not chosen: SDL's dummy video driver, and MuJoCo's EGL on a Linux machine with no display.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    if sys.platform == "linux" and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    missing = [] if importlib.util.find_spec("moviepy") else ["moviepy"]
    try:
        with warnings.catch_warnings():                 # a failure is told below, in one line
            warnings.simplefilter("ignore")               # (catch_warnings(action=...) needs Python 3.11)
            env = make_env(env_id, render_mode="rgb_array")
            env.reset(seed=0)
            env.render()
            env.close()
    except gym.error.DependencyNotInstalled as e:   # gymnasium raises it from the ImportError of the missing module
        missing.append(getattr(e.__cause__, "name", None) or str(e))
    except UsageError:                              # a wrong --env-id: make_env said so
        raise
    except Exception as e:                          # e.g. an env without render_mode="rgb_array", or no OpenGL
        problem = str(e).split("\n")[0]
        raise UsageError(f"--capture-video: {env_id} cannot draw a frame here ({type(e).__name__}: {problem}); "
                         "drop --capture-video, or make the env draw frames")
    if missing:
        raise UsageError(f"--capture-video: needs {' and '.join(missing)}, not installed; "
                         f"pip install {' '.join(missing)}")


def gym_make(env_id: str, render_mode: str | None = None) -> gym.Env:
    """gym.make(env_id), or one line saying why it cannot: a missing package, or an id it does not know."""
    quiet_known_warnings(env_id)                                  # from the command line and from Python alike
    atari = is_atari(env_id)
    try:
        # render_mode is passed only when asked for: many custom envs' constructors do not accept it. An Atari
        # emulator is made to step one frame at a time (frameskip=1): AtariPreprocessing skips frames itself.
        return gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}),
                        **({"frameskip": 1} if atari else {}))
    except gym.error.DependencyNotInstalled as e:    # the id is right, a package is missing: say only what to install
        raise UsageError(f"--env-id {env_id}: needs a package that is not installed: {e}")
    except AssertionError as e:                      # gymnasium's env checker refuses its spaces (an empty Dict)
        if "passive_env_checker" not in traceback.extract_tb(e.__traceback__)[-1].filename:
            raise                                    # the env's own assert: its traceback shows where
        raise UsageError(f"--env-id {env_id}: gymnasium's env checker refuses it: {e}") from None
    except (gym.error.Error, ImportError, ValueError) as e:       # ValueError: ":Id-v0", an empty module name
        known = list(gym.registry)
        close = difflib.get_close_matches(env_id.split(":")[-1], known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see gymnasium.pprint_registry() for the ids"
        here = [(module, id) for module, id in registered_here(env_id.split(":")[-1]) if f"{module}:{id}" != env_id]
        if here:                                                 # `--env-id GoRight-v0` beside my_envs.py
            hint = (f"the current folder's {', '.join(f'{module}.py' for module, _ in here)} register"
                    f"{'s' * (len(here) == 1)} it: give --env-id {' or '.join(f'{m}:{id}' for m, id in here)}")
        raise UsageError(f"--env-id {env_id}: cannot make this environment ({type(e).__name__}: {e}); {hint}")


def registered_here(env_id: str) -> list[tuple[str, str]]:
    """(module, id) for each module in the current folder whose code registers env_id (or, for an id without its
    -vN, a version of it), found without importing anything: a .py file that holds the id is parsed, not run."""
    import ast

    found = []
    for path in sorted(Path.cwd().glob("*.py")) if env_id not in gym.registry else []:
        try:
            text = path.read_text(errors="replace") if path.stat().st_size < 1_000_000 else ""
            tree = ast.parse(text) if env_id in text and path.stem.isidentifier() else None
        except (OSError, SyntaxError, ValueError, RecursionError):
            continue
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and getattr(node.func, "attr", getattr(node.func, "id", None)) == "register"] if tree else []
        named = [arg for call in calls for arg in [*call.args[:1], *(k.value for k in call.keywords if k.arg == "id")]]
        ids = [arg.value for arg in named if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        found += [(path.stem, id) for id in dict.fromkeys(ids) if env_id in (id, re.sub(r"-v\d+$", "", id))]
    return found


# ======================================================================================================================
# Evaluation: play a saved agent with its normalization statistics frozen.
# ======================================================================================================================
def load_agent(path: str | Path, env_id: str | None = None) -> tuple[Agent, Args]:
    """Rebuild the agent saved in a checkpoint.pt: `agent, args = load_agent(path)`. env_id replaces the saved
    env id, e.g. `my_envs:GoRight-v0` to name the module that registers it; its spaces must be the saved ones."""
    return _load_agent(path, env_id)[:2]


def _load_agent(path: str | Path, env_id: str | None) -> tuple[Agent, Args, bool]:
    """load_agent, and whether the env gives action masks (one reset says)."""
    check_versions()
    checkpoint = load_checkpoint(path, flag="--evaluate")
    args = args_from_checkpoint(checkpoint, evaluate=True)
    if env_id in (None, args.env_id):
        import_env_module(checkpoint, f"--evaluate {path}")
    args.env_id = env_id or args.env_id
    try:
        env = make_env(args.env_id, frame_stack=args.frame_stack)
        masked = "action_mask" in env.reset()[1]
    except UsageError as e:
        if env_id is not None:
            raise
        cause = e.__context__ or e                                   # what gym.make raised
        raise UsageError(f"--evaluate {path}: its env {args.env_id} cannot be made here ({type(cause).__name__}: "
                         f"{str(cause).splitlines()[0]}); run from the folder that holds its module, or add that "
                         "folder to PYTHONPATH") from None
    env.close()
    if (str(env.observation_space), str(env.action_space)) != (checkpoint["observation_space"],
                                                               checkpoint["action_space"]):
        raise UsageError(f"--env-id {args.env_id}: its observation or action space differs from those of "
                         f"{checkpoint['args']['env_id']}, which the agent in {path} was trained on")
    if not all(torch.is_tensor(v) and torch.isfinite(v).all() for v in checkpoint["agent"].values()):
        raise UsageError(f"--evaluate {path}: the saved agent holds NaN or infinite weights (a diverged run); "
                         "evaluate an earlier checkpoint")
    agent = build_agent(args, env.observation_space, env.action_space)
    agent.load_state_dict(checkpoint["agent"])
    return agent.eval(), args, masked


# Evaluation episode k with seed s resets with 10^9 + 10^6 * s + k (evaluation_seed). Training seeds only its first
# reset, env i of process r with s + r * num_envs + i (a resumed run: + the step it resumes at), so any run of fewer
# than a billion steps never starts an episode the evaluation plays: the scores are of episodes the agent has not
# seen. Evaluations with different seeds play different episodes (s + k would share all but one of 10).
EVAL_SEED_OFFSET, EVAL_SEED_STRIDE = 10**9, 10**6      # --eval-episodes is at most 10^6 (LIMITS)


def evaluation_seed(seed: int, episode: int) -> int:
    return EVAL_SEED_OFFSET + EVAL_SEED_STRIDE * seed + episode


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with n CPU threads for torch, then give the caller back its own. Acting with these small networks
    is fastest on one (several cost more to wake than they save: notes/performance.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Policy:
    """A saved agent, ready to act one step at a time on its env's own numpy observations:

        policy = load_policy("runs/<run>/checkpoint.pt")
        env = policy.make_env()                  # the env as training made it (frame stack, images, masks)
        obs, info = env.reset(seed=0)
        policy.reset()                           # at every episode start: a recurrent agent's memory restarts
        action = policy.act(obs, info)           # info: the action mask, where the env gives one
        obs, reward, terminated, truncated, info = env.step(action)

    The normalization statistics are frozen as saved. A --recurrent agent's memory is carried from one act() to the
    next, restarts at reset(), and, in an Atari game, at a lost life, as it did in training (AtariLearningSignals).
    deterministic: the most likely action (default: as the run saved, i.e. sampled for image agents). threads: torch's
    CPU threads while acting (default: the run's --torch-threads, 1); the caller's own setting is left as it was.
    masked: the env gives action masks, so act() needs the info that holds them."""

    def __init__(self, agent: Agent, args: Args, deterministic: bool | None = None, threads: int | None = None,
                 masked: bool = False):
        self.agent, self.args, self.threads, self.masked = agent, args, threads or args.torch_threads, masked
        self.deterministic = (not args.eval_stochastic) if deterministic is None else deterministic
        self.memory, self.lives = MemoryStore(1, 1, agent.core), None
        self.reset()

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        return make_env(self.args.env_id, render_mode, self.args.frame_stack)

    def reset(self) -> None:
        """A new episode: the memory starts from 0."""
        self.memory.step(0, np.ones(1))
        self.lives = None

    def act(self, obs: np.ndarray, info: dict | None = None, where: str = "given to act") -> np.ndarray:
        """The action for one observation, as env.step takes it (a numpy integer for Discrete, an array else).
        The most likely action, too, is chosen among the legal ones only, as in training; `where` names the step in
        the error if the mask leaves none."""
        info = info or {}
        if self.masked and self.args.action_mask and "action_mask" not in info:
            raise UsageError(f"policy.act: {self.args.env_id} gives action masks and the agent was trained with them; "
                             "pass the info from env.reset or env.step, policy.act(obs, info), so that it acts legally")
        if is_atari(self.args.env_id) and "lives" in info:
            if self.lives is not None and info["lives"] < self.lives:
                self.memory.step(0, np.ones(1))                      # a lost life restarts the memory, as in training
            self.lives = info["lives"]
        mask = np.array([info["action_mask"]], bool) if self.args.action_mask and "action_mask" in info else None
        if mask is not None:
            check_some_action_legal(mask, gym.spaces.MultiDiscrete(self.agent.nvec), self.args.env_id, where)
        with torch_threads(self.threads), torch.inference_mode():
            action = self.agent.act(torch.as_tensor(np.asarray(obs)[None]), mask, self.deterministic,
                                    self.memory.at_step(0))[0][0].numpy()
        self.memory.step(0, np.zeros(1))
        return action[()]                # a 0-d array (one Discrete action) as a numpy integer, which toy text indexes


def load_policy(path: str | Path, env_id: str | None = None, deterministic: bool | None = None,
                threads: int | None = None) -> Policy:
    """The agent saved in a checkpoint.pt, ready to act: see Policy. env_id: as in load_agent."""
    agent, args, masked = _load_agent(path, env_id)
    return Policy(agent, args, deterministic, threads, masked)


def evaluate(path: str | Path, episodes: int = 10, deterministic: bool = True, seed: int | None = None,
             video_dir: Path | None = None, env_id: str | None = None, video_episodes: int = 1,
             verbose: bool = False, threads: int | None = None) -> list[float]:
    """Play `episodes` episodes with a saved agent (episode k starts from evaluation_seed(seed, k)); returns their
    returns. seed: the run's own by default, as `--evaluate` does. Stochastic play samples from torch's generator
    seeded with `seed`: the same checkpoint and seed give the same returns. With video_dir, the first
    `video_episodes` episodes are filmed there (-1: all). verbose prints a line per episode. A first Ctrl-C stops
    after the episode under way (the returns so far come back), a second one at once. env_id: as in load_agent;
    threads: as in Policy."""
    if video_dir is None and video_episodes != 1:
        raise UsageError(f"video_episodes={video_episodes}: films episodes only into a video_dir; give video_dir too")
    policy = load_policy(path, env_id, deterministic, threads)
    seed = policy.args.seed if seed is None else seed
    torch.manual_seed(seed)
    env = policy.make_env("rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda e: video_episodes < 0 or
                                       e < video_episodes)
    returns, stop = [], EvaluationStop()
    with contextlib.closing(env), stop:
        for episode in range(episodes):
            started, total, length = time.time(), 0.0, 0
            obs, info = env.reset(seed=evaluation_seed(seed, episode))
            policy.reset()                                          # a new episode: the memory starts from 0
            done = False
            while not done:
                action = policy.act(obs, info, f"in evaluation episode {episode + 1}")
                obs, reward, terminated, truncated, info = env.step(action)
                total, length, done = total + float(reward), length + 1, terminated or truncated
            returns.append(total)
            if verbose:
                print(f"episode {episode + 1}/{episodes}: return {total:.2f}, {length} steps, "
                      f"{time.time() - started:.1f}s", flush=True)
            if stop.requested:
                break
    return returns


class EvaluationStop:
    """Ctrl-C during evaluate: the first asks to stop after the episode under way, a second quits at once."""

    def __enter__(self) -> EvaluationStop:
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        if self.requested:
            raise QuitNow
        self.requested = True
        print("\nSIGINT: stopping after this episode (press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run_evaluation(args: Args, argv: list[str]) -> bool:
    """--evaluate: play the checkpoint's agent, a line per episode, then the mean return and how it was played.
    Returns whether every episode was played (not stopped by Ctrl-C)."""
    for name, written in sorted(given_flags(argv).items()):
        if name in EVALUATE_FLAGS:
            continue
        raise UsageError(f"{written}: has no effect with --evaluate, which plays the saved agent as it was "
                         f"trained; drop it (--evaluate takes {', '.join(map(flag, EVALUATE_FLAGS[1:]))})")
    if "eval_video_episodes" in given_flags(argv) and not args.capture_video:
        raise UsageError(f"{flag('eval_video_episodes', args.eval_video_episodes)}: films episodes only with "
                         "--capture-video; add --capture-video, or drop --eval-video-episodes")
    check_args(args)
    video_dir = None
    if args.capture_video:                  # each evaluation films into a folder of its own, beside the checkpoint
        video_dir = new_run_dir(Path(args.evaluate).parent / "videos-eval" / time.strftime("%Y%m%d-%H%M%S"))
        video_dir.rmdir()                   # the name is this evaluation's; RecordVideo makes the folder itself
    returns = evaluate(args.evaluate, args.eval_episodes, not args.eval_stochastic, args.seed, video_dir,
                       _flag_value(argv, "--env-id"), args.eval_video_episodes if video_dir else 1,  # (saved: 3)
                       verbose="--quiet" not in argv, threads=args.torch_threads)
    how = "stochastic" if args.eval_stochastic else "deterministic"
    if args.eval_stochastic and not any(a.startswith("--eval-stochastic") for a in argv):
        how += " (sampled actions: the default saved with this image agent; --no-eval-stochastic for the most likely)"
    played = f"{len(returns)} of {args.eval_episodes}" if len(returns) < args.eval_episodes else f"{len(returns)}"
    print(f"{'stopped: ' if len(returns) < args.eval_episodes else ''}{args.env_id}: mean return "
          f"{np.mean(returns):.2f} +- {np.std(returns):.2f} over {played} {how} episodes"
          + (f"; videos in {video_dir}" if video_dir else ""), flush=True)
    return len(returns) == args.eval_episodes


# ======================================================================================================================
# Command line: `python ppo.py --env-id CartPole-v1`. Everything above can also be imported and called.
# ======================================================================================================================
# Defaults follow the observation and the action space: the fields Args marks AUTO are filled in from these tables,
# in one place (env_defaults), for the command line and for Python alike. The first row is for discrete actions
# (CartPole, Acrobot): 16 envs x 64 steps give 1024 transitions per update, used in 4 epochs of 4 minibatches of 256
# with a high learning rate, no value clipping and no entropy bonus. Of the settings we measured (notes/README.md)
# they solve CartPole fastest without losing on Acrobot; large minibatches are what a CPU runs efficiently.
DISCRETE_DEFAULTS = dict(
    total_timesteps=500_000, num_envs=16, num_steps=64, norm_obs=False, norm_reward=False, hidden_sizes=(64, 64),
    log_std_init=0.0, learning_rate=2.5e-3, num_minibatches=4, update_epochs=4, norm_adv=True, clip_coef=0.2,
    clip_vloss=False, ent_coef=0.0, vf_coef=0.5, eval_stochastic=False,
)
# Real-valued vector observations (CartPole's, LunarLander's, MuJoCo's), whatever the action space, are normalized,
# and so are the rewards: inputs whose scales differ by 100x (a position in metres beside a velocity) otherwise
# leave the small ones unheard (LunarLander-v3 at 1M steps: 143 with, -44 without, 3 seeds). One-hot observations
# (Taxi's Discrete state) already are 0 or 1, and normalizing them hurt (Taxi-v4: -22.9 against 7.0); images are
# scaled by the agent.
VECTOR_DEFAULTS = dict(norm_obs=True, norm_reward=True)
# Continuous control (MuJoCo) starts from CleanRL's ppo_continuous_action.py settings (lr 3e-4, 10 epochs of
# minibatches of 64, 2048 transitions per update, no entropy bonus) and changes what Tianshou's MuJoCo PPO and
# Andrychowicz et al. 2021 ("What Matters in On-Policy RL?") found to matter: 8 envs x 256 steps instead of 1 x 2048
# (more varied episodes per update, and the policy acts on 8 states per call: 1M steps take half the time); a
# starting action std of 0.6 (log std -0.5) instead of 1, so that early actions are not mostly clipped noise; no
# value clipping, which Andrychowicz et al. found hurts; a value loss weight of 0.25; and no per-minibatch advantage
# normalization (rewards are already scaled). Their other shared advice, recomputing advantages before every epoch
# (--recompute-adv), helped Hopper but cost Walker2d more (screened twice, the second time with the time-limit
# bootstraps recomputed too), so it stays a flag. notes/results.md has the screens and the confirmation.
CONTINUOUS_DEFAULTS = dict(
    total_timesteps=1_000_000, num_envs=8, num_steps=256, learning_rate=3e-4, num_minibatches=32,
    update_epochs=10, ent_coef=0.0, clip_vloss=False, vf_coef=0.25, norm_adv=False, log_std_init=-0.5,
)
# --recurrent, for envs that are not images (images keep their own: not screened). Every action space learns at 1e-3
# in 4 minibatches of sequences: the continuous defaults' 32 would replay the GRU 8 times as often per epoch. For
# discrete actions 1e-3 is below their 2.5e-3, because a GRU policy moves further per update than an MLP (approximate
# KL 0.014 at 1e-3 against 0.006 without memory at 2.5e-3, LunarLander with its velocities hidden); for continuous
# ones it is above their 3e-4, which in 4 minibatches took 40 gradient steps per update instead of 320 and learned
# more slowly. Discrete actions also roll out 16 x 128, so that every update learns from 64 sequences of 32 steps as
# continuous ones do (8 x 256): half as many left that LunarLander near -88 on every seed. notes/recurrent_screen.md
# has the screens (seven tasks, 3 to 6 seeds each) and what did not win.
RECURRENT_DEFAULTS = dict(learning_rate=1e-3, num_minibatches=4)
RECURRENT_DISCRETE_DEFAULTS = dict(num_steps=128)
# Images (Atari, or any env whose observation is a 3-D Box of uint8) follow the observation instead, and win over
# the action space's defaults: CleanRL's ppo_atari.py settings for the Nature CNN. A small learning rate and clip
# range, because one shared network now serves both the policy and the value; an entropy bonus, because a game's
# rewards are sparse; pixels are scaled to [0, 1] by the agent, so no observation or reward normalization.
# --evaluate samples its actions: a deterministic policy can freeze in a state where its favourite action is not
# FIRE (Breakout after a lost ball) and play out the clock, 27,000 steps. The SB3 zoo evaluates PPO the same way.
ATARI_DEFAULTS = dict(
    total_timesteps=10_000_000, num_envs=8, num_steps=128, learning_rate=2.5e-4, num_minibatches=4, update_epochs=4,
    clip_coef=0.1, clip_vloss=True, ent_coef=0.01, vf_coef=0.5, norm_obs=False, norm_reward=False, norm_adv=True,
    log_std_init=0.0, hidden_sizes=(), eval_stochastic=True,
)
# Presets: named settings for one env, for when its best-known return matters more than one setting for all.
# `--preset NAME` puts them on top of the defaults, and flags given explicitly still win. The *-zoo presets are the
# tuned hyperparameters of the SB3 zoo (rl-baselines3-zoo, hyperparams/ppo.yml; its batch_size of B transitions is
# our num_minibatches = num_steps / B; its vf_coef weighs F.mse_loss, without the 0.5 of value_loss, so ours is
# twice the zoo's number). notes/results.md has what each one scores beside the defaults, and notes/README.md why
# the defaults stay general.
PRESETS = {
    "mountaincar": dict(norm_obs=True, ent_coef=0.01),      # scale the tiny velocity; keep trying until one success
    "halfcheetah-zoo": dict(
        num_envs=1, num_steps=512, num_minibatches=8, update_epochs=20, learning_rate=2.0633e-5, anneal_lr=False,
        gamma=0.98, gae_lambda=0.92, clip_coef=0.1, clip_vloss=False, ent_coef=4.01762e-4, vf_coef=1.16192,
        max_grad_norm=0.8, hidden_sizes=(256, 256), activation="relu", log_std_init=-2.0, ortho_init=False,
        norm_adv=True),
}


PRESET_ENVS = {"mountaincar": "MountainCar", "halfcheetah-zoo": "HalfCheetah"}   # the env each preset is tuned for


def warn_if_preset_is_for_another_env(args: Args) -> None:
    env = PRESET_ENVS.get(args.preset or "")
    if env and env not in args.env_id:
        print(f"warning: --preset {args.preset} is tuned for {env}, not {args.env_id}; its settings apply anyway",
              file=sys.stderr)


def env_defaults(env_id: str, preset: str | None = None, recurrent: bool = False) -> dict:
    """The settings `env_id`'s observation and action space call for (DISCRETE_, VECTOR_, CONTINUOUS_,
    ATARI_DEFAULTS, each later one winning; with `recurrent`, RECURRENT_ ones), then the preset's. An unknown
    preset adds nothing (check_args refuses it)."""
    with contextlib.closing(make_env(env_id)) as env:
        continuous, image = isinstance(env.action_space, gym.spaces.Box), is_image(env.observation_space)
        raw = env.unwrapped.observation_space              # before any flattening: one-hot parts are not "real"
        vector = isinstance(raw, gym.spaces.Box) and np.issubdtype(raw.dtype, np.floating) and not image
    memory = ({} if not recurrent or image else
              {**RECURRENT_DEFAULTS, **({} if continuous else RECURRENT_DISCRETE_DEFAULTS)})
    return {**DISCRETE_DEFAULTS, **(VECTOR_DEFAULTS if vector else {}), **(CONTINUOUS_DEFAULTS if continuous else {}),
            **(ATARI_DEFAULTS if image else {}), **memory, **PRESETS.get(preset, {})}


def default_args(env_id: str, preset: str | None = None, **overrides) -> Args:
    """The defaults for `env_id` (env_defaults), then `overrides`, as the command line builds them from its flags:
    `train(default_args("Hopper-v5", seed=2))`, `default_args("HalfCheetah-v5", preset="halfcheetah-zoo")`."""
    table = env_defaults(env_id, preset, overrides.get("recurrent", False))
    return dataclasses.replace(Args(env_id=env_id, preset=preset),
                               **{**table, "tensorboard": installed("tensorboard"), **overrides})


def fill_auto(args: Args) -> Args:
    """train's first step: an Args with AUTO fields (`Args(env_id="Hopper-v5")`) gets them from env_defaults, as the
    command line's default_args would, so Python and the command line run the same. Its values are typed first
    (typed_args). A preset fills AUTO fields only: one that also sets a field with a plain default (halfcheetah-zoo's
    gamma) is refused here, since Args cannot tell gamma=0.99 given from 0.99 left alone; default_args(env_id,
    preset=..., **yours) can, as the command line does. Args without AUTO fields are returned as they are."""
    args = typed_args(args)
    if args.tensorboard is Args.AUTO:
        args = dataclasses.replace(args, tensorboard=installed("tensorboard"))
    if all(getattr(args, name) is not Args.AUTO for name in DISCRETE_DEFAULTS):   # its keys are the other AUTO fields
        return args
    if args.resume:                                                 # --resume: the run's own settings
        table = dataclasses.asdict(args_from_checkpoint(load_checkpoint(args.resume)))
        return dataclasses.replace(args, **{k: v for k, v in table.items()
                                            if getattr(args, k) == ARGS_DEFAULTS[k] and k != "resume"})
    plain = [name for name in PRESETS.get(args.preset, {}) if ARGS_DEFAULTS[name] is not Args.AUTO]
    if plain:
        raise UsageError(f"--preset {args.preset}: also sets {', '.join(plain)}, which Args(...) cannot tell from "
                         f"values you left at their defaults; from Python give it as default_args({args.env_id!r}, "
                         f"preset={args.preset!r}, **your_values), which the command line's flags go through")
    table = env_defaults(args.env_id, args.preset, args.recurrent)
    return dataclasses.replace(args, **{k: v for k, v in table.items() if getattr(args, k) is Args.AUTO})


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


# Flags as other PPO code names them (SB3, the zoo, CleanRL's older scripts), and what ppo.py calls them.
FLAG_ALIASES = {
    "--lr": "--learning-rate", "--env": "--env-id", "--env-name": "--env-id", "--n-envs": "--num-envs",
    "--n-steps": "--num-steps", "--steps": "--total-timesteps (the whole run) or --num-steps (per env per rollout)",
    "--timesteps": "--total-timesteps", "--n-timesteps": "--total-timesteps", "--total-steps": "--total-timesteps",
    "--batch-size": "--num-envs * --num-steps (the batch) and --num-minibatches (minibatch = batch / that)",
    "--minibatch-size": "--num-minibatches (minibatch = num-envs * num-steps / num-minibatches)",
    "--n-epochs": "--update-epochs", "--epochs": "--update-epochs", "--clip-range": "--clip-coef",
    "--clip": "--clip-coef", "--ent": "--ent-coef", "--entropy-coef": "--ent-coef", "--value-coef": "--vf-coef",
    "--gae": "--gae-lambda", "--lambda": "--gae-lambda", "--discount": "--gamma", "--max-grad": "--max-grad-norm",
    "--normalize-advantage": "--norm-adv", "--hidden": "--hidden-sizes", "--net-arch": "--hidden-sizes",
    "--n-minibatches": "--num-minibatches", "--eval": "--evaluate", "--gpu": "--cuda", "--device": "--cuda",
    "--video": "--capture-video", "--checkpoint": "--resume (continue training) or --evaluate (play it)",
}


def check_flag_names(argv: list[str]) -> None:
    """A flag another PPO code uses, or a list written with commas: say what ppo.py wants, in one line."""
    flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(Args)}
    for i, arg in enumerate(argv):
        name = arg.split("=", 1)[0]
        if name in FLAG_ALIASES and name not in flags:
            raise UsageError(f"{name}: ppo.py calls it {FLAG_ALIASES[name]}; see --help")
        if name == "--hidden-sizes":
            values = arg.split("=", 1)[1:] or list(itertools.takewhile(lambda a: not a.startswith("--"), argv[i + 1:]))
            if any("," in value for value in values):
                raise UsageError(f"--hidden-sizes {' '.join(values)}: give the sizes as separate numbers, "
                                 f"e.g. --hidden-sizes {' '.join(values).replace(',', ' ').strip()}")


def whole_numbers_written_as_floats(argv: list[str]) -> list[str]:
    """`--total-timesteps 1e6` means 1000000: an integer flag's value written as a whole float (1e6, 2048.0) is
    taken as that integer (tyro's int() would refuse it). `--num-envs 2.5` is still refused."""
    ints = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(Args) if f.type in ("int", int)}
    out = list(argv)
    for i, arg in enumerate(argv[:-1]):
        value = argv[i + 1]
        if arg in ints and re.fullmatch(r"\d+(\.\d*([eE]\+?\d+)?|[eE]\+?\d+)", value) and float(value).is_integer():
            out[i + 1] = str(int(float(value)))
    return out


def unknown_flags(tokens: list[str]) -> str:
    """tyro's "Unrecognized options" lists the unknown flags with the values given to them (`--learning-rte, 1e-3`):
    name the flags alone (else the stray values), each with the known flag closest to it, if one is close."""
    flags = list(dict.fromkeys(t.split("=", 1)[0] for t in tokens if t.startswith("-") and not _is_float(t)))
    known = [f"--{prefix}{f.name.replace('_', '-')}" for f in dataclasses.fields(Args)
             for prefix in ("", *(("no-",) if f.type in ("bool", bool) else ()))]
    hints = [f"{close[0]}{f' for {name}' if len(flags) > 1 else ''}" for name in flags
             if (close := difflib.get_close_matches(name, known, n=1))]
    return f"Unrecognized options: {', '.join(flags or tokens)}{'; did you mean ' if hints else ''}{', '.join(hints)}"


def negative_numbers_attached(argv: list[str]) -> list[str]:
    """`--learning-rate -1e-3` becomes `--learning-rate=-1e-3`: tyro before 1.0 parses with argparse, which takes
    -1e-3 or -inf for a flag (it knows only -5 and -0.5 as numbers) and says the flag has no value."""
    out = []
    for arg in argv:
        if (out and re.fullmatch(r"--[\w-]+", out[-1]) and arg.startswith("-")
                and not re.fullmatch(r"-\d+|-\d*\.\d+", arg) and _is_float(arg)):
            out[-1] += "=" + arg
        else:
            out.append(arg)
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_args(argv: list[str]) -> Args:
    """Parse flags on top of the defaults for the chosen env (or the resumed run), so --help shows real values."""
    check_versions(command_line=True)                 # before anything is made, and before an old tyro is imported
    import tyro

    check_flag_names(argv)
    argv = negative_numbers_attached(whole_numbers_written_as_floats(argv))
    if _flag_value(argv, "--resume") and _flag_value(argv, "--evaluate"):
        raise UsageError("--evaluate: plays a checkpoint, --resume trains one further; give one of them")

    if _flag_value(argv, "--resume") or _flag_value(argv, "--evaluate"):
        flag = "--resume" if _flag_value(argv, "--resume") else "--evaluate"
        if _flag_value(argv, "--preset"):
            raise UsageError(f"--preset: {flag} uses the settings saved in the checkpoint; drop --preset")
        checkpoint = load_checkpoint(_flag_value(argv, flag), flag)
        if not _flag_value(argv, "--env-id"):                      # --env-id module:EnvId-v0 imports it instead
            import_env_module(checkpoint, f"{flag} {_flag_value(argv, flag)}")
        default = args_from_checkpoint(checkpoint, evaluate=flag == "--evaluate")
    else:
        recurrent = any(a.split("=")[0] == "--recurrent" for a in argv) and "--no-recurrent" not in argv
        default = default_args(_flag_value(argv, "--env-id") or Args.env_id, _flag_value(argv, "--preset"),
                               recurrent=recurrent)
        warn_if_preset_is_for_another_env(default)
    description = __doc__.split("\n\n")[0]
    if not (_flag_value(argv, "--env-id") or _flag_value(argv, "--resume") or _flag_value(argv, "--evaluate")):
        description += (f"\nThe defaults shown are {Args.env_id}'s (discrete actions); `--env-id ENV --help` "
                        "shows those ENV would get.")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return tyro.cli(Args, args=argv, default=default, description=description)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        # tyro draws a 10-line box (plain rules when not on a terminal); this file's rule is one line. The box's
        # first section is the problem ("Error parsing --gamma: ...", "Unrecognized options: --gamm"), and
        # "Perhaps you meant:" heads a suggestion.
        lines = [line.strip().strip("│|").strip() for line in err.getvalue().splitlines()[1:]]   # [0]: the title
        is_rule = lambda line: set(line) <= set("─-╰╯+ ")                                    # noqa: E731
        first = itertools.takewhile(lambda line: not is_rule(line), itertools.dropwhile(is_rule, lines))
        message = " ".join(first).removeprefix("Error parsing ").rstrip(".")
        hint = next((lines[i + 1].split()[0].rstrip(",") for i, line in enumerate(lines[:-1])
                     if line == "Perhaps you meant:"), "")
        hint = f"; did you mean {hint}" if hint else ""
        if message.startswith("Unrecognized options: "):        # tyro lists the values given to them too
            message, hint = unknown_flags(re.split(r",?\s+", message.removeprefix("Unrecognized options: "))), ""
        raise UsageError(f"{message or 'could not parse the flags'}{hint}; see --help")


def quiet_known_warnings(env_id: str) -> None:
    """Keep known third-party warnings, about nothing the user did, from burying the run's first line (gym_make
    calls it before every env it makes)."""
    # gymnasium warns that a -v4 MuJoCo id is out of date, twice per run; we keep v4 only to compare with
    # published tables, where using v4 is the point.
    warnings.filterwarnings("ignore", r".*The environment \S+-v4 is out of date", DeprecationWarning)
    # --async-envs: AsyncVectorEnv reports a worker's exception in three warnings, a traceback among them, then raises
    # it here. For an env that broke the API, the run's one-line error already says all of it; other errors keep
    # their traceback, which shows where in the env it went wrong.
    for message in (r".*ERROR: Received the following error from Worker", r".*ERROR: Raising the last exception",
                    r"(?s).*ERROR: Traceback.*EnvContractError: "):
        warnings.filterwarnings("ignore", message, UserWarning)
    try:      # importing mujoco costs 20 MB and a few tenths of a second: only for a MuJoCo env, or maybe one
        maybe_mujoco = "mujoco" in str(gym.spec(env_id).entry_point)
    except Exception:
        maybe_mujoco = True
    if not maybe_mujoco or importlib.util.find_spec("mujoco") is None:
        return
    import mujoco
    # MuJoCo's default handler prints every warning and appends it to MUJOCO_LOG.TXT in the current folder. This
    # handler replaces both: it drops the warning that gymnasium's own models use the deprecated 'settotalmass'
    # (once per env made), and prints any other. MuJoCo's supported MjLogConfig could stop the file but not filter
    # one warning, and mju_setLogHandler is not in its Python bindings: so this uses the legacy handler, which
    # MuJoCo 3.10 deprecated but keeps working (should a later MuJoCo drop it, the warnings merely print again).
    if hasattr(mujoco, "set_mju_user_warning"):
        mujoco.set_mju_user_warning(lambda text: None if "settotalmass" in text else
                                    print(f"MuJoCo warning: {text}", file=sys.stderr, flush=True))


def launch_command(world: int) -> str:
    """How this process was started, as a shell command without its flags: `python path/to/ppo.py` with the script
    path as given, or under torchrun the launcher's own command line up to the script (read from the parent
    process, on Linux; elsewhere `torchrun ... SCRIPT`)."""
    script = sys.argv[0] if sys.argv and sys.argv[0] else "ppo.py"
    if world == 1:
        return f"python {shlex.quote(script)}"
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            parent = [part.decode() for part in f.read().split(b"\0") if part]
        launcher = parent[:parent.index(script) + 1]
    except (OSError, ValueError):
        return f"torchrun ... {shlex.quote(script)}"
    if Path(launcher[0]).name.startswith("python"):        # python .../torchrun ... or python -m torch.distributed.run
        launcher = ["torchrun", *launcher[2:]] if Path(launcher[1]).name == "torchrun" else ["python", *launcher[1:]]
    return shlex.join(launcher)


def main(argv: list[str]) -> int:
    # `--env-id my_envs:MyEnv-v0` imports my_envs: look for it in the current folder too, as `python -m` would.
    sys.path.insert(1, os.getcwd())
    # Under torchrun every rank runs main(). A bad flag is the same on every rank: rank 0 alone reports it.
    rank, world = rank_and_world()
    try:
        args = parse_args(argv)
        if args.evaluate:
            return 0 if run_evaluation(args, argv) else 130        # 130: stopped by Ctrl-C
        result = train(args)
    except UsageError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except (NonFiniteError, NoLegalActionError, EnvContractError) as e:
        print(f"error: {f'rank {rank}: ' if world > 1 else ''}{e}", file=sys.stderr)
        return 1
    except gym.error.DependencyNotInstalled as e:
        if rank == 0:
            print(f"error: a missing optional package: {e}", file=sys.stderr)
        return 2
    except QuitNow as e:
        checkpoint = e.args[0] if e.args and Path(e.args[0]).is_file() else None
        hint = (f"; the last checkpoint resumes with:\n    {launch_command(world)} --resume {checkpoint}"
                if checkpoint else "")
        if rank == 0:
            print(f"interrupted twice: quit at once; files written so far are intact{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:                     # `python ppo.py ... | head -3`: the reader has gone, so stop as
        with contextlib.suppress(OSError):      # any command in a pipe does (a run keeps its last checkpoint)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error when Python exits
        return 141                              # 128 + SIGPIPE, as a shell reports it
    except KeyboardInterrupt:                   # Ctrl-C before training started (ppo.main called from Python)
        print("interrupted: quit before training started", file=sys.stderr)
        return 130
    finally:
        close_distributed()
    if result["stopped_by"]:
        if rank == 0:
            print(f"checkpoint saved; resume with:\n    {launch_command(world)} --resume {result['checkpoint']}",
                  flush=True)
        return 128 + signal.Signals[result["stopped_by"]].value
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
