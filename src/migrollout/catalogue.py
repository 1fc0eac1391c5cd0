"""The MIG catalogue: every GPU model the toolkit knows, with its MIG profiles.

This is the single source of the toolkit's MIG hardware facts, go-nvlib's profile-name grammar
(``parse_profile_name``) included: fit checks of configs (``migconfig``), what a node must
advertise (``advertised``) and model identification (``nodes``) read it. Default configs are not derived from it: they are per-operator-release
data (``default_config``).

Sources, and how sure each fact is:

* ``RECORDED`` profile tables (A100-40GB, A100-80GB, A30) are NVML's GPU-instance profile
  tables as NVIDIA's go-nvml mocks record them: maximum count, memory (MiB), multiprocessors,
  engines and placements. The conformance tests compare them with those tables.
* The other models' profile names, maximum counts and PCI ids come from NVIDIA's default
  mig-parted configs. Their placements follow the same slice geometry as the recorded
  7-slice and 4-slice GPUs; memory, multiprocessor and engine figures are estimates
  (slice-proportional) that only feature-discovery label predictions use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache

NVIDIA_VENDOR_ID = "10DE"
ENGINES = ("copy", "decoder", "encoder", "jpeg", "ofa")

# Compute-instance sizes NVML offers inside a GPU instance of n compute slices (the recorded A100/A30
# tables): a ``<c>c.<g>g.<mem>gb`` profile is valid when c is listed for g.
COMPUTE_INSTANCE_SIZES: Mapping[int, tuple[int, ...]] = {
    1: (1,), 2: (1, 2), 3: (1, 2, 3), 4: (1, 2, 4), 6: (1, 2, 3, 6), 7: (1, 2, 3, 4, 7), 8: (1, 2, 4, 8),
}


@dataclass(frozen=True)
class ProfileName:
    """A MIG profile name split as go-nvlib splits it: ``[<c>c.]<g>g.<gb>gb[+attr,...|-attr,...]``."""

    compute_instance: int
    gpu_instance: int
    gb: int
    attributes: frozenset[str] = frozenset()
    negative_attributes: frozenset[str] = frozenset()


# -- the profile-name grammar (go-nvlib) ---------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?[0-9]+")
# go-nvlib reads each number with strconv.Atoi into a 64-bit Go int.
_GO_INT_MAX = 2**63 - 1


def _profile_field(text: str, suffix: str) -> tuple[int | None, str]:
    if text.strip() != text:
        return None, f"leading or trailing spaces on '<n>{suffix}'"
    if not text.endswith(suffix):
        return None, f"missing '{suffix}' from '<n>{suffix}'"
    number = text[: -len(suffix)]
    if not _NUMBER.fullmatch(number) or abs(int(number)) > _GO_INT_MAX:
        return None, f"malformed number in '<n>{suffix}'"
    return int(number), ""


def _profile_attributes(text: str, dotted: bool) -> tuple[list[str] | None, str]:
    seen: set[str] = set()
    attributes = text.split(",")
    for attribute in attributes:
        if attribute in seen:
            return None, "non unique attribute in list"
        if attribute == "":
            return None, "empty attribute in list"
        if attribute.strip() != attribute:
            return None, "leading or trailing spaces in attribute"
        if attribute[0].isascii() and attribute[0].isdigit():
            return None, "attribute begins with a number"
        if dotted and (attribute[0] == "." or attribute[-1] == "."):
            return None, "attribute begins/ends with a dot"
        allowed = r"[A-Za-z0-9.]+" if dotted else r"[A-Za-z0-9]+"
        if not re.fullmatch(allowed, attribute):
            return None, "non alpha-numeric character or digit in attribute"
        seen.add(attribute)
    return attributes, ""


@cache
def parse_profile_name(name: str, extended: bool = True) -> tuple[ProfileName | None, str]:
    """go-nvlib's reading of a profile name: (parts, "") or (None, why it is malformed).

    ``extended``: the grammar of go-nvlib 0.7.4 and later (``-me``, ``+me.all``); without it, only
    ``+<alnum>,...`` attributes (MIG managers before v0.12.3).
    """
    if name == "":
        return None, "profile is the empty string"
    positive = name.split("+", 1)
    negative = name.split("-", 1) if extended else [name]
    if len(positive) == 2 and len(negative) == 2:
        return None, f"profile '{name}' contains both '+/-' attributes"
    parts = positive if len(positive) == 2 else negative
    fields = parts[0].split(".", 2)
    values: list[int] = []
    suffixes = ("c", "g", "gb") if len(fields) == 3 else ("g", "gb") if len(fields) == 2 else ()
    if not suffixes:
        return None, f"cannot parse fields of '{name}': parsed wrong number of fields, expected 2 or 3"
    for text, suffix in zip(fields, suffixes, strict=True):
        value, error = _profile_field(text, suffix)
        if value is None:
            return None, f"cannot parse fields of '{name}': {error}"
        values.append(value)
    if len(values) == 2:
        values.insert(0, values[0])
    attributes: list[str] = []
    if len(parts) == 2:
        found, error = _profile_attributes(parts[1], dotted=extended)
        if found is None:
            return None, f"cannot parse attributes of '{name}': {error}"
        attributes = found
    is_negative = len(parts) == 2 and parts is negative
    return ProfileName(values[0], values[1], values[2],
                       frozenset() if is_negative else frozenset(attributes),
                       frozenset(attributes) if is_negative else frozenset()), ""


def split_profile_name(name: str) -> ProfileName | None:
    """The parts of a well-formed profile name (None when malformed)."""
    parsed, _error = parse_profile_name(name)
    return parsed


@dataclass(frozen=True)
class MigProfile:
    """A MIG profile as mig-parted names it, e.g. ``1g.10gb``, ``1g.10gb+me`` or ``1c.3g.40gb``.

    ``compute_slices`` and ``memory_slices`` are those of its GPU instance; ``placements`` are the
    memory slices a GPU instance of it may start at (it then takes ``memory_slices`` of them).
    """

    name: str
    max_count: int
    compute_slices: int
    memory_slices: int
    memory_mib: int
    multiprocessors: int
    placements: tuple[int, ...] = ()
    engine_counts: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    # The compute instance's slices when it is smaller than its GPU instance (a CI profile), else 0.
    compute_instance_slices: int = 0
    recorded: bool = False

    @property
    def resource_suffix(self) -> str:
        """The spelling in resource names, labels and config names: ``+`` becomes ``.``."""
        return self.name.replace("+", ".")

    @property
    def resource_name(self) -> str:
        return f"nvidia.com/mig-{self.resource_suffix}"

    @property
    def gpu_instance_name(self) -> str:
        """The GPU-instance profile it creates (``1c.3g.40gb`` creates a ``3g.40gb`` instance)."""
        return self.name.split(".", 1)[1] if self.compute_instance_slices else self.name

    @property
    def ci_slices(self) -> int:
        return self.compute_instance_slices or self.compute_slices

    @property
    def has_media_extensions(self) -> bool:
        """Holds the GPU's media engines exclusively (``+me``, ``+me.all``): one such instance per GPU."""
        parts = split_profile_name(self.name)
        return parts is not None and bool(parts.attributes & {"me", "me.all"})

    @property
    def engines(self) -> dict[str, int]:
        return dict(zip(ENGINES, self.engine_counts, strict=True))


