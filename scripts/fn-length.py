#!/usr/bin/env python3
"""Rust functions longer than LIMIT lines (default 120), production code only (skips #[cfg(test)] items, tests.rs,
tests/, benches/, examples/); exits 1 when there is one. Usage: scripts/fn-length.py broker/src api/src ..."""
import re, sys, os
LIMIT = int(os.environ.get("LIMIT", "120"))
fn_re = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"C"\s+)?fn\s+(\w+)')
def strip(line):
    # drop string literals and line comments (rough) so braces inside them do not count
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    i = line.find('//')
    return line[:i] if i >= 0 else line
def scan(path):
    lines = open(path, encoding='utf-8').read().split('\n')
    out = []; i = 0; skip_next = False
    while i < len(lines):
        l = lines[i]
        if re.match(r'^\s*#\[cfg\((all\()?test', l):
            skip_next = True; i += 1; continue
        m = fn_re.match(l)
        is_item = m or re.match(r'^\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{', l) or re.match(r'^\s*impl\b', l)
        if is_item or (skip_next and '{' in strip(l)):
            # find the body's extent
            depth = 0; j = i; started = False
            while j < len(lines):
                s = strip(lines[j])
                for c in s:
                    if c == '{': depth += 1; started = True
                    elif c == '}': depth -= 1
                if started and depth == 0: break
                if not started and s.rstrip().endswith(';'): break
                j += 1
            if skip_next:
                skip_next = False; i = j + 1; continue
            if m:
                n = j - i + 1
                if n > LIMIT: out.append((n, path, i + 1, m.group(7)))
                i = j + 1; continue
            i += 1; continue
        if skip_next and l.strip() and not l.strip().startswith('#') and not l.strip().startswith('//'):
            if l.rstrip().endswith(';'): skip_next = False
        i += 1
    return out
res = []
for root in sys.argv[1:]:
    for d, _, fs in os.walk(root):
        if '/target' in d or '/tests' in d.replace(root, '', 1) or '/benches' in d or '/examples' in d: continue
        for f in fs:
            if f.endswith('.rs') and f != 'tests.rs':
                res += scan(os.path.join(d, f))
for n, p, ln, name in sorted(res, reverse=True):
    print(f"{n:5} {p}:{ln} {name}")
sys.exit(1 if res else 0)
