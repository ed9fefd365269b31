"""The parsers that take bytes from outside: the WAV / raw-PCM stream reader of `edgeasc listen`
(runtime/stream.py) and audio.py's file loading and truncation check. The WAVs are written here
with struct, field by field, so that every header variant the reader accepts and every decoded
value is pinned independently of what soundfile writes; the refusals are pinned word for word."""

import io
import struct
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from edgeasc.errors import ConfigError
from edgeasc.runtime import audio, stream
from edgeasc.runtime.audio import AudioError
from edgeasc.runtime.stream import StreamFormat

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT: the format tag in the GUID's first two bytes, then this
GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
UNKNOWN = 0xFFFFFFFF  # the RIFF and data sizes a live recorder writes
ACCEPTED = "edgeasc listens to 16/24/32-bit PCM or 32-bit float"


def chunk(kind: bytes, body: bytes) -> bytes:
    """A RIFF chunk: id, little-endian size, body, and the pad byte that follows an odd size."""
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, sub: int | None = None,
              valid: int | None = None) -> bytes:
    """A fmt chunk; `sub`: WAVE_FORMAT_EXTENSIBLE with that sub-format (cbSize 22, valid bits,
    channel mask, GUID)."""
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if sub is not None:
        body += struct.pack("<HHIH", 22, valid or bits, 3 if channels == 2 else 4, sub) + GUID_TAIL
    return chunk(b"fmt ", body)


def wav(*chunks: bytes, data: bytes, data_size: int = UNKNOWN, riff_size: int = UNKNOWN) -> bytes:
    """RIFF/WAVE with `chunks` before the data chunk, which holds `data` (no pad: a stream)."""
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"".join(chunks)
            + b"data" + struct.pack("<I", data_size) + data)


def s24(*values: int) -> bytes:
    """Packed little-endian 24-bit samples, two's complement."""
    return b"".join((v & 0xFFFFFF).to_bytes(3, "little") for v in values)


def decode(data: bytes, raw: StreamFormat | None = None, block_frames: int = 3,
           name: str = "test.wav") -> tuple[StreamFormat, np.ndarray]:
    """What `listen` reads from `data`: its format and every (channels, frames) sample."""
    fmt, body = stream.open_stream(io.BytesIO(data), raw, name)
    blocks = list(stream.read_blocks(body, fmt, block_frames))
    assert all(b.dtype == np.float32 and b.shape[0] == fmt.channels for b in blocks)
    return fmt, (np.concatenate(blocks, axis=1) if blocks else np.zeros((fmt.channels, 0), np.float32))


def refused(data: bytes, message: str, raw: StreamFormat | None = None) -> None:
    with pytest.raises(AudioError) as info:
        decode(data, raw)
    assert str(info.value) == message


# ----------------------------------------------------------------------------- accepted headers
def test_16_bit_pcm_decodes_to_the_exact_fractions_of_full_scale():
    data = struct.pack("<7h", 0, 1, -1, 32767, -32768, 0x0102, -256)
    fmt, x = decode(wav(fmt_chunk(PCM, 1, 44100, 16), data=data))
    assert fmt == StreamFormat(44100, 1, "<i2", 32768.0) and fmt.frame_bytes == 2
    assert np.array_equal(x, np.float32([[0, 2**-15, -2**-15, 1 - 2**-15, -1, 258 / 32768, -2**-7]]))


def test_24_bit_pcm_is_sign_extended_from_its_third_byte():
    values = (1, -1, 0x7FFFFF, -0x800000, -0x7FFFFF, 0x100, 0x10000, -0x10000, 0x123456, -0x123456)
    fmt, x = decode(wav(fmt_chunk(PCM, 1, 48000, 24), data=s24(*values)))
    assert fmt == StreamFormat(48000, 1, "s24", 8388608.0) and fmt.frame_bytes == 3
    want = [2**-23, -2**-23, 1 - 2**-23, -1.0, -1 + 2**-23, 2**-15, 2**-7, -2**-7,
            0x123456 / 2**23, -0x123456 / 2**23]
    assert np.array_equal(x, np.float32([want]))
    # the raw bytes the brief names: 0x800000 is -1.0, 0x7FFFFF is 8388607/8388608
    _, edge = decode(wav(fmt_chunk(PCM, 1, 48000, 24), data=bytes.fromhex("000080ffff7f")))
    assert edge.tolist() == [[-1.0, 8388607 / 8388608]]


