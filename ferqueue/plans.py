"""The steps of the pipelines ferqueue plans: the paper's four scenarios, compare and sweeps.

For each model: (1) train a baseline and attack it, (2) generate adversarial examples of the
training images once and store them, (3) adversarially train on original + stored examples,
(4) attack the hardened model again. Evaluations are white-box: every attack is re-run
against the model being judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ferqueue.errors import ConfigError
from ferqueue.vocabulary import OFFLINE_ADV, ONLINE_FGSM, REFRESH_ADV, STANDARD

PAPER_EPSILONS = (0.01, 0.02, 0.03, 0.04, 0.05)


def pixel_specs(pixel_queries: int, pixel_method: str = "random") -> list[str]:
    """The one-pixel attack with a budget of queries (random search) or generations (DE); none for 0."""
    if not pixel_queries:
        return []
    budget = "queries" if pixel_method == "random" else "maxiter"
    return [f"pixel:k=1,method={pixel_method},{budget}={pixel_queries}"]


def eval_attack_specs(epsilons, pixel_queries: int = 100, pgd: bool = True, pixel_method: str = "random",
                      pgd_steps: tuple[int, ...] = (10,)) -> list[str]:
    """FGSM at every epsilon, PGD (of each step count) at every epsilon, and the one-pixel attack."""
    specs = [f"fgsm:eps={eps:g}" for eps in epsilons]
    if pgd:
        specs += [f"pgd:eps={eps:g},steps={steps}" for steps in pgd_steps for eps in epsilons]
    return specs + pixel_specs(pixel_queries, pixel_method)


@dataclass
class PaperPlan:
    models: list[str]
    dataset_id: int
    split_id: int
    train: dict
    adv_train: dict
    weights: str = "auto"
    eval_attacks: list[str] = field(default_factory=list)
    store_attacks: list[str] = field(default_factory=lambda: ["fgsm:eps=0.01", "pixel:k=1,method=random,queries=100"])
    shard_size: int = 256
    eval_limit: int | None = None

    def steps(self) -> list[dict]:
        if not self.models:
            raise ConfigError("no models to run")
        common = {"dataset_id": self.dataset_id, "split_id": self.split_id}
        steps: list[dict] = []
        for model in self.models:
            base, gen, adv = f"train-{model}-{STANDARD}", f"generate-{model}", f"train-{model}-{OFFLINE_ADV}"
            steps += [
                {"name": base, "kind": "train",
                 "args": {**common, "architecture": model, "mode": STANDARD, "train": self.train,
                          "weights": self.weights}},
                {"name": f"evaluate-{model}-{STANDARD}", "kind": "evaluate",
                 "args": {**common, "attacks": self.eval_attacks, "limit": self.eval_limit},
                 "refs": {"artifact_id": f"{base}.artifact_id"}},
                {"name": gen, "kind": "generate",
                 "args": {**common, "attacks": self.store_attacks, "subset": "train",
                          "shard_size": self.shard_size},
                 "refs": {"artifact_id": f"{base}.artifact_id"}},
                {"name": adv, "kind": "train",
                 "args": {**common, "architecture": model, "mode": OFFLINE_ADV, "train": self.adv_train,
                          "weights": self.weights},
                 "refs": {"store_job_id": f"{gen}.job_id"}},
                {"name": f"evaluate-{model}-{OFFLINE_ADV}", "kind": "evaluate",
                 "args": {**common, "attacks": self.eval_attacks, "limit": self.eval_limit},
                 "refs": {"artifact_id": f"{adv}.artifact_id"}},
            ]
        return steps


@dataclass
class ComparePlan:
    """Baseline vs offline vs online adversarial training, same data, epochs and seed.

    Offline stores FGSM(adv_eps) examples of the training images once (made against the
    baseline); online regenerates FGSM(adv_eps) against the current weights every batch. Both
    see each training image twice per epoch (clean + adversarial). Every model is judged by
    white-box attacks re-run on itself, and by the transfer set: examples of the test images
    made once against the baseline.
    """

    model: str
    dataset_id: int
    split_id: int
    train: dict
    adv_eps: float = 0.01
    weights: str = "auto"
    eval_attacks: list[str] = field(default_factory=list)
    transfer_attacks: list[str] = field(default_factory=list)
    store_attacks: list[str] | None = None
    online_modes: tuple[str, ...] = (ONLINE_FGSM,)
    shard_size: int = 256
    eval_limit: int | None = None
    prefix: str = ""
    refresh_every: int | None = None  # refresh_adv: regenerate the store every R epochs
    refresh_attack: str | None = None  # refresh_adv: the attack of the regenerated stores

    def steps(self) -> list[dict]:
        common = {"dataset_id": self.dataset_id, "split_id": self.split_id}
        store = self.store_attacks or [f"fgsm:eps={self.adv_eps:g}"]
        p, m = self.prefix, self.model
        base, gen, transfer = f"{p}train-{m}-{STANDARD}", f"{p}generate-{m}-train", f"{p}generate-{m}-transfer"

        def train_step(mode: str, refs: dict | None = None) -> dict:
            return {"name": f"{p}train-{m}-{mode}", "kind": "train", "refs": refs or {},
                    "args": {**common, "architecture": m, "mode": mode, "weights": self.weights,
                             "train": {**self.train, "adv_eps": self.adv_eps}}}

        steps = [
            train_step(STANDARD),
            {"name": gen, "kind": "generate", "refs": {"artifact_id": f"{base}.artifact_id"},
             "args": {**common, "attacks": store, "subset": "train", "shard_size": self.shard_size}},
        ]
        if self.transfer_attacks:
            steps.append({"name": transfer, "kind": "generate", "refs": {"artifact_id": f"{base}.artifact_id"},
                          "args": {**common, "attacks": self.transfer_attacks, "subset": "test",
                                   "shard_size": self.shard_size, "limit": self.eval_limit}})
        steps.append(train_step(OFFLINE_ADV, {"store_job_id": f"{gen}.job_id"}))
        steps += [train_step(mode) for mode in self.online_modes]
        modes = [STANDARD, OFFLINE_ADV, *self.online_modes]
        if self.refresh_every:
            steps += self._refresh_steps(common, gen, train_step)
            modes.insert(2, REFRESH_ADV)
        for mode in modes:
            refs = {"artifact_id": f"{p}train-{m}-{mode}.artifact_id"}
            if self.transfer_attacks:
                refs["transfer_store_job_id"] = f"{transfer}.job_id"
            steps.append({"name": f"{p}evaluate-{m}-{mode}", "kind": "evaluate", "refs": refs,
                          "args": {**common, "attacks": self.eval_attacks, "limit": self.eval_limit}})
        return steps

    def _refresh_steps(self, common: dict, first_store: str, train_step) -> list[dict]:
        """refresh_adv: segments of ``refresh_every`` epochs on original + stored examples, each
        from the weights the previous one left, each on a store generated against those weights
        (the first on the offline run's store, made against the baseline); the last segment is
        the model that is judged. The learning-rate schedule runs over the whole training."""
        p, m = self.prefix, self.model
        epochs, every = self.train["epochs"], self.refresh_every
        starts = list(range(0, epochs, every))
        steps, previous, store = [], None, first_store
        for k, start in enumerate(starts):
            name = f"{p}train-{m}-{REFRESH_ADV}" if k == len(starts) - 1 else f"{p}train-{m}-{REFRESH_ADV}-s{k}"
            if previous is not None:
                store = f"{p}generate-{m}-refresh-s{k}"
                steps.append({"name": store, "kind": "generate", "refs": {"artifact_id": f"{previous}.artifact_id"},
                              "args": {**common, "attacks": [self.refresh_attack], "subset": "train",
                                       "shard_size": self.shard_size}})
            refs = {"store_job_id": f"{store}.job_id"}
            if previous is not None:
                refs["init_artifact_id"] = f"{previous}.artifact_id"
            step = train_step(REFRESH_ADV, refs)
            step["name"] = name
            segment = {"epochs": min(every, epochs - start), "epoch_offset": start, "schedule_epochs": epochs}
            if previous is not None:
                segment["probe_epochs"] = 0  # the head was probed in the first segment
            step["args"]["train"] = {**step["args"]["train"], **segment}
            steps.append(step)
            previous = name
        return steps


@dataclass
class SweepPlan:
    """One training and one white-box evaluation per configuration of a grid: each
    configuration is the shared ``train`` settings with its own values (and training mode)."""

    model: str
    dataset_id: int
    split_id: int
    train: dict
    configs: list[dict]  # each: TrainConfig fields, "mode" among them
    weights: str = "auto"
    eval_attacks: list[str] = field(default_factory=list)
    eval_limit: int | None = None

    def steps(self) -> list[dict]:
        common = {"dataset_id": self.dataset_id, "split_id": self.split_id}
        steps: list[dict] = []
        for i, config in enumerate(self.configs):
            values = dict(config)
            mode = values.pop("mode", STANDARD)
            name = f"train-{i:03d}"
            steps += [
                {"name": name, "kind": "train",
                 "args": {**common, "architecture": self.model, "mode": mode, "weights": self.weights,
                          "train": {**self.train, **values}}},
                {"name": f"evaluate-{i:03d}", "kind": "evaluate", "refs": {"artifact_id": f"{name}.artifact_id"},
                 "args": {**common, "attacks": self.eval_attacks, "limit": self.eval_limit}},
            ]
        return steps

