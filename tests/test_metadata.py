"""The metadata schema (runtime/metadata.py) field by field, in process and without a model
file: every refusal's exact message, and the checks against a graph's convs with hand-made
conv lists. Fast enough for mutation testing (scripts/mutation.sh)."""

import json
from types import SimpleNamespace

import pytest

from edgeasc.runtime.features import FeatureParams
from edgeasc.runtime.metadata import (
    MetadataError,
    check_against_graph,
    check_conv_plan,
    parse_metadata,
)

FP = FeatureParams(clip_seconds=1.0).to_dict()
PLAN = {"groups": [["stem", 8], ["block", 4]], "convs": [[-1, 0], [0, 1], [1, 0], [0, -1]]}
CONVS = [("c0", 2, 8), ("c1", 8, 4), ("c2", 4, 8), ("c3", 8, 3)]


def parse(**fields):
    return parse_metadata({f"edgeasc.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()},
                          "m.onnx")


def refused(message, **fields):
    with pytest.raises(MetadataError) as exc:
        parse(**fields)
    assert str(exc.value) == f"m.onnx: {message}"
    assert exc.value.exit_code == 2


def test_a_full_metadata_is_kept_as_decoded():
    meta = parse(labels=["a", "b", "c"], feature_params=FP, channels=2, conv_plan=PLAN, version="0.1.0",
                 model_config={"n_classes": 3, "in_channels": 2, "n_mels": 256, "channels": {"stem": 8, "block": 4},
                               "rho": 4, "future": {"k": [1, 2]}},
                 normalization={"mean": [0] * 256, "std": [1] * 256}, sparse={"mode": "auto", "packed_tensors": 0,
                                                                         "sha256": "0" * 64},
                 input={"name": "features"}, clip_seconds=1, newer="kept as text")
    assert meta["model_config"]["future"] == {"k": [1, 2]} and meta["newer"] == "kept as text"
    assert meta["normalization"]["std"] == [1.0] * 256 and isinstance(meta["clip_seconds"], float)
    assert parse(model_config={"channels": None})["model_config"] == {"channels": None}


@pytest.mark.parametrize("fields, message", [
    ({"model_config": []}, "metadata edgeasc.model_config: must be a JSON object, got list"),
    ({"model_config": {"x": "y" * 70_000}}, "metadata edgeasc.model_config: is 70,009 bytes of JSON, more than 65,536"),
    ({"model_config": {"a": [[[[[[[[1]]]]]]]]}}, "metadata edgeasc.model_config: is nested deeper than 8 levels"),
    ({"model_config": {"n_classes": 0}}, "metadata edgeasc.model_config: n_classes must be an integer in "
                                         "1..10,000, got 0"),
    ({"model_config": {"in_channels": 65}}, "metadata edgeasc.model_config: in_channels must be an integer in "
                                            "1..64, got 65"),
    ({"model_config": {"n_mels": 2049}}, "metadata edgeasc.model_config: n_mels must be an integer in 1..2,048, "
                                         "got 2049"),
    ({"model_config": {"channels": {}}}, "metadata edgeasc.model_config: channels must be a channel plan: a JSON "
                                         "object of 1 to 10,000 groups, or null"),
    ({"model_config": {"channels": [1]}}, "metadata edgeasc.model_config: channels must be a channel plan: a JSON "
                                          "object of 1 to 10,000 groups, or null"),
    ({"model_config": {"channels": {"": 1}}}, "metadata edgeasc.model_config: channels channel plan: group name '' "
                                              "must be 1 to 200 characters"),
    ({"model_config": {"channels": {"s": 0}}}, "metadata edgeasc.model_config: channels channel plan: group 's' "
                                               "must keep 1..65,536 channels, got 0"),
    ({"model_config": {"channels": {"s": 65_537}}}, "metadata edgeasc.model_config: channels channel plan: group "
                                                    "'s' must keep 1..65,536 channels, got 65537"),
    ({"model_config": {"channels": {"s": True}}}, "metadata edgeasc.model_config: channels channel plan: group 's' "
                                                  "must keep 1..65,536 channels, got True"),
    ({"conv_plan": {"groups": []}}, "metadata edgeasc.conv_plan: lacks 'convs'"),
    ({"conv_plan": {"groups": {}, "convs": [[0, 0]]}}, "metadata edgeasc.conv_plan: groups must be a list of at "
                                                       "most 10,000 [name, width] pairs"),
    ({"conv_plan": {"groups": [["a", 0]], "convs": [[0, 0]]}}, "metadata edgeasc.conv_plan: groups must hold "
                                                               "[name, width] pairs with a width of 1..65,536, got "
                                                               "['a', 0]"),
    ({"conv_plan": {"groups": [["", 1]], "convs": [[0, 0]]}}, "metadata edgeasc.conv_plan: groups must hold "
                                                              "[name, width] pairs with a width of 1..65,536, got "
                                                              "['', 1]"),
    ({"conv_plan": {"groups": [["a", 1], ["a", 2]], "convs": [[0, 0]]}}, "metadata edgeasc.conv_plan: groups names "
                                                                         "a group twice"),
    ({"conv_plan": {"groups": [["a", 1]], "convs": []}}, "metadata edgeasc.conv_plan: convs must be a list of 1 to "
                                                         "100,000 [in, out] pairs"),
    ({"conv_plan": {"groups": [["a", 1]], "convs": [[0]]}}, "metadata edgeasc.conv_plan: convs must hold [in, out] "
                                                            "pairs of group indices"),
    ({"conv_plan": {"groups": [["a", 1]], "convs": [[0, 1]]}}, "metadata edgeasc.conv_plan: convs names group 1 "
                                                               "of 1"),
    ({"conv_plan": {"groups": [["a", 1]], "convs": [[-2, 0]]}}, "metadata edgeasc.conv_plan: convs names group -2 "
                                                                "of 1"),
    ({"conv_plan": PLAN, "channels": 2}, "metadata edgeasc.conv_plan needs edgeasc.channels and edgeasc.labels "
                                         "(the widths of the network's input and output)"),
    ({"sparse": {"sha256": "A" * 64}}, "metadata edgeasc.sparse: sha256 must be 64 lowercase hex digits, got "
                                       "'" + "A" * 59),
    ({"sparse": {"sha256": "0" * 63}}, "metadata edgeasc.sparse: sha256 must be 64 lowercase hex digits, got "
                                       "'" + "0" * 59),
    ({"input": {"name": "waveform", "sample_rate": 16000}, "feature_params": FP},
     "metadata edgeasc.input takes 16000 Hz audio, edgeasc.feature_params says 22050 Hz"),
    ({"normalization": {"mean": [0.0] * 255, "std": [1.0] * 256}, "feature_params": FP},
     "metadata edgeasc.normalization has 255 means and 256 standard deviations for 256 mel bands"),
    ({"normalization": {"mean": [0.0] * 256, "std": [1.0] * 255}, "feature_params": FP},
     "metadata edgeasc.normalization has 256 means and 255 standard deviations for 256 mel bands"),
    ({"normalization": {"mean": [0.0] * 256, "std": [1.0] * 255 + [0.0]}},
     "metadata edgeasc.normalization has a standard deviation <= 0"),
    ({"clip_seconds": 0}, "metadata edgeasc.clip_seconds: must be a finite number in (0, 3600], got 0"),
    ({"feature_params": {**FP, "fmin": 11025.0}}, "metadata edgeasc.feature_params: needs fmin < fmax <= "
                                                  "sample_rate / 2, got 11025, 11025, 22050"),
    ({"model_config": {"n_mels": 128}, "feature_params": FP}, "metadata edgeasc.model_config has n_mels 128, "
                                                              "edgeasc.feature_params says 256"),
])
def test_every_field_is_typed_and_bounded(fields, message):
    refused(message, **fields)


def test_the_input_sample_rate_may_match_and_the_mel_axis_is_the_metadatas():
    assert parse(input={"name": "waveform", "sample_rate": 22050}, feature_params=FP)["input"]["sample_rate"] == 22050
    fp = {**FP, "n_mels": 128, "fmin": 0.0}
    meta = parse(feature_params=fp, normalization={"mean": [0.0] * 128, "std": [1.0] * 128}, input={"name": "features"},
                 channels=1, labels=["a"])
    shape = ["batch", 1, 128, "frames"]
    check_against_graph(meta, [SimpleNamespace(shape=shape)], [SimpleNamespace(shape=["batch", 1])], "m")
    with pytest.raises(MetadataError, match=r"^m: the graph's input axis 2 is 256, the metadata says 128$"):
        check_against_graph(meta, [SimpleNamespace(shape=["batch", 1, 256, "f"])], [], "m")
    with pytest.raises(MetadataError, match=r"^m: the graph's input axis 3 is 40, the metadata says 44$"):
        check_against_graph(meta, [SimpleNamespace(shape=["batch", 1, 128, 40])], [], "m")
    wave = parse(feature_params=FP, input={"name": "waveform"}, clip_seconds=0.5)
    with pytest.raises(MetadataError, match=r"^m: the graph's input axis 2 is 100, the metadata says 11025$"):
        check_against_graph(wave, [SimpleNamespace(shape=["batch", 2, 100])], [], "m")
    check_against_graph(wave, [SimpleNamespace(shape=["batch", 2, 11025])], [], "m")


def plan_meta(**more):
    return parse(conv_plan=PLAN, channels=2, labels=["a", "b", "c"], **more)


def test_a_graph_that_follows_the_plan_passes():
    check_conv_plan(plan_meta(), CONVS[::-1], "m")  # order does not matter
    check_conv_plan(plan_meta(model_config={"channels": {"block": 4, "stem": 8}}), CONVS, "m")
    check_conv_plan(parse(channels=2), [("c", None, None)], "m")  # no conv_plan: nothing to check


@pytest.mark.parametrize("convs, config, message", [
    (CONVS[:3] + [("c3", 8, 4)], None, "the graph does not follow the channel plan: edgeasc.conv_plan has 1 "
                                       "conv(s) stem -> logits of 8 -> 3 channels, the graph 0"),
    (CONVS[1:], None, "the graph does not follow the channel plan: edgeasc.conv_plan has 1 conv(s) input -> stem "
                      "of 2 -> 8 channels, the graph 0"),
    (CONVS + [("extra", 8, 4)], None, "the graph's conv 'c1' (8 -> 4 channels) is not in the channel plan of "
                                      "edgeasc.conv_plan"),
    (CONVS[:1] + [("w", None, None)], None, "the weight shape of conv 'w' cannot be read, so the graph cannot be "
                                            "checked against edgeasc.conv_plan"),
    (CONVS, {"stem": 999}, "metadata edgeasc.model_config: the channel plan keeps 999 channels in group 'stem', the "
                           "graph's convs 8"),
    (CONVS, {"stem": 8}, "metadata edgeasc.model_config: the channel plan lacks group 'block' (4 channels in the "
                         "graph)"),
    (CONVS, {"stem": 8, "block": 4, "x": 1}, "metadata edgeasc.model_config: the channel plan names group 'x', which "
                                             "no conv of the graph has"),
])
def test_a_plan_that_disagrees_with_the_graph_names_the_group(convs, config, message):
    meta = plan_meta(**({"model_config": {"channels": config}} if config else {}))
    with pytest.raises(MetadataError) as exc:
        check_conv_plan(meta, convs, "m")
    assert str(exc.value) == f"m: {message}"


def test_a_doubled_conv_counts():
    plan = {**PLAN, "convs": PLAN["convs"] + [[0, 1]]}
    meta = parse(conv_plan=plan, channels=2, labels=["a", "b", "c"])
    with pytest.raises(MetadataError, match=r"has 2 conv\(s\) stem -> block of 8 -> 4 channels, the graph 1$"):
        check_conv_plan(meta, CONVS, "m")
    check_conv_plan(meta, CONVS + [("again", 8, 4)], "m")


BIG = {**FP, "n_mels": 2048, "hop_length": 16, "n_fft": 16, "sample_rate": 384_000, "fmax": 1000.0,
       "clip_seconds": 10.0}


@pytest.mark.parametrize("fields, message", [
    ({"labels": []}, "metadata edgeasc.labels: must be a list of 1 to 10,000 class names"),
    ({"labels": ["a"] * 10_001}, "metadata edgeasc.labels: must be a list of 1 to 10,000 class names"),
    ({"labels": {"a": 1}}, "metadata edgeasc.labels: must be a list of 1 to 10,000 class names"),
    ({"labels": [""]}, "metadata edgeasc.labels: must hold non-empty strings only"),
    ({"labels": ["x" * 201]}, "metadata edgeasc.labels: must hold non-empty strings only"),
    ({"labels": [1]}, "metadata edgeasc.labels: must hold non-empty strings only"),
    ({"feature_params": {**FP, "hop_length": 2049}}, "metadata edgeasc.feature_params: hop_length 2049 is longer "
                                                     "than n_fft 2048"),
    ({"feature_params": {**FP, "fmax": 11025.5}}, "metadata edgeasc.feature_params: needs fmin < fmax <= "
                                                  "sample_rate / 2, got 0, 11025.5, 22050"),
    ({"feature_params": {**FP, "fmin": -1.0}}, "metadata edgeasc.feature_params: fmin must be a finite number in "
                                               "[0, 192000], got -1.0"),
    ({"feature_params": {**FP, "top_db": 0}}, "metadata edgeasc.feature_params: top_db must be a finite number in "
                                              "(0, 1000], got 0"),
    ({"feature_params": {**FP, "amin": 1.5}}, "metadata edgeasc.feature_params: amin must be a finite number in "
                                              "(0, 1], got 1.5"),
    ({"feature_params": {**FP, "fmax": float("inf")}}, "metadata edgeasc.feature_params: fmax must be a finite "
                                                       "number in (0, 192000], got inf"),
    ({"feature_params": {**FP, "sample_rate": 999}}, "metadata edgeasc.feature_params: sample_rate must be an "
                                                     "integer in 1,000..384,000, got 999"),
    ({"feature_params": {**FP, "sample_rate": True}}, "metadata edgeasc.feature_params: sample_rate must be an "
                                                      "integer in 1,000..384,000, got True"),
    ({"feature_params": {**FP, "n_fft": 15}}, "metadata edgeasc.feature_params: n_fft must be an integer in "
                                              "16..65,536, got 15"),
    ({"feature_params": {**FP, "n_mels": 0}}, "metadata edgeasc.feature_params: n_mels must be an integer in "
                                              "1..2,048, got 0"),
    ({"channels": 3}, "metadata edgeasc.channels: must be an integer in 1..2, got 3"),
    ({"channels": 0}, "metadata edgeasc.channels: must be an integer in 1..2, got 0"),
    ({"precision": "fp64"}, "metadata edgeasc.precision: must be one of fp32, fp16, int8, got 'fp64'"),
    ({"frontend": 1}, "metadata edgeasc.frontend: must be true or false, got 1"),
    ({"macs_per_clip": -1}, "metadata edgeasc.macs_per_clip: must be an integer in 0..1,000,000,000,000,000, got -1"),
    ({"normalization": {"mean": ["a"], "std": [1]}}, "metadata edgeasc.normalization: mean must be a list of finite "
                                                     "numbers"),
    ({"normalization": {"mean": [0]}}, "metadata edgeasc.normalization: lacks 'std'"),
    ({"input": {"name": "features", "normalized": "yes"}}, "metadata edgeasc.input: normalized must be true or "
                                                           "false, got 'yes'"),
    ({"input": {"layout": "x"}}, "metadata edgeasc.input: lacks 'name'"),
    ({"folded": {"damping": True, "other": 1}}, "metadata edgeasc.folded: unknown key 'other'"),
    ({"size_report": {"params": 1, "nonzero_params": 1, "counted_bytes": 1, "budget_bytes": 1, "verdict": "MAYBE",
                      "rules": "r"}}, "metadata edgeasc.size_report: verdict must be one of PASS, FAIL, got 'MAYBE'"),
    ({"labels": ["a", "b"], "model_config": {"n_classes": 3}}, "the metadata names 2 labels for a network of 3 "
                                                               "classes"),
    ({"channels": 1, "model_config": {"in_channels": 2}}, "metadata edgeasc.model_config has in_channels 2, "
                                                          "edgeasc.channels says 1"),
    ({"feature_params": BIG, "channels": 1}, "one 10-s clip of this model's input would take 1.8 GiB (the "
                                             "metadata's frontend is implausible)"),
    ({"feature_params": {**BIG, "n_mels": 64, "n_fft": 4096, "clip_seconds": 3600.0}, "channels": 2},
     "one 3600-s clip of this model's input would take 41.2 GiB (the metadata's frontend is implausible)"),
    ({"clip_seconds": 3600.5}, "metadata edgeasc.clip_seconds: must be a finite number in (0, 3600], got 3600.5"),
    ({"clip_seconds": "1"}, "metadata edgeasc.clip_seconds: must be a finite number in (0, 3600], got '1'"),
    ({"labels": "a,b"}, "metadata edgeasc.labels is not valid JSON"),
])
def test_every_field_at_its_bounds(fields, message):
    refused(message, **{k: json.dumps(v) if k == "clip_seconds" and isinstance(v, str) else v
                        for k, v in fields.items()})


def test_the_graph_must_output_the_labels_and_take_the_declared_rank():
    meta = parse(labels=["a", "b", "c"], input={"name": "features"}, channels=2)
    with pytest.raises(MetadataError, match=r"^m: the graph outputs 4 classes, the metadata names 3 labels$"):
        check_against_graph(meta, [], [SimpleNamespace(shape=["batch", 4])], "m")
    with pytest.raises(MetadataError, match=r"^m: the graph's input has rank 3, a features input has rank 4$"):
        check_against_graph(meta, [SimpleNamespace(shape=["batch", 2, 7])], [SimpleNamespace(shape=["b", 3])], "m")
    check_against_graph(meta, [SimpleNamespace(shape=["batch", 2, "m", "f"])], [SimpleNamespace(shape=["b", "n"])],
                        "m")


def test_a_waveform_input_is_sized_in_samples_over_the_metadatas_clip_length():
    fp = {**BIG, "n_mels": 64, "n_fft": 4096, "clip_seconds": 1.0}
    refused("one 3600-s clip of this model's input would take 10.3 GiB (the metadata's frontend is implausible)",
            feature_params=fp, input={"name": "waveform"}, channels=2, clip_seconds=3600)
    fits = {**fp, "n_mels": 8, "fmax": 192_000.0}  # 60 s of 384 kHz stereo: 176 MiB, and every band holds a bin
    assert parse(feature_params=fits, input={"name": "waveform"}, channels=2, clip_seconds=60)["clip_seconds"] == 60.0
