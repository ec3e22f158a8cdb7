#!/bin/bash
# alternate the file and three variants, 150k steps each, two rounds; timestamp each progress line
mkdir -p /tmp/abrun8 && cd /tmp/abrun8 || exit 1
for r in 1 2; do
  for f in /work/main/a2c_atari.py /work/ab8/v_autotune.py /work/ab8/v_cl.py /work/ab8/v_novalidate.py; do
    echo "=== round $r $f $(date -u +%H:%M:%S)"
    /work/venv/bin/python -u $f --seed 1 --total-timesteps 150000 --no-stop-at-target --eval-episodes 1 --no-save-model 2>&1 | while IFS= read -r l; do echo "$(date +%s.%N) $l"; done | grep -v "^$"
  done
done
echo DONE
