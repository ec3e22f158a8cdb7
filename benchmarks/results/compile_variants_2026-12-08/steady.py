# steady steps/s of each run in ab.log: from the first progress line past 60k steps to the last one
import re, sys
runs, cur = [], None
for line in open(sys.argv[1], newline="\n").read().split("\n"):
    if line.startswith("=== round"):
        cur = [line.split()[2], line.split()[3], []]; runs.append(cur)
    m = re.match(r"(\d+\.\d+) \r?step (\d+) ", line)
    if m and cur:
        cur[2].append((float(m[1]), int(m[2])))
for rnd, name, pts in runs:
    pts = [p for p in pts if p[1] >= 60000]
    if len(pts) > 1:
        print(f"round {rnd} {name.split('/')[-1]} steps/s from the progress line at {pts[0][1]} to {pts[-1][1]} : {(pts[-1][1]-pts[0][1])/(pts[-1][0]-pts[0][0]):.0f}")
