# steps/s of a2c_atari.py's loop (MODE=graph) against a no-grad rollout and one pass over the batch (MODE=recompute)
import time, sys, os, torch
sys.argv = ['x']
import a2c_atari as A
from torch.distributions import Categorical
from ale_py.vector_env import AtariVectorEnv
MODE = os.environ["MODE"]; NE = 16
if os.environ.get("FTZ"): torch.set_flush_denormal(True)
envs = AtariVectorEnv("pong", NE, autoreset_mode="SameStep", reward_clipping=False)
model = A.ActorCritic(6); model.compile()
opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-5, fused=True)
obs, _ = envs.reset(seed=1)
nobs = torch.as_tensor(obs)
def graph():
    global nobs
    lps, vals = [], []
    for _ in range(5):
        logits, v = model(nobs); p = Categorical(logits=logits); a = p.sample(); lps.append(p.log_prob(a)); vals.append(v)
        o, *_ = envs.step(a.numpy()); nobs = torch.as_tensor(o)
    with torch.no_grad(): model(nobs)  # the bootstrap V(s_T), paid as in the file
    loss = (torch.cat(vals) ** 2).mean() - torch.cat(lps).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5); opt.step()
def recompute():
    global nobs
    obss, acts = [], []
    with torch.no_grad():
        for _ in range(5):
            logits, _ = model(nobs); a = Categorical(logits=logits).sample(); obss.append(nobs); acts.append(a)
            o, *_ = envs.step(a.numpy()); nobs = torch.as_tensor(o)
        model(nobs)  # the bootstrap V(s_T)
    logits, vals = model(torch.cat(obss)); p = Categorical(logits=logits)
    loss = (vals ** 2).mean() - p.log_prob(torch.cat(acts)).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5); opt.step()
f = graph if MODE == "graph" else recompute
for _ in range(60): f()
t = time.perf_counter(); N = 400
for _ in range(N): f()
print(f"{MODE} sps={N * 5 * NE / (time.perf_counter() - t):.0f}", flush=True)
