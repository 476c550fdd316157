"""Prompt-injection phrases: the named rules that recognise text written to steer a model.

Matched on `normalize`d text (NFKC, invisible characters gone, look-alikes Latin, lower case), so a
zero-width space or a Cyrillic "o" does not hide a phrase. Precise on purpose: each rule needs an
imperative aimed at the model ("ignore previous instructions", "you are now DAN", a fake
`<|im_start|>system` tag), not a word that ordinary code or docs use ("instructions", "system").
"""

from __future__ import annotations

import re

from .gates import Gate
from .normalize import normalize

__all__ = ["INJECTION_RULES", "find_injection"]

_SP = r"[\s_*>#-]+"  # between words: blanks, markdown emphasis, quote marks
_ANY = r"(?:(?:all|any|each|every|of|the|your|my|these|those|its|prior|previous|earlier|above)" + _SP + r")*"
_ADJ = rf"(?:(?:full|entire|hidden|original|initial|secret|exact|complete){_SP})*"
_WHAT = (
    r"(?:instructions?|prompts?|directions?|directives?|rules|guidelines|guardrails|messages?|context"
    r"|constraints|commands?|programming|orders)"
)

# (name, gate, pattern): the pattern is only tried when a gate word is in the text (cheap).
INJECTION_RULES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (name, gate, re.compile(pattern))
    for name, gate, pattern in (
        (
            "injection.ignore_previous",
            ("ignore", "disregard", "forget", "override", "bypass", "discard", "drop"),
            rf"\b(?:ignore|disregard|forget|override|bypass|discard|drop){_SP}{_ANY}"
            rf"(?:previous|prior|above|earlier|preceding|former|initial|original|system|existing|old)"
            rf"{_SP}{_WHAT}\b",
        ),
        (
            "injection.disregard_system",
            ("ignore", "disregard", "forget", "override", "bypass"),
            rf"\b(?:ignore|disregard|forget|override|bypass){_SP}(?:your|the|all){_SP}"
            rf"(?:system{_SP}prompt|safety{_SP}(?:rules|guidelines|instructions)|developer{_SP}instructions"
            rf"|instructions{_SP}(?:you{_SP}were|above|given))",
        ),
        (
            "injection.role_override",
            ("you",),
            rf"\byou{_SP}are{_SP}now{_SP}(?:an?{_SP})?(?:dan|unrestricted|unfiltered|jailbroken|evil|free|"
            rf"no{_SP}longer|in{_SP}(?:developer|god|admin|sudo){_SP}mode|my\b|a{_SP}different)"
            rf"|\bfrom{_SP}now{_SP}on,?{_SP}you{_SP}(?:are|will|must|shall){_SP}(?:ignore|obey|act|only|not)"
            rf"|\bpretend{_SP}(?:that{_SP})?you{_SP}(?:are|have){_SP}(?:no|not){_SP}(?:restrictions|rules|limits|guidelines|bound)",
        ),
        (
            "injection.new_instructions",
            ("instruction",),
            rf"(?:^|\n|[.!]\s)[\s#*>-]*(?:new|updated|real|actual|true|revised|secret|hidden){_SP}"
            rf"(?:system{_SP})?instructions?\s*:",
        ),
        (
            "injection.jailbreak",
            ("anything", "dan", "mode", "without", "act"),
            rf"\bdo{_SP}anything{_SP}now\b|\bdan{_SP}mode\b|\bdeveloper{_SP}mode{_SP}(?:enabled|activated|on)\b"
            rf"|\bjailbreak(?:ed)?{_SP}mode\b|\bwithout{_SP}(?:any{_SP})?(?:ethical|moral|safety){_SP}"
            rf"(?:guidelines|restrictions|filters|constraints)\b|\bact{_SP}as{_SP}(?:an?{_SP})?"
            rf"(?:unrestricted|unfiltered|uncensored|jailbroken)\b",
        ),
        (
            "injection.fake_tag",
            ("<", "[", "##"),
            r"<\|\s*im_(?:start|end|sep)\s*\|>|<\|\s*(?:system|assistant|endoftext|eot_id)\s*\|>"
            r"|<\|start_header_id\|>|</?\s*(?:system|system_prompt|sys)\s*>|</\s*(?:user|assistant)\s*>"
            r"|\[/?inst\]|<<\s*/?sys\s*>>|(?:^|\n)\s*#{2,}\s*(?:system|new\s+instructions)\s*(?::|\n|$)",
        ),
        (
            "injection.reveal_secrets",
            (
                "reveal",
                "print",
                "show",
                "output",
                "repeat",
                "leak",
                "display",
                "dump",
                "disclose",
                "tell",
                "give",
                "send",
            ),
            rf"\b(?:reveal|print|show|output|repeat|leak|display|dump|disclose|tell{_SP}me|give{_SP}me|send{_SP}me)"
            rf"{_SP}(?:me{_SP})?(?:your{_SP}{_ADJ}(?:system{_SP}prompt|prompt|instructions|rules|api{_SP}?keys?"
            rf"|secrets?|credentials|passwords?|tokens?|env(?:ironment)?{_SP}variables)"
            rf"|the{_SP}{_ADJ}(?:system{_SP}prompt|(?:initial|hidden|original){_SP}(?:prompt|instructions)))\b",
        ),
        (
            "injection.exfiltrate",
            ("send", "post", "upload", "exfiltrat", "forward", "email", "leak"),
            rf"\b(?:send|post|upload|exfiltrate|forward|email|leak){_SP}(?:all{_SP})?(?:of{_SP})?(?:the{_SP}|your{_SP})?"
            rf"(?:secrets|credentials|api{_SP}?keys?|env(?:ironment)?{_SP}variables|\.env(?:{_SP}file)?|ssh{_SP}keys?|tokens)"
            rf"{_SP}(?:to|at){_SP}",
        ),
    )
)

_GATE = Gate(word for _, gate, _ in INJECTION_RULES for word in gate)


def find_injection(text: str) -> tuple[str, ...]:
    """The names of the injection rules `text` matches (after `normalize`), in rule order."""
    norm = normalize(text)
    words = _GATE.present(norm)
    if not words:
        return ()
    return tuple(
        name for name, gate, rule in INJECTION_RULES if not words.isdisjoint(gate) and rule.search(norm)
    )