def test_32_bit_pcm_and_float():
    ints = (1, -1, 256, 0x7FFFFF00, -0x80000000, 0x7FFFFFFF)
    fmt, x = decode(wav(fmt_chunk(PCM, 1, 16000, 32), data=struct.pack("<6i", *ints)))
    assert fmt == StreamFormat(16000, 1, "<i4", 2147483648.0) and fmt.frame_bytes == 4
    # float32 has 24 bits: 0x7FFFFFFF rounds to 2**31, full scale (as soundfile decodes it too)
    assert np.array_equal(x, np.float32([[2**-31, -2**-31, 2**-23, 1 - 2**-23, -1.0, 1.0]]))
    floats = (0.5, -0.25, 1.5, -3.0, 1e-30, 0.0)  # not rescaled and not clipped
    fmt, x = decode(wav(fmt_chunk(FLOAT, 1, 22050, 32), data=struct.pack("<6f", *floats)))
    assert fmt == StreamFormat(22050, 1, "<f4", 1.0)
    assert np.array_equal(x, np.float32([floats]))


@pytest.mark.parametrize("bits, data, want", [
    (16, struct.pack("<4h", 1, -1, 2, -32768), [[1, 2], [-1, -32768]]),
    (24, s24(1, -1, 2, -0x800000), [[1, 2], [-1, -0x800000]]),
    (32, struct.pack("<4i", 256, -256, 512, -0x80000000), [[256, 512], [-256, -0x80000000]]),
])
def test_stereo_frames_are_interleaved_left_first(bits, data, want):
    fmt, x = decode(wav(fmt_chunk(PCM, 2, 8000, bits), data=data), block_frames=1)
    assert fmt.channels == 2 and fmt.frame_bytes == 2 * bits // 8
    assert np.array_equal(x, np.float32(want) / np.float32(2.0 ** (bits - 1)))


@pytest.mark.parametrize("sub, bits, valid, data, want", [
    (PCM, 16, 16, struct.pack("<2h", -32768, 16384), [-1.0, 0.5]),
    (PCM, 24, 20, s24(-0x800000, 0x400000), [-1.0, 0.5]),  # 20 valid bits, left-justified in 24
    (PCM, 32, 24, struct.pack("<2i", -0x80000000, 0x40000000), [-1.0, 0.5]),
    (FLOAT, 32, 32, struct.pack("<2f", -0.75, 2.0), [-0.75, 2.0]),
])
def test_wave_format_extensible_reads_the_sub_format(sub, bits, valid, data, want):
    fmt, x = decode(wav(fmt_chunk(EXTENSIBLE, 2, 96000, bits, sub, valid), data=data))
    assert (fmt.rate, fmt.channels, fmt.scale) == (96000, 2, 2.0 ** (bits - 1) if sub == PCM else 1.0)
    assert np.array_equal(x, np.float32([[want[0]], [want[1]]]))


def test_a_cut_extensible_fmt_chunk_still_has_its_sub_format_tag():
    """26 bytes hold the sub-format's tag (the GUID's first two bytes); 25 do not."""
    base = struct.pack("<HHIIHH", EXTENSIBLE, 1, 8000, 16000, 2, 16) + struct.pack("<HHI", 22, 16, 4)
    _, x = decode(wav(chunk(b"fmt ", base + struct.pack("<H", PCM)), data=struct.pack("<h", 16384)))
    assert x.tolist() == [[0.5]]
    # an odd chunk's pad byte is not part of it: neither the tag's second byte here ...
    refused(wav(chunk(b"fmt ", base + b"\x01"), data=b""),
            f"test.wav: WAV format 65534 with 16-bit samples; {ACCEPTED}")
    # ... nor the last byte of a fmt chunk one byte short
    refused(wav(chunk(b"fmt ", fmt_chunk(PCM, 1, 8000, 16)[8:23]), data=b""), "test.wav: a truncated WAV fmt chunk")


