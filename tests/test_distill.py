"""Knowledge distillation: the loss against a hand computation, the teacher-logit cache (one
teacher pass per clip), targets mixed with the inputs' mixup, online targets on the student's
own batch, lineage in config/summary/info, resume, DDP, and one-line errors for bad teachers."""

import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli, run_cli_here, run_torchrun, synthetic_scenes

TINY = ["--preset", "demo", "--width", "4", "--seconds", "1", "--batch-size", "4", "--feature-workers", "1",
        "--lr", "3e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    synthetic_scenes(tmp_path_factory, root / "scenes", seed=4)
    teacher = root / "teacher"
    proc = run_cli_here("train", str(root / "scenes"), *TINY, "--width", "8", "--epochs", "2", "--prune-ratio", "0",
                        "--cache-dir", str(root / "cache"), "--out", str(teacher), "--json")
    assert proc.returncode == 0, proc.stderr
    return root


def train_cli(data, out, *extra, **kw):
    """`edgeasc train` on the module's data, in this process (`run_cli_here`); with process
    options (`env=`...) in a subprocess."""
    dense = [] if "--prune-target" in extra else ["--prune-ratio", "0"]  # not the demo preset's target
    args = ("train", str(data / "scenes"), *TINY, *dense, "--cache-dir", str(data / "cache"), "--out", str(out), *extra)
    return run_cli(*args, **kw) if kw else run_cli_here(*args)


def _config(data, out, **kw):
    from edgeasc.train.config import resolve_train_config

    values = dict(dataset=str(data / "scenes"), preset="demo", width=4, seconds=1.0, batch_size=4, feature_workers=1,
                  lr=3e-3, cache_dir=str(data / "cache"), out=str(out), epochs=1, teachers=[str(data / "teacher")],
                  prune_ratio=0.0)
    return resolve_train_config({**values, **kw})


# ----------------------------------------------------------------------------- the loss
def test_kd_loss_matches_a_hand_computation():
    from edgeasc.train.distill import distillation_loss, kd_loss, soft_targets

    student = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -0.2]])
    teacher = torch.tensor([[1.0, 0.0, -1.0], [-0.5, 2.5, 0.1]])
    tau = 3.0
    p = np.exp(teacher.numpy() / tau)
    p /= p.sum(1, keepdims=True)
    q = np.exp(student.double().numpy() / tau)
    q /= q.sum(1, keepdims=True)
    kl = (p * np.log(p / q)).sum(1).mean()
    targets = soft_targets(teacher, tau)
    assert float(kd_loss(student, targets, tau)) == pytest.approx(tau ** 2 * kl, rel=1e-5)
    # torch's own KL divergence agrees (batchmean)
    ref = torch.nn.functional.kl_div(torch.log_softmax(student / tau, 1), targets, reduction="batchmean") * tau ** 2
    assert float(kd_loss(student, targets, tau)) == pytest.approx(float(ref), rel=1e-6)
    ce = torch.tensor(1.7)
    assert float(distillation_loss(student, ce, targets, 0.3, tau)) == pytest.approx(0.7 * 1.7 + 0.3 * tau ** 2 * kl,
                                                                                      rel=1e-5)
    assert float(distillation_loss(student, ce, targets, 0.0, tau)) == pytest.approx(1.7)
    assert float(kd_loss(teacher, targets, tau)) == pytest.approx(0.0, abs=1e-6)  # the teacher teaches itself nothing


def test_mixed_targets_give_the_mixup_of_the_two_kd_losses():
    """Mixing the soft targets with mixup's λ and partner is, up to a constant of the targets,
    λ·KD(own teacher) + (1 − λ)·KD(partner's teacher): the same gradient for the student."""
    from edgeasc.data.loader import mix, mixup_plan
    from edgeasc.train.distill import kd_loss, soft_targets

    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 4, generator=gen) * 2
    lam, perm = mixup_plan(6, np.random.default_rng(3), 0.3)
    assert not torch.equal(perm, torch.arange(6))
    p = soft_targets(teacher, 2.0)
    mixed = mix(p, lam, perm)
    assert torch.allclose(mixed, lam[:, None] * p + (1 - lam[:, None]) * p[perm])
    student = torch.randn(6, 4, generator=gen, requires_grad=True)
    (g_mixed,) = torch.autograd.grad(kd_loss(student, mixed, 2.0), student)
    separate = sum(kd_loss(student[i:i + 1], p[i:i + 1], 2.0) * lam[i] +
                   kd_loss(student[i:i + 1], p[perm[i]:perm[i] + 1], 2.0) * (1 - lam[i]) for i in range(6)) / 6
    (g_separate,) = torch.autograd.grad(separate, student)
    assert torch.allclose(g_mixed, g_separate, atol=1e-6)


