#!/usr/bin/env python3
"""Top-level modules of one crate (its src/ dir) and the crate:: paths between them; exits 1 on a cycle.
Usage: scripts/module-cycles.py broker/src"""
import re, os, sys
root = sys.argv[1]
mods = {}
for f in os.listdir(root):
    p = os.path.join(root, f)
    name = f[:-3] if f.endswith('.rs') else f
    if name in ('lib', 'bin', 'main'): continue
    files = [p] if f.endswith('.rs') else [os.path.join(d, x) for d, _, xs in os.walk(p) for x in xs if x.endswith('.rs')]
    mods[name] = files
graph = {}
for m, files in mods.items():
    deps = set()
    for fp in files:
        if fp.endswith('tests.rs'): continue
        txt = open(fp).read()
        txt = txt.split('#[cfg(test)]\nmod tests')[0]
        # doc links and comments are not imports
        txt = '\n'.join(l for l in txt.split('\n') if not l.lstrip().startswith('//'))
        for d in re.findall(r'crate::(\w+)', txt):
            if d in mods and d != m: deps.add(d)
        for grp in re.findall(r'use crate::\{([^}]*)\}', txt):
            for d in re.findall(r'(\w+)', grp):
                if d in mods and d != m: deps.add(d)
    graph[m] = deps
for m in sorted(graph): print(m, '->', sorted(graph[m]))
# cycles via DFS
color = {}; cyc = []
def dfs(u, stack):
    color[u] = 1; stack.append(u)
    for v in graph[u]:
        if color.get(v) == 1: cyc.append(stack[stack.index(v):] + [v])
        elif not color.get(v): dfs(v, stack)
    stack.pop(); color[u] = 2
for m in graph:
    if not color.get(m): dfs(m, [])
print('cycles:', cyc or 'none'); sys.exit(1 if cyc else 0)