def test_odd_chunks_and_their_pad_bytes_lists_and_facts_are_skipped():
    junk = chunk(b"junk", b"abc")                                  # 3 bytes + pad
    info = chunk(b"LIST", b"INFO" + chunk(b"INAM", b"rain\x00"))   # an odd sub-chunk inside
    bext = chunk(b"bext", b"\xff" * 7)                             # odd, between fmt and data
    fact = chunk(b"fact", struct.pack("<I", 2))
    assert len(junk) == 12 and len(bext) == 16
    data = struct.pack("<2h", -16384, 8192)
    for chunks in [(junk, fmt_chunk(PCM, 1, 8000, 16), info), (fmt_chunk(PCM, 1, 8000, 16), bext, fact, junk),
                   (info, junk, fmt_chunk(PCM, 1, 8000, 16), bext)]:
        fmt, x = decode(wav(*chunks, data=data))
        assert fmt == StreamFormat(8000, 1, "<i2", 32768.0) and x.tolist() == [[-0.5, 0.25]], chunks
    # a writer that leaves out the pad byte: the next chunk is read one byte late, and refused
    unpadded = b"junk" + struct.pack("<I", 3) + b"abc"
    refused(wav(unpadded, fmt_chunk(PCM, 1, 8000, 16), data=data),
            "test.wav: a 16,777,216-byte b'mt \\x10' chunk before the audio; not a WAV stream edgeasc reads")


def test_the_declared_sizes_are_not_trusted():
    """A live stream declares 0 or 0xFFFFFFFF; a file cut short declares more than it holds.
    Either way the reader takes the whole frames there are and drops a last partial one."""
    data = struct.pack("<3h", 1, 2, 3) + b"\x04"
    for size in (0, UNKNOWN, 1000, 2):
        _, x = decode(wav(fmt_chunk(PCM, 1, 8000, 16), data=data, data_size=size, riff_size=size))
        assert x.tolist() == [[2**-15, 2**-14, 3 * 2**-15]]
    _, x = decode(wav(fmt_chunk(PCM, 2, 8000, 24), data=s24(1, 2, 3)))  # 1.5 stereo frames
    assert x.tolist() == [[2**-23], [2**-22]]
    _, x = decode(wav(fmt_chunk(PCM, 1, 8000, 16), data=b""))
    assert x.shape == (1, 0)


def test_chunks_up_to_a_mebibyte_and_64_chunks_before_the_data():
    fmt16 = fmt_chunk(PCM, 1, 8000, 16)
    _, x = decode(wav(chunk(b"junk", bytes(1 << 20)), fmt16, data=struct.pack("<h", 8192)))
    assert x.tolist() == [[0.25]]
    refused(wav(chunk(b"junk", bytes((1 << 20) + 1)), fmt16, data=b""),
            "test.wav: a 1,048,577-byte b'junk' chunk before the audio; not a WAV stream edgeasc reads")
    refused(wav(fmt16, b"LIST" + struct.pack("<I", UNKNOWN), data=b""),  # a size past 2 GiB is no negative
            "test.wav: a 4,294,967,295-byte b'LIST' chunk before the audio; not a WAV stream edgeasc reads")
    many = [chunk(b"junk", b"x")] * 62
    _, x = decode(wav(fmt16, *many, data=struct.pack("<h", 8192)))  # the data chunk is the 64th
    assert x.tolist() == [[0.25]]
    refused(wav(fmt16, *many, chunk(b"junk", b""), data=b""),
            "test.wav: no data chunk among the first 64 chunks; not a WAV stream edgeasc reads")


@pytest.mark.parametrize("rate", [1000, 384_000])
def test_the_extreme_sample_rates_are_accepted(rate):
    fmt, _ = decode(wav(fmt_chunk(PCM, 2, rate, 16), data=b""))
    assert (fmt.rate, fmt.channels) == (rate, 2)


