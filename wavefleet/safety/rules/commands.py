"""Rules for the `run` tool's command line: destruction, code from elsewhere, privilege, writes
outside the worktree, git on shared branches, hidden tracks and masked failures.

Read on `shell_normalize`d text: text rules look at the whole line (pipes, redirections, code inside
`python -c`), command rules at each simple command that `shell.commands` found.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from ..gates import Gate
from .base import Hit, block, escalate, is_outside_path
from .shell import Command

__all__ = ["command_hits"]

_SHELL = r"(?:\S*/)?(?:(?:ba|z|da|k|tc|fi|a|mk)?sh)(?=\s|$|[;)&|])"
_SH = (
    r"(?:\S*/)?(?:(?:ba|z|da|k|tc|fi|a|mk)?sh|python[\d.]*|perl|ruby|node|php|lua|source|\.|eval)"
    r"(?=\s|$|[;)&|])"
)
# (hit, gate, pattern): the pattern is only tried when one of the gate's substrings is in the text
# (a substring test is ~20x cheaper than a regex search, and most commands pass no gate).
_TEXT_RULES: tuple[tuple[Hit, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (hit, gate, re.compile(p))
    for hit, gate, p in (
        (block("rce.pipe_to_shell", "pipes text into a shell"), ("|",), r"\|\s*(?:sudo\s+)?" + _SHELL),
        (block("rce.pipe_to_shell", "pipes downloaded or decoded text into an interpreter"), ("|",),
         r"(?:curl|wget|fetch|base64|b64decode|xxd|openssl|\bnc|ncat|rev)\b[^\n]*\|\s*(?:sudo\s+)?" + _SH),
        (block("rce.eval_download", "runs downloaded code"),
         ("<(", "curl", "wget", "fetch", "exec(", "eval("),
         r"(?:^|[\s;&|(])(?:(?:ba|z|da)?sh|source|\.)\s+<\(|(?:eval|-c|exec|source)\s+(?:\$\(|`)\s*(?:curl|wget|fetch)"
         r"|exec\([^\n]*(?:urlopen|requests\.get|urllib|https?://)|eval\([^\n]*(?:fetch\(|https?://|urlopen)"),
        (block("rce.download_exec", "downloads a program and runs it"), ("://",),
         r"(?:curl|wget)\b[^\n]*(?:https?|ftp)://[^\n]*?(?:&&|;|\|\||\n)\s*(?:sudo\s+)?(?:(?:ba|z|da)?sh\s+\S"
         r"|chmod\s[^\n]*\+x|\./\S|source\s|\.\s+\S|python[\d.]*\s+\S+\.py)"),
        (block("destructive.fork_bomb", "a fork bomb"), ("()", "fork"),
         r"(\S+)\s*\(\)\s*\{\s*\1\s*\|\s*\1\s*&|while\s*(?:true|1)\s*:?\s*os\.fork\(|fork\(\)\s*while|while\s*\(?1\)?\s*\{?\s*fork"),
        (block("destructive.device_write", "writes to a block device"), ("/dev/",),
         r">\s*/dev/(?:sd|hd|nvme|vd|xvd|mmcblk|disk|mapper|md\d|loop|dm-|root|mem|kmem|port)|of=/dev/(?!null|zero|stdout|stderr)"),
        (block("destructive.sql", "drops or empties a database, table or store"),
         ("drop", "truncate", "delete", "flush"),
         r"\bdrop\s+(?:table|database|schema|user|role|view|collection|keyspace)\b|\btruncate\s+(?:table\s+)?[a-z_\"`][\w.\"`]*\s*(?:;|$|\n|cascade)"
         r"|\bdelete\s+from\s+[\w.\"`]+\s*(?:;|$|\n)|\bflushall\b|\bflushdb\b|dropdatabase\(|(?:^|[\s;&|])dropdb\s"),
        (block("destructive.code_rmtree", "code deletes a tree outside the worktree"), ("(",),
         r"(?:rmtree|rmsync|rmdirsync|rimraf|unlinksync|os\.remove|os\.unlink|os\.rmdir|removedirs|\.unlink|\.rmdir|fs\.rm"
         r"|\.rm_rf|\.rm_r|\.remove_dir|\.remove_entry\w*|remove_tree|\bunlink\s+glob)"
         r"\(\s*[rbfu]{0,2}\s*(?:/(?:$|[\s,)*]|etc|usr|var|bin|boot|lib|opt|root|home|sys|proc|dev|srv|mnt)|~|\.\.|os\.path\.expanduser"
         r"|pathlib\.path\.home|path\.home|os\.environ|process\.env\.home|\$home|os\.getenv)"),
        (block("secrets.env_var", "reads a secret from the environment"), ("$",),
         r"\$\{?[a-z_0-9]*(?:api_?key|secret|token|passw(?:or)?d|passwd|credential|private_?key|access_?key)"),
        (block("tamper.logging", "erases history, audit or logs"),
         ("history", "histfile", "audit", "journal", "/var/log", "systemctl"),
         r"\bhistory\s+-c\b|\bunset\s+histfile\b|\bhistfile=/dev/null|set\s+\+o\s+history|\bauditctl\b"
         r"|journalctl\s+--(?:vacuum|rotate)|(?:\brm\b|shred|truncate|>|\btee\b)[^\n;&|]*?/var/log\b"
         r"|systemctl\s+(?:stop|disable|mask)\s+(?:rsyslog|syslog|auditd|systemd-journald)"),
        (block("tamper.no_verify", "skips git hooks"),
         ("verify", "husky", "skip=", "hookspath", "pre_commit"),
         r"--no-verify\b|\bhusky=0\b|\bhusky_skip_hooks\b|\bskip=\S+\s+git\b|core\.hookspath|pre_commit_allow_no_config"),
        (escalate("tamper.mask_failure", "hides a failing test run"), ("||", "exit", "true"),
         r"(?:pytest|npm\s+(?:run\s+)?test|yarn\s+test|pnpm\s+test|jest|vitest|go\s+test|cargo\s+test|make\s+test|tox|unittest)"
         r"\b[^\n]*?(?:\|\|\s*(?:true|:|exit\s+0|echo)\b|;\s*(?:true|exit\s+0)\s*$)"),
        (block("fs.git_dir", "touches git's own files (hooks, config)"), (".git/",),
         r"\.git/(?:hooks|config|info|objects|refs|head)\b"),
        (block("priv.docker_socket", "reaches the Docker socket"), (".sock", "containerd"),
         r"docker\.sock|/run/containerd|podman\.sock"),
    )
)  # fmt: skip
_GATE = Gate(word for _, gate, _ in _TEXT_RULES for word in gate)
_REDIRECT = re.compile(r"(?:^|[^<>&\d])\d?&?>>?\|?\s*([^\s;&|()<>]+)")
# What is piped into `xargs rm`: paths printed by find, echo, printf, ls (`echo / | xargs rm -rf`).
_FIND_XARGS = re.compile(
    r"\b(?:find|echo|printf|ls)\s+([^\n|]*)\|\s*xargs\b[^\n]*?\b(?:rm|shred|unlink|chmod|chown|mv)\b"
)
_TARGET_DIR = re.compile(r"(?:^|\s)(?:-t\s*|--target-directory[=\s])(\S+)")
# Options whose value is a file or folder the program writes (pytest empties its --basetemp).
_WRITE_OPTION = re.compile(
    r"(?:^|\s)--(?:output|output-file|out|outfile|basetemp|junitxml|junit-xml|log-file|cache-dir|report-dir"
    r"|result-log|html|json-report-file|cov-report=\w+:)[=\s]?([^\s;&|()]+)"
)
_CD = re.compile(r"(?:^|[\s;&|(])(?:cd|pushd)\s+([^\s;&|()]+)")
_WRITERS = frozenset(
    [
        "rm",
        "rmdir",
        "mv",
        "cp",
        "tee",
        "dd",
        "shred",
        "find",
        "chmod",
        "chown",
        "ln",
        "truncate",
        "touch",
        "mkdir",
        "tar",
        "unzip",
        "git",
        "sed",
    ]
)


def _operands(cmd: Command) -> list[str]:
    return [a for a in cmd.args if not a.startswith("-") or a == "-"]


def _rm(cmd: Command) -> list[Hit]:
    ops = _operands(cmd)
    recursive = bool(re.search(r"(?:^|\s)(?:-\w*[rR]\w*|--recursive)\b", cmd.text))
    if "--no-preserve-root" in cmd.text or any(is_outside_path(a) for a in ops):
        return [block("destructive.rm_outside", f"{cmd.name} deletes outside the worktree")]
    if any(a in ("*", ".", "./", "./*", ".*", "*/") for a in ops) and (recursive or cmd.name != "rm"):
        return [block("destructive.rm_worktree", f"{cmd.name} deletes the whole worktree")]
    if any(re.fullmatch(r"(?:\./)?\.git(?:/.*)?", a) for a in ops):
        return [block("fs.git_dir", "deletes git's own files")]
    if recursive and any(
        re.fullmatch(r"(?:\./)?(?:tests?|__tests__|spec|specs|e2e|cypress)/?", a) for a in ops
    ):
        return [escalate("tamper.delete_tests", "deletes a test suite")]
    return []


def _find(cmd: Command) -> list[Hit]:
    paths, args = [], list(cmd.args)
    while args and re.fullmatch(r"-[phl]|-o\d|-d", args[0]):  # -P -H -L -O3 -D opts (lower case)
        args = args[2:] if args[0] == "-d" else args[1:]
    for a in args:
        if a.startswith(("-", "(", "!")):
            break
        paths.append(a)
    acting = re.search(r"(?:^|\s)-(?:delete|exec|execdir|ok|okdir|fprint)\b", cmd.text)
    if acting and any(is_outside_path(p) for p in paths):
        return [block("destructive.find_delete", "find acts on files outside the worktree")]
    return []


def _dd(cmd: Command) -> list[Hit]:
    for a in cmd.args:
        if (
            a.startswith(("of=", "if="))
            and is_outside_path(a[3:])
            and not a[3:].startswith(("/dev/zero", "/dev/urandom"))
        ):
            return [block("destructive.dd", "dd reads or writes outside the worktree (a device?)")]
    return []


def _chmod(cmd: Command) -> list[Hit]:
    ops = _operands(cmd)
    if any(is_outside_path(a) for a in ops[1:] if cmd.name in ("chmod", "chown", "chgrp")) or any(
        is_outside_path(a) for a in ops if cmd.name in ("chattr", "setfacl")
    ):
        return [block("priv.chmod_system", f"{cmd.name} on a path outside the worktree")]
    mode = ops[0] if ops else ""
    if cmd.name == "chmod" and (
        (re.fullmatch(r"[0-7]?[24-7][0-7]{3}", mode) and mode[0] in "24567" and len(mode) == 4)
        or re.search(r"[ugoa]*[+=][rwxt]*s", mode)
    ):
        return [block("priv.setuid", "chmod sets a setuid/setgid bit")]
    if cmd.name == "chmod" and re.search(r"(?:^|[0-7])[2367][0-7]?$|777|666|[ao]?\+[rx]*w|o=\w*w", mode):
        return [escalate("priv.chmod_broad", f"chmod {mode}: writable by everyone")]
    if cmd.name in ("chown", "chgrp"):
        return [escalate("priv.chown", f"{cmd.name} changes ownership")]
    return []


def _writes(cmd: Command) -> list[Hit]:
    ops = _operands(cmd)
    if cmd.name in ("sed", "perl", "ruby") and not re.search(r"(?:^|\s)(?:-\w*i|--in-place)", cmd.text):
        return []
    if cmd.name == "tar":
        ops = [m.group(1) for m in re.finditer(r"(?:-c|--directory[=\s])\s*(\S+)", cmd.text)]
    targets = ops[-1:] if cmd.name in ("cp", "ln", "install", "rsync", "mv") else ops
    targets += _TARGET_DIR.findall(cmd.text)  # cp -t DIR / --target-directory=DIR: the target is first
    if any(is_outside_path(a) for a in targets):
        return [block("fs.write_outside", f"{cmd.name} writes outside the worktree")]
    if cmd.name == "ln" and re.search(r"(?:^|\s)-\w*s|--symbolic", cmd.text) and len(ops) > 1:
        # a link to a place outside: the file tools would then write there through it
        link_dir = posixpath.dirname(ops[-1])
        if any(is_outside_path(posixpath.normpath(posixpath.join(link_dir, a))) for a in ops[:-1]):
            return [block("fs.symlink_outside", "ln -s links to a place outside the worktree")]
    return []


def _kill(cmd: Command) -> list[Hit]:
    if "-1" in cmd.args:
        return [block("destructive.shutdown", "kills every process")]
    return []


def _env_dump(cmd: Command) -> list[Hit]:
    ops = _operands(cmd)
    if cmd.name == "env" and ops:
        return []
    if cmd.name == "printenv" and ops and not re.search(r"key|secret|token|pass|cred", cmd.text):
        return []
    if cmd.name in ("set", "export", "declare") and not re.fullmatch(r"-p|-x|-px|", cmd.text.strip()):
        return []
    return [block("secrets.env_dump", "prints the environment (where secrets live)")]


def _container(cmd: Command) -> list[Hit]:
    if re.search(
        r"--privileged|--pid[=\s]host|--net(?:work)?[=\s]host|(?:-v|--volume|--mount)[=\s]\S*(?:^|[\s=])/:|"
        r"-v\s+/:|--cap-add|--security-opt|--device|--userns[=\s]host|exec\s+-it?\s+\S+\s+(?:ba)?sh",
        cmd.text,
    ):
        return [block("priv.container_escape", f"{cmd.name} with host access")]
    return [escalate("priv.container", f"{cmd.name} manages containers")]


def _block_always(rule: str, why: str) -> Callable[[Command], list[Hit]]:
    return lambda cmd: [block(rule, f"{cmd.name}: {why}")]


_ADMIN = (
    "mount umount insmod rmmod modprobe sysctl setcap chroot nsenter unshare iptables ip6tables nft ufw "
    "systemctl service launchctl crontab at useradd userdel usermod adduser deluser passwd chpasswd "
    "visudo groupadd gpasswd update-alternatives ldconfig setenforce swapoff swapon"
)
_BY_NAME: dict[str, Callable[[Command], list[Hit]]] = {
    **dict.fromkeys(("rm", "unlink", "rmdir", "srm"), _rm),
    "shred": _block_always("destructive.shred", "overwrites files beyond recovery"),
    "find": _find,
    "dd": _dd,
    **dict.fromkeys(("chmod", "chown", "chgrp", "chattr", "setfacl"), _chmod),
    **dict.fromkeys(
        (
            "mv",
            "cp",
            "ln",
            "install",
            "rsync",
            "touch",
            "mkdir",
            "truncate",
            "tee",
            "sed",
            "tar",
            "patch",
            "unzip",
            "mkfifo",
            "perl",
            "ruby",
        ),
        _writes,
    ),
    **dict.fromkeys(
        [
            "mkfs",
            "mke2fs",
            "mkswap",
            "wipefs",
            "fdisk",
            "sfdisk",
            "parted",
            "gdisk",
            "cfdisk",
            "blkdiscard",
            "hdparm",
        ],
        _block_always("destructive.disk", "formats or partitions a disk"),
    ),
    **dict.fromkeys(
        ["shutdown", "reboot", "halt", "poweroff", "telinit", "killall5"],
        _block_always("destructive.shutdown", "stops the machine"),
    ),
    "kill": _kill,
    **dict.fromkeys(
        ("sudo", "doas", "pkexec", "su", "runuser"), _block_always("priv.sudo", "runs as another user")
    ),
    **dict.fromkeys(_ADMIN.split(), _block_always("priv.system_admin", "administers the system")),
    **dict.fromkeys(("env", "printenv", "set", "export", "declare"), _env_dump),
    **dict.fromkeys(
        ["docker", "podman", "nerdctl", "ctr", "crictl", "kubectl", "k3s", "lxc", "runc"], _container
    ),
}


def command_hits(t: str, cmds: list[Command]) -> list[Hit]:
    """The text and command rules that fire on normalised command line `t` (its `cmds`)."""
    words = _GATE.present(t)
    hits = [hit for hit, gate, rule in _TEXT_RULES if not words.isdisjoint(gate) and rule.search(t)]
    if ">" in t and any(is_outside_path(m.group(1)) for m in _REDIRECT.finditer(t)):
        hits.append(block("fs.write_outside", "redirects output to a file outside the worktree"))
    if "xargs" in t and any(
        is_outside_path(w) for m in _FIND_XARGS.finditer(t) for w in m.group(1).split() if w[0] != "-"
    ):
        hits.append(block("destructive.find_delete", "find outside the worktree piped into xargs rm"))
    if "--" in t and any(is_outside_path(m.group(1)) for m in _WRITE_OPTION.finditer(t)):
        hits.append(block("fs.write_outside", "an option writes (or empties) a path outside the worktree"))
    for cmd in cmds:
        check = _BY_NAME.get(cmd.name) or (_mkfs if cmd.name.startswith("mkfs") else None)
        if check is not None:
            hits.extend(check(cmd))
        if cmd.name == "init" and cmd.args[:1] in (("0",), ("6",)):
            hits.append(block("destructive.shutdown", "init: stops the machine"))
    if "cd" in t or "pushd" in t:
        outside = any(is_outside_path(m.group(1)) for m in _CD.finditer(t))
        if outside and (">" in t or any(c.name in _WRITERS for c in cmds)):
            hits.append(block("fs.cd_outside", "changes to a folder outside the worktree, then writes there"))
    return hits


def _mkfs(cmd: Command) -> list[Hit]:
    return [block("destructive.disk", f"{cmd.name}: formats a disk")]
