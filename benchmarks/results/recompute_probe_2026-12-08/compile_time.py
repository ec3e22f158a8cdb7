import time, sys, torch
sys.argv = ['x']
import a2c_atari as A
from torch.distributions import Categorical
model = A.ActorCritic(6); model.compile()
opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-5, fused=True)
x = torch.randint(0, 255, (16, 4, 84, 84), dtype=torch.uint8)
def t(label, f):
    t0 = time.perf_counter(); f(); print(f"{label}: {time.perf_counter() - t0:.1f} s", flush=True)
out = {}
t("1st training forward", lambda: out.update(o=model(x)))
t("2nd training forward", lambda: out.update(o2=model(x)))
def nog():
    with torch.no_grad(): model(x)
t("1st no-grad forward", nog)
t("2nd no-grad forward", nog)
t("1st backward", lambda: (out["o"][1].sum() + out["o"][0].sum() + out["o2"][1].sum()).backward())
def ev():
    with torch.no_grad(): model(x[:10])
t("1st no-grad forward, 10 rows", ev)
t("1st no-grad forward, 3 rows", lambda: ev.__call__() if False else torch.no_grad()(lambda: model(x[:3]))())
