#!/bin/bash
# --n-envs 32 --n-steps 4 (lr 5e-4, compile on), one seed at a time, alone, each from a cold Inductor cache
cd /work/pong32
for s in "$@"; do
  rm -rf /tmp/torchinductor_$(whoami)
  echo "=== seed $s start $(date -u +%H:%M:%S)"
  /work/venv/bin/python -u a2c_atari.py --seed $s --n-envs 32 --n-steps 4 --total-timesteps 5000000 > log_s$s.txt 2>&1
  echo "=== seed $s end $(date -u +%H:%M:%S) rc=$?"
done
