import time, sys, os, numpy as np, torch
sys.argv=['x']
import a2c_atari as A
from torch.distributions import Categorical
from ale_py.vector_env import AtariVectorEnv
G = int(os.environ.get("G","2")); ET=int(os.environ.get("ET","0"))
per = 16//G
groups = [AtariVectorEnv("pong", per, autoreset_mode="SameStep", reward_clipping=False, num_threads=ET) for _ in range(G)]
model = A.ActorCritic(6)
if os.environ.get("COMPILE"): model.compile(dynamic=False)
opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-5, fused=True)
nobs = [torch.as_tensor(g.reset(seed=1+i*per)[0]) for i,g in enumerate(groups)]
def rollout_update():
    lps=[];vals=[]
    for t in range(5):
        for gi,g in enumerate(groups):
            # this group steps in ALE's threads while the next group's forward pass runs
            logits,v = model(nobs[gi]); p=Categorical(logits=logits); a=p.sample(); lps.append(p.log_prob(a)); vals.append(v)
            g.send(a.numpy())
        for gi,g in enumerate(groups):
            o,r,te,tr,info = g.recv(); nobs[gi]=torch.as_tensor(o)
    with torch.no_grad(): lv=[model(n)[1] for n in nobs]
    loss = (torch.cat(vals)**2).mean() - (torch.cat(lps)).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(),0.5); opt.step()
for _ in range(50): rollout_update()
t=time.perf_counter(); N=400
for _ in range(N): rollout_update()
T=time.perf_counter()-t
print(f"G={G} ET={ET} nt={torch.get_num_threads()} compile={bool(os.environ.get('COMPILE'))} sps={N*80/T:.0f}")
