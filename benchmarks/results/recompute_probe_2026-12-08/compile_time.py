# the first call of each graph of a2c_atari.py's compiled network; run next to a copy of a2c_atari.py
import sys, time, torch
sys.argv = ['x']
import a2c_atari as A
model = A.ActorCritic(6); model.compile()
frames = torch.randint(0, 255, (16, 4, 84, 84), dtype=torch.uint8)
def timed(label, f):
    t0 = time.perf_counter(); f(); print(f"{label}: {time.perf_counter() - t0:.1f} s", flush=True)
def no_grad_forward(rows):
    with torch.no_grad(): model(frames[:rows])
outputs = []
timed("1st training forward", lambda: outputs.append(model(frames)))
timed("2nd training forward", lambda: outputs.append(model(frames)))
timed("1st no-grad forward", lambda: no_grad_forward(16))
timed("2nd no-grad forward", lambda: no_grad_forward(16))
timed("1st backward", lambda: sum(logits.sum() + value.sum() for logits, value in outputs).backward())
timed("1st no-grad forward, 10 rows", lambda: no_grad_forward(10))
timed("1st no-grad forward, 3 rows", lambda: no_grad_forward(3))