def test_mixup_plan_reproduces_mixup_exactly():
    from edgeasc.data.loader import mix, mixup, mixup_plan

    x, y = torch.randn(5, 1, 3, 4), torch.tensor([0, 1, 2, 1, 0])
    mixed, y_a, y_b, lam = mixup(x, y, np.random.default_rng(7), 0.3)
    lam2, perm = mixup_plan(5, np.random.default_rng(7), 0.3)
    assert torch.equal(mixed, mix(x, lam2, perm)) and torch.equal(lam, lam2) and torch.equal(y_b, y[perm])
    lam0, perm0 = mixup_plan(5, np.random.default_rng(7), 0.0)  # alpha 0: no mixing (numpy's beta refuses 0)
    assert torch.equal(mix(x, lam0, perm0), x)


# ----------------------------------------------------------------------------- the cache
def test_teacher_runs_once_per_clip_and_the_cache_is_keyed(data):
    from edgeasc.data.cache import FeatureCache
    from edgeasc.train.distill import cached_logits, compute_logits, load_teacher, logits_key

    cache_dir = next((data / "cache" / "features").iterdir())
    cache = FeatureCache(cache_dir, json.loads((cache_dir / "manifest.json").read_text()))
    teacher = load_teacher(data / "teacher", cache.label_names, cache.manifest["params"], cache.manifest["channels"])
    calls = []

    def counting(t, c, split, device):
        logits = compute_logits(t, c, split, device)
        calls.append(len(logits))
        return logits

    for stale in (cache_dir / "teachers").glob("*.npy"):
        stale.unlink()
    first, hit1 = cached_logits(teacher, cache, "train", compute=counting)
    again, hit2 = cached_logits(teacher, cache, "train", compute=counting)
    n = len(cache.clips("train"))
    assert (hit1, hit2) == (False, True) and calls == [n] and np.array_equal(first, again)
    # the logits are the teacher's on the normalised, un-augmented clips
    x = torch.from_numpy(np.array(cache.features("train")[:3]))
    with torch.no_grad():
        direct = teacher.model((x - teacher.mean) / teacher.std).numpy()
    assert np.allclose(first[:3], direct, atol=1e-5)
    # another split, or another teacher checkpoint, is another key; a damaged file is recomputed
    assert logits_key(teacher, cache, "evaluate") != logits_key(teacher, cache, "train")
    other = load_teacher(data / "teacher", cache.label_names, cache.manifest["params"], cache.manifest["channels"])
    other.sha256 = "0" * 64
    assert logits_key(other, cache, "train") != logits_key(teacher, cache, "train")
    path = cache_dir / "teachers" / f"{logits_key(teacher, cache, 'train')}.npy"
    path.write_bytes(path.read_bytes()[:100])
    _, hit3 = cached_logits(teacher, cache, "train", compute=counting)
    assert hit3 is False and calls == [n, n]