@dataclass(frozen=True)
class GpuModel:
    """One GPU model as the cluster sees it: one PCI device id.

    ``product`` is the value GPU feature discovery writes to ``nvidia.com/gpu.product``; ``products``
    lists other spellings of it seen on nodes.
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
    products: tuple[str, ...] = ()

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    @property
    def device_id(self) -> int:
        """The 32-bit PCI id as mig-parted compares it: device in the high half, vendor in the low half."""
        return int(self.pci_device_id + NVIDIA_VENDOR_ID, 16)

    @property
    def device_filter(self) -> str:
        """The PCI id as mig-parted's ``device-filter`` spells it: ``0x<device><vendor>``."""
        return f"0x{self.pci_device_id}{NVIDIA_VENDOR_ID}"

    @property
    def recorded(self) -> bool:
        """Its profile table is NVML's as recorded (see the module docstring), not an estimate."""
        return bool(self.profiles) and all(profile.recorded for profile in self.profiles)

    def profile(self, name: str) -> MigProfile | None:
        """Look a profile up as mig-parted does: by its name (``1g.10gb+me``, ``1c.3g.40gb``; attributes in
        any order) or by its resource spelling (``1g.10gb.me``)."""
        return _profile_lookup(self, name)

    def profile_names(self) -> list[str]:
        return [profile.name for profile in self.profiles]

    def compute_instance_profiles(self) -> list[MigProfile]:
        """The ``<c>c.<g>g.<gb>gb`` profiles: a compute instance smaller than its GPU instance."""
        found = []
        for profile in self.profiles:
            for size in COMPUTE_INSTANCE_SIZES.get(profile.compute_slices, ()):
                if size < profile.compute_slices:
                    found.append(_compute_instance_profile(profile, size))
        return found


