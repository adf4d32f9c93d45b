"""What machine computed something: stored with every study record and printed in every report."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    h = {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
         "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        h["cuda_device"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return h
