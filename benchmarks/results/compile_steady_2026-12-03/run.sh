#!/bin/bash
# alternate the file and its compiled copy; timestamp each progress line (run as rounds 1-2, then 3-4)
# the copy: model.compile() after the model is built
sed 's/^    model = ActorCritic(envs.single_action_space.n).to(device)$/&\n    model.compile()/' /work/main/a2c_atari.py > /tmp/a2c_atari_compile.py
mkdir -p /tmp/abrun
cd /tmp/abrun || exit 1
for r in 1 2 3 4; do
  for f in /work/main/a2c_atari.py /tmp/a2c_atari_compile.py; do
    echo "=== round $r $f"
    /work/venv/bin/python -u $f --seed 1 --total-timesteps 150000 --no-stop-at-target --eval-episodes 1 --no-save-model 2>&1 | while IFS= read -r l; do echo "$(date +%s.%N) $l"; done | grep -v "^$"
  done
done
echo DONE
