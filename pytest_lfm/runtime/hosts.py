"""What this host offers the runtimes: NVIDIA GPUs (via nvidia-smi), free TCP ports (xdist-safe), the worker index."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
from filelock import FileLock

PORT_BASE = 20000
"""First port handed out; worker N draws from [PORT_BASE + N * PORT_SPAN, ... + PORT_SPAN), below Linux's ephemeral
range (32768+), so a port we hand out is not taken meanwhile by some outgoing connection."""
PORT_SPAN = 400
PORT_RANGES = 30
CLAIM_TTL = 3600.0
DEFAULT_CLAIMS = Path(tempfile.gettempdir()) / "pytest-lfm-port-claims.json"


class GpuQueryError(RuntimeError):
    """nvidia-smi is missing or did not answer."""


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as nvidia-smi numbers it (the physical index, PCI bus order)."""

    index: int
    name: str
    memory_total_mib: int
    memory_used_mib: int = 0
    uuid: str = ""


def _nvidia_smi(*args: str, timeout: float = 15.0) -> list[list[str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise GpuQueryError("nvidia-smi not found on PATH")
    try:
        out = subprocess.run([exe, *args, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuQueryError(f"nvidia-smi {' '.join(args)} failed: {exc}") from exc
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def _visible(gpu: Gpu, visible: str | None) -> bool:
    if visible is None:
        return True
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    return any(w == str(gpu.index) or (w.startswith("GPU-") and gpu.uuid.startswith(w)) for w in wanted)


def list_gpus() -> list[Gpu]:
    """The NVIDIA GPUs this process may use (honouring CUDA_VISIBLE_DEVICES); [] without nvidia-smi or a GPU."""
    try:
        rows = _nvidia_smi("--query-gpu=index,uuid,name,memory.total,memory.used")
        gpus = [Gpu(int(r[0]), r[2], int(float(r[3])), int(float(r[4])), r[1]) for r in rows if len(r) >= 5]
    except (GpuQueryError, ValueError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in gpus if _visible(g, visible)]


def gpu_memory_used_mib(index: int) -> int:
    """Memory in use on GPU ``index`` (nvidia-smi numbering), in MiB; GpuQueryError when it cannot be read."""
    rows = _nvidia_smi("--query-gpu=memory.used", "-i", str(index))
    try:
        return int(float(rows[0][0]))
    except (IndexError, ValueError) as exc:
        raise GpuQueryError(f"nvidia-smi gave no memory figure for GPU {index}: {rows}") from exc


def gpu_memory_baseline(indices: Iterable[int]) -> dict[int, int]:
    """Memory used now on each GPU; {} when it cannot be read (no nvidia-smi)."""
    try:
        return {i: gpu_memory_used_mib(i) for i in indices}
    except GpuQueryError:
        return {}


@dataclass(frozen=True)
class GpuProcess:
    """A process nvidia-smi lists on a GPU, with the memory it holds there."""

    gpu: int
    pid: int
    name: str
    used_mib: int


def gpu_processes(indices: Iterable[int]) -> list[GpuProcess]:
    """The processes nvidia-smi lists on GPUs ``indices``; [] when it cannot say (no nvidia-smi, no process column)."""
    wanted = set(indices)
    try:
        uuids = {r[1]: int(r[0]) for r in _nvidia_smi("--query-gpu=index,uuid") if len(r) >= 2}
        rows = _nvidia_smi("--query-compute-apps=gpu_uuid,pid,process_name,used_memory")
    except (GpuQueryError, ValueError):
        return []
    out = []
    for row in rows:
        try:
            gpu, pid, used = uuids[row[0]], int(row[1]), int(float(row[3]))
        except (KeyError, IndexError, ValueError):
            continue
        if gpu in wanted:
            out.append(GpuProcess(gpu, pid, row[2], used))
    return out


def describe_holders(gpus: Iterable[int]) -> str:
    """Who holds memory on ``gpus`` now, as nvidia-smi says (for leftover messages)."""
    procs = gpu_processes(gpus)
    if not procs:
        return "nvidia-smi names no process holding it"
    own = os.getpid()
    return "held by " + "; ".join(
        f"GPU {p.gpu}: pid {p.pid} {p.name} {p.used_mib} MiB" + (
            " (this process: an sgl.Engine runs its tokenizer manager here, and what it holds returns only when "
            f"this process exits{_torch_share()})" if p.pid == own else "") for p in procs)


def torch_memory_mib() -> tuple[int, int] | None:
    """(allocated, reserved) by torch's allocator in this process on all GPUs, MiB; None where CUDA was never used
    here. The rest of what nvidia-smi shows for this process is the CUDA context and memory outside torch."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    devices = range(torch.cuda.device_count())
    return (int(sum(torch.cuda.memory_allocated(i) for i in devices)) >> 20,
            int(sum(torch.cuda.memory_reserved(i) for i in devices)) >> 20)


def _torch_share() -> str:
    held = torch_memory_mib()
    if held is None:
        return ""
    return f"; torch here: {held[0]} MiB allocated, {held[1]} MiB reserved, the rest is the CUDA context"


def memory_of(pids: Iterable[int], gpus: Iterable[int]) -> int | None:
    """MiB that processes ``pids`` hold on ``gpus`` as nvidia-smi lists them; None when it lists no process at all
    (no nvidia-smi, or a driver that hides the process column)."""
    wanted = set(pids)
    procs = gpu_processes(gpus)
    if not procs:
        return None
    return sum(p.used_mib for p in procs if p.pid in wanted)


def wait_pids_off_gpus(pids: Iterable[int], gpus: Iterable[int], timeout: float, *,
                       interval: float = 0.5) -> list[GpuProcess]:
    """Wait until nvidia-smi lists none of ``pids`` on ``gpus``; those still listed at ``timeout`` ([] when done)."""
    wanted, indices = set(pids), list(gpus)
    deadline = time.monotonic() + timeout
    while True:
        held = [p for p in gpu_processes(indices) if p.pid in wanted]
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(interval)


def worker_index() -> int:
    """This xdist worker's number (PYTEST_XDIST_WORKER "gw3" -> 3); 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = worker[2:] if worker.startswith("gw") else ""
    return int(digits) if digits.isdigit() else 0


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, claims: Path = DEFAULT_CLAIMS) -> int:
    """A TCP port free on ``host`` that no other worker or session has been handed.

    Each xdist worker draws from its own range; a port is taken only if it can be bound, and it is recorded in the
    ``claims`` file (under a file lock) so a concurrent session with the same worker number skips it. Claims lapse
    when their process ends or after an hour.
    """
    first = PORT_BASE + (worker_index() % PORT_RANGES) * PORT_SPAN
    with FileLock(f"{claims}.lock", timeout=60):
        now = time.time()
        try:
            held: dict[str, list[float]] = {
                port: [pid, at] for port, (pid, at) in json.loads(claims.read_text()).items()
                if now - at < CLAIM_TTL and psutil.pid_exists(int(pid))
            }
        except (OSError, ValueError, TypeError, AttributeError):
            held = {}  # no claims yet, or a damaged file: start afresh
        for offset in range(PORT_SPAN):
            port = first + offset
            if str(port) not in held and _bindable(host, port):
                held[str(port)] = [os.getpid(), now]
                claims.write_text(json.dumps(held))
                return port
    raise RuntimeError(f"no free port in {first}..{first + PORT_SPAN - 1} on {host} (claims: {claims}); "
                       f"delete {claims} if no pytest-lfm session is running")
