"""Tests for ppo.py: known answers worked out by hand, properties that must hold, and short runs that must learn.

Run with:  python -m pytest -q test_ppo.py
"""

import csv
import math
import socket
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ppo

HERE = Path(__file__).resolve().parent


def run_cli(*flags, cwd=None, timeout=120, env=None):
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
    torch.testing.assert_close(agent.distribution(torch.randn(2, 4)).base_dist.stddev,
                               torch.full((2, 3), math.exp(-2.0)))
    assert any(isinstance(m, nn.Tanh) for m in ppo.Agent(OBS, gym.spaces.Discrete(2)).actor)
    # orthogonal init gives the last policy layer weights of norm ~0.01 per row; nn.Linear's own init, far more
    ortho, default = (ppo.Agent(OBS, gym.spaces.Discrete(2), (64,), ortho_init=o).actor[-1] for o in (True, False))
    torch.testing.assert_close(ortho.weight.norm(dim=1), torch.full((2,), 0.01))
    assert (ortho.bias == 0).all() and default.weight.norm(dim=1).min() > 0.2 and (default.bias != 0).all()


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


def test_unsupported_spaces_are_refused():
    with pytest.raises(ppo.UsageError, match="action space .* not supported"):
        ppo.check_spaces(OBS, gym.spaces.Tuple([gym.spaces.Discrete(2)]), "X-v0")
    with pytest.raises(ppo.UsageError, match="observation space .* not supported"):
        ppo.check_spaces(gym.spaces.Dict({"a": OBS}), gym.spaces.Discrete(2), "X-v0")


# ---------------------------------------------------------------------------------------------------------------------
# Learning runs
# ---------------------------------------------------------------------------------------------------------------------
def test_cartpole_learns(tmp_path):
    args = ppo.default_args("CartPole-v1", total_timesteps=40_000, runs_dir=str(tmp_path), quiet=True)
    result = ppo.train(args)
    returns = result["episode_returns"]
    # random play averages ~22; a clearly learning agent is far above it within 40k steps
    assert np.mean(returns[:20]) < 60
    assert np.mean(returns[-20:]) > 200, returns[-20:]
    run_dir = result["run_dir"]
    episodes = read_csv(run_dir / "episodes.csv")
    assert list(episodes[0]) == ["global_step", "wall_time", "episodic_return", "episodic_length"]
    assert len(episodes) == len(returns)
    updates = read_csv(run_dir / "updates.csv")
    assert len(updates) == args.num_iterations
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "SPS"):
        assert key in updates[0]
    checkpoint = torch.load(run_dir / "checkpoint.pt")
    assert checkpoint["global_step"] == args.num_iterations * args.batch_size
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


def test_box_actions_end_to_end_and_checkpoint_reload(tmp_path):
    args = ppo.default_args("Pendulum-v1", total_timesteps=4096, num_steps=1024, runs_dir=str(tmp_path), quiet=True)
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


def test_same_seed_gives_identical_episodes(tmp_path):
    def run(sub):
        args = ppo.Args(total_timesteps=8192, runs_dir=str(tmp_path / sub), quiet=True, seed=7)
        rows = read_csv(ppo.train(args)["run_dir"] / "episodes.csv")
        return [(r["global_step"], r["episodic_return"], r["episodic_length"]) for r in rows]

    first, second = run("a"), run("b")
    assert len(first) > 50 and first == second


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
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
    continuous = run_cli("--env-id", "Pendulum-v1", "--help")
    assert "(default: 2048)" in continuous.stdout and "(default: 2048)" not in out.stdout


