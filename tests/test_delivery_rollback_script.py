"""The rollback script analysis: a call is a request carrying the deploymentRollback mutation
to Railway's endpoint; a mention in a comment, docstring, notes template or print is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsready.config import GithubConfig
from opsready.rollback_automation import (
    ScriptAnalysis,
    analyse_script,
    calling_steps,
    patterns,
    script_language,
)
from opsready.schedules import parse_workflow

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = GithubConfig(repo="acme/relay")
ENDPOINT, SHELL = patterns(DEFAULTS.rollback_endpoints, DEFAULTS.rollback_shell_commands)


def analyse(text: str, path: str = "scripts/rollback") -> ScriptAnalysis:
    return analyse_script(text, path, endpoint_pattern=ENDPOINT, shell_pattern=SHELL)


def test_the_stack_scripts() -> None:
    real = analyse((ROOT / "stack/github_repo/scripts/rollback").read_text())
    assert real.language == "python" and real.calls_api
    assert [c.code for c in real.calls] == ['graphql(ROLLBACK, {"id": target["id"]}, token, '
                                            'args.token_kind)']
    shell = analyse((ROOT / "stack/github_repo_variants/rollback.sh").read_text())
    assert shell.language == "shell" and len(shell.calls) == 1
    notes = analyse((ROOT / "stack/github_repo_variants/rollback_notes_only.py").read_text())
    # It names the mutation and the endpoint four times, and calls neither.
    assert notes.language == "python" and not notes.calls_api and len(notes.mentions) == 4


@pytest.mark.parametrize(("text", "path", "language"), [
    ("#!/usr/bin/env python3\n", "scripts/rollback", "python"),
    ("#!/usr/bin/python3.11 -u\n", "x", "python"),
    ("#!/bin/bash\n", "scripts/rollback.py", "shell"),  # the shebang wins
    ("#!/usr/bin/env sh\n", "x", "shell"),
    ("print(1)\n", "ops/rollback.py", "python"),
    ("curl x\n", "ops/rollback.sh", "shell"),
    ("echo\n", "ops/rollback", None),
])
def test_language_from_shebang_or_extension(text: str, path: str, language: str | None) -> None:
    assert script_language(text, path) == language


def test_a_script_of_unknown_language_cannot_be_judged() -> None:
    assert analyse("rollback please\n", "ops/rollback.rb").problem is not None
    broken = analyse("def (:\n", "x.py")
    assert broken.problem is not None and "not valid Python" in broken.problem


PYTHON_CALLS = {
    "requests with json=": '''
import requests
API = "https://backboard.railway.com/graphql/v2"
MUTATION = """
mutation Rollback($id: String!) {
  rollback: deploymentRollback(id: $id)
}
"""
def main(target):
    requests.post(API, json={"query": MUTATION, "variables": {"id": target}}, timeout=30)
''',
    "httpx client through a helper": '''
import os, httpx
URL = os.environ.get("RAILWAY_API", "https://backboard.railway.app/graphql/v2")
class Railway:
    def __init__(self):
        self.client = httpx.Client(base_url=URL)
    def ask(self, query, **variables):
        return self.client.post("", json={"query": query, "variables": variables})
def roll(target):
    Railway().ask("mutation($id: String!) { deploymentRollback(id: $id) }", id=target)
''',
    "f-string mutation through urllib": '''
import json, urllib.request
def rollback(target, endpoint="https://backboard.railway.com/graphql/v2"):
    body = json.dumps({"query": f'mutation {{ deploymentRollback(id: "{target}") }}'}).encode()
    urllib.request.urlopen(urllib.request.Request(endpoint, data=body))
''',
    "a JSON body and a URL from f-strings": '''
import os, urllib.request
BASE = os.environ.get("RAILWAY_HOST", "https://backboard.railway.com")
MUTATION = "mutation($id: String!) { deploymentRollback(id: $id) }"
def rollback(target):
    body = f'{{"query": "{MUTATION}", "variables": {{"id": "{target}"}}}}'.encode()
    urllib.request.urlopen(urllib.request.Request(f"{BASE}/graphql/v2", data=body))
''',
    "curl through subprocess": '''
import json, subprocess
Q = "mutation($id: String!) { deploymentRollback(id: $id) }"
def rollback(target):
    payload = json.dumps({"query": Q, "variables": {"id": target}})
    subprocess.run(["curl", "-X", "POST", "https://backboard.railway.com/graphql/v2",
                    "-d", payload], check=True)
''',
}

PYTHON_NO_CALLS = {
    "docstring and comments only": '''
"""Calls deploymentRollback on https://backboard.railway.com/graphql/v2 (one day)."""
# mutation { deploymentRollback(id: "x") } goes to https://backboard.railway.com/graphql/v2
print("rollback notes written")
''',
    "mutation printed, not sent": '''
