import time, numpy as np, os
from ale_py.vector_env import AtariVectorEnv
for nt in (1,2):
    envs = AtariVectorEnv("pong", 16, autoreset_mode="SameStep", reward_clipping=False, num_threads=nt)
    envs.reset(seed=1)
    a = np.random.randint(0,6,(2000,16))
    for i in range(50): envs.step(a[i])
    t=time.perf_counter(); c=time.process_time()
    for i in range(1000): envs.step(a[i])
    T=time.perf_counter()-t; C=time.process_time()-c
    print(f"ale threads {nt}: {T/16000*1e6:.0f} us wall per agent step, {C/16000*1e6:.0f} core-us, cores {C/T:.2f}")
    envs.close()
