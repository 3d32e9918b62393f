"""``eprop-l2l compare`` on the tiny preset: every rule runs with the same seeds and budget, the table, JSON and
figure are written, exact rules agree, runs are reproducible, and bad input is one line with exit code 2."""

import json

import pytest

from eprop_l2l.cli import main
from eprop_l2l.config.comparison import PRESETS, load_config
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.rules import RuleSpec, parse_rule, split_rules
from eprop_l2l.runs.rule_comparison import compare

ALL_RULES = ["bptt", "tbptt(k=3)+SG", "eprop1-symmetric", "eprop1-random", "eprop1-adaptive", "eprop3(k=3)+SG",
             "rflo-random", "rtrl", "snap2", "ostl"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    config = load_config("tiny", ["iterations=4", "eval_every=2"])
    return out, config, compare(config, out, progress=False)


def test_every_rule_runs_and_is_reported(tiny):
    out, config, results = tiny
    assert [r["rule"] for r in results["summary"]] == ALL_RULES
    stored = json.loads((out / "results.json").read_text())
    assert stored["summary"] == results["summary"]
    for run in stored["runs"]:
        assert run["seed"] == 0 and run["steps_run"] == 4 * config.family().n_steps
        assert [p["iteration"] for p in run["curve"]] == [0, 2, 4]
        for key in ("final_loss", "final_metric", "best_metric", "wall_s", "peak_mb", "ms_per_step"):
            assert run[key] >= 0 or key == "peak_mb", (run["rule"], key)
        assert run["best_metric"] <= run["final_metric"]
    assert {r["cell"] for r in results["runs"]} == {"LSTM", "RateRNN"}  # RFLO trains the rate network
    table = (out / "results.md").read_text()
    assert table.startswith("| rule | cell | held-out bit_error | held-out loss | best bit_error | wall (s) | "
                            "peak mem (MB) | ms / step |")
    assert all(f"| {name} |" in table for name in ALL_RULES)
    assert (out / "learning_curves.png").stat().st_size > 10_000


def test_same_start_same_data_exact_rules_agree(tiny):
    """Same initial weights and batches: all rules start from one held-out loss, and exact RTRL follows BPTT."""
    _, _, results = tiny
    runs = {r["rule"]: r for r in results["runs"]}
    lstm_starts = {r["curve"][0]["loss"] for r in results["runs"] if r["cell"] == "LSTM"}
    assert len(lstm_starts) == 1
    assert runs["rtrl"]["final_loss"] == pytest.approx(runs["bptt"]["final_loss"], rel=1e-3)
    # the LSTM's dense recurrent weights put every unit one coupling step from every other: SnAp-2 keeps all of M
    assert runs["snap2"]["final_loss"] == pytest.approx(runs["rtrl"]["final_loss"], rel=1e-6)
    assert runs["ostl"]["final_loss"] != pytest.approx(runs["rtrl"]["final_loss"], rel=1e-6)


def test_a_rule_is_reproducible(tmp_path):
    config = load_config("tiny", ["iterations=3", "rules=eprop3(k=3)"])
    a = compare(config, tmp_path / "a", progress=False)["runs"][0]
    b = compare(config, tmp_path / "b", progress=False)["runs"][0]
    assert a["curve"][-1]["loss"] == b["curve"][-1]["loss"]
    assert a["curve"][-1]["sg_loss"] == b["curve"][-1]["sg_loss"]


def test_rule_strings():
    assert split_rules("bptt, tbptt(k=5,sg=false),eprop3") == ["bptt", "tbptt(k=5,sg=false)", "eprop3"]
    assert parse_rule("tbptt(k=5,sg=false)") == RuleSpec("tbptt", k=5, synthetic_gradient=False)
    assert parse_rule("eprop1_random") == RuleSpec("eprop1", feedback="random")
    assert parse_rule({"kind": "eprop3", "k": 4, "sg": False}).name == "eprop3(k=4)"
    assert parse_rule("rflo").feedback == "random"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["iterations=0"], "iterations"),
        (["rules=foo"], "rule.kind"),
        (["rules=tbptt(k=0)"], "rule.k"),
        (["rules=tbptt(window=3)"], "rule.window"),
        (["rules=bptt,bptt"], "rules"),
        (["rules=rtrl", "cell.n_rec=64"], "rules"),
        (["rules=snap2", "cell.n_rec=64"], "rules"),
        (["task.n_bits=-1"], "copy_repeat.n_bits"),
        (["cell.tau=3"], "lstm.tau"),
        (["seeds=[-1]"], "seeds"),
        (["curriculum=true", "task=store_recall", "task_fields={}"], "curriculum"),
        (["colour=red"], "colour"),
    ],
)
def test_bad_input_is_a_config_error_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides)
    assert info.value.key == key


def test_command_line(tmp_path, capsys):
    assert main(["compare", "tiny", "iterations=1", "rules=bptt", "--in-process", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "results.md").exists()
    assert "| bptt | LSTM |" in capsys.readouterr().out
    for args, message in [
        (["compare", "nope"], "eprop-l2l: config: unknown preset 'nope'"),
        (["compare", "tiny", "rules=eprop4"], "eprop-l2l: rule.kind: unknown value 'eprop4'"),
        (["compare", "tiny", "iterations=-3"], "eprop-l2l: iterations: must be >= 1"),
        (["compare", str(tmp_path / "missing.yaml")], "eprop-l2l: config: no such file"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err


def test_yaml_config_and_isolated_process(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("task: store_recall\ntask_fields: {n_symbols: 3, symbol_ms: 5.0, max_delay: 2}\ncell: alif\n"
                    "cell_fields: {n_rec: 6, n_adaptive: 3}\nrules: [eprop1_random, {kind: eprop3, k: 5}]\n"
                    "iterations: 2\nbatch_size: 2\neval_batch: 4\nisolate: true\n")
    config = load_config(str(path))
    assert [s.name for s in config.rules] == ["eprop1-random", "eprop3(k=5)+SG"]
    results = compare(load_config(str(path), ["rules=eprop3(k=5)"]), tmp_path / "out", progress=False)
    assert [r["metric"] for r in results["runs"]] == ["error"]  # ran in a spawned process
    assert results["runs"][0]["peak_mb"] >= 0


def test_presets_are_valid():
    for name in PRESETS:
        load_config(name)


def test_overrides_replace_a_mapping_or_set_one_field_and_every_source_is_checked_by_the_schema(tmp_path):
    """OmegaConf merges the preset, a file and the overrides onto CompareConfig: ``task_fields={...}`` replaces the
    preset's fields (not merged onto copy-repeat's), ``task.<field>`` sets one; unknown keys and wrong types name
    their key, from the command line and from a file alike."""
    fields = {"n_symbols": 3, "symbol_ms": 5.0, "max_delay": 2}
    replaced = load_config("tiny", ["task=store_recall", "task_fields={n_symbols: 3, symbol_ms: 5.0, max_delay: 2}",
                                    "rules=bptt"])
    assert replaced.task_fields == fields and replaced.family().name == "store_recall"
    one = load_config("tiny", ["task.n_bits=2"])
    assert one.task_fields == {**PRESETS["tiny"]["task_fields"], "n_bits": 2}
    path = tmp_path / "bad.yaml"
    for text, key in [("iterations: 2\ncolour: red\n", "colour"), ("batch_size: many\n", "batch_size")]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
        assert info.value.key == key
    with pytest.raises(ConfigError) as info:
        load_config("tiny", ["eval_every=often"])
    assert info.value.key == "eval_every"
