#!/usr/bin/env python3
"""Fails when a workspace crate gains a dependency its layer forbids (ARCHITECTURE.md, "Layers").

Reads `cargo metadata` (the resolved graph, normal dependencies only, transitively), so a
forbidden crate cannot sneak in through another workspace crate either. Prints every violation
with the path that brings it in.
"""
import json
import subprocess
import sys

# crate -> crates it must never reach, directly or through anything it depends on (normal,
# non-dev, non-build dependencies: what ships in it)
FORBIDDEN_ANYWHERE = {
    "lakeforge-planner": ["deltalake", "ballista", "ballista-core", "lakeforge-engine",
                          "lakeforge-worker", "lakeforge-udfs", "clap"],
    "lakeforge-udfs": ["deltalake", "ballista", "ballista-core", "lakeforge-engine",
                       "lakeforge-worker", "lakeforge-planner", "clap"],
    "lakeforge-worker": ["deltalake", "lakeforge-engine", "lakeforge-planner", "clap"],
    "lakeforge-engine": ["clap", "indicatif", "lakeforge-benchmarks", "lakeforge-cli",
                         "lakeforge-datagen", "tpchgen"],
    "lakeforge-datagen": ["datafusion", "deltalake", "lakeforge-engine", "lakeforge-planner"],
    "lakeforge-benchmarks": ["lakeforge-engine", "lakeforge-cli", "deltalake", "ballista"],
    "lakeforge-cli": ["lakeforge-benchmarks", "tpchgen"],
}
# crate -> crates it must not name in its own Cargo.toml. DataFusion itself brings object_store
# (and prost brings anyhow), so these are about what our own code may use, not the tree.
FORBIDDEN_DIRECT = {
    "lakeforge-planner": ["object_store"],
    "lakeforge-udfs": ["object_store"],
    "lakeforge-engine": ["anyhow", "tracing-subscriber"],
}
# crates only some workspace members may depend on *directly*
DIRECT_ONLY = {
    "ballista": {"lakeforge-worker"},
    "ballista-core": {"lakeforge-worker"},
    "ballista-scheduler": {"lakeforge-worker"},
    "ballista-executor": {"lakeforge-worker"},
    "deltalake": {"lakeforge-engine"},
}


def host_triple() -> str:
    for line in subprocess.check_output(["rustc", "-vV"], text=True).splitlines():
        if line.startswith("host: "):
            return line.removeprefix("host: ")
    raise SystemExit("dependency check: rustc -vV names no host")


def main() -> int:
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform",
         host_triple()]))
    names = {p["id"]: p["name"] for p in meta["packages"]}
    members = {names[m] for m in meta["workspace_members"]}
    graph = {}
    for node in meta["resolve"]["nodes"]:
        deps = []
        for dep in node["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            if None in kinds:  # a normal dependency (dev and build ones are not shipped)
                deps.append(names[dep["pkg"]])
        graph[names[node["id"]]] = deps

    problems = []
    missing = (set(FORBIDDEN_ANYWHERE) | set(FORBIDDEN_DIRECT)) - members
    if missing:
        problems.append(f"the check names crates that are not workspace members: {sorted(missing)}")
    for crate, forbidden in FORBIDDEN_DIRECT.items():
        for bad in forbidden:
            if bad in graph.get(crate, []):
                problems.append(f"{crate} must not depend on {bad} directly")
    for crate, forbidden in FORBIDDEN_ANYWHERE.items():
        # breadth-first, remembering how each crate was reached
        seen = {crate: [crate]}
        queue = [crate]
        while queue:
            current = queue.pop(0)
            for dep in graph.get(current, []):
                if dep not in seen:
                    seen[dep] = seen[current] + [dep]
                    queue.append(dep)
        for bad in forbidden:
            if bad in seen:
                problems.append(f"{crate} must not depend on {bad}: {' -> '.join(seen[bad])}")
    for dep, allowed in DIRECT_ONLY.items():
        for member in sorted(members):
            if dep in graph.get(member, []) and member not in allowed:
                problems.append(f"only {sorted(allowed)} may depend on {dep} directly, "
                                f"but {member} does")
    for problem in problems:
        print(f"dependency check: {problem}", file=sys.stderr)
    if not problems:
        print(f"dependency check: {len(members)} workspace crates keep their layers")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
