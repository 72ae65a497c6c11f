"""Secrets never reach params, tags, artifacts, the command line or the log file."""

import logging

from luigiflow.redact import MASK, RedactingFilter, Redactor, is_secret_key, redact_uri


def test_secret_key_names():
    for name in (
        "password",
        "db_password",
        "API_KEY",
        "aws.secret",
        "token",
        "MLFLOW_TRACKING_TOKEN",
        "credentials",
        "private-key",
    ):
        assert is_secret_key(name), name
    for name in ("seed", "keep_alive", "monkey", "sort_keys", "PWD", "input", "estimator"):
        assert not is_secret_key(name), name


def test_credentials_in_uris_are_masked():
    assert (
        redact_uri("postgresql://mlflow:hunter22@db:5432/mlflow")
        == f"postgresql://mlflow:{MASK}@db:5432/mlflow"
    )
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_config_values_and_nested_tables():
    redactor = Redactor()
    data = {
        "api_key": "abc123",
        "uri": "https://u:pw1234@host/x",
        "tags": {"token": "t0k3n", "owner": "me"},
    }
    assert redactor.mapping(data) == {
        "api_key": MASK,
        "uri": f"https://u:{MASK}@host/x",
        "tags": {"token": MASK, "owner": "me"},
    }


def test_known_values_are_masked_anywhere_in_text(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("BACKEND", "postgresql://u:other-pass@h/db")
    redactor = Redactor.from_environment({"Trainer": {"hf_token": "tok-12345"}})
    text = redactor.text("connect with s3cr3t-value, other-pass and tok-12345 failed")
    assert "s3cr3t-value" not in text and "other-pass" not in text and "tok-12345" not in text


def test_assignments_in_diffs_are_masked():
    diff = '+password = "letmein99"\n+API_KEY=abcdef\n+seed = 3\n'
    text = Redactor().text(diff)
    assert "letmein99" not in text and "abcdef" not in text and "+seed = 3" in text


def test_boolean_switches_are_not_treated_as_secrets(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS_TOKEN", "true")
    assert Redactor.from_environment().text("it is true") == "it is true"


def test_command_line():
    argv = ["src/runner.py", "--set", "Db.password=hunter22", "--set", "Trainer.seed=3"]
    assert Redactor().argv(argv) == [
        "src/runner.py",
        "--set",
        f"Db.password={MASK}",
        "--set",
        "Trainer.seed=3",
    ]


def test_logging_filter_masks_messages_and_tracebacks(tmp_path):
    path = tmp_path / "log.txt"
    handler = logging.FileHandler(path)
    handler.addFilter(RedactingFilter(Redactor(["hunter22secret"])))
    logger = logging.getLogger("test-redact")
    logger.addHandler(handler)
    try:
        logger.warning("password is %s", "hunter22secret")
        try:
            raise ValueError("hunter22secret")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert "hunter22secret" not in path.read_text()
    assert "ValueError" in path.read_text()
