"""The command line: every command exits 0 and writes its files (tiny settings), bad arguments exit 2,
and the demos' building blocks (WAV writer, toy data) do what they say."""

import importlib.util
import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest
import torch

import genengine as ge
from genengine import cli, demos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "cpu-2core-epyc-2026-11-25-issue3.json")


def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert os.path.getsize(path) > 2000, path  # a picture, not an empty canvas


def test_python_m_genengine_info_subprocess():
    out = subprocess.run([sys.executable, "-m", "genengine", "info", "--json"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["versions"]["genengine"] == ge.__version__ and "backends" in doc


def test_info_text_and_global_flags(capsys):
    assert cli.main(["info"]) == 0
    assert "backends" in capsys.readouterr().out
    assert cli.main(["--json", "info"]) == 0
    assert "versions" in json.loads(capsys.readouterr().out)


def test_demo_list_and_bad_family(capsys):
    assert cli.main(["demo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"diffusion", "audio", "video"} <= set(rows)
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "no_such_family"])
    assert e.value.code == 2
    assert "unknown family" in capsys.readouterr().err


def test_demo_diffusion_quick(tmp_path, capsys):
    assert cli.main(["demo", "diffusion", "--quick", "--out", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "diffusion"
    _png(tmp_path / "diffusion.png")


def test_demo_all_quick_gallery(tmp_path, capsys, monkeypatch):
    # every demo at its quick setting, plus one that needs a family this build lacks: skipped, not an error
    monkeypatch.setitem(demos.DEMOS, "not_landed", (lambda ctx: None, ("NoSuchFamily",), "a family that is not built"))
    assert cli.main(["demo", "all", "--quick", "--out", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "not_landed" in doc["skipped"] and not doc["failed"]
    assert {r["name"] for r in doc["results"]} >= {"diffusion", "audio", "video"}
    _png(tmp_path / "gallery.png")
    for r in doc["results"]:  # each family's own picture
        _png(tmp_path / f"{r['name']}.png")
    with wave.open(str(tmp_path / "audio.wav")) as f:
        assert f.getnchannels() == 1 and f.getsampwidth() == 2 and f.getframerate() == 8000
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    assert pcm.size > 1000 and np.abs(pcm).max() > 1000  # sound, not silence
    _png(tmp_path / "audio_spectrogram.png")
    _png(tmp_path / "video_frames.png")
    with open(tmp_path / "video.gif", "rb") as f:
        assert f.read(6) in (b"GIF89a", b"GIF87a")


def test_bench_plot_from_saved_json(tmp_path, capsys):
    out = tmp_path / "roofline.png"
    assert cli.main(["bench", "--plot", str(out), "--from", RESULTS]) == 0
    assert "rows" in capsys.readouterr().out
    _png(out)
    assert cli.main(["bench", "--from", RESULTS]) == 2  # --from without --plot
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli.main(["bench", "--plot", str(out), "--from", str(bad)]) == 2


def test_bench_forwards_to_suite_and_plots(tmp_path, monkeypatch):
    # the suite itself is exercised by its own tests; here: argument forwarding, the JSON it writes, the picture
    seen = {}

    def fake_suite(argv):
        seen["argv"] = argv
        with open(RESULTS) as f:
            doc = json.load(f)
        with open(argv[argv.index("--json") + 1], "w") as f:
            json.dump(doc, f)
        return 0

    import genengine.bench.__main__ as bench_main

    monkeypatch.setattr(bench_main, "main", fake_suite)
    out = tmp_path / "r.png"
    assert cli.main(["bench", "--ops", "group_norm", "--quick", "--plot", str(out), "--quiet"]) == 0
    assert seen["argv"][:3] == ["--ops", "group_norm", "--quick"] and "--json" in seen["argv"]
    _png(out)


class CliTestGaussian(ge.models.GenerativeModel):
    """A tiny saved model for the `sample` command: a 2-D Gaussian."""

    likelihood = "exact"

    def __init__(self, dim: int = 2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))

    def fit(self, data, *, progress=True, callback=None):
        self.mean.copy_(data.mean(0))
        return self

    def sample(self, n, *, generator=None):
        return self.mean + torch.randn(n, self.mean.shape[0], generator=generator)


def test_sample_command_formats_and_seed(tmp_path, capsys):
    m = CliTestGaussian().fit(torch.tensor([[3.0, -1.0], [5.0, 1.0]]))
    path = tmp_path / "g.pt"
    m.save(path)
    for ext in (".npy", ".pt", ".csv", ".png"):
        out = tmp_path / f"s{ext}"
        assert cli.main(["sample", str(path), "-n", "40", "--out", str(out), "--seed", "3", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["shape"] == [40, 2] and doc["model"] == "CliTestGaussian"
        assert out.exists() and out.stat().st_size > 0
    a = np.load(tmp_path / "s.npy")
    torch.testing.assert_close(torch.load(tmp_path / "s.pt"), torch.from_numpy(a))
    assert abs(a[:, 0].mean() - 4.0) < 0.6
    rows = (tmp_path / "s.csv").read_text().strip().splitlines()
    assert len(rows) == 40 and len(rows[0].split(",")) == 2
    _png(tmp_path / "s.png")


def test_sample_bad_arguments(tmp_path, capsys):
    assert cli.main(["sample", str(tmp_path / "missing.pt"), "-n", "3", "--out", str(tmp_path / "x.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    assert cli.main(["sample", str(junk), "-n", "3", "--out", str(tmp_path / "x.npy")]) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["sample", str(junk), "-n", "3", "--out", str(tmp_path / "x.txt")])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["sample", str(junk), "-n", "0", "--out", str(tmp_path / "x.npy")])


def test_write_wav_roundtrip(tmp_path):
    t = torch.arange(800) / 8000
    demos.write_wav(tmp_path / "a.wav", torch.sin(2 * torch.pi * 440 * t), 8000)
    with wave.open(str(tmp_path / "a.wav")) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.float64)
    assert pcm.size == 800 and abs(np.abs(pcm).max() - 0.9 * 32767) < 2
    spec = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spec) * 8000 / 800 - 440) <= 10  # the tone is where it was put


def test_toy_audio_and_video_data_shapes():
    g = torch.Generator().manual_seed(0)
    w = demos._tone_clips(3, 16, g)
    assert w.shape == (3, 128 * 15) and float(w.abs().max()) > 0.1
    f = demos._to_features(w)
    assert f.shape == (3, 64, 16) and float(f.min()) >= -1 and float(f.max()) <= 1
    clips = demos._moving_shapes(2, 6, 16, g)
    assert clips.shape == (2, 1, 6, 16, 16)
    on = (clips > 0).flatten(2).sum(-1)
    assert bool((on > 4).all())  # the shape is in every frame
    centre = [(clips[0, 0, t] > 0).nonzero().float().mean(0) for t in range(6)]
    assert float((centre[1] - centre[0]).norm()) > 0.5  # and it moves


def test_sample_rebuilds_networks_from_the_command_line(tmp_path, capsys):
    """A VAE saved with user networks: --network NAME=FILE.py:FACTORY passes them back at load."""
    nets = tmp_path / "mynets.py"
    nets.write_text(
        "import torch\n"
        "def make_encoder():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Linear(6, 4)\n"
        "def make_decoder():\n"
        "    torch.manual_seed(1)\n"
        "    return torch.nn.Linear(2, 6)\n"
        "not_a_net = 3\n")
    spec = importlib.util.spec_from_file_location("mynets_for_test", nets)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    vae = ge.models.VAE(mod.make_encoder(), mod.make_decoder(), latent_dim=2)
    with torch.no_grad():  # weights that differ from the factories' initialisation: the file's must win
        vae.decoder.weight.mul_(3.0)
    path = tmp_path / "vae.pt"
    vae.save(path)
    out = tmp_path / "s.pt"
    args = ["sample", str(path), "-n", "5", "--out", str(out), "--seed", "4", "--quiet"]
    assert cli.main(args) == 2
    assert "--network NAME=MODULE:ATTR" in capsys.readouterr().err
    assert cli.main(args + ["--network", f"encoder={nets}:make_encoder", "--network", f"decoder={nets}:make_decoder"]) == 0
    got = torch.load(out)
    with torch.no_grad():
        want = vae.sample(5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(got, want)
    for bad, msg in (("encoder", "expected NAME=MODULE:ATTR"), (f"encoder={nets}:not_a_net", "expected an nn.Module"),
                     (f"encoder={nets}:missing", "missing"), ("encoder=no_such_module_xyz:f", "no_such_module_xyz")):
        assert cli.main(args + ["--network", bad]) == 2
        assert msg in capsys.readouterr().err


# ---- user errors: exit status 2 and a one-line message, checked before any work is done ----------------


def _saved_gaussian(tmp_path):
    path = tmp_path / "g.pt"
    CliTestGaussian().fit(torch.tensor([[3.0, -1.0], [5.0, 1.0]])).save(path)
    return path


def _exit_code(argv):
    """cli.main's status, whether it returns it or argparse raises it."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


def test_sample_unwritable_out_fails_before_sampling(tmp_path, capsys, monkeypatch):
    path = _saved_gaussian(tmp_path)
    sampled = []
    monkeypatch.setattr(CliTestGaussian, "sample", lambda self, n, generator=None: sampled.append(n))
    for out in (tmp_path / "no_such_dir" / "x.npy", tmp_path / "no_such_dir" / "x.csv"):
        assert _exit_code(["sample", str(path), "-n", "3", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and "Traceback" not in err
        assert "usage: genengine sample" in err  # the subcommand's usage, not the top-level one
    assert not sampled


def test_sample_model_file_is_a_directory(tmp_path, capsys):
    assert cli.main(["sample", str(tmp_path), "-n", "3", "--out", str(tmp_path / "x.npy")]) == 2
    assert "directory" in capsys.readouterr().err


def test_sample_seed_out_of_torch_range(tmp_path, capsys):
    path = _saved_gaussian(tmp_path)
    argv = ["sample", str(path), "-n", "3", "--out", str(tmp_path / "x.npy"), "--seed", "99999999999999999999999"]
    assert _exit_code(argv) == 2
    assert "--seed" in capsys.readouterr().err


def test_demo_seed_range(tmp_path, capsys):
    # out of torch's range: a usage error before any fitting; the largest seed runs (the per-figure
    # generators' seed * 1009 + salt wraps modulo 2**64, as manual_seed does for negatives)
    assert _exit_code(["demo", "gmm", "--quick", "--out", str(tmp_path), "--seed", str(2**64)]) == 2
    assert "--seed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert cli.main(["demo", "gmm", "--quick", "--out", str(tmp_path), "--seed", str(2**64 - 1), "--quiet"]) == 0
    _png(tmp_path / "gmm.png")


def test_sample_bad_arguments_print_the_sample_usage(tmp_path, capsys):
    path = _saved_gaussian(tmp_path)
    assert _exit_code(["sample", str(path), "-n", "0", "--out", str(tmp_path / "x.npy")]) == 2
    assert "usage: genengine sample" in capsys.readouterr().err


def test_sample_networks_that_do_not_fit_the_file_or_do_not_parse(tmp_path, capsys):
    nets = tmp_path / "fitnets.py"
    nets.write_text("import torch\n"
                    "def make_encoder():\n    return torch.nn.Linear(6, 4)\n"
                    "def make_decoder():\n    return torch.nn.Linear(2, 6)\n")
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    vae = ge.models.VAE(torch.nn.Linear(6, 4), torch.nn.Linear(2, 6), latent_dim=2)
    path = tmp_path / "vae.pt"
    vae.save(path)
    args = ["sample", str(path), "-n", "3", "--out", str(tmp_path / "v.npy"), "--network", f"encoder={nets}:make_encoder"]
    # Identity has no weights: the file's decoder.weight has nowhere to go (load_state_dict's RuntimeError)
    assert cli.main(args + ["--network", "decoder=torch.nn:Identity"]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli.main(args + ["--network", f"decoder={bad}:f"]) == 2
    assert "invalid syntax" in capsys.readouterr().err


def test_demo_unwritable_out_dir_fails_before_fitting(tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(demos, "run", lambda *a, **k: ran.append(a))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert _exit_code(["demo", "gmm", "--quick", "--quiet", "--out", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err and not ran


def test_bench_plot_bad_path_or_extension(tmp_path, capsys):
    for plot, msg in ((tmp_path / "no_such_dir" / "r.png", "cannot write"), (tmp_path / "r.txt", "expected a picture"),
                      ("", "needs a file name")):
        assert cli.main(["bench", f"--plot={plot}", "--from", RESULTS]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    assert not (tmp_path / "r.txt").exists() and not os.path.exists(".png")


def test_bench_bad_output_paths_fail_before_running_the_suite(tmp_path, capsys, monkeypatch):
    import genengine.bench.__main__ as bench_main

    ran = []
    monkeypatch.setitem(bench_main.OPS, "hmm", lambda ctx: ran.append(ctx) or {"rows": []})
    # --from with no file names used to fall through to a full live run
    assert cli.main(["bench", "--plot", str(tmp_path / "r.png"), "--from"]) == 2
    assert "--from needs" in capsys.readouterr().err
    # a picture name that cannot be drawn: refused before the live run, not after it
    assert cli.main(["bench", "--ops", "hmm", "--quick", "--plot", str(tmp_path / "r.txt")]) == 2
    assert _exit_code(["bench", "--ops", "hmm", "--quick", "--json", str(tmp_path / "no_such_dir" / "x.json")]) == 2
    assert "--json" in capsys.readouterr().err
    assert not ran
