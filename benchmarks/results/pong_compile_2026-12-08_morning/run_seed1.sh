#!/bin/bash
# seed 1 again with the defaults (compile on), from a cold Inductor cache; run with log4_s1.txt (01:18), log6_s1.txt (02:11), log7_s1.txt (03:13) and log8_s1.txt (04:11)
cd /work/pongn
rm -rf /tmp/torchinductor_$(whoami)
echo "=== seed 1 start $(date -u +%H:%M:%S)"
/work/venv/bin/python -u a2c_atari.py --seed 1 --total-timesteps 5000000 > "$1" 2>&1
echo "=== seed 1 end $(date -u +%H:%M:%S) rc=$?"