def test_distilled_run_records_its_teacher_and_reuses_the_cached_logits(data, tmp_path):
    for stale in (data / "cache" / "features").glob("*/teachers/*.npy"):
        stale.unlink()
    a = train_cli(data, tmp_path / "a", "--epochs", "2", "--teacher", str(data / "teacher"), "--kd-weight", "0.7",
                  "--kd-temperature", "3")
    assert a.returncode == 0, a.stderr
    n_train = len(json.loads(next((data / "cache" / "features").glob("*/manifest.json")).read_text())
                  ["splits"]["train"]["clips"])
    assert f"teacher logits: 1 of 1 teacher(s) ran on {n_train} training clips" in a.stdout
    b = train_cli(data, tmp_path / "b", "--epochs", "2", "--teacher", str(data / "teacher"), "--kd-weight", "0.7",
                  "--kd-temperature", "3")
    assert b.returncode == 0 and "teacher logits" not in b.stdout  # the cache answered: the teacher did not run
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    teacher_file = data / "teacher" / "model-final.pt"
    sha = hashlib.sha256(teacher_file.read_bytes()).hexdigest()
    assert summary["teachers"] == [{"path": str(teacher_file.resolve()), "sha256": sha,
                                    "accuracy": json.loads((data / "teacher" / "summary.json").read_text())["final"]["accuracy"],
                                    "params": summary["teachers"][0]["params"]}]
    assert summary["kd"] == {"weight": 0.7, "temperature": 3.0, "targets": "cached", "reduction": "batch"}
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["teachers"][0]["sha256"] == sha and config["train"]["kd_weight"] == 0.7
    info = run_cli_here("info", str(tmp_path / "a"))
    assert f"teacher: {teacher_file.resolve()} (sha256 {sha[:12]}" in info.stdout
    assert "distillation: weight 0.7, temperature 3.0, cached targets" in info.stdout
    assert json.loads(run_cli_here("info", str(tmp_path / "a"), "--json").stdout)["teachers"][0]["sha256"] == sha
    # distillation changes training: same seed, no teacher, other weights
    plain = train_cli(data, tmp_path / "plain", "--epochs", "2")
    assert plain.returncode == 0
    wa = torch.load(tmp_path / "a" / "model-final.pt", weights_only=True)["model"]
    wp = torch.load(tmp_path / "plain" / "model-final.pt", weights_only=True)["model"]
    assert not all(torch.equal(wa[k], wp[k]) for k in wa)


# ----------------------------------------------------------------------------- inside the loop
def test_cached_targets_are_mixed_with_the_inputs_lambda_and_partner(data, tmp_path, monkeypatch):
    import edgeasc.train.loop as loop
    import edgeasc.train.run as tr
    from edgeasc.data.loader import mix

    seen = {"plans": [], "logits": [], "targets": []}
    real_plan, real_soft, real_loss = loop.mixup_plan, loop.soft_targets, loop.distillation_loss
    monkeypatch.setattr(loop, "mixup_plan", lambda *a: seen["plans"].append(real_plan(*a)) or seen["plans"][-1])
    monkeypatch.setattr(loop, "soft_targets", lambda z, t: seen["logits"].append(z.clone()) or real_soft(z, t))
    monkeypatch.setattr(loop, "distillation_loss",
                        lambda s, h, t, w, tau, r: seen["targets"].append(t.clone()) or real_loss(s, h, t, w, tau, r))
    tr.train(_config(data, tmp_path / "run", kd_temperature=2.0), progress=False)
    assert len(seen["plans"]) == len(seen["targets"]) == 4  # 17 clips, batch 4, the last one dropped
    stored = next((data / "cache" / "features").glob("*/teachers/*.npy"))
    rows = {tuple(r) for r in np.load(stored).round(5).tolist()}
    for (lam, perm), logits, targets in zip(seen["plans"], seen["logits"], seen["targets"], strict=True):
        assert not torch.equal(perm, torch.arange(len(perm)))
        assert all(tuple(r) in rows for r in logits.numpy().round(5).tolist())  # the cached rows of these clips
        p = torch.softmax(logits / 2.0, 1)
        assert torch.allclose(targets, mix(p, lam, perm), atol=1e-7)


def test_online_targets_come_from_the_batch_the_student_sees(data, tmp_path, monkeypatch):
    import edgeasc.train.loop as loop
    import edgeasc.train.run as tr

    student_inputs, teacher_inputs = [], []
    real_online = loop.online_logits

    def spy(teachers, x, mean, std):
        teacher_inputs.append(x.clone())
        return real_online(teachers, x, mean, std)

    monkeypatch.setattr(loop, "online_logits", spy)
    real_build = tr.build_model

    def build(config):
        model = real_build(config)
        model.register_forward_pre_hook(lambda m, args: student_inputs.append(args[0].clone()) if m.training else None)
        return model

    monkeypatch.setattr(tr, "build_model", build)
    tr.train(_config(data, tmp_path / "run", kd_targets="online", freq_mixstyle="1,0.3"), progress=False)
    assert len(teacher_inputs) == len(student_inputs) == 4
    assert all(torch.equal(a, b) for a, b in zip(teacher_inputs, student_inputs, strict=True))