def _compute_instance_profile(gpu_instance: MigProfile, size: int) -> MigProfile:
    return replace(gpu_instance, name=f"{size}c.{gpu_instance.name}", compute_instance_slices=size,
                   multiprocessors=gpu_instance.multiprocessors * size // gpu_instance.compute_slices)


@cache
def _profile_lookup(model: GpuModel, name: str) -> MigProfile | None:
    for profile in model.profiles:
        if name in (profile.name, profile.resource_suffix):
            return profile
    wanted = split_profile_name(name)
    if wanted is None:
        return None
    for profile in model.profiles:
        have = split_profile_name(profile.name)
        if have is None or (have.gpu_instance, have.gb, have.attributes, have.negative_attributes) != (
                wanted.gpu_instance, wanted.gb, wanted.attributes, wanted.negative_attributes):
            continue
        if wanted.compute_instance == wanted.gpu_instance:
            return profile  # "7c.7g.80gb" is mig-parted's long spelling of "7g.80gb"
        if wanted.compute_instance in COMPUTE_INSTANCE_SIZES.get(profile.compute_slices, ()):
            return _compute_instance_profile(profile, wanted.compute_instance)
    return None


# -- recorded tables (NVML GPU-instance profiles as go-nvml's mocks record them) -----------------------------

def _recorded(name: str, max_count: int, compute: int, memory_slices: int, mib: int, sms: int,
              engines: tuple[int, int, int, int, int], placements: tuple[int, ...]) -> MigProfile:
    return MigProfile(name, max_count, compute, memory_slices, mib, sms, placements, engines, recorded=True)


SEVEN = tuple(range(7))  # a 1-slice instance may start at memory slices 0-6 of 8
PAIRS_4 = (0, 2, 4, 6)
PAIRS_3 = (0, 2, 4)
HALVES = (0, 4)
FIRST = (0,)
ME_ENGINES = (1, 1, 0, 1, 1)
WHOLE_ENGINES = (7, 5, 0, 1, 1)

A100_40GB = (
    _recorded("1g.5gb", 7, 1, 1, 4864, 14, (1, 0, 0, 0, 0), SEVEN),
    _recorded("1g.5gb+me", 1, 1, 1, 4864, 14, ME_ENGINES, SEVEN),
    _recorded("1g.10gb", 4, 1, 2, 9856, 14, (1, 1, 0, 0, 0), PAIRS_4),
    _recorded("2g.10gb", 3, 2, 2, 9856, 28, (2, 1, 0, 0, 0), PAIRS_3),
    _recorded("3g.20gb", 2, 3, 4, 19968, 42, (3, 2, 0, 0, 0), HALVES),
    _recorded("4g.20gb", 1, 4, 4, 19968, 56, (4, 2, 0, 0, 0), FIRST),
    _recorded("7g.40gb", 1, 7, 8, 40192, 98, WHOLE_ENGINES, FIRST),
)
A100_80GB = (
    _recorded("1g.10gb", 7, 1, 1, 9856, 14, (1, 1, 0, 0, 0), SEVEN),
    _recorded("1g.10gb+me", 1, 1, 1, 9856, 14, ME_ENGINES, SEVEN),
    _recorded("1g.20gb", 4, 1, 2, 19968, 14, (1, 1, 0, 0, 0), PAIRS_4),
    _recorded("2g.20gb", 3, 2, 2, 19968, 28, (2, 1, 0, 0, 0), PAIRS_3),
    _recorded("3g.40gb", 2, 3, 4, 40192, 42, (3, 2, 0, 0, 0), HALVES),
    _recorded("4g.40gb", 1, 4, 4, 40192, 56, (4, 2, 0, 0, 0), FIRST),
    _recorded("7g.80gb", 1, 7, 8, 80384, 98, WHOLE_ENGINES, FIRST),
)
A30 = (
    _recorded("1g.6gb", 4, 1, 1, 5836, 14, (1, 0, 0, 0, 0), (0, 1, 2, 3)),
    _recorded("1g.6gb+me", 1, 1, 1, 5836, 14, ME_ENGINES, (0, 1, 2, 3)),
    _recorded("2g.12gb", 2, 2, 2, 11672, 28, (2, 2, 0, 0, 0), (0, 2)),
    _recorded("2g.12gb+me", 1, 2, 2, 11672, 28, (2, 2, 0, 1, 1), (0, 2)),
    _recorded("4g.24gb", 1, 4, 4, 23344, 56, (4, 4, 0, 1, 1), FIRST),
)


# -- estimated tables (names and counts from NVIDIA's default configs; the rest by slice geometry) -----------

def _estimated_engines(compute: int, media: bool, whole: bool) -> tuple[int, int, int, int, int]:
    decoder = {1: 0, 2: 1, 3: 2, 4: 2, 7: 5}.get(compute, 0)
    if media:
        decoder = max(decoder, 1)
    return (compute, decoder, 0, 1 if whole or media else 0, 1 if whole or media else 0)


def _estimated(gpu_memory_gb: float, memory_mib: int, total_memory_slices: int, sm_per_slice: int,
               spec: list[tuple[str, int]]) -> tuple[MigProfile, ...]:
    """Profiles from ``(name, max_count)`` pairs. The memory slices follow from the profile's memory size
    relative to the GPU's (on an 80GB GPU 1g.10gb takes 1 slice, 1g.20gb 2, 3g.40gb 4); placements follow
    the recorded geometry of GPUs with the same number of memory slices."""
    slice_gb = gpu_memory_gb / total_memory_slices
    slice_mib = memory_mib // total_memory_slices
    profiles = []
    for name, max_count in spec:
        base, _, attributes = name.partition("+")
        base = base.split("-")[0]
        compute = int(base.split("g.")[0])
        gb = int(base.split("g.")[1].rstrip("gb"))
        memory_slices = max(1, round(gb / slice_gb))
        media = attributes in ("me", "me.all")
        profiles.append(MigProfile(
            name=name, max_count=max_count, compute_slices=compute, memory_slices=memory_slices,
            memory_mib=memory_slices * slice_mib, multiprocessors=compute * sm_per_slice,
            placements=_geometric_placements(total_memory_slices, compute, memory_slices),
            engine_counts=_estimated_engines(compute, media, memory_slices == total_memory_slices),
        ))
    return tuple(profiles)


def _geometric_placements(total_memory_slices: int, compute: int, memory_slices: int) -> tuple[int, ...]:
    if memory_slices >= total_memory_slices:
        return FIRST
    if memory_slices == 1:
        # The last memory slice has no compute slice of its own on 7-slice GPUs.
        return tuple(range(total_memory_slices - 1 if total_memory_slices == 8 else total_memory_slices))
    starts = tuple(range(0, total_memory_slices - memory_slices + 1, memory_slices))
    if compute >= 4 and total_memory_slices == 8:
        return FIRST  # a 4-slice instance fits only in the first half
    if compute == 2 and memory_slices == 2 and total_memory_slices == 8:
        return PAIRS_3  # 2-slice instances leave the last pair to 1-slice ones
    return starts


def _seven_slice(gb: float, mib: int, sm: int, small: str, double: str, g2: str, g3: str, g4: str,
                 g7: str) -> tuple[MigProfile, ...]:
    spec = [(small, 7), (f"{small}+me", 1), (double, 4), (g2, 3), (g3, 2), (g4, 1), (g7, 1)]
    return _estimated(gb, mib, 8, sm, spec)


H100_80GB = _seven_slice(80, 81920, 16, "1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
H100_NVL = _seven_slice(94, 95830, 16, "1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb")
GB96 = _seven_slice(96, 97871, 16, "1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb")
PG506 = _estimated(96, 97871, 8, 16, [("1g.12gb", 7), ("2g.24gb", 3), ("3g.48gb", 2), ("7g.96gb", 1)])
H200 = _seven_slice(141, 143771, 16, "1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb")
GH200_144G = _seven_slice(144, 146944, 16, "1g.18gb", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb")
B200 = _seven_slice(180, 183359, 20, "1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb")
GB200 = _seven_slice(186, 190464, 20, "1g.23gb", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb")
B300 = _seven_slice(269, 275040, 20, "1g.34gb", "1g.67gb", "2g.67gb", "3g.135gb", "4g.135gb", "7g.269gb")
GB300 = _seven_slice(278, 284208, 20, "1g.35gb", "1g.70gb", "2g.70gb", "3g.139gb", "4g.139gb", "7g.278gb")
RTX_PRO_6000 = _estimated(96, 97887, 4, 46, [
    ("1g.24gb", 4), ("1g.24gb+gfx", 4), ("1g.24gb-me", 4), ("1g.24gb+me.all", 1),
    ("2g.48gb", 2), ("2g.48gb+gfx", 2), ("2g.48gb-me", 2), ("2g.48gb+me.all", 1),
    ("4g.96gb", 1), ("4g.96gb+gfx", 1),
])


def _mig(key: str, product: str, pci: str, mib: int, family: str, cc: tuple[int, int], sms: int,
         profiles: tuple[MigProfile, ...], slices: int = 7, also: tuple[str, ...] = ()) -> GpuModel:
    memory_slices = 8 if slices == 7 else 4
    return GpuModel(key, product, pci, mib, family, cc, sms, slices, memory_slices, profiles, also)


MODELS: tuple[GpuModel, ...] = (
    _mig("A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB", "20B0", 40960, "ampere", (8, 0), 108, A100_40GB),
    _mig("A100-PCIE-40GB", "NVIDIA-A100-PCIE-40GB", "20F1", 40960, "ampere", (8, 0), 108, A100_40GB),
    # A second PCI id of the PCIe 40GB card; GFD cannot tell the two apart by product name.
    _mig("A100-PCIE-40GB-20B1", "NVIDIA-A100-PCIE-40GB", "20B1", 40960, "ampere", (8, 0), 108, A100_40GB),
    _mig("A800-PCIE-40GB", "NVIDIA-A800-40GB-PCIe", "20F6", 40960, "ampere", (8, 0), 108, A100_40GB,
         also=("NVIDIA-A800-40GB-Active",)),
    _mig("A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB", "20B2", 81920, "ampere", (8, 0), 108, A100_80GB),
    _mig("A100-PCIE-80GB", "NVIDIA-A100-80GB-PCIe", "20B5", 81920, "ampere", (8, 0), 108, A100_80GB,
         also=("NVIDIA-A100-PCIE-80GB",)),
    _mig("A800-SXM4-80GB", "NVIDIA-A800-SXM4-80GB", "20F3", 81920, "ampere", (8, 0), 108, A100_80GB),
    _mig("A800-PCIE-80GB", "NVIDIA-A800-80GB-PCIe", "20F5", 81920, "ampere", (8, 0), 108, A100_80GB),
    _mig("H100-SXM5-80GB", "NVIDIA-H100-80GB-HBM3", "2330", 81559, "hopper", (9, 0), 132, H100_80GB,
         also=("NVIDIA-H100-SXM5-80GB",)),
    _mig("H100-PCIE-80GB", "NVIDIA-H100-PCIe", "2331", 81559, "hopper", (9, 0), 114, H100_80GB),
    _mig("H800-PCIE-80GB", "NVIDIA-H800-PCIe", "2322", 81559, "hopper", (9, 0), 114, H100_80GB),
    _mig("H800-SXM5-80GB", "NVIDIA-H800", "2324", 81559, "hopper", (9, 0), 132, H100_80GB,
         also=("NVIDIA-H800-80GB-HBM3",)),
    _mig("H100-NVL", "NVIDIA-H100-NVL", "2321", 95830, "hopper", (9, 0), 132, H100_NVL),
    _mig("H800-NVL", "NVIDIA-H800-NVL", "233A", 95830, "hopper", (9, 0), 132, H100_NVL),
    _mig("H100-96GB", "NVIDIA-H100-96GB-HBM3", "233D", 97871, "hopper", (9, 0), 132, GB96),
    _mig("GH200-96GB", "NVIDIA-GH200-480GB", "2342", 97871, "hopper", (9, 0), 132, GB96),
    _mig("H20", "NVIDIA-H20", "2329", 97871, "hopper", (9, 0), 78, GB96),
    _mig("PG506-96GB", "NVIDIA-PG506-243", "20B6", 97871, "ampere", (8, 0), 108, PG506),
    _mig("H200-141GB", "NVIDIA-H200", "2335", 143771, "hopper", (9, 0), 132, H200,
         also=("NVIDIA-H200-141GB-HBM3e",)),
    _mig("H200-NVL", "NVIDIA-H200-NVL", "233B", 143771, "hopper", (9, 0), 132, H200),
    _mig("GH200-144GB", "NVIDIA-GH200-144G-HBM3e", "2348", 146944, "hopper", (9, 0), 132, GH200_144G),
    _mig("B200", "NVIDIA-B200", "2901", 183359, "blackwell", (10, 0), 148, B200),
    _mig("GB200", "NVIDIA-GB200", "2941", 190464, "blackwell", (10, 0), 152, GB200),
    _mig("B300", "NVIDIA-B300-SXM6-AC", "3182", 275040, "blackwell", (10, 3), 148, B300),
    _mig("GB300", "NVIDIA-GB300", "31C2", 284208, "blackwell", (10, 3), 152, GB300),
    _mig("A30", "NVIDIA-A30", "20B7", 24576, "ampere", (8, 0), 56, A30, slices=4,
         also=("NVIDIA-A30-PCIE-24GB",)),
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
    found: dict[str, GpuModel] = {}
    for model in MODELS:
        for product in (model.product, *model.products):
            found.setdefault(product.upper(), model)  # the first model wins a product several PCI ids share
    return found


@cache
def _by_device_id() -> dict[str, GpuModel]:
    return {model.pci_device_id: model for model in MODELS}


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
    """Find a model by PCI device id: ``20b0``, ``0x20B0`` or mig-parted's ``0x20B010DE``."""
    wanted = pci_device_id.strip().upper().removeprefix("0X")
    if len(wanted) == 8:
        if not wanted.endswith(NVIDIA_VENDOR_ID):
            return None
        wanted = wanted[:4]
    return _by_device_id().get(wanted)
