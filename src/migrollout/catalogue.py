"""The MIG catalogue: every GPU model the toolkit knows, with its MIG profiles.

This is the single source of MIG facts. The simulator uses it to play the
hardware, the default ``default-mig-parted-config`` is generated from it, and
verification uses it to compute what a node must advertise.

Sources: NVIDIA mig-parted's default config (profile names, maximum counts per
GPU and the device filters) and the GPU feature discovery label spellings. The
slice-placement rule (compute slices and memory slices must fit the GPU) is an
approximation of the MIG User Guide's placement tables: real placement is
stricter, never looser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

NVIDIA_VENDOR_ID = "10DE"


@dataclass(frozen=True)
class MigProfile:
    """A GPU-instance profile as mig-parted names it, e.g. ``1g.10gb`` or ``1g.10gb+me``."""

    name: str
    max_count: int
    compute_slices: int
    memory_slices: int
    memory_mib: int
    multiprocessors: int

    @property
    def resource_suffix(self) -> str:
        """The spelling in resource names, labels and config names: ``+`` becomes ``.``."""
        return self.name.replace("+", ".")

    @property
    def resource_name(self) -> str:
        return f"nvidia.com/mig-{self.resource_suffix}"

    @property
    def has_media_extensions(self) -> bool:
        return "+me" in self.name

    @property
    def engines(self) -> dict[str, int]:
        # Approximate engine counts; GFD publishes them, verification does not rely on them.
        decoder = {1: 0, 2: 1, 3: 2, 4: 2, 7: 5}.get(self.compute_slices, 0)
        if self.has_media_extensions:
            decoder = max(decoder, 1)
        whole = self.compute_slices >= 7 or self.has_media_extensions
        return {
            "copy": self.compute_slices,
            "decoder": decoder,
            "encoder": 0,
            "jpeg": 1 if whole else 0,
            "ofa": 1 if whole else 0,
        }


@dataclass(frozen=True)
class GpuModel:
    """One GPU model as the cluster sees it.

    ``product`` is the value GPU feature discovery writes to ``nvidia.com/gpu.product``.
    """

    key: str
    product: str
    pci_device_id: str
    memory_mib: int
    family: str
    compute_capability: tuple[int, int]
    multiprocessors: int
    compute_slices: int = 0
    memory_slices: int = 0
    profiles: tuple[MigProfile, ...] = field(default_factory=tuple)

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    @property
    def device_filter(self) -> str:
        """The PCI id as mig-parted's ``device-filter`` spells it: ``0x<device><vendor>``."""
        return f"0x{self.pci_device_id}{NVIDIA_VENDOR_ID}"

    def profile(self, name: str) -> MigProfile | None:
        """Look a profile up by its mig-parted name (``1g.10gb+me``) or resource spelling (``1g.10gb.me``)."""
        for profile in self.profiles:
            if name in (profile.name, profile.resource_suffix):
                return profile
        return None

    def profile_names(self) -> list[str]:
        return [profile.name for profile in self.profiles]


def _profiles(
    gpu_memory_gb: float,
    memory_mib: int,
    total_memory_slices: int,
    sm_per_slice: int,
    spec: list[tuple[str, int]],
) -> tuple[MigProfile, ...]:
    """Build profiles from ``(name, max_count)`` pairs.

    The memory slice count is derived from the profile's memory size relative to
    the GPU's, which reproduces the MIG geometry of every model in the catalogue
    (e.g. on an 80GB GPU 1g.10gb takes 1 memory slice, 1g.20gb 2, 3g.40gb 4).
    """
    slice_gb = gpu_memory_gb / total_memory_slices
    slice_mib = memory_mib // total_memory_slices
    profiles = []
    for name, max_count in spec:
        base = name.split("+")[0].split("-")[0]
        compute = int(base.split("g.")[0])
        gb = int(base.split("g.")[1].rstrip("gb"))
        memory_slices = max(1, round(gb / slice_gb))
        profiles.append(
            MigProfile(
                name=name,
                max_count=max_count,
                compute_slices=compute,
                memory_slices=memory_slices,
                memory_mib=memory_slices * slice_mib,
                multiprocessors=compute * sm_per_slice,
            )
        )
    return tuple(profiles)


def _seven_slice_profiles(gb: float, mib: int, sm: int, small: str, double: str, g2: str, g3: str, g4: str,
                          g7: str, me: bool = True) -> tuple[MigProfile, ...]:
    spec = [(small, 7)]
    if me:
        spec.append((f"{small}+me", 1))
    spec += [(double, 4), (g2, 3), (g3, 2), (g4, 1), (g7, 1)]
    return _profiles(gb, mib, 8, sm, spec)


