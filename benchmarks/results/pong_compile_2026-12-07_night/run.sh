#!/bin/bash
# seed 2 with the defaults (compile on), alone, from a cold Inductor cache (run by hand, 2026-12-07 23:25 UTC)
rm -rf /tmp/torchinductor_$(whoami)
python -u a2c_atari.py --seed 2 --total-timesteps 5000000 > log_s2.txt 2>&1
