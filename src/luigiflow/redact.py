"""Keep secrets out of everything the runner records: params, tags, artifacts and logs.

Two rules, applied everywhere: a value whose key names a secret (password, secret, token, key,
credential) is masked, and credentials inside URIs (`scheme://user:pass@host`) are masked. The
secret values found that way (and in the environment) are also masked wherever they appear
as plain text, so a password echoed in a traceback or a diff does not leak either, nor in the
form Luigi's task ids give a parameter's value (cut to 16 characters, other characters than
letters, digits and `_` turned into `_`).

Where Luigi's and MLflow's own messages go: a log file per invocation, logged with the run,
and the terminal only with `-v`. Every record passes the secret redaction first, from the very
first one: what is logged before the config is read is masked with the environment's secrets
and the patterns, and the secrets the config holds are added once it is read.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

MASK = "***"
# `${NAME}`: a reference to the environment variable holding a secret, not the secret itself.
ENV_REFERENCE = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")
# Values that secret-named switches (`MLFLOW_TRACKING_INSECURE_TLS=true`) hold: masking these
# in free text would garble every log line and protect nothing.
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no"}
_SECRET_KEY = re.compile(
    r"(^|[_.\-])(password|passwd|secret|token|key|apikey|credentials?|auth)([_.\-]|$)",
    re.IGNORECASE,
)
# How Luigi writes a parameter's value into a task id (luigi.task.task_id_str).
_TASK_ID_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_]")
_TASK_ID_TRUNCATE = 16
# Names are bounded ({0,64}): unbounded, each start inside a long word scanned to its end, and a
# 20,000-character description took 9 s to mask. A longer name still has its value masked.
_URI_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][\w+.\-]{0,64}://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)
# `name = value`, `name: value`, `NAME=value` and `--name value` forms in free text (diffs, logs)
_ASSIGNMENT = re.compile(
    r"(?P<name>[\w.\-]{0,64}(?:password|passwd|secret|token|api_?key|access_?key|private_?key|credential)[\w.\-]{0,64})"
    r"(?P<sep>[\"']?\s*[:=]\s*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;\"']+)",
    re.IGNORECASE,
)


def is_secret_key(name: str) -> bool:
    """Whether a config key or variable name says it holds a secret (`db_password`, `API_KEY`)."""
    return bool(_SECRET_KEY.search(name))


def redact_uri(text: str) -> str:
    """Mask the password part of every `scheme://user:password@host` in `text`."""
    return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def holds_uri_credentials(value: object) -> bool:
    """Whether a config value (a string, or one inside a list or table) has a password inside
    a URI (`scheme://user:password@host`); one already masked (`user:***@`) is none."""
    if isinstance(value, str):
        return any(m["pw"] != MASK for m in _URI_CREDENTIALS.finditer(value))
    if isinstance(value, Mapping):
        return any(holds_uri_credentials(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_uri_credentials(v) for v in value)
    return False


def _as_in_task_ids(value: str) -> set[str]:
    """The forms a value takes inside Luigi's task ids: whole, and cut, with its characters
    other than letters, digits and `_` turned into `_`."""
    return {
        _TASK_ID_INVALID_CHAR.sub("_", value),
        _TASK_ID_INVALID_CHAR.sub("_", value[:_TASK_ID_TRUNCATE]),
    }


class Redactor:
    """Masks known secret values and secret-looking patterns in text and nested config values."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        values = {
            form
            for v in secret_values
            if isinstance(v, str) and len(v) >= 4 and v.lower() not in _NOT_SECRETS
            for form in (v, *_as_in_task_ids(v))
        }
        self._values = sorted(values, key=len, reverse=True)

    def joined(self, other: Redactor) -> Redactor:
        """A redactor that masks what either one masks."""
        return Redactor([*self._values, *other._values])

    @classmethod
    def from_environment(cls, config: Mapping | None = None) -> Redactor:
        """Collect secrets from the environment and from secret-named keys of `config`."""
        found = [v for k, v in os.environ.items() if is_secret_key(k)]
        found += [m["pw"] for v in os.environ.values() for m in _URI_CREDENTIALS.finditer(v)]
        if config is not None:
            found += list(_secret_values(config))
        return cls(found)

    def text(self, text: str) -> str:
        """Mask secrets in free text (a log line, a diff, a command line)."""
        for value in self._values:
            text = text.replace(value, MASK)
        text = redact_uri(text)
        return _ASSIGNMENT.sub(self._mask_assignment, text)

    @staticmethod
    def _mask_assignment(match: re.Match) -> str:
        value = match["value"]
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{match['name']}{match['sep']}{quote}{MASK}{quote}"

    def value(self, key: str, value: object) -> object:
        """Mask a config value: whole when its key names a secret (unless it only names the
        environment variable that holds the secret: `${API_TOKEN}`), else its embedded secrets."""
        if is_secret_key(key):
            return value if isinstance(value, str) and ENV_REFERENCE.match(value) else MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(key, v) for v in value]
        return value

    def mapping(self, data: Mapping) -> dict:
        return {k: self.value(str(k), v) for k, v in data.items()}

    def argv(self, argv: Iterable[str]) -> list[str]:
        """Mask `--set Section.password=...` values and secrets in a command line."""
        out = []
        for arg in argv:
            name, eq, _ = arg.partition("=")
            out.append(
                f"{name}={MASK}"
                if eq and is_secret_key(name.rsplit(".", 1)[-1])
                else self.text(arg)
            )
        return out


