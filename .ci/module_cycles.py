#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a cycle.

Usage: module_cycles.py CRATE_SRC_DIR [CRATE_SRC_DIR...]

A module's dependencies are the other top-level modules it names through `crate::NAME`
(in `use` items or paths), anywhere in its files (a folder module's files count as one
module). Test code counts too: a test that needs a higher layer belongs in tests/it. Prints
each strongly connected component of more than one module, with the edges inside it.
"""
import re
import sys
from pathlib import Path


def modules(src: Path) -> dict[str, list[Path]]:
    found = {}
    for entry in sorted(src.iterdir()):
        if entry.suffix == ".rs" and entry.stem not in ("lib", "main"):
            found.setdefault(entry.stem, []).append(entry)
        elif entry.is_dir():
            found.setdefault(entry.name, []).extend(sorted(entry.rglob("*.rs")))
    return found


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def edges(src: Path) -> dict[str, set[str]]:
    mods = modules(src)
    graph = {name: set() for name in mods}
    for name, files in mods.items():
        for file in files:
            text = strip_comments(file.read_text())
            for match in re.finditer(r"\bcrate::(\w+)", text):
                target = match.group(1)
                if target in graph and target != name:
                    graph[name].add(target)
            # `use crate::{a, b::c}` groups
            for group in re.finditer(r"\bcrate::\{([^}]*)\}", text):
                for target in re.findall(r"(?:^|,)\s*(\w+)", group.group(1)):
                    if target in graph and target != name:
                        graph[name].add(target)
    return graph


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def main() -> int:
    failed = False
    for arg in sys.argv[1:]:
        src = Path(arg)
        graph = edges(src)
        cycles = [c for c in components(graph) if len(c) > 1]
        for cycle in cycles:
            failed = True
            members = set(cycle)
            print(f"{src}: {len(cycle)} modules import each other in a cycle: {', '.join(cycle)}")
            for name in cycle:
                inside = sorted(graph[name] & members)
                print(f"    {name} -> {', '.join(inside)}")
        if not cycles:
            print(f"{src}: {len(graph)} modules, no import cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