@pytest.mark.parametrize("flags, expected", [
    (["--gamma", "1.5"], "--gamma 1.5: must be in (0, 1]"),
    (["--gamma", "abc"], "--gamma"),
    (["--num-envs", "0"], "--num-envs 0: must be a positive integer"),
    (["--num-minibatches", "3"], "--num-minibatches 3: must divide"),
    (["--total-timesteps", "10"], "--total-timesteps 10: smaller than one batch"),
    (["--clip-coef", "0"], "--clip-coef 0.0: must be > 0"),
    (["--learning-rate", "-1e-3"], "--learning-rate -0.001: must be > 0"),
    (["--ent-coef", "-0.1"], "--ent-coef -0.1: must be >= 0"),
    (["--env-id", "CartPole-v9"], "--env-id CartPole-v9: cannot make this environment"),
    (["--env-id", "CartPol-v1"], "did you mean CartPole-v1"),
    (["--resume", "/nonexistent/checkpoint.pt"], "--resume /nonexistent/checkpoint.pt: no such file"),
    (["--bogus-flag", "1"], "Unrecognized options"),
    (["--num-steps", "-5"], "--num-steps -5: must be a positive integer"),
    (["--env-id", "Blackjack-v1"], "observation space Tuple"),
    (["--gae-lambda", "1.5"], "--gae-lambda 1.5: must be in [0, 1]"),
    (["--update-epochs", "0"], "--update-epochs 0: must be a positive integer"),
    (["--target-kl", "-1"], "--target-kl -1.0: must be > 0"),
    (["--hidden-sizes", "0"], "--hidden-sizes 0: must be one or more positive layer sizes"),
    (["--max-grad-norm", "0"], "--max-grad-norm 0.0: must be > 0"),
    (["--preset", "cheetah"], "--preset cheetah: no such preset; valid: mountaincar, halfcheetah-zoo"),
    (["--activation", "gelu"], "'gelu' for argument '--activation'. Expected one of ('tanh', 'relu')"),
    (["--resume", "x.pt", "--preset", "mountaincar"], "--preset: --resume uses the settings saved in the checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(flags, expected, capsys, tmp_path):
    code = ppo.main([*flags, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not any(tmp_path.iterdir())                  # refused before anything was created


def test_bad_input_through_the_real_cli_has_no_traceback():
    out = run_cli("--gamma", "2")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --gamma 2.0: must be in (0, 1]; "
                                               "typical: gamma 0.99, lambda 0.95"]
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(capsys, tmp_path):
    assert ppo.main(["--cuda", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cuda: no CUDA GPU is visible" in err, err


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
def test_signal_saves_and_resume_continues_exactly(tmp_path, sig, code):
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
    assert f"python ppo.py --resume {checkpoint}" in stdout
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
    rows = read_csv(next((path / "runs").glob("my_envs_GoRight-v0__*/episodes.csv")))
    lengths = [int(r["episodic_length"]) for r in rows]
    assert np.mean(lengths[-20:]) < 20 < np.mean(lengths[:20])       # it learned to walk straight to the goal


def test_non_finite_observation_stops_with_env_and_step(custom_env_path):
    path, env = custom_env_path
    out = run_cli("--env-id", "my_envs:GoRightNaN-v0", "--num-envs", "1", "--runs-dir", str(path / "runs"),
                  env=env, cwd=path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: env GoRightNaN-v0 returned a non-finite observation or reward at global step 300; "
        "check the environment's step()"]


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
    assert f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} over 3 deterministic" in capsys.readouterr().out


def test_capture_video_writes_mp4(tmp_path):
    pytest.importorskip("moviepy")
    pytest.importorskip("pygame")
    result = ppo.train(ppo.Args(total_timesteps=1024, num_envs=2, num_steps=512, capture_video=True,
                                runs_dir=str(tmp_path), quiet=True))
    assert list((result["run_dir"] / "videos").glob("*.mp4"))


def test_capture_video_without_moviepy_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "moviepy", None)                  # makes `import moviepy` fail
    assert ppo.main(["--capture-video", "--runs-dir", str(tmp_path)]) == 2
    assert "pip install moviepy" in capsys.readouterr().err


def test_plot_command_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [ppo.train(ppo.Args(total_timesteps=2048, seed=s, runs_dir=str(tmp_path), quiet=True))["run_dir"]
            for s in (1, 2)]
    out = subprocess.run([sys.executable, str(HERE / "notes" / "plot.py"), *map(str, runs), "-o",
                          str(tmp_path / "curve.png")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = subprocess.run([sys.executable, str(HERE / "notes" / "plot.py"), *map(str, runs), "--overlay", "-o",
                          str(tmp_path / "overlay.png")], capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "overlay.png").stat().st_size > 1000, out.stderr


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
collect, train = ppo.collect_rollout, ppo.train

def recording_collect(*args, **kwargs):
    episodes = collect(*args, **kwargs)
    with open(os.path.join(out, f"episodes{{rank}}.jsonl"), "a") as f:
        f.writelines(json.dumps(ep) + "\\n" for ep in episodes or [])
    return episodes

def saving_train(args):
    result = train(args)
    torch.save(result["agent"].state_dict(), os.path.join(out, f"agent{{rank}}.pt"))
    return result

ppo.collect_rollout, ppo.train = recording_collect, saving_train
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