def _secret_values(data: Mapping, key: str = "") -> Iterable[str]:
    """Values of secret-named keys, passwords in URIs, and the values of the environment
    variables that `${VAR}` references name (wherever they are)."""
    for k, v in data.items():
        reference = ENV_REFERENCE.match(v) if isinstance(v, str) else None
        if isinstance(v, Mapping):
            yield from _secret_values(v, str(k))
        elif reference:
            yield os.environ.get(reference["name"], "")
        elif is_secret_key(str(k)) and v not in (None, ""):
            yield str(v)
        elif isinstance(v, str):
            yield from (m["pw"] for m in _URI_CREDENTIALS.finditer(v))


URI_CREDENTIALS_REFUSED = (
    "a password inside a URI would reach the run's records and Luigi's task ids in clear: "
    'give it through the environment, e.g. a task parameter db_password = "${DB_PASSWORD}"'
)


def uri_credentials(sections: Mapping[str, Mapping[str, object]]) -> Iterable[tuple[str, str]]:
    """The (section, key) of every value with a password inside a URI, but secret-named ones
    (they are references to the environment): such a value would reach tasks through the
    run context and Luigi's task ids, where it cannot be masked and still work."""
    for section, values in sections.items():
        for key, value in values.items():
            if not is_secret_key(key) and holds_uri_credentials(value):
                yield section, key


class UnsetSecret(Exception):
    """A secret's reference names a variable this process's environment does not hold."""

    def __init__(self, variable: str, section: str, key: str) -> None:
        how = (
            "the run was given this secret as a literal value, which lives only in its "
            f'runner\'s environment: set {variable}, or write {key} = "${{VAR}}"'
            if variable.startswith("LUIGIFLOW_SECRET_")
            else "a secret is read from this process's environment, or from .env.local"
        )
        super().__init__(f"the environment variable {variable} is not set ({how})")
        self.variable, self.section, self.key = variable, section, key


def secret_references(
    sections: dict[str, dict[str, object]], families: Iterable[str]
) -> dict[tuple[str, str], str]:
    """Secret-named task parameters travel as references to environment variables, never as
    values: `api_token = "${API_TOKEN}"` names the variable; a literal value is put in the
    environment under LUIGIFLOW_SECRET_<TASK>_<KEY>, where this process's workers find it,
    and replaced by its reference (in place). A task resolves the reference when it is
    built. Returns (section, key) -> variable; UnsetSecret when a variable is not set."""
    secrets: dict[tuple[str, str], str] = {}
    families = set(families)
    for section, values in sections.items():
        if section not in families or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not is_secret_key(key) or not isinstance(value, str):
                continue
            match = ENV_REFERENCE.match(value)
            variable = match["name"] if match else f"LUIGIFLOW_SECRET_{section}_{key}".upper()
            if match is None:
                os.environ[variable] = value
            elif variable not in os.environ:
                raise UnsetSecret(variable, section, key)
            values[key] = "${" + variable + "}"
            secrets[(section, key)] = variable
    return secrets


def unset_references(sections: Mapping[str, Mapping[str, object]]) -> list[UnsetSecret]:
    """The secrets of a run's config whose variables this process's environment lacks."""
    return [
        UnsetSecret(found["name"], section, key)
        for section, values in sections.items()
        for key, value in values.items()
        if is_secret_key(key)
        and (found := ENV_REFERENCE.match(value) if isinstance(value, str) else None)
        and found["name"] not in os.environ
    ]


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record before a handler writes it. A
    table among the record's arguments (Luigi logs the whole config it loaded) is masked as a
    config is, key by key, before it becomes text: a key that names a secret is not always
    one the free-text patterns know."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def learn(self, redactor: Redactor) -> None:
        """Mask what `redactor` knows too from now on (the secrets of a config just read)."""
        self._redactor = self._redactor.joined(redactor)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = self._redactor.mapping(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(
                self._redactor.mapping(a) if isinstance(a, Mapping) else a for a in record.args
            )
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self._redactor.text(message), None
        if record.exc_text:
            record.exc_text = self._redactor.text(record.exc_text)
        return True


def start_logging(project_root: Path, verbose: bool) -> tuple[Path, list[logging.Handler]]:
    """Everything Luigi and MLflow log goes to a file that is logged with the run, masked."""
    folder = (
        project_root / ".luigiflow" / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runner.log"
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"
    )
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(Redactor.from_environment()))
        root.addHandler(handler)
    logging.captureWarnings(True)
    return path, handlers


def redact_logs(handlers: list[logging.Handler], redactor: Redactor) -> None:
    """From now on the handlers also mask what `redactor` knows (the secrets of the config)."""
    for handler in handlers:
        for found in handler.filters:
            if isinstance(found, RedactingFilter):
                found.learn(redactor)


def quiet_mlflow_logger() -> None:
    """MLflow prints to the terminal through its own handler: send its records to ours."""
    logger = logging.getLogger("mlflow")
    logger.handlers.clear()
    logger.propagate = True


def take_over_luigi_logging() -> None:
    """Our handlers already take Luigi's records: keep Luigi from adding its own."""
    from luigi.setup_logging import InterfaceLogging

    InterfaceLogging._configured = True


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
