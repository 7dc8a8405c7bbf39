"""genengine.models: the generative model families, built on genengine.ops.

    model = ge.models.DiffusionModel(ge.models.MLPDenoiser(2)).fit(x)    # x (N, 2)
    samples = model.sample(1000)                                         # (1000, 2)

Shapes: each family documents its own in its module (diffusion.py, denoisers.py, ...).
"""

from .base import GenerativeModel, ModelFileError, available, load
from .denoisers import MLPDenoiser, UNet
from .diffusion import DiffusionModel
from .ebm import EBM
from .hmm import HMM
from .mixture import GaussianMixture
from .naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
from .rbm import DBN, RBM, BoltzmannMachine

__all__ = ["GenerativeModel", "ModelFileError", "available", "load", "DiffusionModel", "UNet", "MLPDenoiser", "HMM", "RBM",
           "DBN", "BoltzmannMachine", "EBM"]
from .transformer import TransformerLM  # noqa: E402

__all__ += ["TransformerLM"]
__all__ += ["GaussianNB", "MultinomialNB", "BernoulliNB", "GaussianMixture"]
from .pixelcnn import PixelCNN  # noqa: E402

__all__ += ["PixelCNN"]
from .gan import GAN  # noqa: E402
from .linear_latent import PPCA, FactorAnalysis  # noqa: E402
from .vae import VAE  # noqa: E402

__all__ += ["PPCA", "FactorAnalysis", "VAE", "GAN"]
from .flows import MAF, Glow, NeuralSplineFlow, RealNVP  # noqa: E402

__all__ += ["RealNVP", "Glow", "NeuralSplineFlow", "MAF"]