# ----------------------------------------------------------------------------- refused headers
@pytest.mark.parametrize("data, message", [
    (b"", "not a WAV stream (no RIFF/WAVE header); for raw PCM give --rate, --channels and --format"),
    (b"RIFF\xff\xff\xff\xffWAV", "not a WAV stream (no RIFF/WAVE header); for raw PCM give --rate, "
     "--channels and --format"),
    (b"RIFF\xff\xff\xff\xffAVI fmt ", "not a WAV stream (no RIFF/WAVE header); for raw PCM give --rate, "
     "--channels and --format"),
    (b"RIFX\xff\xff\xff\xffWAVE", "not a WAV stream (no RIFF/WAVE header); for raw PCM give --rate, "
     "--channels and --format"),
    (b"RIFF\xff\xff\xff\xffWAVE", "the WAV stream ended before its audio data"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00", "the WAV stream ended before its audio data"),
    (b"RIFF\xff\xff\xff\xffWAVE" + fmt_chunk(PCM, 1, 8000, 16), "the WAV stream ended before its audio data"),
    (b"RIFF\xff\xff\xff\xffWAVE" + fmt_chunk(PCM, 1, 8000, 16)[:20], "a truncated WAV fmt chunk"),
    (wav(chunk(b"fmt ", struct.pack("<HHIIH", PCM, 1, 8000, 16000, 2)), data=b""), "a truncated WAV fmt chunk"),
    (wav(data=b"\x00\x00"), "the WAV stream has no fmt chunk before its data"),
    (wav(fmt_chunk(0x55, 1, 8000, 16), data=b""), f"WAV format 85 with 16-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(PCM, 1, 8000, 8), data=b""), f"WAV format 1 with 8-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(PCM, 1, 8000, 12), data=b""), f"WAV format 1 with 12-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(FLOAT, 1, 8000, 64), data=b""), f"WAV format 3 with 64-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(FLOAT, 1, 8000, 16), data=b""), f"WAV format 3 with 16-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(FLOAT, 1, 8000, 24), data=b""), f"WAV format 3 with 24-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(6, 1, 8000, 8), data=b""), f"WAV format 6 with 8-bit samples; {ACCEPTED}"),  # A-law
    (wav(fmt_chunk(EXTENSIBLE, 1, 8000, 16, sub=0x55), data=b""), f"WAV format 85 with 16-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(EXTENSIBLE, 1, 8000, 64, sub=FLOAT), data=b""), f"WAV format 3 with 64-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(EXTENSIBLE, 1, 8000, 16, sub=0x8001), data=b""), f"WAV format 32769 with 16-bit samples; {ACCEPTED}"),
    (wav(chunk(b"fmt ", fmt_chunk(EXTENSIBLE, 1, 8000, 16)[8:] + b"\x00\x00"), data=b""),  # cbSize 0
     f"WAV format 65534 with 16-bit samples; {ACCEPTED}"),
    (wav(fmt_chunk(PCM, 0, 8000, 16), data=b""), "0 channels; edgeasc takes mono or stereo audio"),
    (wav(fmt_chunk(PCM, 3, 8000, 16), data=b""), "3 channels; edgeasc takes mono or stereo audio"),
    (wav(fmt_chunk(PCM, 1, 0, 16), data=b""), "a sample rate of 0 Hz"),
    (wav(fmt_chunk(PCM, 1, 999, 16), data=b""), "a sample rate of 999 Hz"),
    (wav(fmt_chunk(PCM, 1, 384_001, 16), data=b""), "a sample rate of 384001 Hz"),
    (wav(chunk(b"fmt ", struct.pack("<HHIIHH", PCM, 1, UNKNOWN, 0, 2, 16)), data=b""), "a sample rate of 4294967295 Hz"),
    (wav(fmt_chunk(FLOAT, 1, 8000, 32), data=struct.pack("<2f", 0.5, float("nan"))),
     "the stream holds NaN or infinite samples"),
    (wav(fmt_chunk(FLOAT, 1, 8000, 32), data=struct.pack("<2f", float("-inf"), 0.5)),
     "the stream holds NaN or infinite samples"),
])
def test_bad_streams_are_refused_in_one_sentence(data, message):
    name = "" if message.startswith("the stream holds") else "test.wav: "
    refused(data, name + message)