def test_teacher_input_uses_the_teachers_own_normalisation():
    from edgeasc.train.distill import Teacher, to_teacher_input

    t = Teacher("t", "0", torch.nn.Identity(), torch.tensor([1.0, 2.0]).view(1, 2, 1),
                torch.tensor([2.0, 4.0]).view(1, 2, 1), None)
    raw = torch.tensor([[[3.0, 5.0], [2.0, 10.0]]])  # (1, mels 2, frames 2)
    s_mean, s_std = torch.tensor([0.5, 1.0]).view(1, 2, 1), torch.tensor([1.0, 2.0]).view(1, 2, 1)
    student_x = (raw - s_mean) / s_std
    assert torch.allclose(to_teacher_input(student_x, s_mean, s_std, t), (raw - t.mean) / t.std)


# ----------------------------------------------------------------------------- resume, DDP, compression
def test_distilled_run_resumes_exactly_and_only_with_its_teachers(data, tmp_path):
    teach = ["--teacher", str(data / "teacher")]
    whole = train_cli(data, tmp_path / "whole", "--epochs", "4", *teach)
    part = train_cli(data, tmp_path / "part", "--epochs", "2", *teach)
    assert whole.returncode == part.returncode == 0, whole.stderr + part.stderr
    assert_one_line_error(train_cli(data, tmp_path / "part", "--epochs", "4", "--resume"), 2,
                          "was trained with 1 teacher(s)", "must resume with the same --teacher")
    other = tmp_path / "other-teacher"
    assert train_cli(data, other, "--width", "6", "--epochs", "1").returncode == 0
    assert_one_line_error(train_cli(data, tmp_path / "part", "--epochs", "4", "--resume", "--teacher", str(other)), 2,
                          "must resume with the same --teacher")
    done = train_cli(data, tmp_path / "part", "--epochs", "4", "--resume", *teach)
    assert done.returncode == 0, done.stderr
    a = torch.load(tmp_path / "whole" / "model-final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "model-final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_with_channel_and_magnitude_pruning_and_freq_mixstyle(data, tmp_path):
    proc = train_cli(data, tmp_path / "run", "--teacher", str(data / "teacher"), "--width", "8", "--epochs", "5",
                     "--macs-target", "60%", "--channel-multiple", "2", "--prune-target", "1500", "--prune-epochs",
                     "2", "--freq-mixstyle", "0.5,0.3", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["nonzero_params"] == 1500 and s["macs"] <= 0.6 * s["dense_macs"] and s["kd"]["targets"] == "cached"


def _trained(run_dir):
    return torch.load(run_dir / "model-final.pt", weights_only=True)["model"]


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "train_clips_per_s", "prune_seconds")} for r in rows]


