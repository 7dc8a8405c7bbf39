"""`python -m genengine demo FAMILY|all`: fit each family on its toy data, draw samples beside the data.

    from genengine import demos
    r = demos.run("diffusion", "out/")            # DemoResult: writes out/diffusion.png
    results, skipped, failed = demos.run_all("out/")   # + out/gallery.png, a panel per family

Every demo uses only the public API (`ge.models.NAME(...).fit(...)`, `.sample(n)`), on toy data made
at run time (genengine.data or the small generators here; nothing is downloaded), with a budget of
a few seconds per family on a 2-core CPU (`quick=True`: far smaller, for tests). A family whose model
class is not in this build is skipped with a message. Shapes of each result: see genengine/_plot.py.

Audio: a small 1-D diffusion model (ge.models.UNet(dims=1)) over log-magnitude spectrogram frames
(B, F, T) (frequency bins as channels, 1-D over time) of synthetic tones and chords rendered at run
time; its samples are turned back into sound by Griffin-Lim phase recovery and written as a 16-bit
WAV (stdlib `wave`) with the spectrogram of that WAV as PNG. Video: a small spatio-temporal diffusion
model (ge.models.UNet(dims=3)) over (B, 1, T, H, W) clips of a moving shape; frames as a PNG strip
and a GIF.
"""

from __future__ import annotations

import math
import os
import time
import wave
from dataclasses import dataclass, field

import torch

from . import models as _models

__all__ = ["DEMOS", "DemoResult", "run", "run_all", "names"]


@dataclass
class DemoResult:
    name: str
    title: str
    kind: str  # points | images | text | sequences | audio | video
    data: object
    samples: object
    caption: str = ""
    seconds: float = 0.0
    files: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def summary(self):
        return {"name": self.name, "title": self.title, "kind": self.kind, "seconds": round(self.seconds, 2),
                "files": list(self.files), "caption": self.caption}


class _Ctx:
    def __init__(self, out_dir, quick, progress, seed, alone=False):
        self.out_dir, self.quick, self.progress, self.seed = out_dir, quick, progress, seed
        self.scale = 3 if alone else 1  # `demo audio` / `demo video` alone may train longer than in the gallery

    def generator(self, salt=0):
        # modulo 2**64, as manual_seed itself reduces a negative seed: no overflow for a large --seed
        return torch.Generator().manual_seed((self.seed * 1009 + salt) % 2**64)

    def path(self, name):
        return os.path.join(self.out_dir, name)


# name -> (function, model classes it needs, one line)
DEMOS: dict = {}


def demo(name, needs, description):
    def register(fn):
        DEMOS[name] = (fn, tuple(needs), description)
        return fn

    return register


def names():
    return list(DEMOS)


def missing_models(name):
    """The model classes demo `name` needs that this build's genengine.models lacks."""
    return [m for m in DEMOS[name][1] if not hasattr(_models, m)]


def run(name, out_dir, *, quick=False, progress=True, seed=0, picture=True, alone=False) -> DemoResult:
    """Runs demo `name`, writes out_dir/NAME.png (and the demo's own files), returns its result."""
    if name not in DEMOS:
        raise ValueError(f"family: unknown demo {name!r}; expected one of {', '.join(DEMOS)} or 'all'")
    missing = missing_models(name)
    if missing:
        raise LookupError(f"{name}: genengine.models.{missing[0]} is not in this build (its family has not landed)")
    os.makedirs(out_dir, exist_ok=True)
    fn = DEMOS[name][0]
    t0 = time.perf_counter()
    res = fn(_Ctx(out_dir, quick, progress, seed, alone))
    res.seconds = time.perf_counter() - t0
    if picture:
        from ._plot import figure_for

        png = os.path.join(out_dir, f"{name}.png")
        figure_for(res, png)
        res.files.insert(0, png)
    return res


