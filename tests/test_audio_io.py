import numpy as np
import pytest
import soundfile

from tsasr import workdir as wd
from tsasr.audio import io as audio_io


def _signal(n=4000, seed=0):
    return np.clip(np.random.default_rng(seed).standard_normal(n) * 0.3, -1, 1)


@pytest.mark.parametrize("writer", ["tsasr", "soundfile"])
def test_plain_wav_fast_path_reads_what_soundfile_reads(tmp_path, writer):
    path = tmp_path / "a.wav"
    if writer == "tsasr":
        wd.write_audio(path, _signal())
    else:
        soundfile.write(path, _signal(), 16000, subtype="PCM_16")
    for start, frames in [(0, -1), (10, 100), (3990, 100), (5000, -1), (0, 1), (123, -1)]:
        fast = audio_io._read_plain_wav(path, start, frames)
        assert fast is not None and fast.dtype == np.float32
        reference = soundfile.read(path, start=start, frames=frames, dtype="float32")[0]
        assert np.array_equal(fast, reference)
    assert np.array_equal(audio_io.read_audio(path), soundfile.read(path, dtype="float32")[0])


def test_other_files_go_through_soundfile(tmp_path):
    cases = {
        "float.wav": {"samplerate": 16000, "subtype": "FLOAT"},
        "rate8k.wav": {"samplerate": 8000, "subtype": "PCM_16"},
        "pcm24.wav": {"samplerate": 16000, "subtype": "PCM_24"},
        "a.flac": {"samplerate": 16000, "subtype": "PCM_16"},
    }
    for name, kwargs in cases.items():
        soundfile.write(tmp_path / name, _signal(), **kwargs)
        assert audio_io._read_plain_wav(tmp_path / name, 0, -1) is None
        assert audio_io.read_audio(tmp_path / name).dtype == np.float32
    soundfile.write(tmp_path / "stereo.wav", np.stack([_signal(), _signal(seed=1)], 1), 16000, subtype="PCM_16")
    assert audio_io._read_plain_wav(tmp_path / "stereo.wav", 0, -1) is None
    with pytest.raises(audio_io.AudioError, match="2 channels"):
        audio_io.read_audio(tmp_path / "stereo.wav")
    with pytest.raises(audio_io.AudioError, match="file not found"):
        audio_io.read_audio(tmp_path / "missing.wav")


def test_truncated_or_empty_plain_wav(tmp_path):
    path = tmp_path / "a.wav"
    wd.write_audio(path, _signal(1000))
    blob = path.read_bytes()
    (tmp_path / "cut.wav").write_bytes(blob[: 44 + 2 * 600])  # the header still claims 1000 samples
    cut = audio_io.read_audio(tmp_path / "cut.wav")
    assert np.array_equal(cut, soundfile.read(tmp_path / "cut.wav", dtype="float32")[0])
    assert cut.size == 600
    wd.write_audio(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(audio_io.AudioError, match="empty audio"):
        audio_io.read_audio(tmp_path / "empty.wav")
