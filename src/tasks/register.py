"""Put a validated model in the Model Registry, once per fingerprint, and point an alias at it."""

import luigi

from luigiflow import (
    REGISTERED_BY_RUN,
    REGISTRATION,
    VALIDATED,
    VALIDATION,
    FollowsRunConfig,
    PipelineTask,
    RegisteredModel,
    registry,
    requires,
)
from tasks.evaluator import Evaluator, failed
from tasks.trainer import Trainer


@requires(Trainer, Evaluator)
class Register(PipelineTask):
    """Register the Trainer's model under `model_name` and set `alias`, if it was VALIDATED.

    A REJECTED model is not registered (unless `allow_unvalidated`, which is written on the
    version); the task still finishes and says why in registration.json. A name holds one
    kind of model: another kind than the alias's holder (other columns, target or problem
    type) is refused before the run, unless `replace_schema` (written on the version).
    """

    model_name = FollowsRunConfig(
        "experiment_name", description="the registered model (left out: the experiment's name)"
    )
    alias = luigi.Parameter(default="champion")
    allow_unvalidated = luigi.BoolParameter(default=False, description="register REJECTED too")
    replace_schema = luigi.BoolParameter(
        default=False,
        significant=False,  # it changes whether a model may be registered, not the model
        description="let the alias move to another kind of model than its holder",
    )

    outputs = {"registration": "registration.json"}
    publishes = True  # in a sweep, the parent registers the winner only

    def validate(self) -> dict[str, str]:
        return registry.name_problems(model_name=self.model_name, alias=self.alias)

    def registers(self) -> RegisteredModel:
        return RegisteredModel(self.model_name, self.alias, self.task_family, self.replace_schema)

    def run(self) -> None:
        evaluation = self.load("evaluation")
        verdict = evaluation["verdict"]
        result = {"model_name": self.model_name, "alias": self.alias, "verdict": verdict}
        if verdict != VALIDATED and not self.allow_unvalidated:
            reason = f"{verdict}: {failed(evaluation)}"
            self.save("registration", {**result, "registered": False, "reason": reason})
            return
        checks = "; ".join(c["text"] for c in evaluation["criteria"]) or "no criteria"
        description = f"{verdict} on the validation set ({checks})."
        if verdict != VALIDATED:
            description += " Registered although rejected: [Register] allow_unvalidated = true."
        version = registry.register(
            self.requires()["Trainer"],
            "model",
            self.registers(),
            description,
            tags={VALIDATION: verdict, REGISTERED_BY_RUN: self.run_id},
        )
        self.save("registration", {**result, "registered": True, **version})

    def conclusions(self) -> dict[str, str]:
        r = self.read_output("registration")
        if not r["registered"]:
            return {REGISTRATION: f"not registered ({r['reason']})"}
        text = f"{r['uri']} = version {r['version']}"
        if not r["new"]:
            text += " (already registered: no new version)"
        now = registry.alias_version(self.model_name, self.alias)
        if r.get("alias_kept_because"):  # a sweep's winner that is no better than the holder
            text += f"; @{self.alias} stays at version {now}: {r['alias_kept_because']}"
        elif now != r["version"]:  # moved since, by another run or by hand
            text += f"; @{self.alias} has since moved to version {now}"
        return {REGISTRATION: text}
