"""compare's gradient-masking check: stronger white-box attacks must not score higher than
weaker ones, and accuracy at eps >= 0.1 must be near chance."""

from ferqueue.db.queries import gradient_masking


def _cells(table: dict[str, dict[str, list[float]]], setting: str = "whitebox") -> list[dict]:
    return [{"setting": setting, "attack": attack, "epsilon": None, "values": values} for attack, values in table.items()]


def test_an_honest_ladder_raises_nothing():
    cells = _cells({"fgsm-eps0.01": {"pgd_at": [0.62, 0.60]}, "pgd-eps0.01-steps10": {"pgd_at": [0.55, 0.57]},
                    "pgd-eps0.01-steps50": {"pgd_at": [0.55, 0.56]}, "fgsm-eps0.1": {"pgd_at": [0.15]},
                    "pgd-eps0.1-steps10": {"pgd_at": [0.10]}})
    assert gradient_masking(cells, ["pgd_at"], 7) == {"pgd_at": []}


def test_each_sign_of_masking_is_named_with_its_figures():
    cells = _cells({"fgsm-eps0.01": {"online_fgsm": [0.30]}, "pgd-eps0.01-steps10": {"online_fgsm": [0.45]},
                    "pgd-eps0.01-steps50": {"online_fgsm": [0.50]}, "fgsm-eps0.1": {"online_fgsm": [0.40]}})
    found = gradient_masking(cells, ["online_fgsm"], 7)["online_fgsm"]
    assert found == ["PGD-10 0.450 > FGSM 0.300 at eps 0.01", "PGD-50 0.500 > PGD-10 0.450 at eps 0.01",
                     "0.400 at eps 0.1, chance is 0.143"]


def test_within_the_slack_or_without_a_pair_nothing_is_claimed():
    cells = _cells({"fgsm-eps0.01": {"standard": [0.20]}, "pgd-eps0.01-steps10": {"standard": [0.215]},
                    "fgsm-eps0.02": {"offline_adv": [0.3]}})
    cells += _cells({"pgd-eps0.02-steps10": {"offline_adv": [0.9]}}, setting="transfer")  # not white-box
    cells += _cells({"fgsm-eps0.02-rs": {"offline_adv": [0.9]}})  # not plain FGSM
    assert gradient_masking(cells, ["standard", "offline_adv"], 7) == {"standard": [], "offline_adv": None}


def test_compare_can_ask_for_pgd_at_several_step_counts():
    from ferqueue import app

    resolved = app.resolve(app.ExperimentOptions(eps_list="0.01,0.1", pgd_steps="10,50", pixel_queries=0), "tiny_cnn")
    assert resolved.eval_attacks == ["fgsm:eps=0.01", "fgsm:eps=0.1", "pgd:eps=0.01,steps=10", "pgd:eps=0.1,steps=10",
                                     "pgd:eps=0.01,steps=50", "pgd:eps=0.1,steps=50"]


def test_the_comparison_table_flags_a_mode_and_says_why():
    from rich.console import Console

    from ferqueue.cli.render import comparison_tables

    cells = _cells({"fgsm-eps0.01": {"standard": [0.2], "online_fgsm": [0.3]},
                    "pgd-eps0.01-steps10": {"standard": [0.0], "online_fgsm": [0.45]}})
    data = {"modes": ["standard", "online_fgsm"], "accuracy": cells, "n_splits": 1, "compute": [],
            "gradient_masking": gradient_masking(cells, ["standard", "online_fgsm"], 7)}
    console = Console(width=120, record=True)
    console.print(comparison_tables(data)[0])
    text = console.export_text()
    row = next(line for line in text.splitlines() if "gradient masking" in line and "│" in line)
    assert row.split("│")[-3].strip() == "ok" and row.split("│")[-2].strip() == "FLAG"
    assert "online_fgsm: PGD-10 0.450 > FGSM 0.300 at eps 0.01" in " ".join(text.split())
