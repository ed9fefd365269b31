"""`train --fit`: the plan (start network from the candidate table, targets from the rules),
a trained student that meets the rules exactly after int8 export, exit code 3 when bytes or
MACs fail (naming which, and by how much), and one-line errors for bad --fit input."""

import json

import pytest

from conftest import assert_one_line_error, run_cli_here, synthetic_scenes

BASE = ["--seconds", "1", "--batch-size", "4", "--feature-workers", "1", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=5)
    return root


def train_cli(data, out, *extra):
    return run_cli_here("train", str(data / "scenes"), *BASE, "--cache-dir", str(data / "cache"), "--out", str(out), *extra)


def test_plan_picks_the_widest_candidate_within_the_headroom():
    from edgeasc.compress.fit import START_HEADROOM, candidates, plan_fit, rules_limits
    from edgeasc.models.channels import complexity

    assert rules_limits("dcase2024", 1.0) == (128_000, 30_000_000)
    assert rules_limits("dcase2022", 1.0) == (131_072, 30_000_000)
    assert rules_limits("dcase2024", 10.0) == (128_000, 300_000_000)
    # mono 1-s clips, 10 classes (TAU 2022): width 32 is 43,716,960 MACs, 1.457x the limit; width 40 is 2.25x
    plan = plan_fit("dcase2024", 44, 1.0, 10, 1)
    assert plan.start.width == 32 and plan.dense == (68_468, 43_716_960)
    assert plan.macs_target == "30000k" and plan.params_target is None
    ratios = {c.width: max(p / 128_000, m / 30e6) for _, c in candidates(10, 1) for p, m in [complexity(c, 44)]}
    assert ratios[32] <= START_HEADROOM < ratios[40]
    # stereo, 3 classes: the stem costs more, and width 24 is the widest within the headroom
    assert plan_fit("dcase2024", 44, 1.0, 3, 2).start.width == 24
    lines = "\n".join(plan.lines())
    assert "at most 128,000 parameters (int8" in lines and "43.72 M MACs per second" in lines
    assert "--precision int8 --rules dcase2024" in lines


EXPORT = "  export: --precision int8 --rules {} (the run's default)"
HEAD = ("fit {}: at most {} parameters (int8, 1 byte each, BatchNorm and zeros counted) and 30 M MACs per second "
        "of audio")
CUT = ("  channel pruning (widths in multiples of 16) to at most {0} parameters = {0} counted bytes and 30 M MACs per "
       "second (which channels stay, and so the exact counts, training decides)")


