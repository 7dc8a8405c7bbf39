"""genengine.ops: the public fused operations (checks, backend dispatch, torch.library registration).

Every op takes `backend="auto"|"torch"|"cpp"|"triton"|"cuda"`; see genengine._backends.
"""

from .diffusion import ddim_step, ddpm_step, dpmpp_2m_step, euler_ancestral_step, euler_step
from .flows import affine_coupling, made_affine_inverse, rq_spline
from .gibbs import (
    boltzmann_gibbs,
    graph_coloring,
    ising_sweep,
    langevin_step,
    rbm_cd_stats,
    rbm_gibbs,
    rbm_parallel_tempering,
)
from .group_norm import group_norm_silu
from .hmm import hmm_forward, hmm_posteriors, hmm_viterbi
from .latent import gaussian_kl, reparameterize, reparameterize_kl
from .naive_bayes import bernoulli_nb_log_likelihood, gaussian_nb_log_likelihood, multinomial_nb_log_likelihood, nb_class_stats
from .rng import draw_key, philox_normal, philox_uniform, philox_words
from .sampling import sample_tokens

__all__ = [
    "ddpm_step",
    "ddim_step",
    "euler_step",
    "euler_ancestral_step",
    "dpmpp_2m_step",
    "group_norm_silu",
    "draw_key",
    "philox_words",
    "philox_uniform",
    "philox_normal",
    "rbm_gibbs",
    "rbm_cd_stats",
    "rbm_parallel_tempering",
    "ising_sweep",
    "boltzmann_gibbs",
    "graph_coloring",
    "langevin_step",
    "sample_tokens",
    "hmm_forward",
    "hmm_posteriors",
    "hmm_viterbi",
    "gaussian_kl",
    "reparameterize",
    "reparameterize_kl",
    "rq_spline",
    "affine_coupling",
    "made_affine_inverse",
]
from .attention import decode_attention, prefill_attention, rope_append_kv, rope_tables  # noqa: E402

__all__ += ["decode_attention", "prefill_attention", "rope_append_kv", "rope_tables"]
__all__ += ["gaussian_nb_log_likelihood", "bernoulli_nb_log_likelihood", "multinomial_nb_log_likelihood", "nb_class_stats"]
