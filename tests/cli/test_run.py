"""`ferqueue run` end to end on real files and SQLite, and its answers to bad input."""

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from fq_helpers import flip_byte
from PIL import Image

from ferqueue.cli import main

FAST = ["--epochs", "3", "--adv-epochs", "2", "--eps", "0.02,0.04", "--pixel-queries", "10", "--no-pgd",
        "--eval-limit", "20", "--experiment", "demo"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory):
    """One finished `ferqueue run`, made once for the module."""
    from ferqueue.db.session import dispose_engines

    home = tmp_path_factory.mktemp("finished") / "home"
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith("FERQUEUE_") and not k.startswith("FERQUEUE_TEST")]:
            env.delenv(key)
        env.setenv("FERQUEUE_HOME", str(home))
        result = invoke("run", "--dataset", "synthetic:140", *FAST)
    assert result.exit_code == 0, result.output
    dispose_engines()
    return home, result


@pytest.fixture
def finished_run(finished_home, settings):
    """A copy of that run's home as this test's own (the ledger's paths are relative to it)."""
    home, result = finished_home
    shutil.copytree(home, settings.home)
    return result


def _counts(settings):
    import sqlite3

    con = sqlite3.connect(settings.home / "ferqueue.db")
    try:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("jobs", "shards", "training_runs", "evaluations", "model_artifacts")}
    finally:
        con.close()


def test_run_records_all_four_scenarios(finished_run, settings):
    out = finished_run.output
    assert "accuracy on the test set" in out and "offline_adv" in out and "fgsm-eps0.04" in out
    rows = json.loads(invoke("results", "--experiment", "demo", "--format", "json").output)
    # 2 models (baseline, hardened) x (clean + 2 FGSM + 1 one-pixel)
    assert len(rows) == 8
    assert {(r["mode"], r["setting"]) for r in rows} == {("standard", "clean"), ("standard", "whitebox"),
                                                         ("offline_adv", "clean"), ("offline_adv", "whitebox")}
    assert all(r["n"] == 20 for r in rows)
    runs = json.loads(invoke("runs", "--format", "json").output)
    assert [r["mode"] for r in runs] == ["standard", "offline_adv"]
    assert runs[1]["generation_seconds"] > 0 and runs[1]["examples_seen"] == 2 * 3 * 112
    assert all(r["num_params"] > 0 and r["wall_seconds"] > 0 for r in runs)
    csv_out = invoke("results", "--format", "csv").output.splitlines()
    assert csv_out[0].startswith("experiment,") and len(csv_out) == 9


# every command that prints a table: (arguments, a column only --wide shows); {gen} is the generation job
TABLE_COMMANDS = [(["results"], "F1 (w)"), (["results", "--experiment", "demo", "--compare"], "ε"),
                  (["runs"], "gradient evals"), (["jobs"], "executor"), (["status", "1"], "kind"),
                  (["status", "{gen}"], None), (["store", "show", "{gen}"], "params"),
                  (["resume", "1", "--local"], "kind")]


def _generation_job(settings) -> int:
    from ferqueue.db.session import open_database
    from ferqueue.db.tables import JobRow

    with open_database(settings.database_url).session() as s:
        return s.query(JobRow).filter(JobRow.kind == "generate").one().id


@pytest.mark.parametrize(("command", "wide_column"), TABLE_COMMANDS, ids=lambda c: " ".join(c) if c else "-")
def test_every_table_fits_120_columns_unless_wide_and_has_json(finished_run, settings, command, wide_column):
    args = [a.format(gen=_generation_job(settings)) for a in command]
    # a 400-column "terminal": what is measured is the tables' own width, not rich squeezing them
    narrow = CliRunner().invoke(main, args, env={"COLUMNS": "400"}, catch_exceptions=False)
    assert narrow.exit_code == 0, narrow.output
    widest = max(len(line) for line in narrow.output.splitlines())
    assert widest <= 120, f"{' '.join(args)} prints {widest} columns:\n{narrow.output}"
    wide = CliRunner().invoke(main, [*args, "--wide"], env={"COLUMNS": "400"}, catch_exceptions=False)
    assert wide.exit_code == 0
    if wide_column:
        assert f" {wide_column} " not in narrow.output and f" {wide_column} " in wide.output
    as_json = CliRunner().invoke(main, [*args, "--format", "json"], catch_exceptions=False)
    assert as_json.exit_code == 0 and json.loads(as_json.output), as_json.output


def test_store_verify_passes_then_catches_an_altered_shard(finished_run, settings):
    from ferqueue.db import ledger
    from ferqueue.db.session import open_database

    db = open_database(settings.database_url)
    with db.session() as s:
        from ferqueue.db.tables import JobRow

        gen = s.query(JobRow).filter(JobRow.kind == "generate").one()
    ok = invoke("store", "verify", str(gen.id))
    assert ok.exit_code == 0 and "checksums match" in ok.output
    shown = invoke("store", "show", str(gen.id))
    assert "fgsm-eps0.01" in shown.output and "pixel-random-k1-q10" in shown.output and "float32" in shown.output
    shard = ledger.shards(db, gen.id)[0]
    flip_byte(settings.store_root / shard.path)
    bad = CliRunner().invoke(main, ["store", "verify", str(gen.id)])
    assert bad.exit_code != 0 and shard.path in bad.output