A100_40GB = _seven_slice_profiles(40, 40960, 14, "1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")
GB80 = _seven_slice_profiles(80, 81920, 16, "1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
A30 = _profiles(24, 24576, 4, 14, [("1g.6gb", 4), ("1g.6gb+me", 1), ("2g.12gb", 2), ("2g.12gb+me", 1), ("4g.24gb", 1)])
H100_NVL = _seven_slice_profiles(94, 95830, 16, "1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb")
GB96 = _seven_slice_profiles(96, 97871, 16, "1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb")
PG506 = _profiles(96, 97871, 8, 16, [("1g.12gb", 7), ("2g.24gb", 3), ("3g.48gb", 2), ("7g.96gb", 1)])
H200 = _seven_slice_profiles(141, 143771, 16, "1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb")
GH200_144G = _seven_slice_profiles(144, 146944, 16, "1g.18gb", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb")
B200 = _seven_slice_profiles(180, 183359, 20, "1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb")
GB200 = _seven_slice_profiles(186, 190464, 20, "1g.23gb", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb")
B300 = _seven_slice_profiles(269, 275040, 20, "1g.34gb", "1g.67gb", "2g.67gb", "3g.135gb", "4g.135gb", "7g.269gb")
GB300 = _seven_slice_profiles(278, 284208, 20, "1g.35gb", "1g.70gb", "2g.70gb", "3g.139gb", "4g.139gb", "7g.278gb")
RTX_PRO_6000 = _profiles(96, 97887, 4, 46, [
    ("1g.24gb", 4), ("1g.24gb+gfx", 4), ("1g.24gb-me", 4), ("1g.24gb+me.all", 1),
    ("2g.48gb", 2), ("2g.48gb+gfx", 2), ("2g.48gb-me", 2), ("2g.48gb+me.all", 1),
    ("4g.96gb", 1), ("4g.96gb+gfx", 1),
])


def _mig(key: str, product: str, pci: str, mib: int, family: str, cc: tuple[int, int], sms: int,
         profiles: tuple[MigProfile, ...], slices: int = 7) -> GpuModel:
    memory_slices = 8 if slices == 7 else 4
    return GpuModel(key, product, pci, mib, family, cc, sms, slices, memory_slices, profiles)


MODELS: tuple[GpuModel, ...] = (
    _mig("A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB", "20B0", 40960, "ampere", (8, 0), 108, A100_40GB),
    _mig("A100-PCIE-40GB", "NVIDIA-A100-PCIE-40GB", "20F1", 40960, "ampere", (8, 0), 108, A100_40GB),
    _mig("A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB", "20B2", 81920, "ampere", (8, 0), 108, GB80),
    _mig("A100-PCIE-80GB", "NVIDIA-A100-80GB-PCIe", "20B5", 81920, "ampere", (8, 0), 108, GB80),
    _mig("H100-SXM5-80GB", "NVIDIA-H100-80GB-HBM3", "2330", 81559, "hopper", (9, 0), 132, GB80),
    _mig("H100-PCIE-80GB", "NVIDIA-H100-PCIe", "2331", 81559, "hopper", (9, 0), 114, GB80),
    _mig("H100-NVL", "NVIDIA-H100-NVL", "2321", 95830, "hopper", (9, 0), 132, H100_NVL),
    _mig("H100-96GB", "NVIDIA-H100-96GB-HBM3", "233D", 97871, "hopper", (9, 0), 132, GB96),
    _mig("GH200-96GB", "NVIDIA-GH200-480GB", "2342", 97871, "hopper", (9, 0), 132, GB96),
    _mig("H20", "NVIDIA-H20", "2329", 97871, "hopper", (9, 0), 78, GB96),
    _mig("PG506-96GB", "NVIDIA-PG506-243", "20B6", 97871, "ampere", (8, 0), 108, PG506),
    _mig("H200-141GB", "NVIDIA-H200", "2335", 143771, "hopper", (9, 0), 132, H200),
    _mig("H200-NVL", "NVIDIA-H200-NVL", "233B", 143771, "hopper", (9, 0), 132, H200),
    _mig("GH200-144GB", "NVIDIA-GH200-144G-HBM3e", "2348", 146944, "hopper", (9, 0), 132, GH200_144G),
    _mig("B200", "NVIDIA-B200", "2901", 183359, "blackwell", (10, 0), 148, B200),
    _mig("GB200", "NVIDIA-GB200", "2941", 190464, "blackwell", (10, 0), 152, GB200),
    _mig("B300", "NVIDIA-B300-SXM6-AC", "3182", 275040, "blackwell", (10, 3), 148, B300),
    _mig("GB300", "NVIDIA-GB300", "31C2", 284208, "blackwell", (10, 3), 152, GB300),
    _mig("A30", "NVIDIA-A30", "20B7", 24576, "ampere", (8, 0), 56, A30, slices=4),
    _mig("RTX-PRO-6000", "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition", "2BB5", 97887, "blackwell", (12, 0),
         188, RTX_PRO_6000, slices=4),
    GpuModel("L4", "NVIDIA-L4", "27B8", 23034, "ada-lovelace", (8, 9), 58),
    GpuModel("A10", "NVIDIA-A10", "2236", 23028, "ampere", (8, 6), 72),
    GpuModel("T4", "Tesla-T4", "1EB8", 15360, "turing", (7, 5), 40),
)

# Short names admins use for the common models.
ALIASES: dict[str, str] = {
    "A100-40GB": "A100-SXM4-40GB",
    "A100-80GB": "A100-SXM4-80GB",
    "H100-80GB": "H100-SXM5-80GB",
    "H100": "H100-SXM5-80GB",
    "H200": "H200-141GB",
    "GH200": "GH200-144GB",
    "RTX-PRO-6000-BLACKWELL": "RTX-PRO-6000",
}


@cache
def _by_key() -> dict[str, GpuModel]:
    return {model.key.upper(): model for model in MODELS}


@cache
def _by_product() -> dict[str, GpuModel]:
    return {model.product.upper(): model for model in MODELS}


def model_keys() -> list[str]:
    return [model.key for model in MODELS]


def find_model(name: str) -> GpuModel | None:
    """Find a model by catalogue key, alias, or GFD product label (with or without a ``-MIG-...`` suffix)."""
    wanted = name.strip().upper()
    wanted = ALIASES.get(wanted, wanted).upper()
    if wanted in _by_key():
        return _by_key()[wanted]
    product = wanted.split("-MIG-")[0]
    for suffix in ("-SHARED",):
        product = product.removesuffix(suffix)
    return _by_product().get(product)


def model_for_device_id(pci_device_id: str) -> GpuModel | None:
    wanted = pci_device_id.upper().removeprefix("0X")[:4]
    for model in MODELS:
        if model.pci_device_id == wanted:
            return model
    return None
