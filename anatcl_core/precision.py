"""Devices and numerical precision: the one place where the engine decides how it computes.

The policy, for training (`anatcl pretrain`) and embedding (`anatcl embed`) alike:

- **fp32 by default, on every device.** A rerun with the same parameters gives the same numbers, and the
  result does not depend on whether the processor happens to compute bf16 natively. (On a CUDA GPU, PyTorch's
  default lets cuDNN run fp32 convolutions in TF32.)
- **bf16 autocast only when asked**: `amp=True` (`--amp`, `amp: true` in the book's parameters,
  `embed_volumes(amp=True)`). Inside it, only the residual stages' convolutions and their BatchNorms run in
  bf16; the stem (the one convolution with a single input channel, fed the raw intensities), the projection
  head, the L2 normalisation and every loss stay in fp32 (`bf16_autocast`, `fp32_region`).
- Why not bf16 by default where the hardware has it: on a CPU with AVX512-BF16 the previous default (bf16
  decided from the CPU flags, the whole network under autocast) gave different weights in two identical runs
  and non-finite losses at unpredictable steps. A CPU without native bf16 emulates it, 10-50x slower than fp32
  (benchmarks/RESULTS.md). The narrowed bf16 region is tested finite and close to fp32 for every method
  (tests/test_precision.py), but it has not yet trained on GPU hardware, so the GPU default stays fp32 until
  it has.

Numbers across CPU kinds: oneDNN, ATen and MKL pick AVX2 or AVX-512 kernels from the CPU's flags, and those
sum in different orders, so fp32 results differ in the last bits between CPU kinds and training amplifies the
difference. `REPRODUCIBLE_CPU_ENV` caps all three at AVX2, the instruction set both machine kinds of this
project have, and numpy's and scipy's OpenBLAS is held to its AVX2 (Haswell) kernels where the CPU has them;
`anatcl book` and the test suite set them (a variable the user already set wins). torch reads the variables
at its first kernel, so they cannot be changed in a process that has computed anything. Results are then the
same on both kinds for the same thread count; oneDNN's kernels may still differ with the thread count or cache
sizes of other machines, so compare runs made with the same number of threads.
`torch.compile` (off in the book) generates code for the instruction set ATEN_CPU_CAPABILITY names, so the cap
covers it too; compiled and eager results differ in the last bits (BatchNorm is folded), so compare like with
like. On a GPU, cuDNN's choice of algorithms and its atomic additions make reruns differ in the last bits
unless `torch.use_deterministic_algorithms(True)` is set; no GPU number here claims bit-identity.
"""
from __future__ import annotations

import os
import platform

import torch

from anatcl_core.distributed import is_distributed

#: Caps the CPU kernels of oneDNN (convolutions), ATen (everything else) and MKL (matrix products) at AVX2.
REPRODUCIBLE_CPU_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
#: numpy's and scipy's OpenBLAS (the probes' linear algebra) picks its kernels at import; Haswell's are the AVX2
#: ones. Unlike the caps above this *chooses* a kernel, so it is only set on CPUs that have AVX2.
OPENBLAS_AVX2 = {"OPENBLAS_CORETYPE": "Haswell"}


def apply_reproducible_cpu_env() -> None:
    """Set `REPRODUCIBLE_CPU_ENV` (and `OPENBLAS_AVX2` on an x86 CPU with AVX2) in this process's environment
    where the user has not set the variable.

    Effective for processes started afterwards (the book's notebook kernels, test subprocesses), and for this
    one until torch runs its first kernel: importing torch is fine, computing is too late. OpenBLAS reads its
    variable when numpy is first imported, so in this process it only reaches later subprocesses.
    """
    caps = dict(REPRODUCIBLE_CPU_ENV)
    if platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        caps.update(OPENBLAS_AVX2)
    for name, value in caps.items():
        os.environ.setdefault(name, value)


def resolve_device(name: str) -> torch.device:
    """"auto" -> this rank's GPU under torchrun, else the GPU if there is one, else the CPU; other names as given."""
    if name == "auto":
        if is_distributed() and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device name; expected auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is available to this torch "
                             f"({torch.__version__}); expected auto or cpu here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: the engine runs on cpu and cuda only; expected auto, cpu or cuda")
    return device


def use_bf16(device: torch.device, amp: bool | None = False) -> bool:
    """Whether to run the model under bf16 autocast: only when asked (`amp=True`), on any device.

    `amp=None` (the "decide from the hardware" of earlier versions, still in older run configs) means fp32.
    Raises on a device that cannot run bf16 autocast at all.
    """
    if not amp:
        return False
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"amp=True asks for bf16, which {torch.cuda.get_device_name(device)} does not support; "
                         "run without --amp (fp32)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"amp=True: bf16 autocast is supported here on cpu and cuda only, not {device.type}")
    return True


def has_native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware (a recent GPU; a CPU with AVX512-BF16 or AMX).

    Informational (benchmarks, logs): the policy above never switches bf16 on by itself.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_autocast(device: torch.device, enabled: bool):
    """The autocast region of a forward pass: bf16 where `enabled`, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def fp32_region(x: torch.Tensor):
    """Inside an autocast region, a block that computes in fp32: `with fp32_region(x): y = f(x.float())`."""
    return torch.autocast(x.device.type, enabled=False)


def precision_name(bf16: bool) -> str:
    """What logs, errors and metrics call the precision in use."""
    return "bf16 autocast (stem, head and loss in fp32)" if bf16 else "fp32"


def cpu_description() -> str:
    """One line for logs and benchmark records: the kernels torch dispatches to and whether bf16 is native."""
    native = has_native_bf16(torch.device("cpu"))
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, ATen kernels "
            f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {'yes' if native else 'no'}")
