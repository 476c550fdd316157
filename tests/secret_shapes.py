"""Fake credentials of every shape the redactor knows (none is real): the table the redaction tests share."""

from __future__ import annotations

# name -> (text holding the secret, the secret itself: what must never survive)
SHAPES: dict[str, tuple[str, str]] = {
    "anthropic_key": (
        "key sk-ant-api03-AbCdEf0123456789_ghIJklMNop-QRstu here",
        "sk-ant-api03-AbCdEf0123456789_ghIJklMNop-QRstu",
    ),
    "openai_key": ("OPENAI=sk-proj-4f9XbT3BlbkFJq0123456789abcd", "sk-proj-4f9XbT3BlbkFJq0123456789abcd"),
    "xai_key": ("Bearer xai-Zq8Lm2Np4Rs6Tu8Vw0Xy2Az4Bc6De8Fg", "xai-Zq8Lm2Np4Rs6Tu8Vw0Xy2Az4Bc6De8Fg"),
    "aws_access_key_id": ("id AKIAQWERTYUIOPASDF12 ok", "AKIAQWERTYUIOPASDF12"),
    "aws_session_key_id": ("id ASIAZXCVBNMLKJHGFD34", "ASIAZXCVBNMLKJHGFD34"),
    "aws_secret_access_key": (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
    ),
    "github_pat_classic": (
        "token ghp_R2d2C3poR2d2C3poR2d2C3poR2d2C3po1234",
        "ghp_R2d2C3poR2d2C3poR2d2C3poR2d2C3po1234",
    ),
    "github_oauth": ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
    "github_app": (
        "ghs_16C7e42F292c6912E7710c838347Ae178B4b and ghu_16C7e42F292c6912E7710c838347Ae178B4c",
        "16C7e42F292c6912E7710c838347Ae178B4",
    ),
    "github_refresh": (
        "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c",
        "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c",
    ),
    "github_fine_grained": (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCD",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCD",
    ),
    "slack_bot": ("xoxb-2048-4096-AbCdEfGhIjKlMnOp", "xoxb-2048-4096-AbCdEfGhIjKlMnOp"),
    "slack_user": ("xoxp-1111-2222-3333-abcdefabcdef", "xoxp-1111-2222-3333-abcdefabcdef"),
    "slack_app": ("xapp-1-A0123-4567-abcdef0123", "xapp-1-A0123-4567-abcdef0123"),
    "slack_legacy": ("xoxa-2-abcdef-123456789", "xoxa-2-abcdef-123456789"),
    "slack_webhook": (
        "post to https://hooks.slack.com/services/T0001/B0002/XyZ123abcDEF456",
        "T0001/B0002/XyZ123abcDEF456",
    ),
    "private_key": (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
    ),
    "private_key_cut": ("line: -----BEGIN RSA PRIVATE KEY----- MIIEpAIBAAKCAQEA7", "MIIEpAIBAAKCAQEA7"),
    "jwt": (
        "auth eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    "url_password": ("postgres://app:Tr0ub4dor&3@db.internal:5432/app", "Tr0ub4dor&3"),
    "url_password_no_user": ("redis://:s3cr3tpassw0rd@redis:6379/0", "s3cr3tpassw0rd"),
    "password_assignment": ('DB_PASSWORD = "correct-horse-battery"', "correct-horse-battery"),
    "api_key_colon": ("api_key: 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706"),
}
