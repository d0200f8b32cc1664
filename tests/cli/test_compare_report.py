"""`ferqueue compare` and `ferqueue report` on real runs."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from ferqueue.cli import main

FAST = ["--dataset", "synthetic:140", "--epochs", "2", "--eps", "0.02", "--pixel-queries", "10", "--no-pgd",
        "--eval-limit", "20"]


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def compared(settings):
    return invoke("compare", *FAST, "--experiment", "cmp", "--online", "online_fgsm,pgd_at", "--adv-steps", "2",
                  "--robust-check", "16")


def test_compare_trains_every_mode_and_charges_offline_generation(compared, settings):
    from ferqueue.db.ledger import find_experiment
    from ferqueue.db.ledger import run as ledger_run
    from ferqueue.db.queries import comparison
    from ferqueue.db.session import open_database

    assert "offline_adv" in compared.output and "online_fgsm" in compared.output and "transfer" in compared.output
    db = open_database(settings.database_url)
    table = comparison(db, find_experiment(db, "cmp").id)
    assert table["modes"] == ["standard", "offline_adv", "online_fgsm", "pgd_at"] and table["n_splits"] == 1
    keys = {(c["setting"], c["attack"]) for c in table["accuracy"]}
    assert keys == {("clean", "none"), ("whitebox", "fgsm-eps0.02"), ("whitebox", "pixel-random-k1-q10"),
                    ("transfer", "fgsm-eps0.02"), ("transfer", "pixel-random-k1-q10")}
    compute = {c["mode"]: c for c in table["compute"]}
    n_train = 112
    assert compute["standard"]["gradient_evals"] == 2 * n_train
    assert compute["offline_adv"]["examples_seen"] == compute["online_fgsm"]["examples_seen"] == 2 * 2 * n_train
    assert compute["online_fgsm"]["gradient_evals"] == 2 * 3 * n_train, "one extra input gradient per example"
    # PGD-AT (2 steps) trains on its adversarial examples alone: 2 input gradients and 1 update each
    assert compute["pgd_at"]["examples_seen"] == 2 * n_train and compute["pgd_at"]["gradient_evals"] == 2 * 3 * n_train
    for run in json.loads(invoke("runs", "--format", "json").output):
        history = ledger_run(db, run["run_id"]).history
        assert len(history["val_pgd_accuracy"]) == 2, "the robust check ran after every epoch of every model"
    assert compute["offline_adv"]["generation_evals"] == n_train and compute["offline_adv"]["generation_seconds"] > 0
    assert compute["offline_adv"]["total_seconds"] > compute["offline_adv"]["train_seconds"]
    # the baseline's transfer rows are its own white-box examples: they must agree exactly
    cells = {(c["setting"], c["attack"]): c["values"] for c in table["accuracy"]}
    assert cells[("transfer", "fgsm-eps0.02")]["standard"] == cells[("whitebox", "fgsm-eps0.02")]["standard"]


def test_compare_runs_every_subject_fold(settings):
    from ferqueue.db.ledger import find_experiment
    from ferqueue.db.queries import comparison
    from ferqueue.db.session import open_database
    from ferqueue.db.tables import SplitRow

    result = invoke("compare", *FAST, "--epochs", "1", "--folds", "2", "--no-transfer", "--experiment", "folds")
    assert "mean ± std over 2 folds" in result.output
    db = open_database(settings.database_url)
    assert comparison(db, find_experiment(db, "folds").id)["n_splits"] == 2
    with db.session() as s:
        assert sorted((r.kind, r.n_folds, r.fold) for r in s.query(SplitRow)) == [("subject", 2, 0), ("subject", 2, 1)]


def test_compare_refuses_bad_options_before_work(settings):
    for args, message in ((["--online", "online_pgd"], "online_pgd"), (["--folds", "1"], "--folds"),
                          (["--model", "tiny_cnn,edl"], "one model"), (["--adv-eps", "0"], "0"),
                          (["--online", "trades", "--adv-steps", "0"], "between 1 and 1000"),
                          (["--keep-best-robust"], "needs a robust check")):
        result = CliRunner().invoke(main, ["compare", *FAST, *args])
        assert result.exit_code != 0 and message in result.output


def test_report_writes_plots_and_summary(compared, settings, tmp_path):
    out = tmp_path / "report"
    invoke("report", "cmp", "--out", str(out))
    names = {p.name for p in out.iterdir()}
    assert {"accuracy-vs-eps.png", "summary.md"} <= names
    assert sum(n.startswith("curves-run") for n in names) == 4
    assert sum(n.startswith("confusion-") for n in names) == 4
    assert sum(n.startswith("examples-") for n in names) == 4
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            assert image.size[0] > 300
    summary = (out / "summary.md").read_text()
    for needle in ("Table 1", "Compute", "Classification report", "sadness", "offline_adv", "transfer"):
        assert needle in summary
    check_results_page(out / "index.html", tmp_path, n_figures=len(list(out.glob("*.png"))))
    runs = json.loads(invoke("runs", "--format", "json").output)
    single = tmp_path / "single"
    invoke("report", f"run:{runs[0]['run_id']}", "--out", str(single), "--no-examples")
    assert (single / f"curves-run{runs[0]['run_id']}.png").exists()
    assert not list(single.glob("examples-*"))
    bad = CliRunner().invoke(main, ["report", "nope"])
    assert bad.exit_code != 0 and "nope" in bad.output


def check_results_page(page, tmp_path, n_figures: int) -> None:
    """index.html needs nothing beside it: moved away from the PNGs, it still shows every plot,
    the comparison tables and the per-class reports in headless Chromium."""
    import re
    import shutil

    from fq_browser import chromium, full_page_screenshot, wait_for_text

    html = page.read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) == n_figures
    assert not re.search(r'(src|href)="(?!data:)', html), "no file, server or network is referenced"
    alone = tmp_path / "alone" / "index.html"
    alone.parent.mkdir()
    shutil.copy(page, alone)
    with chromium(tmp_path / "chromium") as browser:
        browser.get(alone.as_uri())
        text = wait_for_text(browser, lambda t: "Classification report" in t, "the report")
        for heading in ("Table 1", "Accuracy by training mode", "Compute", "Figures", "All evaluations"):
            assert heading in text
        sizes = browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth)")
        assert len(sizes) == n_figures and all(width > 300 for width in sizes), sizes
        shot = full_page_screenshot(browser, tmp_path / "report.png")
    assert shot.stat().st_size > 50_000


def test_submit_train_runs_a_robust_mode_and_keeps_its_best_robust_epoch(settings):
    from ferqueue.db import ledger
    from ferqueue.db.session import open_database

    result = invoke("submit", "train", "--local", "-q", "--dataset", "synthetic:140", "--model", "tiny_cnn",
                    "--weights", "random", "--mode", "trades", "--epochs", "3", "--adv-eps", "0.03", "--adv-steps", "2",
                    "--trades-beta", "2", "--robust-check", "16", "--keep-best-robust")
    db = open_database(settings.database_url)
    job = ledger.job(db, int(result.output.strip().splitlines()[-1]))
    run = ledger.run(db, job.result["run_id"])
    robust = run.history["val_pgd_accuracy"]
    assert run.mode == "trades" and len(robust) == 3 and robust[job.result["kept_epoch"] - 1] == max(robust)
    assert job.result["val_accuracy"] == run.history["val_accuracy"][job.result["kept_epoch"] - 1]
    assert job.spec["train"]["trades_beta"] == 2.0 and job.spec["train"]["adv_steps"] == 2
    assert run.gradient_evals == 3 * 112 * (2 + 2), "clean and adversarial terms, 2 PGD steps per example"
    bad = CliRunner().invoke(main, ["submit", "train", "--local", "--dataset", "synthetic:140", "--model", "tiny_cnn",
                                    "--mode", "trades", "--adv-weight", "0.5"])
    assert bad.exit_code != 0 and "TRADES weighs its terms with beta" in bad.output


def test_sweep_trains_every_configuration_and_ranks_them(settings):
    result = invoke("sweep", "--dataset", "synthetic:140", "--epochs", "2", "--eps", "0.03", "--pixel-queries", "0",
                    "--eval-limit", "20", "--experiment", "sw", "--grid", "mode=standard,pgd_at;lr=0.001,0.003;adv_steps=2")
    assert "4 configurations of tiny_cnn" in result.output and "configurations ranked by pgd-eps0.03-steps10" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 120
    data = json.loads(invoke("results", "--experiment", "sw", "--compare", "--format", "json").output)
    assert data["by"] == "pgd-eps0.03-steps10" and data["grid"]["lr"] == [0.001, 0.003]
    assert {(r["config"]["mode"], r["config"]["lr"], r["config"]["adv_steps"]) for r in data["rows"]} == {
        ("standard", 0.001, 2), ("standard", 0.003, 2), ("pgd_at", 0.001, 2), ("pgd_at", 0.003, 2)}
    ranked = [r["accuracy"][data["by"]] for r in data["rows"]]
    assert ranked == sorted(ranked, reverse=True) and [r["rank"] for r in data["rows"]] == [1, 2, 3, 4]
    # each configuration's figures are its run's rows of the results table
    table = json.loads(invoke("results", "--experiment", "sw", "--format", "json").output)
    for row in data["rows"]:
        mine = {r["attack_key"]: r["accuracy"] for r in table if r["run_id"] == row["run_id"] and r["setting"] == "whitebox"}
        assert mine == {k: v for k, v in row["accuracy"].items() if k != "clean"}
    pgd_runs = [r for r in data["rows"] if r["config"]["mode"] == "pgd_at"]
    assert all(r["gradient_evals"] == 2 * 112 * 3 for r in pgd_runs), "2 PGD steps + 1 update per example"
    by_clean = json.loads(invoke("results", "--experiment", "sw", "--compare", "--by", "clean", "--format", "json").output)
    clean = [r["accuracy"]["clean"] for r in by_clean["rows"]]
    assert by_clean["by"] == "clean" and clean == sorted(clean, reverse=True)


@pytest.mark.parametrize("args, message", [
    (["--grid", "momentum=0.9"], "'momentum' is not a training setting"),
    (["--grid", "mode=offline_adv"], "offline_adv needs a stored generation job"),
    (["--grid", "lr=0.001,0.001"], "needs distinct values"),
    (["--grid", "lr"], "is not KEY=V1,V2"),
    (["--grid", "adv_steps=0,2;mode=pgd_at"], "between 1 and 1000"),
    (["--grid", "lr=0.001", "--model", "tiny_cnn,edl"], "one model"),
    (["--grid", "lr=0.001", "--pgd-steps", "10,0"], "--pgd-steps"),
])
def test_sweep_refuses_a_bad_grid_before_any_job(settings, args, message):
    from ferqueue.db.session import open_database

    result = CliRunner().invoke(main, ["sweep", "--dataset", "synthetic:140", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    db = open_database(settings.database_url)
    with db.session() as s:
        from ferqueue.db.tables import JobRow

        assert s.query(JobRow).count() == 0


def test_by_ranks_only_a_sweep(compared):
    bad = CliRunner().invoke(main, ["results", "--experiment", "cmp", "--compare", "--by", "clean"])
    assert bad.exit_code != 0 and "is not one" in bad.output


def test_compare_refreshes_the_store_against_the_current_weights(settings):
    """refresh_adv: 2 segments of 1 epoch; the second starts from the first one's weights, on a
    store of PGD examples made against them; the schedule spans both; every store is charged."""
    from ferqueue.db import ledger
    from ferqueue.db.ledger import find_experiment
    from ferqueue.db.queries import comparison, training_runs
    from ferqueue.db.session import open_database

    invoke("compare", *FAST, "--no-transfer", "--online", "n_fgsm", "--refresh-every", "1", "--adv-steps", "2",
           "--adv-eps", "0.03", "--experiment", "refresh")
    db = open_database(settings.database_url)
    exp = find_experiment(db, "refresh")
    table = comparison(db, exp.id)
    assert table["modes"] == ["standard", "offline_adv", "refresh_adv", "n_fgsm"]
    segments = [r for r in training_runs(db, exp.id) if r["mode"] == "refresh_adv"]
    assert len(segments) == 2 and segments[1]["params"]["init_artifact_id"] == segments[0]["artifact_id"]
    assert [s["params"]["train"]["epoch_offset"] for s in segments] == [0, 1]
    first, second = (ledger.run(db, s["run_id"]) for s in segments)
    assert first.history["lr"][-1] == pytest.approx(0.5 * 3e-3, rel=1e-3) and second.history["lr"][-1] < 1e-9, \
        "one cosine schedule over both segments (tiny_cnn's lr 3e-3)"
    second_store = ledger.job(db, second.store_job_id)
    assert second_store.spec["attacks"] == ["pgd:eps=0.03,steps=2"]
    assert second_store.spec["artifact_id"] == first.artifact_id, "made against the first segment's weights"
    n_train = 112
    compute = {c["mode"]: c for c in table["compute"]}["refresh_adv"]
    assert compute["gradient_evals"] == 2 * 2 * n_train, "two epochs of original + stored examples"
    assert compute["generation_evals"] == n_train + 2 * n_train, "the baseline's FGSM store, then PGD-2 against segment 1"
    cells = {(c["setting"], c["attack"]): c["values"] for c in table["accuracy"]}
    assert "refresh_adv" in cells[("whitebox", "fgsm-eps0.02")], "the last segment is judged"


def test_compare_refuses_a_refresh_that_refreshes_nothing(settings):
    result = CliRunner().invoke(main, ["compare", *FAST, "--refresh-every", "2"])
    assert result.exit_code != 0 and "--refresh-every 2 must be at least 1 and below the 2 epochs" in result.output