def test_a_home_copied_elsewhere_is_checked_there(finished_run, settings, tmp_path, monkeypatch):
    """The ledger's paths are relative to the store and artifact roots: a copied (or restored)
    home reads its own files, not the original's."""
    from ferqueue.db import ledger
    from ferqueue.db.session import open_database

    copy = tmp_path / "home2"
    shutil.copytree(settings.home, copy)
    monkeypatch.setenv("FERQUEUE_HOME", str(copy))
    gen = next(j for j in ledger.children(open_database(f"sqlite:///{copy / 'ferqueue.db'}"), 1)
               if j.kind == "generate")
    assert invoke("store", "verify", str(gen.id)).exit_code == 0
    shard = ledger.shards(open_database(f"sqlite:///{copy / 'ferqueue.db'}"), gen.id)[0]
    (copy / "store" / shard.path).write_bytes(b"damaged in the copy only")
    bad = CliRunner().invoke(main, ["store", "verify", str(gen.id)])
    assert bad.exit_code == 1 and str(copy / "store" / shard.path) in bad.output, bad.output
    monkeypatch.setenv("FERQUEUE_HOME", str(settings.home))
    assert invoke("store", "verify", str(gen.id)).exit_code == 0, "the original home is untouched"


@pytest.mark.parametrize("target", ["/etc/passwd", "outside", "store"])
def test_store_commands_read_only_store_files_under_the_store_root(finished_run, settings, target, tmp_path):
    path = {"/etc/passwd": "/etc/passwd", "outside": str(tmp_path), "store": str(settings.store_root)}[target]
    for command in ("show", "verify"):
        result = CliRunner().invoke(main, ["store", command, path])
        assert result.exit_code == 1 and "Traceback" not in result.output
        expect = "is a folder, not a store file" if target == "store" else "outside the store root"
        assert expect in result.output, result.output


def _ck_folder(root, classes=("anger", "happy")):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(root / c / f"S{i:03d}_001_0001.png")
    return root


@pytest.mark.parametrize("case", ["missing", "empty_class", "unknown_class", "corrupt", "csv_column",
                                  "eps_high", "eps_zero", "model", "attack", "store_eps"])
def test_bad_input_gets_a_clear_error_and_keeps_what_is_stored(case, finished_run, settings, tmp_path):
    before = _counts(settings)
    files_before = sorted(p.name for p in settings.store_root.rglob("*"))
    args, expect = {
        "missing": (["--dataset", str(tmp_path / "nope")], "nope"),
        "empty_class": (None, "fear"),
        "unknown_class": (None, "grumpy"),
        "corrupt": (None, "S001_001_0001.png"),
        "csv_column": (None, "Usage"),
        "eps_high": (["--eps", "0.01,1.5"], "1.5"),
        "eps_zero": (["--eps", "0"], "0"),
        "model": (["--models", "resnet50"], "resnet50"),
        "attack": (["--attack", "warp:eps=0.1"], "warp"),
        "store_eps": (["--store-eps", "2"], "2"),
    }[case]
    if case == "empty_class":
        root = _ck_folder(tmp_path / "ck")
        (root / "fear").mkdir()
        args = ["--dataset", str(root)]
    elif case == "unknown_class":
        root = _ck_folder(tmp_path / "ck", ("anger", "grumpy"))
        args = ["--dataset", str(root)]
    elif case == "corrupt":
        root = _ck_folder(tmp_path / "ck")
        (root / "happy" / "S001_001_0001.png").write_bytes(b"not a png")
        args = ["--dataset", str(root)]
    elif case == "csv_column":
        path = tmp_path / "fer.csv"
        path.write_text("emotion,pixels,Usages\n0," + " ".join(["0"] * 2304) + ",Training\n")
        args = ["--dataset", str(path)]
    elif args[0] != "--dataset":
        args = ["--dataset", "synthetic:140", *args]
    result = CliRunner().invoke(main, ["run", *args, "--epochs", "1"])
    assert result.exit_code != 0
    assert expect in result.output, result.output
    assert "Traceback" not in result.output
    assert _counts(settings) == before, "a refused run stores nothing and loses nothing"
    assert sorted(p.name for p in settings.store_root.rglob("*")) == files_before


def test_results_with_an_unknown_experiment_names_it(settings):
    invoke("db", "upgrade")
    result = CliRunner().invoke(main, ["results", "--experiment", "nonesuch"])
    assert result.exit_code != 0 and "nonesuch" in result.output


@pytest.mark.parametrize("command", [("results",), ("runs",), ("jobs",), ("status", "1"), ("store", "show", "1"),
                                     ("store", "verify", "1"), ("report", "x"), ("cancel", "1")])
def test_read_only_commands_never_migrate_and_say_how_to(settings, command):
    from ferqueue.db.session import Database

    result = CliRunner().invoke(main, list(command))
    assert result.exit_code == 1 and "run `ferqueue db upgrade`" in result.output, result.output
    assert "Traceback" not in result.output
    assert Database(settings.database_url).current_revision() is None, "nothing was migrated"


def test_info_and_db_commands(settings):
    from ferqueue.db.session import Database

    head = Database.head_revision()
    assert head >= "0003", "the head is the newest migration, not one written into this test"
    assert "sqlite" in invoke("info").output
    assert "none" in invoke("db", "current").output
    assert head in invoke("db", "upgrade").output
    assert head in invoke("db", "current").output