API = "https://backboard.railway.com/graphql/v2"
MUTATION = 'mutation { deploymentRollback(id: "%s") }'
def main(target):
    print(f"paste into {API}:", MUTATION % target)
    open("notes.md", "w").write(MUTATION % target)
''',
    "notes template that embeds the mutation": '''
import requests
NOTES = """## Rollback
Run `mutation { deploymentRollback(id: "{target}") }` at https://backboard.railway.com/graphql/v2
"""
def main(target):
    requests.post("https://hooks.slack.com/services/x", json={"text": NOTES})
''',
    "a chat message that quotes both": '''
import requests
API = "https://backboard.railway.com/graphql/v2"
MUTATION = 'mutation { deploymentRollback(id: "%s") }'
def main(target):
    text = f"Roll back by hand: run {MUTATION % target} against {API}"
    requests.post("https://hooks.slack.com/services/x", json={"text": text})
    requests.post("https://hooks.slack.com/services/x",
                  json={"text": "Paste %s into %s" % (MUTATION, API)})
    requests.post("https://hooks.slack.com/services/x",
                  json={"text": "Paste {} into {}".format(MUTATION, API)})
''',
    "sent somewhere else": '''
import requests
def main(target):
    requests.post("https://example.com/graphql",
                  json={"query": "mutation { deploymentRollback(id: \\"x\\") }"})
''',
    "another mutation to Railway": '''
import requests
def main(target):
    requests.post("https://backboard.railway.com/graphql/v2",
                  json={"query": "mutation($id: String!) { deploymentRedeploy(id: $id) { id } }"})
''',
}


@pytest.mark.parametrize("name", list(PYTHON_CALLS))
def test_python_scripts_that_call_the_api(name: str) -> None:
    found = analyse(PYTHON_CALLS[name], "rollback.py")
    assert found.language == "python" and found.calls_api, name


@pytest.mark.parametrize("name", list(PYTHON_NO_CALLS))
def test_python_scripts_that_do_not(name: str) -> None:
    found = analyse(PYTHON_NO_CALLS[name], "rollback.py")
    assert found.problem is None and not found.calls_api, (name, found.calls)


SHELL_CALLS = {
    "inline curl with line continuations": r'''#!/bin/sh
curl -sf -X POST https://backboard.railway.com/graphql/v2 \
  -H "Project-Access-Token: $RAILWAY_TOKEN" \
  -d '{"query": "mutation { deploymentRollback(id: \"'"$1"'\") }"}'
''',
    "variables and a default endpoint": r'''#!/bin/bash
API="${RAILWAY_API_URL:-https://backboard.railway.com/graphql/v2}"
QUERY='mutation($id: String!) {
  deploymentRollback(id: $id)
}'
BODY=$(jq -n --arg q "$QUERY" --arg id "$TARGET" '{query: $q, variables: {id: $id}}')
RESULT=$(curl --fail -X POST "$API" -H 'Content-Type: application/json' --data "$BODY")
''',
    "a function called with the body": r'''#!/bin/sh