def test_a_wav_header_is_checked_against_the_raw_format_given_with_it():
    header = wav(fmt_chunk(FLOAT, 2, 48000, 32), data=struct.pack("<2f", 0.5, -0.5))
    refused(header, "test.wav: the WAV stream is 48000 Hz with 2 channel(s), but --rate/--channels say 44100 Hz "
            "with 2", raw=stream.raw_format(44100, 2, "F32_LE"))
    refused(header, "test.wav: the WAV stream is 48000 Hz with 2 channel(s), but --rate/--channels say 48000 Hz "
            "with 1", raw=stream.raw_format(48000, 1, "F32_LE"))
    fmt, x = decode(header, raw=stream.raw_format(48000, 2, "S16_LE"))  # the header's sample format wins
    assert fmt == StreamFormat(48000, 2, "<f4", 1.0) and x.tolist() == [[0.5], [-0.5]]


def test_the_reader_names_its_stream():
    with pytest.raises(AudioError) as info:
        stream.read_wav_header(io.BytesIO(b"RIFF"))
    assert str(info.value).startswith("stdin: not a WAV stream")
    with pytest.raises(AudioError) as info:
        stream.open_stream(io.BytesIO(b"hello"), None)
    assert str(info.value).startswith("stdin: not a WAV stream")
    fmt, _ = stream.open_stream(io.BytesIO(wav(fmt_chunk(PCM, 1, 8000, 16), data=b"")), None)
    assert fmt.rate == 8000


# ----------------------------------------------------------------------------- raw PCM
@pytest.mark.parametrize("name, packed, want", [
    ("S16_LE", struct.pack("<4h", 1, -32768, 0x0102, 32767), [2**-15, -1.0, 258 / 32768, 1 - 2**-15]),
    ("S32_LE", struct.pack("<4i", 256, -0x80000000, 0x01020300, 0x7FFFFF00),
     [2**-23, -1.0, 0x01020300 / 2**31, 1 - 2**-23]),
    ("F32_LE", struct.pack("<4f", 0.5, -2.0, 1e-3, 0.0), np.float32([0.5, -2.0, 1e-3, 0.0]).tolist()),
])
def test_raw_pcm_is_little_endian_in_every_format(name, packed, want):
    fmt, x = decode(packed, raw=stream.raw_format(8000, 1, name), block_frames=1)  # splits the put-back head
    assert fmt.rate == 8000 and x.tolist() == [want]
    _, both = decode(packed, raw=stream.raw_format(8000, 2, name))
    assert both.tolist() == [want[0::2], want[1::2]]


def test_raw_formats_and_their_refusals():
    assert stream.raw_format(1000, 1, "S16_LE") == StreamFormat(1000, 1, "<i2", 32768.0)
    assert stream.raw_format(384_000, 2, "S32_LE") == StreamFormat(384_000, 2, "<i4", 2147483648.0)
    assert stream.raw_format(22050, 2, "F32_LE").frame_bytes == 8
    with pytest.raises(ConfigError) as info:  # what is missing, not "got None"
        stream.raw_format(None, 1, "S16_LE")
    assert str(info.value) == ("raw PCM needs --rate, the stream's sample rate in Hz (e.g. --rate 48000); a WAV "
                               "stream carries its own")
    for rate in (999, 384_001, 0, -44100):
        with pytest.raises(ConfigError) as info:
            stream.raw_format(rate, 1, "S16_LE")
        assert str(info.value) == (f"--rate {rate} is not a sample rate edgeasc reads: give the stream's rate in Hz, "
                                   "1000 to 384000 (e.g. 16000, 44100, 48000)")
    with pytest.raises(ConfigError) as info:
        stream.raw_format(8000, None, "S16_LE")
    assert str(info.value) == "raw PCM needs --channels 1 or 2 (a raw stream does not say how many it interleaves)"
    for channels in (0, 3):
        with pytest.raises(ConfigError) as info:
            stream.raw_format(8000, channels, "S16_LE")
        assert str(info.value) == f"--channels must be 1 or 2, got {channels}"
    for name in ("S24_LE", "S16_BE", "s16_le", "U8"):
        with pytest.raises(ConfigError) as info:
            stream.raw_format(8000, 1, name)
        assert str(info.value) == f"--format must be one of S16_LE, S32_LE, F32_LE, got {name!r}"


