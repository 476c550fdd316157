"""Rules on text an agent writes or sends: secret shapes, credential files, disabled checks, injection.

Key shapes are the redactor's (wavefleet/redact.py, the one definition), matched on text that is
only Unicode-normalised (an AWS key is upper case); everything else on the lower-cased text.
"""

from __future__ import annotations

import fnmatch
import re

from ...redact import SHAPES_ONLY
from ..gates import Gate
from ..injection import find_injection
from .base import Hit, block, escalate

__all__ = ["CREDENTIAL_PATH", "content_hits", "globs_credential_file", "has_credential_path", "secret_hits"]

# Files that hold credentials (matched anywhere in a path or command): .env (not its templates),
# SSH keys, cloud and registry credentials, the shadow file, a process's environment.
CREDENTIAL_PATH = re.compile(
    r"(?:^|[\s/=<>:@(,;|&])\.env(?:\.(?!example|sample|template|dist|defaults?\b|schema)[\w-]+)?(?=$|[\s;&|)<>/,])"
    r"|\.ssh(?:/|$|\s)|\bid_(?:rsa|dsa|ecdsa|ed25519)(?!\.pub)\b|\.aws(?:/|$|\s)|\.config/gcloud"
    r"|application_default_credentials|\.kube/config|\.netrc\b|\.pgpass\b|\.git-credentials|\.docker/config\.json"
    r"|\.npmrc\b|\.pypirc\b|/etc/(?:shadow|gshadow|sudoers)|/proc/(?:self|\d+|\*|\$\$)/environ|\.vault-token"
    r"|\bcredentials\.json\b|service[-_]?account[\w-]*\.json|\.terraformrc|terraform\.tfstate|\.keystore\b"
)  # fmt: skip

_CREDENTIAL_GATE = (
    ".env", "ssh", "id_", ".aws", "gcloud", "credentials", ".kube", "netrc", "pgpass", ".git-cred", ".docker",
    "npmrc", "pypirc", "/etc/", "environ", "vault", "account", "terraform", "keystore",
)  # fmt: skip

_CREDENTIAL_WORDS = Gate(_CREDENTIAL_GATE)


# Names of credentials files a glob may spell (`cat .[e]nv`, `cat ./.??v`, `head id_[r]sa`).
_CREDENTIAL_NAMES = (
    ".env", ".env.local", ".env.development", ".env.production", ".env.staging", ".env.test", "id_rsa",
    "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", ".pgpass", ".git-credentials", ".npmrc", ".pypirc",
    ".vault-token", "credentials", "credentials.json", "shadow", "environ", ".terraformrc",
)  # fmt: skip
_GLOB = re.compile(r"[^\s;&|()<>]*[?*\[][^\s;&|()<>]*")


def globs_credential_file(t: str) -> bool:
    """`t` (lower case) has a glob matching a credentials file's name. As the shell reads it: a
    dotfile only by a pattern that starts with a dot, and two literal characters at least (`ls *`
    is no finding)."""
    for word in _GLOB.findall(t):
        name = word.rsplit("/", 1)[-1]
        if sum(c not in "?*[]" for c in name) < 2:
            continue
        if any(fnmatch.fnmatchcase(f, name) for f in _CREDENTIAL_NAMES if name[0] == "." or f[0] != "."):
            return True
    return False


def has_credential_path(t: str) -> bool:
    """`t` (lower case) names a credentials file."""
    return _CREDENTIAL_WORDS.pattern.search(t) is not None and CREDENTIAL_PATH.search(t) is not None


_TAMPER: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (name, why, re.compile(p, re.M))
    for name, why, p in (
        (
            "tamper.skip_tests",
            "marks tests skipped",
            r"@pytest\.mark\.skip\b(?!if)|\bpytest\.skip\(|@unittest\.skip\b(?!if|unless)|\b(?:it|test|describe|context)"
            r"\.skip\(|(?<![\w.])x(?:it|describe|test)\(|@disabled\b|\bt\.skip(?:now)?\("
            r"|^\s*pytestmark\s*=\s*[\[(]?\s*pytest\.mark\.skip\b(?!if)|^\s*__test__\s*=\s*false\b",
        ),
        (
            "tamper.lint_disable",
            "turns a linter or type checker off for a whole file",
            r"^\s*#\s*(?:ruff|flake8)\s*:\s*noqa\s*$|#\s*mypy\s*:\s*ignore-errors|#\s*pylint\s*:\s*disable\s*=\s*all\b"
            r"|^\s*#\s*type\s*:\s*ignore\s*$",
        ),
        (  # ESLint's and TypeScript's own comments: no finding in a Python file, where nothing reads them
            "tamper.lint_disable",
            "turns a linter or type checker off for a whole file",
            r"/\*\s*eslint-disable\s*\*/|^\s*//\s*eslint-disable\s*$|//\s*@ts-nocheck",
        ),
        (
            "tamper.logging",
            "turns logging off",
            r"\blogging\.disable\(|\blogger\.disabled\s*=\s*true|\bconsole\.(?:log|error|warn)\s*=\s*(?:\(\)|function)"
            r"|\blogging\.root\.handlers\s*=\s*\[\]|\bsetlevel\(\s*logging\.critical\s*\+",
        ),
    )
)  # fmt: skip
_JS_ONLY = 2  # the index of _TAMPER's ESLint/TypeScript rule
_TAMPER_GATE = re.compile(
    r"skip|__test__|x(?:it|describe|test)\(|noqa|ignore|eslint|nocheck|pylint|@disabled|logg|console\."
)
_CI_PATH = re.compile(
    r"(?:^|/)(?:\.github/workflows/|\.gitlab-ci\.ya?ml$|\.circleci/|jenkinsfile$|\.pre-commit-config\.ya?ml$"
    r"|\.husky/|azure-pipelines\.ya?ml$|\.travis\.ya?ml$|\.buildkite/)"
)


def secret_hits(raw: str) -> list[Hit]:
    """A secret-shaped value in `raw` (Unicode-normalised, case kept): refused wherever it goes."""
    names = SHAPES_ONLY.find(raw)  # the fleet's one definition of credential shapes (redact.py)
    return [block("secrets.key_shape", f"holds a {' and '.join(names)} secret")] if names else []


def content_hits(text: str, raw: str, path: str = "") -> list[Hit]:
    """Rules on content written to a file (`text` lower-cased, `raw` case kept, `path` its file)."""
    hits = secret_hits(raw)
    for name in find_injection(text):
        hits.append(block(name, "writes a prompt-injection phrase", 0.2))
    if _TAMPER_GATE.search(text):
        python = path.endswith((".py", ".pyi"))
        for i, (name, why, rule) in enumerate(_TAMPER):
            if not (python and i == _JS_ONLY) and rule.search(text):
                hits.append(escalate(name, why))
    if path and _CI_PATH.search(path):
        hits.append(escalate("tamper.ci_config", f"changes CI or hook configuration ({path})", 0.7))
    return hits
