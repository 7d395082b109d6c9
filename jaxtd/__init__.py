"""jaxtd: CP and Tucker decompositions as pure, jit-compiled, differentiable JAX functions."""

from jaxtd import datasets, nn
from jaxtd._api import cp, tucker
from jaxtd._compare import Comparison, MethodRun, compare
from jaxtd._cp_als import cp_als
from jaxtd._cp_opt import cp_opt
from jaxtd._hosvd import hosvd
from jaxtd._models import (
    CPTensor,
    TuckerTensor,
    cp_inner,
    cp_norm,
    cp_normalize,
    cp_to_tensor,
    tucker_inner,
    tucker_norm,
    tucker_to_tensor,
)
from jaxtd._multistart import MultiStart, multi_start
from jaxtd._rank import RankSweep, corcondia, rank_sweep
from jaxtd._result import FitResult, Status
from jaxtd._tensor import fold, khatri_rao, mode_dot, mttkrp, multi_mode_dot, unfold
from jaxtd._tucker_hooi import tucker_hooi
from jaxtd._tucker_opt import tucker_opt

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "MethodRun",
    "MultiStart",
    "RankSweep",
    "corcondia",
    "multi_start",
    "rank_sweep",
    "compare",
    "CPTensor",
    "FitResult",
    "Status",
    "TuckerTensor",
    "cp",
    "cp_als",
    "cp_inner",
    "cp_norm",
    "cp_normalize",
    "cp_opt",
    "cp_to_tensor",
    "datasets",
    "fold",
    "hosvd",
    "khatri_rao",
    "mode_dot",
    "mttkrp",
    "multi_mode_dot",
    "nn",
    "tucker",
    "tucker_hooi",
    "tucker_inner",
    "tucker_norm",
    "tucker_opt",
    "tucker_to_tensor",
    "unfold",
]