def test_blocks_are_whole_frames_of_the_asked_size():
    data = struct.pack("<10h", *range(10))
    fmt = stream.raw_format(8000, 1, "S16_LE")
    shapes = [b.shape for b in stream.read_blocks(io.BytesIO(data), fmt, 4)]
    assert shapes == [(1, 4), (1, 4), (1, 2)]
    assert [b.shape for b in stream.read_blocks(io.BytesIO(data[:16]), fmt, 4)] == [(1, 4), (1, 4)]
    assert [b.shape for b in stream.read_blocks(io.BytesIO(data[:17]), fmt, 4)] == [(1, 4), (1, 4)]
    assert list(stream.read_blocks(io.BytesIO(b"\x01"), fmt, 4)) == []
    stereo = stream.raw_format(8000, 2, "S16_LE")
    blocks = list(stream.read_blocks(io.BytesIO(data), stereo, 2))
    assert [b.shape for b in blocks] == [(2, 2), (2, 2), (2, 1)]
    assert np.concatenate(blocks, axis=1).tolist() == [[k * 2**-15 for k in range(0, 10, 2)],
                                                       [k * 2**-15 for k in range(1, 10, 2)]]


# ----------------------------------------------------------------------------- audio.py: files
@pytest.mark.parametrize("chunks, data, rate", [
    ((fmt_chunk(PCM, 1, 22050, 16),), struct.pack("<5h", 0, 1, -1, 32767, -32768), 22050),
    ((chunk(b"junk", b"abc"), fmt_chunk(PCM, 2, 22050, 24), chunk(b"LIST", b"INFO")),
     s24(1, -1, 0x7FFFFF, -0x800000, 0x123456, -0x123456), 22050),
    ((fmt_chunk(PCM, 1, 22050, 32),), struct.pack("<3i", 256, -0x80000000, 0x7FFFFF00), 22050),
    ((fmt_chunk(FLOAT, 2, 22050, 32), chunk(b"bext", b"\x01" * 5)), struct.pack("<4f", 0.5, -0.25, 1.5, 0), 22050),
    ((fmt_chunk(EXTENSIBLE, 2, 22050, 24, sub=PCM, valid=20),), s24(-0x800000, 0x400000), 22050),
])
def test_a_file_loads_to_the_samples_the_stream_reader_decodes(tmp_path, chunks, data, rate):
    """The whole-file path (soundfile) and the stream reader agree bit for bit, on a file with
    its true data size (a file is not a live stream)."""
    path = tmp_path / "x.wav"
    body = wav(*chunks, data=data, data_size=len(data))
    path.write_bytes(body[:4] + struct.pack("<I", len(body) - 8) + body[8:])
    _, want = decode(path.read_bytes())
    x, sr = audio.load(path, sample_rate=rate)
    assert sr == rate and x.dtype == np.float32 and np.array_equal(x, want)
    assert audio.truncation(path) is None


def test_resampled_files_are_soxrs_hq_resampling_of_the_float32_samples(tmp_path):
    values = (np.sin(np.arange(4410) / 3) * 30000).astype("<i2")
    path = tmp_path / "r.wav"
    path.write_bytes(wav(fmt_chunk(PCM, 1, 44100, 16), data=values.tobytes(), data_size=len(values) * 2,
                         riff_size=36 + len(values) * 2))
    x, sr = audio.load(path, sample_rate=22050)
    want = soxr.resample(values.astype(np.float32) / np.float32(32768), 44100, 22050, quality="HQ")
    assert sr == 22050 and x.shape == (1, 2205) and x.dtype == np.float32 and np.array_equal(x[0], want)


