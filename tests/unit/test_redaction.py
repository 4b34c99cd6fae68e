from pipelines.redaction import Redactor


def test_known_secrets_and_url_passwords_are_redacted() -> None:
    redact = Redactor(["hunter22", "x"])  # too-short values are ignored, not over-redacted
    text = "password hunter22 in postgres://app:s3cr%40t@db:5432/x and x"
    assert redact(text) == "password [redacted] in postgres://app:[redacted]@db:5432/x and x"


def test_longer_secret_containing_a_shorter_one_is_redacted_whole() -> None:
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact("key=abcdefgh") == "key=[redacted]"


def test_secrets_added_later_are_redacted_from_later_lines() -> None:
    redact = Redactor()
    assert redact("new-password-1") == "new-password-1"
    redact.add("new-password-1")
    assert redact("set new-password-1") == "set [redacted]"
