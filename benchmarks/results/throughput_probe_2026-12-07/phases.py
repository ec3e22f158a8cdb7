import time, sys, numpy as np, torch
sys.argv=['x']
import a2c_atari as A
from torch.distributions import Categorical
import os
NE=int(os.environ.get("NE","16"))
envs_threads = int(os.environ.get("ET","0"))
from ale_py.vector_env import AtariVectorEnv
envs = AtariVectorEnv("pong", NE, autoreset_mode="SameStep", reward_clipping=False, num_threads=envs_threads)
model = A.ActorCritic(6)
if os.environ.get("COMPILE"): model.compile()
opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-5, fused=True)
obs,_ = envs.reset(seed=1)
nobs = torch.as_tensor(obs)
t_env=t_fwd=t_upd=0.0
c_env=c_fwd=c_upd=0.0
def rollout_update():
    global nobs,t_env,t_fwd,t_upd,c_env,c_fwd,c_upd
    lps=[];vals=[]
    for _ in range(5):
        t0=time.perf_counter();c0=time.process_time()
        logits,v = model(nobs); p=Categorical(logits=logits); a=p.sample(); lps.append(p.log_prob(a)); vals.append(v)
        t1=time.perf_counter();c1=time.process_time()
        o,r,te,tr,info = envs.step(a.numpy())
        nobs=torch.as_tensor(o)
        t2=time.perf_counter();c2=time.process_time(); t_fwd+=t1-t0; t_env+=t2-t1; c_fwd+=c1-c0; c_env+=c2-c1
    t0=time.perf_counter();c0=time.process_time()
    with torch.no_grad(): lv = model(nobs)[1]
    loss = (torch.cat(vals)**2).mean() - (torch.cat(lps)).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(),0.5); opt.step()
    t_upd+=time.perf_counter()-t0; c_upd+=time.process_time()-c0
for _ in range(50): rollout_update()
t_env=t_fwd=t_upd=0.0
c_env=c_fwd=c_upd=0.0
t=time.perf_counter()
N=400
for _ in range(N): rollout_update()
T=time.perf_counter()-t
steps=N*5*NE
print(f"nt={torch.get_num_threads()} sps={steps/T:.0f}  per agent-step us: env {t_env/steps*1e6:.0f} fwd {t_fwd/steps*1e6:.0f} upd {t_upd/steps*1e6:.0f}; cores busy env {c_env/t_env:.2f} fwd {c_fwd/t_fwd:.2f} upd {c_upd/t_upd:.2f}")