def test_the_decoders_reason_is_its_first_line(tmp_path, monkeypatch):
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav(fmt_chunk(PCM, 1, 8000, 16), data=b"")[:30])
    try:
        sf.read(str(cut))
    except Exception as exc:  # whatever soundfile raises: its first line is the reason
        reason = str(exc).splitlines()[0]
    with pytest.raises(AudioError) as info:
        audio.load(cut)
    assert reason and str(info.value) == f"{cut}: cannot read audio ({reason})"
    for exc, shown in ((RuntimeError("first line\nsecond line"), "first line"), (RuntimeError(), "RuntimeError")):
        monkeypatch.setattr(audio.sf, "SoundFile", lambda *a, exc=exc, **k: (_ for _ in ()).throw(exc))
        with pytest.raises(AudioError) as info:
            audio.load(cut)
        assert str(info.value) == f"{cut}: cannot read audio ({shown})"


def test_stdin_is_read_whole_and_named_stdin(monkeypatch):
    data = struct.pack("<4h", 16384, -16384, 8192, 0)
    body = wav(fmt_chunk(PCM, 2, 8000, 16), data=data, data_size=len(data))
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(body)})())
    x, sr = audio.load("-", sample_rate=8000, channels=1)
    assert sr == 8000 and x.tolist() == [[0.0, 0.125]]
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(b"RIFF")})())
    with pytest.raises(AudioError) as info:
        audio.load("-")
    assert str(info.value).startswith("stdin: cannot read audio (") and "\n" not in str(info.value)


def test_unusable_files_are_refused_in_one_sentence(tmp_path):
    def message(path, **kwargs):
        with pytest.raises(AudioError) as info:
            audio.load(path, **kwargs)
        return str(info.value)

    assert message(tmp_path / "none.wav") == f"{tmp_path / 'none.wav'}: no such file"
    assert message(tmp_path) == f"{tmp_path}: not a file"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(wav(fmt_chunk(PCM, 1, 8000, 16), data=b"", data_size=0, riff_size=36))
    assert message(empty) == f"{empty}: the clip has no samples"
    three = tmp_path / "three.wav"
    three.write_bytes(wav(fmt_chunk(PCM, 3, 8000, 16), data=bytes(6), data_size=6, riff_size=42))
    assert message(three) == f"{three}: 3 channels; edgeasc takes mono or stereo audio"
    nan = tmp_path / "nan.wav"
    samples = struct.pack("<4f", np.nan, 0.5, np.inf, 0.0)
    nan.write_bytes(wav(fmt_chunk(FLOAT, 1, 8000, 32), data=samples, data_size=16, riff_size=52))
    assert message(nan) == f"{nan}: 2 samples are NaN or infinite"
    nan.write_bytes(wav(fmt_chunk(FLOAT, 1, 8000, 32), data=struct.pack("<2f", np.nan, -np.inf), data_size=8,
                        riff_size=44))
    assert message(nan) == f"{nan}: all samples are NaN or infinite"
    mono = tmp_path / "mono.wav"
    mono.write_bytes(wav(fmt_chunk(PCM, 1, 8000, 16), data=bytes(4), data_size=4, riff_size=40))
    assert message(mono, channels=3) == f"{mono}: cannot make 3 channels from 1"