def test_two_gloo_ranks_distil_prune_and_take_the_steps_of_one_process_accumulating_two_parts(data, tmp_path):
    """DDP against one process on the same data, in one torchrun (each rank start costs a torch
    import) that distils from cached teacher logits and prunes channels to a MACs target. The two
    ranks' batches at each step are the single process's batch, dealt out round-robin, and each
    rank draws its own mixup (the teacher's targets mixed with it). One process with --accumulate 2
    takes exactly those parts (part p = rank p), so the runs must agree, and to the bit, through
    the channel-pruning rebuild: the tolerance is zero, since halving is exact in binary floating
    point and a sum of two gradients does not depend on its order (a third part or rank would make
    it a rounding tolerance). Without accumulation the single process normalises BatchNorm over
    the whole batch, not per rank, and ends measurably elsewhere: the comparison is not blind. The
    DDP run itself: rank 0 reports once, the ranks end in sync, the MACs target is met."""
    args = ["--epochs", "3", "--teacher", str(data / "teacher"), "--macs-target", "30%", "--prune-epochs", "2",
            "--channel-multiple", "1", "--seed", "3", "--device", "cpu", "--json"]
    common = ["train", str(data / "scenes"), *TINY, "--cache-dir", str(data / "cache")]
    ddp = run_torchrun(*common, "--out", str(tmp_path / "ddp"), *args)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summary = json.loads(ddp.stdout[ddp.stdout.index("{"):])  # printed once, by rank 0
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True and summary["teachers"]
    assert summary["macs"] <= 0.3 * summary["dense_macs"]
    assert not [p for p in (tmp_path / "ddp").iterdir() if "partial" in p.name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, as each rank has: the same kernels, so the same bits
    try:
        for name, extra in (("accumulated", ["--accumulate", "2"]), ("whole", [])):
            proc = run_cli_here(*common, "--out", str(tmp_path / name), *args, *extra)
            assert proc.returncode == 0, proc.stderr
    finally:
        torch.set_num_threads(threads)
    ddp_w, acc_w, whole_w = (_trained(tmp_path / n) for n in ("ddp", "accumulated", "whole"))
    assert ddp_w.keys() == acc_w.keys()
    trained = [k for k in ddp_w if ddp_w[k].is_floating_point() and "running" not in k]

    def distance(a, b):
        return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in trained) ** 0.5)

    assert distance(acc_w, ddp_w) == 0.0
    # BatchNorm over 4 clips, not 2 + 2: measured 0.36 (rounding alone would be below 1e-5)
    assert {k: v.shape for k, v in whole_w.items()} != {k: v.shape for k, v in ddp_w.items()} or \
        distance(whole_w, ddp_w) > 0.05
    losses = {n: [m["train_loss"] for m in _metrics(tmp_path / n)] for n in ("ddp", "accumulated", "whole")}
    assert losses["accumulated"] == losses["ddp"] != losses["whole"]
    assert [m["macs"] for m in _metrics(tmp_path / "ddp")] == [m["macs"] for m in _metrics(tmp_path / "accumulated")]


# ----------------------------------------------------------------------------- bad input
def _doctored(data, tmp_path, **changes):
    """The teacher's checkpoint with some fields replaced (other labels, other features...)."""
    from edgeasc.train.checkpoint import save_checkpoint

    ckpt = torch.load(data / "teacher" / "model-final.pt", weights_only=True)
    for key, value in changes.items():
        ckpt[key] = value
    path = tmp_path / "doctored.pt"
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "version", "edgeasc_version")})
    return path


@pytest.mark.parametrize("make, needles", [
    (lambda d, t: ["--teacher", str(t / "nope")], ["no such run or checkpoint"]),
    (lambda d, t: ["--teacher", str(_doctored(d, t, labels=["a", "b", "c"]))], ["has other labels"]),
    (lambda d, t: ["--teacher", str(_doctored(d, t, feature_params={
        **torch.load(d / "teacher" / "model-final.pt", weights_only=True)["feature_params"], "clip_seconds": 2.0}))],
     ["other feature parameters", "clip_seconds 2.0 vs 1.0"]),
    (lambda d, t: ["--teacher", str(_doctored(d, t, channels=1))], ["1-channel input"]),
    (lambda d, t: ["--teacher", str(d / "teacher"), "--kd-weight", "1.5"], ["--kd-weight must be a number in [0, 1]"]),
    (lambda d, t: ["--teacher", str(d / "teacher"), "--kd-temperature", "0"], ["--kd-temperature must be"]),
    (lambda d, t: ["--teacher", str(d / "teacher"), "--kd-targets", "fresh"], ["--kd-targets must be one of"]),
    (lambda d, t: ["--kd-weight", "0.5"], ["--kd-weight without --teacher"]),
    (lambda d, t: ["--teacher", str(d / "teacher"), "--teacher", str(d / "teacher" / "model-final.pt")],
     ["same checkpoint"]),
    (lambda d, t: ["--teacher", str(t / "bad")], ["a run cannot teach itself"]),
])
def test_bad_teachers_are_one_line(data, tmp_path, make, needles):
    (tmp_path / "bad").mkdir()
    proc = train_cli(data, tmp_path / "bad", "--epochs", "1", *make(data, tmp_path))
    assert_one_line_error(proc, 2, *needles)
    assert not (tmp_path / "bad" / "checkpoint-last.pt").exists()


def test_unfinished_teacher_is_refused(data, tmp_path):
    run = tmp_path / "half"
    run.mkdir()
    (run / "checkpoint-last.pt").write_bytes((data / "teacher" / "checkpoint-last.pt").read_bytes())
    assert_one_line_error(train_cli(data, tmp_path / "s", "--epochs", "1", "--teacher", str(run)), 2,
                          "has not finished training")
