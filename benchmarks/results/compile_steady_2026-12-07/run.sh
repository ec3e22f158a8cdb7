#!/bin/bash
# alternate the file, a model.compile() copy and a channels_last copy; timestamp each progress line
sed 's/^    model = ActorCritic(envs.single_action_space.n).to(device)$/&\n    model.compile()/' /work/main/a2c_atari.py > /tmp/a2c_atari_compile.py
sed 's/^    model = ActorCritic(envs.single_action_space.n).to(device)$/&.to(memory_format=torch.channels_last)/; s|hidden = self.body(obs.float() / 255.0)|hidden = self.body((obs.float() / 255.0).contiguous(memory_format=torch.channels_last))|' /work/main/a2c_atari.py > /tmp/a2c_atari_cl.py
grep -c "compile()" /tmp/a2c_atari_compile.py; grep -c channels_last /tmp/a2c_atari_cl.py
mkdir -p /tmp/abrun && cd /tmp/abrun || exit 1
for r in 1 2; do
  for f in /work/main/a2c_atari.py /tmp/a2c_atari_compile.py /tmp/a2c_atari_cl.py; do
    echo "=== round $r $f"
    /work/venv/bin/python -u $f --seed 1 --total-timesteps 150000 --no-stop-at-target --eval-episodes 1 --no-save-model 2>&1 | while IFS= read -r l; do echo "$(date +%s.%N) $l"; done | grep -v "^$"
  done
done
echo DONE
