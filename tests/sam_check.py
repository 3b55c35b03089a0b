"""Checks the deployment recipe with SAM CLI's own code: the parameters `sam deploy` passes, as
SAM CLI's parser reads them, and `sam validate --lint`. Run by tests/run.sh in .venv-sam/ (SAM
pins boto3 versions that clash with moto, so it has its own venv).

Why this exists: SAM CLI's --parameter-overrides parser cuts an unquoted value at the first
space, so the earlier recipe, which passed klaxon.toml as a parameter, delivered `version` and
every function failed at init. The configuration is now pushed to the table instead.
"""

import os
import re
import shlex
import subprocess
import sys
import tomllib

from samcli.cli.types import CfnParameterOverridesType
from samcli.yamlhelper import yaml_parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
failures = []
passed = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    (passed if ok else failures).append(what)


def parse_overrides(value):
    return CfnParameterOverridesType().convert(value, None, None)


with open(os.path.join(ROOT, "infra", "template.yaml")) as f:
    template = yaml_parse(f.read())
parameters = template.get("Parameters", {})

# 1. What samconfig.toml passes reaches the template intact.
with open(os.path.join(ROOT, "samconfig.toml"), "rb") as f:
    samconfig = tomllib.load(f)
overrides = samconfig["default"]["deploy"]["parameters"].get("parameter_overrides", "")
parsed = parse_overrides(overrides) if overrides else {}
written = dict(pair.split("=", 1) for pair in shlex.split(overrides)) if overrides else {}
check(parsed == written, f"samconfig.toml parameter_overrides parse as written: {parsed} == {written}")
check(set(parsed) <= set(parameters), f"every override names a template parameter: {sorted(parsed)}")

# 2. `sam deploy --guided` needs nothing the recipe does not give: every parameter has a default.
no_default = [name for name, p in parameters.items() if "Default" not in p and name not in parsed]
check(not no_default, f"every template parameter has a default or an override (missing: {no_default})")

# 3. The README's recipe passes no configuration as a parameter, and whatever it does pass
#    survives SAM's parser.
with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
shell = "\n".join(re.findall(r"```sh\n(.*?)```", readme, re.S))
shell = re.sub(r"\\\n\s*", " ", shell)  # join continuation lines
deploy_lines = [l for l in shell.splitlines() if re.search(r"\bsam deploy\b", l) and not l.lstrip().startswith("#")]
check(bool(deploy_lines), "the README has a `sam deploy` command")
for line in deploy_lines:
    check("KlaxonConfig" not in line and "klaxon.toml" not in line, f"no configuration in: {line.strip()}")
    words = shlex.split(line.split("#", 1)[0])
    if "--parameter-overrides" in words:
        value = words[words.index("--parameter-overrides") + 1]
        got = parse_overrides(value)
        want = dict(pair.split("=", 1) for pair in shlex.split(value))
        check(got == want, f"README overrides survive SAM's parser: {got} == {want}")

# 4. The quirk itself, so that nobody brings the configuration parameter back.
check(parse_overrides(["KlaxonConfig=version = 1"]) == {"KlaxonConfig": "version"},
      "SAM CLI still cuts an unquoted override at the first space")

# 5. Every function may read the secrets under the prefix and nothing else of SSM, through policy
#    templates SAM knows (`sam validate` does not check their names).
import json
import samtranslator

with open(os.path.join(os.path.dirname(samtranslator.__file__), "policy_templates_data", "policy_templates.json")) as f:
    known = set(json.load(f)["Templates"])
for name, res in template["Resources"].items():
    if res.get("Type") != "AWS::Serverless::Function":
        continue
    policies = res["Properties"].get("Policies", [])
    names = [next(iter(p)) for p in policies if isinstance(p, dict)]
    check(set(names) <= known, f"{name}: policy templates exist in SAM: {names}")
    ssm = [p["SSMParameterWithSlashPrefixReadPolicy"] for p in policies if "SSMParameterWithSlashPrefixReadPolicy" in p]
    check(ssm == [{"ParameterName": {"Fn::Sub": "/${SecretsPrefix}/*"}}], f"{name}: reads SSM under /<SecretsPrefix>/ only: {ssm}")

# 6. Every function logs JSON to a log group of its own that keeps its logs LogRetentionDays days
#    (a log group Lambda creates by itself keeps them, and bills them, forever).
resources = template["Resources"]
groups = []
for name, res in resources.items():
    if res.get("Type") != "AWS::Serverless::Function":
        continue
    logging = res["Properties"].get("LoggingConfig", {})
    group = logging.get("LogGroup", {}).get("Ref") if isinstance(logging.get("LogGroup"), dict) else None
    groups.append(group)
    target = resources.get(group, {})
    check(logging.get("LogFormat") == "JSON", f"{name}: logs JSON lines: {logging}")
    check(target.get("Type") == "AWS::Logs::LogGroup"
          and target.get("Properties", {}).get("RetentionInDays") == {"Ref": "LogRetentionDays"},
          f"{name}: logs to a log group with the LogRetentionDays retention: {group} {target}")
check(len(set(groups)) == len(groups), f"each function has a log group of its own: {groups}")

# 7. The template, as SAM sees it.
env = dict(os.environ, SAM_CLI_TELEMETRY="0", AWS_REGION=os.environ.get("AWS_REGION", "us-east-1"))
sam = os.path.join(os.path.dirname(sys.executable), "sam")
run = subprocess.run([sam, "validate", "--lint"], cwd=ROOT, env=env, capture_output=True, text=True)
check(run.returncode == 0, "sam validate --lint passes" + ("" if run.returncode == 0 else ":\n" + run.stdout + run.stderr))

print(f"sam_check: {len(passed)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