def run_all(out_dir, *, quick=False, progress=True, seed=0, log=print):
    """Every demo whose families are built; writes out_dir/gallery.png. Returns (results, skipped
    {name: reason}, failed {name: error})."""
    results, skipped, failed = [], {}, {}
    for name in DEMOS:
        missing = missing_models(name)
        if missing:
            skipped[name] = f"genengine.models.{missing[0]} is not in this build"
            log(f"demo {name}: skipped ({skipped[name]})")
            continue
        try:
            r = run(name, out_dir, quick=quick, progress=progress, seed=seed)
        except Exception as e:  # one family's failure must not hide the others
            failed[name] = f"{type(e).__name__}: {e}"
            log(f"demo {name}: FAILED ({failed[name]})")
            continue
        results.append(r)
        log(f"demo {name}: {r.seconds:.1f} s -> {', '.join(r.files)}")
    from ._plot import gallery

    gallery(results, os.path.join(out_dir, "gallery.png"), missing=list(skipped))
    return results, skipped, failed


# ----------------------------------------------------------------------------------------------
# toy data made here (genengine.data holds the 2-D sets)


def _ring(ctx, n, salt=0):
    from . import data

    return data.ring_of_gaussians(n, std=0.08, generator=ctx.generator(salt))


_RING_LIMITS = ((-2.8, 2.8), (-2.8, 2.8))


# ----------------------------------------------------------------------------------------------
# diffusion


@demo("diffusion", ["DiffusionModel", "MLPDenoiser"], "DDPM-trained MLP denoiser on a ring of 8 Gaussians, DPM-Solver++ sampling")
def _diffusion(ctx):
    n = 512 if ctx.quick else 2000
    x, _ = _ring(ctx, n)
    den = _models.MLPDenoiser(2, hidden=64 if ctx.quick else 128, depth=2 if ctx.quick else 3)
    model = _models.DiffusionModel(den)
    epochs = 2 if ctx.quick else 150  # 1200 steps: about 12 s on one core
    model.fit(x, epochs=epochs, batch_size=256, lr=5e-3, ema=0.99, progress=ctx.progress, generator=ctx.generator(1))
    s = model.sample(n if not ctx.quick else 256, sampler="dpmpp_2m", steps=10 if ctx.quick else 25,
                     generator=ctx.generator(2))
    return DemoResult("diffusion", "Diffusion (MLP denoiser)", "points", x, s,
                      caption=f"{epochs} epochs, DPM-Solver++(2M) 25 steps", extra={"limits": _RING_LIMITS})


# ----------------------------------------------------------------------------------------------
# audio: spectrogram-frame diffusion, Griffin-Lim back to a waveform

_SR, _NFFT, _HOP = 8000, 256, 128
_BINS = 64  # the lowest 64 of 129 bins: 0 - 1969 Hz, where the tones and two harmonics lie
_NOTES = [220.0 * 2 ** (k / 12) for k in (0, 2, 3, 5, 7, 8, 10, 12, 14, 15, 17, 19)]  # A minor, two octaves
_CHORDS = [(0, 3, 7), (0, 4, 7)]  # minor and major triads, in semitones over the root


def _tone_clips(n, frames, g):
    """n waveforms (n, hop * (frames - 1)) of two segments, each one note or a triad (3 harmonics,
    attack/decay envelope), random roots from _NOTES."""
    length = _HOP * (frames - 1)
    t = torch.arange(length, dtype=torch.float64) / _SR
    out = torch.zeros(n, length, dtype=torch.float64)
    seg = length // 2
    for i in range(n):
        for s in range(2):
            root = _NOTES[int(torch.randint(0, 8, (1,), generator=g))]
            if bool(torch.rand(1, generator=g) < 0.5):
                freqs = [root]
            else:
                ch = _CHORDS[int(torch.randint(0, 2, (1,), generator=g))]
                freqs = [root * 2 ** (c / 12) for c in ch]
            tt = t[: seg]
            env = (1 - torch.exp(-tt * 80)) * torch.exp(-tt * 3)
            sig = torch.zeros(seg, dtype=torch.float64)
            for f in freqs:
                ph = float(torch.rand(1, generator=g)) * 2 * math.pi
                for h, a in ((1, 1.0), (2, 0.4), (3, 0.15)):
                    sig += a * torch.sin(2 * math.pi * f * h * tt + ph * h)
            out[i, s * seg: (s + 1) * seg] = env * sig / len(freqs)
    return out.float()