API=https://backboard.railway.app/graphql/v2
gql() { curl -sf "$API" -H "Content-Type: application/json" -d "$1"; }
gql "{\"query\":\"mutation { deploymentRollback(id: \\\"$TARGET\\\") }\"}"
''',
    "a here-document read into a variable": r'''#!/bin/bash
read -r -d '' BODY <<'EOF' || true
{"query": "mutation { deploymentRollback(id: \"abc\") }"}
EOF
wget --post-data "$BODY" https://backboard.railway.com/graphql/v2
''',
    "a here-document piped into curl": r'''#!/bin/bash
cat <<EOF | curl -X POST https://backboard.railway.com/graphql/v2 --data @-
{"query": "mutation { deploymentRollback(id: \"$TARGET\") }"}
EOF
''',
}

SHELL_NO_CALLS = {
    "comments only": r'''#!/bin/bash
# curl -X POST https://backboard.railway.com/graphql/v2 -d 'mutation { deploymentRollback(id: "x") }'
echo "rolled back"  # deploymentRollback
''',
    "echo into the notes": r'''#!/bin/bash
echo "curl -X POST https://backboard.railway.com/graphql/v2 \
  -d '{\"query\":\"mutation { deploymentRollback(id: 1) }\"}'" >> notes.md
printf '%s\n' 'mutation { deploymentRollback(id: "x") }' > notes.md
''',
    "a notes here-document": r'''#!/bin/bash
cat > notes.md <<EOF
Run: curl -X POST https://backboard.railway.com/graphql/v2 -d 'mutation { deploymentRollback(id: "$1") }'
EOF
curl -X POST https://hooks.slack.com/services/x -d @notes.md
''',
    "a query, not the mutation": r'''#!/bin/bash
curl -X POST https://backboard.railway.com/graphql/v2 -d '{"query": "query { deployments { edges { node { id } } } }"}'
''',
}


@pytest.mark.parametrize("name", list(SHELL_CALLS))
def test_shell_scripts_that_call_the_api(name: str) -> None:
    found = analyse(SHELL_CALLS[name])
    assert found.language == "shell" and found.calls_api, name


@pytest.mark.parametrize("name", list(SHELL_NO_CALLS))
def test_shell_scripts_that_do_not(name: str) -> None:
    found = analyse(SHELL_NO_CALLS[name])
    assert found.language == "shell" and not found.calls_api, (name, found.calls)


def test_the_shell_commands_are_configurable() -> None:
    script = "#!/bin/sh\nrailway-api https://backboard.railway.com/graphql/v2 " \
             "'mutation { deploymentRollback(id: \"x\") }'\n"
    assert not analyse(script).calls_api
    endpoint, shell = patterns(DEFAULTS.rollback_endpoints, ["railway-api"])
    assert analyse_script(script, "x.sh", endpoint_pattern=endpoint,
                          shell_pattern=shell).calls_api


def test_workflow_steps_that_call_inline_or_through_the_script() -> None:
    workflow = parse_workflow(r'''
on: workflow_dispatch
jobs:
  rollback:
    steps:
      - uses: actions/checkout@v4
      - name: Inline
        run: |
          curl -X POST https://backboard.railway.com/graphql/v2 \
            -d '{"query": "mutation { deploymentRollback(id: \"${{ inputs.id }}\") }"}'
      - name: Script
        run: ./scripts/rollback --notes notes.md
      - name: Notes
        run: |
          echo "mutation { deploymentRollback(id: x) } on https://backboard.railway.com/graphql/v2"
''')
    assert workflow is not None

    def names(script_calls: bool) -> list[str]:
        return [s.name for s in calling_steps(workflow.steps, script_path="scripts/rollback",
                                              script_calls=script_calls,
                                              endpoint_pattern=ENDPOINT, shell_pattern=SHELL)]

    assert names(True) == ["Inline", "Script"]
    assert names(False) == ["Inline"]  # running a script that only writes notes calls nothing
