"""SB3 PPO on CartPole-v1 with CleanRL ppo.py's default hyperparameters, for notes/benchmark.py (needs stable-baselines3).

Usage:
    OMP_NUM_THREADS=1 <sb3-venv>/bin/python notes/sb3_ppo.py --seed 1 --total-timesteps 500000

Prints one JSON line at the end with wall time and steps/s.
Settings mirrored from CleanRL cleanrl/ppo.py defaults:
  4 envs (DummyVecEnv), n_steps=128 (rollout 512), batch_size=128 (4 minibatches), n_epochs=4,
  lr 2.5e-4 linearly annealed to 0, gamma 0.99, gae_lambda 0.95, clip 0.2, ent 0.01, vf 0.5,
  max_grad_norm 0.5, separate 64x64 tanh actor and critic, orthogonal init, Adam eps 1e-5 (SB3 default).
One difference stays: SB3 does not clip the value loss by default (CleanRL and ppo.py do).
"""

import argparse
import json
import os
import sys
import time

import torch

torch.set_num_threads(1)

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=500000)
    p.add_argument("--env-id", type=str, default="CartPole-v1")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (0 = silent during training)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    env = make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed, vec_env_cls=DummyVecEnv)

    lr0 = 2.5e-4

    def linear_schedule(progress_remaining: float) -> float:
        # progress_remaining goes 1 -> 0 over training
        return lr0 * progress_remaining

    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=linear_schedule,
        n_steps=128,
        batch_size=128,
        n_epochs=4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs=dict(
            net_arch=dict(pi=[64, 64], vf=[64, 64]),
            activation_fn=torch.nn.Tanh,
            ortho_init=True,
        ),
        device="cpu",
        seed=args.seed,
        verbose=args.verbose,
    )
    t1 = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    t2 = time.perf_counter()
    env.close()

    steps = int(model.num_timesteps)
    ep_returns = [ep["r"] for ep in model.ep_info_buffer]
    result = {
        "impl": "sb3",
        "env_id": args.env_id,
        "seed": args.seed,
        "requested_timesteps": args.total_timesteps,
        "timesteps": steps,  # SB3 rounds up to a whole rollout (num_envs * n_steps = 512)
        "setup_s": round(t1 - t0, 4),
        "learn_wall_s": round(t2 - t1, 4),
        "total_wall_s": round(t2 - t0, 4),
        "sps": round(steps / (t2 - t1), 1),  # steps/s over model.learn() only
        "mean_ep_return_last100": (round(float(sum(ep_returns) / len(ep_returns)), 2) if ep_returns else None),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "sb3": __import__("stable_baselines3").__version__,
            "gymnasium": __import__("gymnasium").__version__,
            "numpy": __import__("numpy").__version__,
        },
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
