"""Every bound of the metadata schema (runtime/metadata.py) at its edge: the last value accepted
and the first refused, with the refusal's exact text; the frontend's kind-specific settings, the
cross-checks and check_against_graph on the shapes the earlier tests never gave it. In process,
without a model file (issue 25 item 7, mutation round 5's real gaps)."""

import json
from types import SimpleNamespace as Arg

import pytest

from edgeasc.runtime.features import D24_PARAMS, FeatureParams
from edgeasc.runtime.metadata import (
    MAX_INPUT_BYTES,
    MetadataError,
    check_against_graph,
    parse_metadata,
)

FP = FeatureParams(clip_seconds=1.0).to_dict()  # perceptual, 22,050 Hz, n_fft 2048, 256 mels
D24 = D24_PARAMS.to_dict()  # logmel, 32 kHz, n_fft 4096, win_length 3072, htk
TINY = {**FP, "sample_rate": 1000, "n_fft": 16, "hop_length": 8, "fmax": 500.0, "n_mels": 4}  # 9 bins, 62.5 Hz apart


def encode(fields: dict) -> dict:
    return {f"edgeasc.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}


def parse(**fields):
    return parse_metadata(encode(fields), "m.onnx")


def refused(message, **fields):
    with pytest.raises(MetadataError) as exc:
        parse(**fields)
    assert str(exc.value) == f"m.onnx: {message}"


def group_names(n):
    return [f"g{i}" for i in range(n)]


def plan(groups, convs=([0, 0],)):
    return {"conv_plan": {"groups": groups, "convs": [list(c) for c in convs]}, "channels": 1, "labels": ["a"]}


# ----------------------------------------------------------------------------- accepted at the edge
# (fields, (dotted path into the parsed metadata, the value found there))
ACCEPTED = [
    ({"version": "v" * 200}, ("version", "v" * 200)),
    ({"input": {"name": "features", "layout": "x" * 200}}, ("input.layout", "x" * 200)),
    ({"labels": group_names(10_000)}, ("labels", group_names(10_000))),
    ({"labels": ["x" * 200]}, ("labels", ["x" * 200])),
    ({"feature_params": {**FP, "hop_length": 1}}, ("feature_params.hop_length", 1)),
    ({"feature_params": {**FP, "n_fft": 65_536, "hop_length": 65_536}}, ("feature_params.hop_length", 65_536)),
    ({"feature_params": {**TINY, "n_fft": 16, "n_mels": 1}}, ("feature_params.n_fft", 16)),
    ({"feature_params": {**FP, "n_fft": 65_536, "n_mels": 2048}}, ("feature_params.n_mels", 2048)),
    ({"feature_params": {**TINY, "sample_rate": 1000}}, ("feature_params.sample_rate", 1000)),
    ({"feature_params": {**FP, "sample_rate": 384_000, "fmax": 192_000.0, "n_mels": 8}},
     ("feature_params.fmax", 192_000.0)),
    ({"feature_params": {**FP, "top_db": 1000}}, ("feature_params.top_db", 1000.0)),
    ({"feature_params": {**FP, "amin": 1}}, ("feature_params.amin", 1.0)),
    ({"feature_params": {**FP, "clip_seconds": 3600}}, ("feature_params.clip_seconds", 3600.0)),
    ({"clip_seconds": 3600}, ("clip_seconds", 3600.0)),
    ({"feature_params": {**D24, "win_length": 1}}, ("feature_params.win_length", 1)),
    ({"feature_params": {**D24, "n_fft": 65_536, "win_length": 65_536}}, ("feature_params.win_length", 65_536)),
    ({"feature_params": {**D24, "win_length": None}}, ("feature_params.win_length", None)),  # an explicit null
    ({"feature_params": {**D24, "log_offset": 1}}, ("feature_params.log_offset", 1.0)),
    # the perceptual frontend's window is n_fft long: saying so is not a log-mel setting
    ({"feature_params": {**FP, "win_length": 2048}}, ("feature_params.win_length", 2048)),
    # as many mel bands as FFT bins, each holding one: 9 bands, edges 100 Hz apart, bins 125 Hz apart
    ({"feature_params": {**TINY, "sample_rate": 2000, "fmax": 1000.0, "n_mels": 9}}, ("feature_params.n_mels", 9)),
    ({"model_config": {"x": "y" * 65_527}}, ("model_config.x", "y" * 65_527)),  # 65,536 bytes of JSON
    ({"model_config": {"a": [[[[[[[1]]]]]]]}}, ("model_config.a", [[[[[[[1]]]]]]])),  # 8 levels
    ({"model_config": {"channels": {"s" * 200: 65_536}}}, ("model_config.channels", {"s" * 200: 65_536})),
    # without feature_params nothing says how many mel bands: the config's n_mels stands alone
    ({"model_config": {"n_mels": 128}}, ("model_config.n_mels", 128)),
    ({"input": {"name": "waveform", "sample_rate": 16_000}}, ("input.sample_rate", 16_000)),
    (plan([[name, 1] for name in group_names(10_000)]), ("conv_plan.groups", [[n, 1] for n in group_names(10_000)])),
    (plan([["x" * 200, 65_536]]), ("conv_plan.groups", [["x" * 200, 65_536]])),
    (plan([["a", 1]], [[0, 0]] * 100_000), ("conv_plan.convs", [[0, 0]] * 100_000)),
    ({"sparse": {"sha256": "0123456789abcdef" * 4}}, ("sparse.sha256", "0123456789abcdef" * 4)),
]


@pytest.mark.parametrize("fields, found", ACCEPTED, ids=[f"{i}-{next(iter(f))}" for i, (f, _) in enumerate(ACCEPTED)])
def test_the_last_value_inside_each_bound_is_accepted(fields, found):
    value = parse(**fields)
    path, want = found
    for part in path.split("."):
        value = value[part]
    assert value == want and type(value) is type(want)


# ----------------------------------------------------------------------------- refused past it
FPM = "metadata edgeasc.feature_params: "
REFUSED = [
    ({"version": "v" * 201}, "metadata edgeasc.version: must be a short string, got '" + "v" * 59),
    ({"input": {"name": "features", "layout": 5}}, "metadata edgeasc.input: layout must be a short string, got 5"),
    ({"size_report": {"params": 1, "nonzero_params": 1, "counted_bytes": 1, "budget_bytes": 1, "verdict": "PASS",
                      "rules": ["r"]}}, "metadata edgeasc.size_report: rules must be a short string, got ['r']"),
    ({"labels": group_names(10_001)}, "metadata edgeasc.labels: must be a list of 1 to 10,000 class names"),
    ({"labels": ["x" * 201]}, "metadata edgeasc.labels: must hold non-empty strings only"),
    ({"labels": ["a", "b", "a"]}, "metadata edgeasc.labels: names a class twice"),
    ({"feature_params": {**FP, "hop_length": 0}}, FPM + "hop_length must be an integer in 1..65,536, got 0"),
    ({"feature_params": {**FP, "n_fft": 65_536, "hop_length": 65_537}},
     FPM + "hop_length must be an integer in 1..65,536, got 65537"),
    ({"feature_params": {**FP, "n_fft": 65_537}}, FPM + "n_fft must be an integer in 16..65,536, got 65537"),
    ({"feature_params": {**FP, "n_mels": 2049}}, FPM + "n_mels must be an integer in 1..2,048, got 2049"),
    ({"feature_params": {**FP, "sample_rate": 384_001}},
     FPM + "sample_rate must be an integer in 1,000..384,000, got 384001"),
    ({"feature_params": {**FP, "fmin": 192_000}}, FPM + "needs fmin < fmax <= sample_rate / 2, got 192000, 11025, "
                                                        "22050"),
    ({"feature_params": {**FP, "fmin": 192_000.5}}, FPM + "fmin must be a finite number in [0, 192000], got 192000.5"),
    ({"feature_params": {**FP, "fmax": 0}}, FPM + "fmax must be a finite number in (0, 192000], got 0"),
    ({"feature_params": {**FP, "fmax": 192_000.5}}, FPM + "fmax must be a finite number in (0, 192000], got 192000.5"),
    ({"feature_params": {**FP, "top_db": 1000.5}}, FPM + "top_db must be a finite number in (0, 1000], got 1000.5"),
    ({"feature_params": {**FP, "amin": 0}}, FPM + "amin must be a finite number in (0, 1], got 0"),
    ({"feature_params": {**FP, "clip_seconds": 0}}, FPM + "clip_seconds must be a finite number in (0, 3600], got 0"),
    ({"feature_params": {**FP, "clip_seconds": 3600.5}},
     FPM + "clip_seconds must be a finite number in (0, 3600], got 3600.5"),
    ({"feature_params": {**D24, "win_length": 0}}, FPM + "win_length must be an integer in 1..65,536, got 0"),
    ({"feature_params": {**D24, "n_fft": 65_536, "win_length": 65_537}},
     FPM + "win_length must be an integer in 1..65,536, got 65537"),
    ({"feature_params": {**D24, "log_offset": 1.5}}, FPM + "log_offset must be a finite number in (0, 1], got 1.5"),
    ({"feature_params": []}, FPM + "must be a JSON object, got list"),
    ({"feature_params": {**FP, "win_length": 1024}}, FPM + "win_length 1024 is a setting of kind logmel, not of kind "
                                                            "perceptual"),
    ({"feature_params": {**FP, "mel_scale": "htk"}}, FPM + "mel_scale 'htk' is a setting of kind logmel, not of kind "
                                                           "perceptual"),
    ({"feature_params": {**FP, "log_offset": 0.5}}, FPM + "log_offset 0.5 is a setting of kind logmel, not of kind "
                                                          "perceptual"),
    ({"feature_params": {**TINY, "sample_rate": 2000, "fmax": 1000.0, "n_mels": 10}},
     FPM + "10 mel bands from the 9 FFT bins of n_fft 16: fewer mel bands or a longer n_fft"),
    # band 0 spans 0-62.5 Hz and the bin at 62.5 Hz lies on its upper edge, where the filter is 0
    ({"feature_params": {**TINY, "fmax": 62.5, "n_mels": 1}},
     FPM + "mel band 0 of 1 (0.0-62.5 Hz) holds no FFT bin (bins are 62.50 Hz apart): fewer mel bands or a longer "
           "n_fft"),
    # the top band lies between the last two bins (437.5 and 500 Hz), its upper edge on Nyquist's bin
    ({"feature_params": {**TINY, "fmin": 440.0, "n_mels": 1}},
     FPM + "mel band 0 of 1 (440.0-500.0 Hz) holds no FFT bin (bins are 62.50 Hz apart): fewer mel bands or a "
           "longer n_fft"),
    # the log-mel frontend's own scale, for fmin as for fmax (htk: 100 Hz is 150.5 mel, not Slaney's 1.5)
    ({"feature_params": {**D24, "n_mels": 1024, "fmin": 100.0, "fmax": 2000.0}},
     FPM + "mel band 2 of 1024 (101.9-103.8 Hz) holds no FFT bin (bins are 7.81 Hz apart): fewer mel bands or a "
           "longer n_fft"),
    ({"feature_params": {**D24, "mel_scale": "slaney", "n_mels": 1024, "fmax": 2000.0}},
     FPM + "mel band 0 of 1024 (0.0-3.3 Hz) holds no FFT bin (bins are 7.81 Hz apart): fewer mel bands or a longer "
           "n_fft"),
    ({"model_config": {"x": "y" * 65_528}}, "metadata edgeasc.model_config: is 65,537 bytes of JSON, more than 65,536"),
    # the deep branch is looked at even when a shallow sibling comes after it
    ({"model_config": {"a": [[[[[[[[1]]]]]]]], "b": {}}}, "metadata edgeasc.model_config: is nested deeper than 8 "
                                                          "levels"),
    ({"model_config": {"channels": {"s" * 201: 1}}}, "metadata edgeasc.model_config: channels channel plan: group "
                                                     "name '" + "s" * 59 + " must be 1 to 200 characters"),
    (plan([[name, 1] for name in group_names(10_001)]),
     "metadata edgeasc.conv_plan: groups must be a list of at most 10,000 [name, width] pairs"),
    (plan([["x" * 201, 1]]), "metadata edgeasc.conv_plan: groups must hold [name, width] pairs with a width of "
                             "1..65,536, got ['" + "x" * 58),
    (plan([["a", 65_537]]), "metadata edgeasc.conv_plan: groups must hold [name, width] pairs with a width of "
                            "1..65,536, got ['a', 65537]"),
    (plan([["a", 1]], [[0, 0]] * 100_001), "metadata edgeasc.conv_plan: convs must be a list of 1 to 100,000 [in, "
                                           "out] pairs"),
    ({"conv_plan": 5}, "metadata edgeasc.conv_plan: must be a JSON object, got int"),
    ({"sparse": {"sha256": "X" + "0" * 63}}, "metadata edgeasc.sparse: sha256 must be 64 lowercase hex digits, got "
                                             "'X" + "0" * 58),
]


@pytest.mark.parametrize("fields, message", REFUSED, ids=[f"{i}-{next(iter(f))}" for i, (f, _) in enumerate(REFUSED)])
def test_the_first_value_past_each_bound_is_refused_with_its_message(fields, message):
    refused(message, **fields)


# ----------------------------------------------------------------------------- one clip's input size
# a waveform input of C channels and N samples takes 4·C·N bytes: exactly MAX_INPUT_BYTES passes
WAVE = {**FP, "n_fft": 1024, "n_mels": 64}


@pytest.mark.parametrize("rate, channels", [(65_536, 2), (131_072, None)])
def test_one_clip_of_exactly_the_input_limit_fits(rate, channels):
    fields = {"feature_params": {**WAVE, "sample_rate": rate, "fmax": rate / 2}, "input": {"name": "waveform"},
              "clip_seconds": 2048}
    if channels:
        fields["channels"] = channels
    assert 4 * (channels or 1) * 2048 * rate == MAX_INPUT_BYTES
    assert parse(**fields)["clip_seconds"] == 2048.0  # no channels: one


def test_one_clip_past_the_input_limit_is_refused_counting_both_channels():
    fp = {**WAVE, "sample_rate": 65_536, "fmax": 32_768.0}
    refused("one 2049-s clip of this model's input would take 1.0 GiB (the metadata's frontend is implausible)",
            feature_params=fp, input={"name": "waveform"}, channels=2, clip_seconds=2049)
    assert parse(feature_params=fp, input={"name": "waveform"}, channels=1, clip_seconds=2049)["channels"] == 1
    refused("one 3600-s clip of this model's input would take 1.8 GiB (the metadata's frontend is implausible)",
            feature_params=fp, input={"name": "waveform"}, channels=2, clip_seconds=3600)


def test_a_feature_input_is_sized_over_the_metadatas_clip_length_not_the_frontends():
    fp = {**FP, "hop_length": 16}  # its own clip_seconds: 1
    refused("one 3600-s clip of this model's input would take 9.5 GiB (the metadata's frontend is implausible)",
            feature_params=fp, channels=2, clip_seconds=3600)
    assert parse(feature_params=fp, channels=2, clip_seconds=60)["clip_seconds"] == 60.0


# ----------------------------------------------------------------------------- parse_metadata's walk
def test_every_key_is_read_past_the_ones_skipped():
    for first in ({"other.key": "x"}, {"edgeasc.newer": "x"}):
        custom = {**first, **encode({"labels": ["a", "b", "a"]})}
        with pytest.raises(MetadataError, match=r"^m: metadata edgeasc.labels: names a class twice$"):
            parse_metadata(custom, "m")
        meta = parse_metadata({**first, **encode({"labels": ["a"], "channels": 2})})
        assert meta["labels"] == ["a"] and meta["channels"] == 2
    assert parse_metadata({"other.key": "x", "edgeasc.newer": "{"}) == {"newer": "{"}


def test_a_file_without_a_name_is_called_model():
    with pytest.raises(MetadataError) as exc:
        parse_metadata(encode({"channels": 3}))
    assert str(exc.value) == "model: metadata edgeasc.channels: must be an integer in 1..2, got 3"
    with pytest.raises(MetadataError) as exc:
        parse_metadata({"edgeasc.labels": "["})
    assert str(exc.value) == "model: metadata edgeasc.labels is not valid JSON"


# ----------------------------------------------------------------------------- check_against_graph
def test_the_output_width_is_the_last_axis_of_any_rank():
    meta = parse(labels=["a", "b", "c"])
    check_against_graph(meta, [], [Arg(shape=[])], "m")  # a scalar output: no class axis to compare
    check_against_graph(meta, [], [Arg(shape=["batch", 5, 3])], "m")
    with pytest.raises(MetadataError, match=r"^m: the graph outputs 5 classes, the metadata names 3 labels$"):
        check_against_graph(meta, [], [Arg(shape=["batch", 3, 5])], "m")
    with pytest.raises(MetadataError, match=r"^m: the graph outputs 4 classes, the metadata names 3 labels$"):
        check_against_graph(meta, [], [Arg(shape=[4])], "m")


def test_the_input_is_checked_only_when_the_metadata_declares_it():
    meta = parse(labels=["a"], channels=2)
    check_against_graph(meta, [Arg(shape=[1, 1])], [Arg(shape=[1, 1])], "m")  # no edgeasc.input: nothing to compare
    declared = parse(input={"name": "features"}, channels=2)
    check_against_graph(declared, [], [], "m")  # a graph without inputs: nothing to compare either


def test_a_fixed_time_axis_takes_the_metadatas_clip_length():
    meta = parse(feature_params=FP, clip_seconds=2, input={"name": "features"}, channels=2)  # the frontend's: 1 s
    check_against_graph(meta, [Arg(shape=["b", 2, 256, 87])], [], "m")  # 2 s at hop 512: 87 frames
    with pytest.raises(MetadataError, match=r"^m: the graph's input axis 3 is 44, the metadata says 87$"):
        check_against_graph(meta, [Arg(shape=["b", 2, 256, 44])], [], "m")


@pytest.mark.parametrize("name, shape, axis, want", [("features", ["b", 1, "m", "f"], 1, 2),
                                                     ("waveform", ["b", 1, "t"], 1, 2),
                                                     ("features", ["b", 3, 256, 44], 1, 2)])
def test_the_input_channel_axis_must_be_the_metadatas(name, shape, axis, want):
    meta = parse(input={"name": name}, channels=2, feature_params=FP)
    with pytest.raises(MetadataError) as exc:
        check_against_graph(meta, [Arg(shape=shape)], [], "m")
    assert str(exc.value) == f"m: the graph's input axis {axis} is {shape[axis]}, the metadata says {want}"
    check_against_graph(meta, [Arg(shape=[*shape[:1], 2, *shape[2:]])], [], "m")
