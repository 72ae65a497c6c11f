"""Secrets never reach params, tags, artifacts, the command line or the log file."""

import logging

from luigiflow.redact import (
    MASK,
    RedactingFilter,
    Redactor,
    holds_uri_credentials,
    is_secret_key,
    redact_logs,
    redact_uri,
    start_logging,
)


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


def test_a_secret_is_masked_as_luigi_writes_it_into_task_ids():
    text = Redactor(["lit-Tok-7319-zq-long-tail"]).text(
        "Preprocessor_lit_Tok_7319_zq__4_r1_a1b2c3d4e5 and lit_Tok_7319_zq_long_tail"
    )
    assert text == f"Preprocessor_{MASK}_4_r1_a1b2c3d4e5 and {MASK}"


def test_the_log_masks_from_its_first_record(tmp_path, monkeypatch):
    """Luigi logs the config it loads as it is imported, before the runner reads the config:
    the environment's secrets and secret-named keys are masked from the first record on, and
    the config's own secrets once the runner knows them."""
    monkeypatch.setenv("SERVICE_PASSWORD", "env-pw-3141")
    root = logging.getLogger()
    level = root.level
    path, handlers = start_logging(tmp_path, verbose=False)
    try:
        loaded = {"Trainer": {"api_token": "tok-2718-e"}, "RunConfig": {"x": "env-pw-3141"}}
        logging.getLogger("luigi-interface").info("Loaded %r", loaded)
        redact_logs(handlers, Redactor(["cfg-secret-1618"]))
        logging.getLogger("luigi-interface").info("cfg-secret-1618, env-pw-3141")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        logging.captureWarnings(False)
    text = path.read_text()
    assert "Loaded" in text and text.count(MASK) == 4
    for secret in ("tok-2718", "env-pw-3141", "cfg-secret-1618"):
        assert secret not in text


def test_a_table_logged_as_an_argument_is_masked_key_by_key(tmp_path):
    """Luigi logs the config it loads (`Loaded {...}`), before the runner knows its secrets:
    a key that names a secret is masked whatever the free-text patterns know."""
    path = tmp_path / "log.txt"
    handler = logging.FileHandler(path)
    handler.addFilter(RedactingFilter(Redactor()))
    logger = logging.getLogger("test-redact-table")
    logger.addHandler(handler)
    try:
        config = {"Trainer": {"hf_key": "hk-5150-zz", "uri": "s3://u:pw-5150@h/b", "seed": 3}}
        logger.warning("Loaded %r", config)
        logger.warning("%(hf_key)s", {"hf_key": "hk-5150-zz"})
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "hk-5150" not in text and "pw-5150" not in text
    assert "'seed': 3" in text and "s3://u:***@h/b" in text


def test_a_filter_learns_the_secrets_of_a_config_read_later(tmp_path):
    path = tmp_path / "log.txt"
    handler = logging.FileHandler(path)
    masking = RedactingFilter(Redactor(["first-secret-1"]))
    handler.addFilter(masking)
    logger = logging.getLogger("test-redact-learn")
    logger.addHandler(handler)
    try:
        masking.learn(Redactor(["later-secret-2"]))
        logger.warning("first-secret-1 and later-secret-2")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.read_text().strip() == f"{MASK} and {MASK}"


def test_credentials_inside_uris_in_config_values():
    assert holds_uri_credentials(["x", {"dsn": "postgresql://u:pw-1@h/db"}])
    assert not holds_uri_credentials("postgresql://u@h/db")
    assert not holds_uri_credentials(f"postgresql://u:{MASK}@h/db"), "already masked"
    assert not holds_uri_credentials(3)


def test_secrets_after_long_words_are_masked_and_long_text_is_read_once():
    """A scheme or a name is read from at most 65 characters before `://` or after the word
    that makes it secret: a 40,000-character description once took minutes to mask."""
    long_word = "x" * 100
    text = f"{long_word}postgresql://u:hunter2@h/db, {long_word}_api_key={'k' * 30} " + "d" * 40_000
    masked = Redactor([]).text(text)
    assert "hunter2" not in masked and "k" * 30 not in masked
    assert masked.endswith("d" * 40_000) and masked.startswith(long_word)