def test_the_plan_says_what_it_will_do_line_for_line():
    from edgeasc.compress.fit import candidates, plan_fit
    from edgeasc.models.config import ModelConfig

    table = plan_fit("dcase2024", 44, 1.0, 10, 1)
    assert table.lines() == [
        HEAD.format("dcase2024", "128,000"),
        "  start: damped rho 3 width 32 (from the candidate table), 68,468 parameters, 43.72 M MACs per second",
        CUT.format("68,468"), EXPORT.format("dcase2024")]
    fits = plan_fit("dcase2024", 44, 1.0, 3, 2)
    assert fits.lines() == [
        HEAD.format("dcase2024", "128,000"),
        "  start: damped rho 3 width 24 (from the candidate table), 39,318 parameters, 26.58 M MACs per second",
        "  the start already fits the rules: no channel pruning", EXPORT.format("dcase2024")]
    assert (fits.params_target, fits.macs_target) == (None, None)
    # a given network over both limits, on 10-s clips: the limits per clip, the lines per second
    given = plan_fit("dcase2022", 431, 10.0, 3, 2, network=ModelConfig(rho=3, width=64, n_classes=3, in_channels=2))
    assert given.lines() == [
        HEAD.format("dcase2022", "131,072"),
        "  start: the given network (given), 268,678 parameters, 182.20 M MACs per second",
        CUT.format("131,072"), EXPORT.format("dcase2022")]
    assert (given.params_target, given.macs_target, given.macs_limit) == (131_072, "300000k", 300_000_000)
    assert given.describe() == {
        "rules": "dcase2022", "precision": "int8", "clip_seconds": 10.0, "start": "the given network",
        "start_config": given.start.to_dict(), "explicit": True, "params_limit": 131_072,
        "macs_limit_per_clip": 300_000_000, "macs_limit_per_second": 30_000_000.0, "start_params": 268_678,
        "start_macs_per_clip": given.dense[1], "params_target": 131_072, "macs_target": "300000k",
        "channel_multiple": 16}
    assert given.dense == (268_678, 1_822_034_304) and given.minimum == (13_398, 128_572_224) and table.explicit is False
    assert [name for name, _ in candidates(3, 2)] == [f"damped rho 3 width {w}" for w in (16, 24, 32, 40, 48, 64, 96,
                                                                                          128)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(network=dict(width=128), multiple=64, n_frames=431, seconds=10.0),  # 10-s clips: the MACs per second
     "--fit dcase2024: the given network cannot meet the rules: even at its smallest channel plan (widths of 64) it "
     "has 197,958 parameters > 128,000 and 179.48 M MACs per second > 30 M (a smaller --width or --rho, a smaller "
     "--channel-multiple, or leave the network to --fit)"),
    (dict(network=dict(width=128), multiple=40, n_frames=431, seconds=10.0),
     "--fit dcase2024: the given network cannot meet the rules: even at its smallest channel plan (widths of 40) it "
     "has 72.16 M MACs per second > 30 M (a smaller --width or --rho, a smaller --channel-multiple, or leave the "
     "network to --fit)"),
    (dict(seconds=0.001), "--fit dcase2024: no candidate network meets the rules for 0.001-s clips of 44 frames "
                          "(limits 128,000 parameters, 30,000 MACs per clip)"),
    (dict(rules="dcase2020"), "--fit must be one of dcase2022, dcase2024 (the rule sets that cap all parameters and "
                              "MACs), got 'dcase2020'"),
    (dict(network=dict(width=32, channels="half")), "--fit starts from a dense network, not a channel-pruned one"),
])
def test_plans_that_cannot_work_say_why(kwargs, message):
    from edgeasc.compress.fit import plan_fit
    from edgeasc.errors import ConfigError
    from edgeasc.models.channels import channel_groups
    from edgeasc.models.config import ModelConfig

    kwargs = dict(kwargs)
    network = kwargs.pop("network", None)
    if network is not None:
        config = ModelConfig(rho=3, width=network["width"], n_classes=3, in_channels=2)
        if network.get("channels"):
            config = config.replace(channels={g.name: g.dense_width // 2 for g in channel_groups(config)})
        kwargs["network"] = config
    args = dict(rules="dcase2024", n_frames=44, seconds=1.0, n_classes=3, in_channels=2)
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ConfigError) as refused:
        plan_fit(**args, **kwargs)
    assert str(refused.value) == message


def test_fitted_student_meets_the_rules_after_int8_export(data, tmp_path):
    # stereo 1-s clips: the table's width 24 (26.6 M MACs per second) already fits; width 32 is 1.55x
    auto = train_cli(data, tmp_path / "auto", "--fit", "dcase2024", "--epochs", "2", "--prune-epochs", "1")
    assert auto.returncode == 0, auto.stderr
    assert "fit dcase2024: at most 128,000 parameters" in auto.stdout
    assert "start: damped rho 3 width 24 (from the candidate table)" in auto.stdout
    assert "the start already fits the rules: no channel pruning" in auto.stdout
    # a given start over the limit is channel-pruned to it
    run = tmp_path / "fit"
    proc = train_cli(data, run, "--fit", "dcase2024", "--width", "32", "--epochs", "3", "--prune-epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert "start: the given network (given)" in proc.stdout and "channel pruning (widths in multiples of 16)" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"]["width"] == 32 and summary["fit"]["rules"] == "dcase2024"
    # cut as close to the limit as widths of 16 allow: every such plan of this network enumerated
    # (8,192), the largest within the limits is 27,645,760 MACs (92.2 %)
    import itertools

    from edgeasc.compress.structured import allowed_widths
    from edgeasc.models.channels import channel_groups, complexity
    from edgeasc.models.config import ModelConfig

    dense = ModelConfig.from_dict({k: v for k, v in summary["model"].items() if k != "channels"})
    groups = channel_groups(dense)
    reachable = [m for plan in itertools.product(*(allowed_widths(g.dense_width, 16) for g in groups))
                 for p, m in [complexity(dense, 44, {g.name: w for g, w in zip(groups, plan, strict=True)})]
                 if p <= 128_000 and m <= 30_000_000]
    assert max(reachable) == 27_645_760 and len(reachable) == 5_120
    assert summary["dense_macs"] > 30_000_000 >= max(reachable) >= summary["macs"] > 0.99 * max(reachable)
    assert summary["params"] <= 128_000
    exp = run_cli_here("export", str(run), "--cache-dir", str(data / "cache"), "--json")
    assert exp.returncode == 0, exp.stderr
    report = json.loads(exp.stdout)["report"]
    assert (report["rules"], report["precision"], report["verdict"]) == ("dcase2024", "int8", "PASS")
    assert report["counted_bytes"] == summary["params"] and report["macs_per_second"] == summary["macs"]
    assert report["macs_limit_per_second"] == 30e6
    info = run_cli_here("info", str(run))
    assert "fitted to dcase2024: started from the given network" in info.stdout
    # bytes alone fail at fp32 (4 bytes per parameter): exit 3, naming the bytes and by how much
    fp32 = run_cli_here("export", str(run), "--precision", "fp32", "-o", str(tmp_path / "fp32.onnx"))
    assert fp32.returncode == 3
    over = 4 * summary["params"] - 128_000
    assert f"bytes: {4 * summary['params']:,} counted > budget 128,000, {over:,} over" in fp32.stderr
    assert "MACs:" not in fp32.stderr and (tmp_path / "fp32.onnx").is_file()


def test_budget_fails_on_macs_alone_with_exit_3(data, tmp_path):
    run = tmp_path / "wide"
    assert train_cli(data, run, "--preset", "demo", "--width", "32", "--prune-ratio", "0", "--epochs", "1").returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    macs = summary["macs"]
    assert macs > 30_000_000 and summary["params"] <= 128_000
    proc = run_cli_here("export", str(run), "--precision", "int8", "--rules", "dcase2024", "--cache-dir", str(data / "cache"),
                   "-o", str(tmp_path / "wide.onnx"))
    assert proc.returncode == 3, proc.stderr
    line = [x for x in proc.stderr.splitlines() if "budget FAIL" in x][0]
    assert f"MACs: {macs / 1e6:,.3f} M per second > limit 30 M, {(macs - 30e6) / 1e6:,.3f} M" in line
    assert "bytes:" not in line and "under dcase2024" in line
    # the same network under the 2020 rules (no MAC limit, 500 KB of non-zeros) passes
    ok = run_cli_here("export", str(run), "--precision", "int8", "--rules", "dcase2020", "-o", str(tmp_path / "ok.onnx"))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("extra, needles", [
    (["--fit", "dcase2099"], ["--fit must be one of dcase2022, dcase2024"]),
    (["--fit", "dcase2020"], ["--fit must be one of"]),
    (["--fit", "dcase2024", "--macs-target", "50%"], ["--fit sets the channel targets", "--macs-target"]),
    (["--fit", "dcase2024", "--params-target", "9000"], ["drop --params-target"]),
    (["--fit", "dcase2024", "--width", "128", "--channel-multiple", "32"],
     ["the given network cannot meet the rules", "MACs per second > 30 M"]),
])
def test_bad_fit_input_is_one_line(data, tmp_path, extra, needles):
    out = tmp_path / "bad"
    proc = train_cli(data, out, "--epochs", "3", "--prune-epochs", "1", *extra)
    assert_one_line_error(proc, 2, *needles)
    assert not (out / "checkpoint-last.pt").exists()