def test_truncation_walks_odd_chunks_to_the_declared_data_size(tmp_path):
    path = tmp_path / "t.wav"
    head = (chunk(b"junk", b"abc"), fmt_chunk(PCM, 1, 8000, 16), chunk(b"LIST", b"INFO" + chunk(b"INAM", b"x")))

    def warning(data, declared, trailer=b""):
        path.write_bytes(wav(*head, data=data, data_size=declared) + trailer)
        return audio.truncation(path)

    cut = f"{path}: the file holds {{}} % of the audio its header declares (truncated?); the missing end is " \
          "treated as silence"
    assert warning(b"\x01" * 50, 200) == cut.format(25)
    assert warning(b"", 1) == cut.format(0)  # the smallest declared size
    assert warning(bytes(199), 200) == cut.format(99)  # 99.5 %: not "100 %" of a cut file
    assert warning(b"", 200) == cut.format(0)           # the header alone: the file ends after "data"
    assert warning(bytes(200), 200) is None
    assert warning(bytes(200), 200, trailer=chunk(b"LIST", b"INFO")) is None
    assert warning(bytes(50), 0) is None and warning(bytes(50), UNKNOWN) is None  # written by a stream
    assert warning(bytes(50), UNKNOWN - 1) == cut.format(0)
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + chunk(b"junk", bytes(99)))  # no data chunk at all
    assert audio.truncation(path) is None
    path.write_bytes(wav(*head, data=b"")[:-2])  # cut inside the data chunk's size: no size to check
    assert audio.truncation(path) is None
    promise = b"data" + struct.pack("<I", 100) + bytes(4)  # a data chunk cut short, in files that are no WAV
    for other in (b"RIFF\x00\x00\x00\x00AVI " + promise, b"RIFX\x00\x00\x00\x00WAVE" + promise,
                  b"RIFF\x00\x00\x00\x00WAV"):
        path.write_bytes(other)
        assert audio.truncation(path) is None
    assert audio.truncation(tmp_path / "none.wav") is None and audio.truncation(tmp_path) is None


def test_channels_resampling_and_lengths():
    x = np.float32([[1, 2, 3], [3, 4, 5]])
    assert audio.select_channels(x, None) is x and audio.select_channels(x, 2) is x
    assert audio.select_channels(x, 1).tolist() == [[2, 3, 4]]
    mono = x[:1]
    assert audio.select_channels(mono, 2).tolist() == [[1, 2, 3], [1, 2, 3]]
    for have, want in ((x, 3), (np.zeros((3, 2)), 1), (np.zeros((3, 2)), 2)):
        with pytest.raises(AudioError) as info:
            audio.select_channels(have, want)
        assert str(info.value) == f"<audio>: cannot make {want} channels from {have.shape[0]}"
    with pytest.raises(AudioError) as info:
        audio.select_channels(x, 3, "p.wav")
    assert str(info.value) == "p.wav: cannot make 3 channels from 2"
    same = np.arange(6, dtype=np.float64).reshape(2, 3)
    kept = audio.resample(same, 8000, 8000)
    assert kept.dtype == np.float32 and kept.tolist() == same.tolist()
    for n, sr, target in ((1, 48000, 22050), (7, 48000, 22050), (4801, 48000, 22050), (7, 8000, 22050),
                          (4801, 16000, 22050)):
        y = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
        out = audio.resample(y, sr, target)
        assert out.shape == (2, -(-n * target // sr)) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(audio.fit_length(x, 1), x[:, :1]) and audio.fit_length(x, 1).flags.c_contiguous
    # the last axis, whatever the rank: (samples,), (batch, channels, samples)
    assert audio.fit_length(np.float32([1, 2, 3]), 4).tolist() == [1, 2, 3, 0]
    assert audio.fit_length(np.float32([1, 2, 3]), 2).tolist() == [1, 2]
    cube = np.ones((2, 3, 4), np.float32)
    assert audio.fit_length(cube, 6).shape == (2, 3, 6) and audio.fit_length(cube, 6)[..., 4:].sum() == 0
    assert audio.fit_length(cube, 2).shape == (2, 3, 2)
    with pytest.raises(AudioError) as info:
        audio.validate(np.zeros((1, 0), np.float32))
    assert str(info.value) == "<audio>: the clip has no samples"
    padded = audio.fit_length(x.astype(np.float64), 5)
    assert padded.dtype == np.float64 and padded.tolist() == [[1, 2, 3, 0, 0], [3, 4, 5, 0, 0]]
