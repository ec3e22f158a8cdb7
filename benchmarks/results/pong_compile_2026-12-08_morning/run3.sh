#!/bin/bash
# seeds 1 and 3 one at a time with the defaults (compile on), each from a cold Inductor cache
cd /work/pongn
for s in 1 3; do
  rm -rf /tmp/torchinductor_$(whoami)
  echo "=== seed $s start $(date -u +%H:%M:%S)"
  /work/venv/bin/python -u a2c_atari.py --seed $s --total-timesteps 5000000 > log3_s$s.txt 2>&1
  echo "=== seed $s end $(date -u +%H:%M:%S) rc=$?"
done