def _stft(w):
    win = torch.hann_window(_NFFT)
    return torch.stft(w, _NFFT, _HOP, window=win, return_complex=True, center=True)


_LOG_LO, _LOG_HI = math.log(1e-3), math.log(40.0)


def _to_features(w):
    mag = _stft(w).abs()[:, :_BINS]
    x = (torch.log(mag + 1e-3) - _LOG_LO) / (_LOG_HI - _LOG_LO) * 2 - 1
    return x.clamp(-1, 1)


def _from_features(x, iters, g):
    """Griffin-Lim: a waveform whose STFT magnitude matches the features (upper bins silent)."""
    mag = torch.exp((x.clamp(-1, 1) + 1) / 2 * (_LOG_HI - _LOG_LO) + _LOG_LO) - 1e-3
    mag = mag.clamp_min(0)
    full = torch.zeros(x.shape[0], _NFFT // 2 + 1, x.shape[2])
    full[:, :_BINS] = mag
    win = torch.hann_window(_NFFT)
    length = _HOP * (x.shape[2] - 1)
    phase = torch.exp(2j * math.pi * torch.rand(full.shape, generator=g))
    for _ in range(iters):
        w = torch.istft(full * phase, _NFFT, _HOP, window=win, length=length, center=True)
        spec = torch.stft(w, _NFFT, _HOP, window=win, return_complex=True, center=True)
        phase = torch.exp(1j * torch.angle(spec))
    return torch.istft(full * phase, _NFFT, _HOP, window=win, length=length, center=True)


def write_wav(path, waveform, sample_rate):
    """Writes a mono 16-bit PCM WAV of `waveform` (1-D float, peak-normalised to 0.9)."""
    w = waveform.detach().double().cpu().reshape(-1)
    peak = float(w.abs().max())
    if peak > 0:
        w = w * (0.9 / peak)
    pcm = (w * 32767).round().clamp(-32768, 32767).to(torch.int16)
    with wave.open(os.fspath(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.numpy().astype("<i2").tobytes())


def _db(w):
    return torch.log(_stft(w.reshape(1, -1)).abs()[0] + 1e-3)


@demo("audio", ["DiffusionModel", "UNet"], "1-D UNet diffusion over spectrogram frames of synthetic tones and chords -> WAV")
def _audio(ctx):
    frames = 16 if ctx.quick else 32
    n = 32 if ctx.quick else 384
    g = ctx.generator(10)
    waves = _tone_clips(n, frames, g)
    feats = _to_features(waves)  # (n, 64, frames): (B, C, L)
    den = _models.UNet(_BINS, base_channels=32, channel_mults=(1, 2), num_groups=8, dims=1)
    # predicting x0 learns these spectrograms (sparse lines, a flat floor) far sooner than epsilon,
    # whose early samples drift off the data's range
    model = _models.DiffusionModel(den, prediction="x0")
    epochs = 1 if ctx.quick else 40 * ctx.scale  # 480 steps: about 20 s on one core (x3 when run alone)
    model.fit(feats, epochs=epochs, batch_size=32, lr=2e-3, ema=0.99, progress=ctx.progress, generator=ctx.generator(11))
    k = 2 if ctx.quick else 6
    samples = model.sample(k, sampler="dpmpp_2m", steps=8 if ctx.quick else 25, generator=ctx.generator(12))
    gen_waves = _from_features(samples, 4 if ctx.quick else 48, ctx.generator(13))
    gap = torch.zeros(k, _SR // 8)
    track = torch.cat([gen_waves, gap], dim=1).reshape(-1)
    wav = ctx.path("audio.wav")
    write_wav(wav, track, _SR)
    data_track = torch.cat([waves[:k], gap], dim=1).reshape(-1)
    spec_gen, spec_data = _db(track)[:_BINS], _db(data_track)[:_BINS]
    ext = [0, track.shape[0] / _SR, 0, _BINS * _SR / _NFFT]
    from ._plot import spectrogram_figure

    png = ctx.path("audio_spectrogram.png")
    spectrogram_figure(spec_gen, ext, png, f"generated audio ({k} clips, {wav}): spectrogram of the WAV")
    return DemoResult("audio", "Audio (1-D UNet diffusion)", "audio", spec_data, spec_gen,
                      caption=f"tones and chords; {epochs} epochs; WAV via Griffin-Lim",
                      files=[wav, png], extra={"extent": ext})


# ----------------------------------------------------------------------------------------------
# video: spatio-temporal diffusion over clips of a moving shape


def _moving_shapes(n, frames, size, g):
    """(n, 1, frames, size, size) in [-1, 1]: a square or a disc moving in a straight line, bouncing."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    out = torch.full((n, 1, frames, size, size), -1.0)
    r = size / 6
    for i in range(n):
        p = torch.rand(2, generator=g) * (size - 2 * r - 2) + r + 1
        ang = float(torch.rand(1, generator=g)) * 2 * math.pi
        v = torch.tensor([math.cos(ang), math.sin(ang)]) * (size / 10)
        disc = bool(torch.rand(1, generator=g) < 0.5)
        for t in range(frames):
            if disc:
                m = ((xx - p[0]) ** 2 + (yy - p[1]) ** 2) <= r * r
            else:
                m = ((xx - p[0]).abs() <= r) & ((yy - p[1]).abs() <= r)
            out[i, 0, t][m] = 1.0
            p = p + v
            for d in range(2):  # bounce off the walls
                if p[d] < r or p[d] > size - 1 - r:
                    v[d] = -v[d]
                    p[d] = p[d].clamp(r, size - 1 - r)
    return out


@demo("video", ["DiffusionModel", "UNet"], "3-D UNet diffusion over (T, H, W) clips of a moving square or disc")
def _video(ctx):
    frames, size = (4, 8) if ctx.quick else (8, 12)
    n = 16 if ctx.quick else 256
    clips = _moving_shapes(n, frames, size, ctx.generator(20))
    den = _models.UNet(1, base_channels=8 if ctx.quick else 12, channel_mults=(1, 2), num_groups=4, dims=3)
    model = _models.DiffusionModel(den, prediction="x0")  # as for audio: sharp shapes within a short budget
    epochs = 1 if ctx.quick else 20 * ctx.scale  # 160 steps of 3-D convolutions: ~30 s on one core
    model.fit(clips, epochs=epochs, batch_size=32, lr=2e-3, ema=0.99, progress=ctx.progress, generator=ctx.generator(21))
    k = 2 if ctx.quick else 6
    s = model.sample(k, sampler="dpmpp_2m", steps=8 if ctx.quick else 25, generator=ctx.generator(22))
    s01, d01 = ((s[:, 0] + 1) / 2).clamp(0, 1), ((clips[:k, 0] + 1) / 2)
    from ._plot import strip_figure

    png = ctx.path("video_frames.png")
    strip_figure(s01, png, "generated clips (rows), frames left to right")
    files = [png]
    gif = _gif(s01, ctx.path("video.gif"))
    if gif:
        files.append(gif)
    return DemoResult("video", "Video (3-D UNet diffusion)", "video", d01, s01,
                      caption=f"{frames} frames of {size}x{size}; {epochs} epochs", files=files)


def _gif(clips, path):
    """An animated GIF of the clips side by side (Pillow, which matplotlib depends on); None without it."""
    try:
        from PIL import Image
    except ImportError:
        return None
    k, t, h, w = clips.shape
    scale = max(1, 96 // h)
    frames = []
    for j in range(t):
        row = torch.cat([torch.nn.functional.pad(clips[i, j], (1, 1, 1, 1), value=0.5) for i in range(k)], dim=1)
        img = (row.clamp(0, 1) * 255).to(torch.uint8).numpy()
        frames.append(Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=150, loop=0)
    return path


# ----------------------------------------------------------------------------------------------
# the other families: each demo runs only when its model class is in the build


def _two_moons(ctx, n, salt=0):
    from . import data

    return data.two_moons(n, noise=0.06, generator=ctx.generator(salt))


def _checker(ctx, n, salt=0):
    from . import data

    return data.checkerboard(n, generator=ctx.generator(salt))


_MOON_LIMITS = ((-1.4, 2.4), (-1.0, 1.5))
_CHECK_LIMITS = ((-2.3, 2.3), (-2.3, 2.3))


def _points(name, title, data, samples, caption, limits):
    return DemoResult(name, title, "points", data, samples.detach().float().cpu(), caption=caption, extra={"limits": limits})


def _flow_demo(ctx, cls_name, title, data_fn, limits, epochs, **kw):
    n = 512 if ctx.quick else 3000
    x, _ = data_fn(ctx, n)
    model = getattr(_models, cls_name)(2, **kw)
    ep = 1 if ctx.quick else epochs
    model.fit(x, epochs=ep, batch_size=256, lr=3e-3, progress=ctx.progress, generator=ctx.generator(1))
    s = model.sample(n, generator=ctx.generator(2))
    return _points(cls_name.lower(), title, x, s, f"{ep} epochs of maximum likelihood", limits)


@demo("realnvp", ["RealNVP"], "RealNVP (affine couplings) on two moons")
def _realnvp(ctx):
    return _flow_demo(ctx, "RealNVP", "RealNVP", _two_moons, _MOON_LIMITS, 40, layers=6, hidden=64)


@demo("spline_flow", ["NeuralSplineFlow"], "neural spline flow (rational-quadratic couplings) on a checkerboard")
def _spline(ctx):
    r = _flow_demo(ctx, "NeuralSplineFlow", "Neural spline flow", _checker, _CHECK_LIMITS, 40, layers=4, hidden=64)
    r.name = "spline_flow"
    return r


@demo("maf", ["MAF"], "masked autoregressive flow on a ring of Gaussians")
def _maf(ctx):
    return _flow_demo(ctx, "MAF", "MAF", lambda c, n: _ring(c, n), _RING_LIMITS, 80, layers=8, hidden=64)


def _shape_images(n, size, g):
    """(n, size, size) binary images in {0, 1}: one of a horizontal bar, a vertical bar, a square
    outline, a plus or a diagonal, at a random position (the toy images of the image families)."""
    out = torch.zeros(n, size, size)
    kinds = torch.randint(0, 5, (n,), generator=g)
    for i in range(n):
        k = int(kinds[i])
        a, b = (int(v) for v in torch.randint(1, size - 5, (2,), generator=g))
        if k == 0:
            out[i, a: a + 2, 1: size - 1] = 1
        elif k == 1:
            out[i, 1: size - 1, b: b + 2] = 1
        elif k == 2:
            out[i, a: a + 5, b: b + 5] = 1
            out[i, a + 1: a + 4, b + 1: b + 4] = 0
        elif k == 3:
            out[i, a + 2, b: b + 5] = 1
            out[i, a: a + 5, b + 2] = 1
        else:
            j = torch.arange(size - 2)
            out[i, j + 1, j + 1] = 1
            out[i, j[:-1] + 2, j[:-1] + 1] = 1
    return out


@demo("glow", ["Glow"], "Glow (ActNorm, invertible 1x1 convolutions, couplings) on 8x8 shape images")
def _glow(ctx):
    n = 128 if ctx.quick else 2000
    imgs = _shape_images(n, 8, ctx.generator(30))
    g = ctx.generator(31)
    x = (imgs * 0.9 + 0.05 + 0.05 * torch.rand(imgs.shape, generator=g))[:, None]  # dequantised, (N, 1, 8, 8)
    model = _models.Glow((1, 8, 8), levels=2, steps=2 if ctx.quick else 4, hidden=32 if ctx.quick else 64)
    ep = 1 if ctx.quick else 30
    model.fit(x, epochs=ep, batch_size=128, lr=2e-3, progress=ctx.progress, generator=ctx.generator(32))
    s = model.sample(16, generator=ctx.generator(33)).reshape(16, 8, 8).clamp(0, 1)
    return DemoResult("glow", "Glow", "images", x[:16, 0], s, caption=f"{ep} epochs; shapes on 8x8")


@demo("naive_bayes", ["GaussianNB"], "Gaussian naive Bayes (one axis-aligned Gaussian per class) on a labelled ring")
def _gnb(ctx):
    n = 512 if ctx.quick else 3000
    x, y = _ring(ctx, n)
    model = _models.GaussianNB().fit(x, y, progress=ctx.progress)
    s = model.sample(n, generator=ctx.generator(2))
    return _points("naive_bayes", "Gaussian naive Bayes", x, s, "class-conditional Gaussians, exact fit", _RING_LIMITS)


@demo("gmm", ["GaussianMixture"], "Gaussian mixture (EM) on two moons")
def _gmm(ctx):
    n = 512 if ctx.quick else 3000
    x, _ = _two_moons(ctx, n)
    model = _models.GaussianMixture(12 if not ctx.quick else 4, covariance_type="full", random_state=ctx.seed)
    model.fit(x, progress=ctx.progress)
    s = model.sample(n, generator=ctx.generator(2))
    return _points("gmm", "Gaussian mixture", x, s, "12 full-covariance components, EM", _MOON_LIMITS)


def _regime_sequences(n, length, g):
    """(n, length, 1) float: a 3-state Markov chain (sticky transitions) emitting N(mean_state, 0.3^2)."""
    means = torch.tensor([-2.0, 0.0, 2.5])
    trans = torch.tensor([[0.92, 0.06, 0.02], [0.05, 0.9, 0.05], [0.03, 0.07, 0.9]])
    out = torch.empty(n, length, 1)
    for i in range(n):
        s = int(torch.randint(0, 3, (1,), generator=g))
        for t in range(length):
            out[i, t, 0] = means[s] + 0.3 * torch.randn(1, generator=g)
            s = int(torch.multinomial(trans[s], 1, generator=g))
    return out


@demo("hmm", ["HMM"], "Gaussian HMM (Baum-Welch) on sequences of a sticky 3-state chain")
def _hmm(ctx):
    n, length = (8, 40) if ctx.quick else (64, 120)
    x = _regime_sequences(n, length, ctx.generator(40))
    model = _models.HMM(3, emission="gaussian", covariance_type="diag")
    model.fit(x, n_iter=5 if ctx.quick else 50, progress=ctx.progress)
    s = model.sample(4, length=length, generator=ctx.generator(41))
    if isinstance(s, (tuple, list)):
        s = s[0]
    return DemoResult("hmm", "Hidden Markov model", "sequences", x[:4, :, 0], s[:, :, 0].float(),
                      caption="3 Gaussian states, Baum-Welch", extra={"offset": 7.0})


def _tilted(ctx, n):
    """A tilted, elongated 2-D Gaussian cloud plus a little isotropic noise (one latent direction)."""
    g = ctx.generator(50)
    z = torch.randn(n, 1, generator=g)
    w = torch.tensor([[1.6, 0.9]])
    return z @ w + 0.25 * torch.randn(n, 2, generator=g) + torch.tensor([0.3, -0.2])


_TILT_LIMITS = ((-5, 5), (-3.5, 3.5))


@demo("ppca", ["PPCA"], "probabilistic PCA (EM) with one latent on a tilted Gaussian cloud")
def _ppca(ctx):
    x = _tilted(ctx, 512 if ctx.quick else 3000)
    model = _models.PPCA(1).fit(x, progress=ctx.progress)
    return _points("ppca", "Probabilistic PCA", x, model.sample(x.shape[0], generator=ctx.generator(2)),
                   "1 latent dimension, EM", _TILT_LIMITS)


@demo("factor_analysis", ["FactorAnalysis"], "factor analysis (EM) with one factor on a tilted Gaussian cloud")
def _fa(ctx):
    x = _tilted(ctx, 512 if ctx.quick else 3000)
    x = x * torch.tensor([1.0, 0.6])  # unequal noise per feature: what factor analysis models
    model = _models.FactorAnalysis(1).fit(x, progress=ctx.progress)
    return _points("factor_analysis", "Factor analysis", x, model.sample(x.shape[0], generator=ctx.generator(2)),
                   "1 factor, per-feature noise, EM", _TILT_LIMITS)


# ---- issue 4 and 6 families


@demo("transformer_lm", ["TransformerLM"], "character-level transformer LM on a tiny templated English corpus")
def _lm(ctx):
    from . import data

    text = data.tiny_corpus(4000 if ctx.quick else 40_000, seed=ctx.seed)
    tok = data.CharTokenizer.from_text(text)
    model = _models.TransformerLM(tok.vocab_size, d_model=32 if ctx.quick else 64, n_layers=1 if ctx.quick else 2,
                                  n_heads=4, n_kv_heads=2, max_seq_len=64)
    steps = 5 if ctx.quick else 300
    model.fit(tok.encode(text), steps=steps, batch_size=32, seq_len=48, progress=ctx.progress, generator=ctx.generator(60))
    ids = model.sample(6, length=40, top_p=0.9, generator=ctx.generator(61))
    lines = [tok.decode(r).replace("\n", " ") for r in ids]
    starts = [i for i in range(0, len(text) - 40, len(text) // 7)][:6]
    real = [text[i:i + 40].replace("\n", " ") for i in starts]
    return DemoResult("transformer_lm", "Transformer LM (characters)", "text", real, lines,
                      caption=f"{steps} steps; top-p 0.9 through the decode kernels")


def _binary_shapes(ctx, n, size, salt):
    return _shape_images(n, size, ctx.generator(salt)).reshape(n, -1)


@demo("rbm", ["RBM"], "Bernoulli RBM (persistent CD) on 8x8 binary shapes, block-Gibbs sampling")
def _rbm(ctx):
    n = 256 if ctx.quick else 2000
    x = _binary_shapes(ctx, n, 8, 70)
    model = _models.RBM(64, 16 if ctx.quick else 64)
    ep = 1 if ctx.quick else 60
    model.fit(x, epochs=ep, batch_size=50, lr=0.05, k=1, persistent=False, progress=ctx.progress, generator=ctx.generator(71))
    s = model.sample(16, steps=50 if ctx.quick else 1000, generator=ctx.generator(72), return_mean=True)
    return DemoResult("rbm", "RBM", "images", x[:16].reshape(16, 8, 8), s.reshape(16, 8, 8).float(),
                      caption=f"{ep} epochs CD-1; 1000 Gibbs sweeps (mean of the last)")


@demo("dbn", ["DBN"], "deep belief network (greedy RBMs 64-64-32) on 8x8 binary shapes")
def _dbn(ctx):
    n = 256 if ctx.quick else 2000
    x = _binary_shapes(ctx, n, 8, 80)
    model = _models.DBN([64, 16, 8] if ctx.quick else [64, 64, 32])
    ep = 1 if ctx.quick else 40
    model.fit(x, epochs=ep, batch_size=50, lr=0.05, k=1, persistent=True, progress=ctx.progress, generator=ctx.generator(81))
    s = model.sample(16, steps=50 if ctx.quick else 1000, generator=ctx.generator(82), return_mean=True)
    return DemoResult("dbn", "Deep belief network", "images", x[:16].reshape(16, 8, 8), s.reshape(16, 8, 8).float(),
                      caption=f"{ep} epochs per layer; top RBM Gibbs, then down")


class _EnergyMLP(torch.nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.SiLU(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


@demo("ebm", ["EBM"], "energy-based model (MLP energy, persistent contrastive divergence, Langevin) on two moons")
def _ebm(ctx):
    n = 512 if ctx.quick else 2000
    x, _ = _two_moons(ctx, n)
    torch.manual_seed(ctx.seed)  # the energy network's initial weights
    model = _models.EBM(_EnergyMLP(32 if ctx.quick else 128), init_range=(-2.0, 2.5), buffer_size=4000, clamp=(-3.0, 3.0))
    ep = 1 if ctx.quick else 60
    # small exact-noise Langevin steps (noise_scale 1): the chains sample the model's own density, so the
    # picture shows what the energy learned (measured: MMD to held-out moons 0.014 against 0.042 for a
    # moment-matched Gaussian; colder sampling, noise x0.3-0.5, looked sharper but matched worse)
    model.fit(x, epochs=ep, batch_size=128, lr=2e-3, steps=40, step_size=0.005, alpha=0.05, noise_scale=1.0,
              progress=ctx.progress, generator=ctx.generator(91))
    steps = 10 if ctx.quick else 400
    s = model.sample(n, steps=steps, step_size=0.002, init="buffer", replay_buffer=False, noise_scale=1.0,
                     generator=ctx.generator(92))
    return _points("ebm", "Energy-based model", x, s, f"{ep} epochs PCD; {steps} Langevin steps from its replay buffer",
                   _MOON_LIMITS)


def _mlp(i, h, o):
    return torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
                               torch.nn.Linear(h, o))


@demo("vae", ["VAE"], "variational autoencoder (Bernoulli decoder, fused reparameterisation + KL) on 8x8 binary shapes")
def _vae(ctx):
    n = 256 if ctx.quick else 2000
    x = _binary_shapes(ctx, n, 8, 110)
    torch.manual_seed(ctx.seed)  # the networks' initial weights
    latent = 4
    model = _models.VAE(_mlp(64, 128, 2 * latent), _mlp(latent, 128, 64), latent, likelihood="bernoulli")
    ep = 1 if ctx.quick else 30  # about 10 s on one core
    model.fit(x, epochs=ep, batch_size=100, lr=3e-3, generator=ctx.generator(111), progress=ctx.progress)
    s = model.sample(16, generator=ctx.generator(112), mean=True)
    return DemoResult("vae", "VAE", "images", x[:16].reshape(16, 8, 8), s.reshape(16, 8, 8).float(),
                      caption=f"{ep} epochs on the ELBO; decoder means of z ~ N(0, I)")


@demo("gan", ["GAN"], "GAN (non-saturating loss with R1) on two moons")
def _gan(ctx):
    n = 512 if ctx.quick else 2048
    x, _ = _two_moons(ctx, n, salt=120)
    torch.manual_seed(ctx.seed)
    model = _models.GAN(_mlp(4, 64, 2), _mlp(2, 64, 1), 4, loss="non_saturating", r1=1.0)
    ep = 1 if ctx.quick else 60
    model.fit(x, epochs=ep, batch_size=128, lr=2e-3, ema=0.99, generator=ctx.generator(121), progress=ctx.progress)
    s = model.sample(n, generator=ctx.generator(122))
    return _points("gan", "GAN", x, s, f"{ep} epochs, non-saturating + R1, generator EMA (implicit density)",
                   _MOON_LIMITS)


@demo("pixelcnn", ["PixelCNN"], "gated PixelCNN on 12x12 binary seven-segment digits, cached pixel-by-pixel sampling")
def _pixelcnn(ctx):
    from . import data

    n = 128 if ctx.quick else 2000
    x, _ = data.binary_digits(n, generator=ctx.generator(100))
    model = _models.PixelCNN(image_size=12, channels=16 if ctx.quick else 32, n_layers=3 if ctx.quick else 5)
    ep = 1 if ctx.quick else 5  # about 25 s on one core
    model.fit(x, epochs=ep, batch_size=64, lr=3e-3, progress=ctx.progress, generator=ctx.generator(101))
    s = model.sample(16, generator=ctx.generator(102))
    return DemoResult("pixelcnn", "PixelCNN", "images", x[:16, 0].float(), s.reshape(16, 12, 12).float(),
                      caption=f"{ep} epochs; exact likelihood, raster-order sampling")
