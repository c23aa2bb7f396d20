#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ from the
repository's own examples, docs and tests. Rerun it to refresh the seeds; file names are
content hashes, as libFuzzer names its own."""
import hashlib
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def sources(*globs):
    for pattern in globs:
        for path in sorted(ROOT.glob(pattern)):
            if "target" not in path.parts:
                yield path.read_text(errors="replace")


RAW = re.compile(r'r#"(.*?)"#', re.S)
YAML_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.S)
CONDITION = re.compile(r'"([a-z_0-9]+ ?(?:>=|<=|>|<) ?[^"{}\\]{1,40})"')

# Rollout specs: raw strings and yaml blocks that hold a `deployment:`.
texts = []
for text in sources("caxton-strategies/**/*.rs", "caxton-cli/**/*.rs", "caxton-host/**/*.rs",
                    "caxton-server/**/*.rs", "examples/**/*.rs"):
    texts += [t for t in RAW.findall(text) if "deployment" in t]
for text in sources("docs/*.md", "README.md", "caxton-strategies/README.md"):
    texts += [t for t in YAML_BLOCK.findall(text) if "deployment:" in t]
for text in texts:
    if text.lstrip().startswith("{"):
        write("rollout_spec", b"\x01" + text.encode())
    else:
        write("rollout_spec", b"\x00" + text.encode())

# Conditions: every condition-like string literal of the strategies' sources and tests.
conditions = set()
for text in sources("caxton-strategies/**/*.rs", "caxton-host/**/*.rs", "docs/*.md"):
    conditions.update(CONDITION.findall(text))
for c in sorted(conditions):
    write("condition", c)
for extra in ["error_rate>1%,p99>100ms", "p99 > baseline", "tokens > 1e6",
              "cost_per_session > baseline * 1.5", "output_match < 99%"]:
    write("condition", extra)

# Metric strings of `caxton simulate`: baseline, newline, candidate.
profiles = set()
for text in sources("caxton-strategies/**/*.rs", "caxton-cli/**/*.rs", "docs/*.md",
                    "README.md"):
    profiles.update(re.findall(r'"((?:[a-z_0-9]+=[^",\s]+,?)+)"', text))
profiles = sorted(p for p in profiles if "=" in p)
for p in profiles:
    write("sim_metrics", p)
for a, b in zip(profiles, profiles[1:]):
    write("sim_metrics", f"{a}\n{b}")

# Contract inputs: sections (0x00) and test files (0x01).
for section in [{"accepts": ["order"], "emits": ["receipt", "error"]},
                {"accepts": ["chat"], "emits": ["reply"]}, {"accepts": [], "emits": []}]:
    write("contract", b"\x00" + json.dumps(section).encode())
for text in sources("examples/agents/**/contract_tests.json",
                    "caxton-cli/samples/*contract_tests.json"):
    write("contract", b"\x01" + text.encode())

# Fleet specs: the example, as YAML (0x00) and as JSON (0x01), and the docs' blocks.
for text in sources("examples/fleet/*.yaml"):
    write("fleet_spec", b"\x00" + text.encode())
for text in sources("docs/manifests.md"):
    for block in YAML_BLOCK.findall(text):
        if "fleet:" in block:
            write("fleet_spec", b"\x00" + block.encode())
for text in sources("caxton-k8s/**/*.rs"):
    for raw in RAW.findall(text):
        if "fleet" in raw:
            write("fleet_spec", (b"\x01" if raw.lstrip().startswith("{") else b"\x00")
                  + raw.encode())

# Disk cache: the genuine file (mode 2, no changes), a flipped tag byte, a cut body, a
# replaced body, an empty file.
for seed in [b"\x02", b"\x02\x60\x00\x01", b"\x03\x00\x01", b"\x01\x00asm",
             b"\x00", b"\x00CXARTFCT\x02\x00\x00\x00"]:
    write("disk_cache", seed)

# HTTP bodies: route byte, then the body.
digest = "sha256:" + "ab" * 32
bodies = [
    {"module": digest},
    {"module": digest, "label": "v2", "prompt": "hi", "tools": [],
     "config": {"k": "v"}, "secrets": ["S"], "sessions": "stateful",
     "metadata": {"commit": "abc", "author": "me", "labels": {"team": "x"}},
     "model": {"provider": "anthropic", "name": "claude", "version": "1"},
     "rollout": {"strategy": "canary",
                 "stages": [{"canary": {"weight": "5%", "hold": "5m"}}, {"full": "100%"}],
                 "rollback_on": ["error_rate > 1%"]}},
    {"module": digest, "rollout": {"strategy": "direct"}},
    {"module": digest, "rollout": {"strategy": "shadow", "duration": "1h"}},
]
for body in bodies:
    write("http_api", b"\x00" + json.dumps(body).encode())
for route, body in [(1, {"full": True}), (1, {}), (2, {"to": "fuzz-v0"}), (2, {}),
                    (3, {}), (4, {}), (5, {}), (3, None)]:
    write("http_api", bytes([route]) + (b"" if body is None else json.dumps(body).encode()))

for target in sorted(p.name for p in CORPUS.iterdir()):
    print(target, len(list((CORPUS / target).iterdir())))
