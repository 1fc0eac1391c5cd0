"""The GPUs simcluster simulates, as NVML would describe them.

Facts come from ``data/gpus.yaml`` (names, PCI ids, memory; documented MIG tables) and, for the models
whose MIG tables NVIDIA recorded from real devices (A100, A30), from those tables as mig-oracle reads
them out of go-nvml's mocks. See the data file for the source of every fact.

``described()`` reads the data file alone (enough to know a model by name and whether it has MIG);
``Catalogue`` adds the recorded tables and is what the simulated components use.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "gpus.yaml"
VENDOR_ID = 0x10DE


class CatalogueError(RuntimeError):
    pass


@dataclass(frozen=True)
class ComputeProfile:
    """A compute-instance profile inside a GPU instance (``1c.3g.20gb``, or the full-size ``3g.20gb``)."""

    name: str
    slices: int
    instances: int            # how many fit in one GPU instance
    multiprocessors: int


@dataclass(frozen=True)
class GpuInstanceProfile:
    """One NVML GPU-instance profile of a model."""

    name: str                 # as go-nvlib names it: 1g.10gb, 1g.10gb+me
    instances: int            # the most a GPU can hold
    compute_slices: int       # GpuInstanceProfileInfo.SliceCount
    memory_slices: int        # the size of its placements
    starts: tuple[int, ...]   # the memory slices a GPU instance of it may start at
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    compute_profiles: tuple[ComputeProfile, ...] = ()
    recorded: bool = False    # NVML's own numbers; otherwise memory and multiprocessors are estimates

    def compute_profile(self, name: str) -> ComputeProfile | None:
        return next((p for p in self.compute_profiles if p.name == name), None)


@dataclass(frozen=True)
class GpuModel:
    key: str
    aliases: tuple[str, ...]
    product: str              # NVML device name
    device_id: str            # 0xDDDDVVVV, as mig-parted's device-filter spells it
    memory_mib: int
    compute_capability: tuple[int, int]
    mig: str = ""             # "recorded", "documented" or "" (no MIG)
    recorded_table: str = ""
    profiles: tuple[GpuInstanceProfile, ...] = ()
    compute_slices: int = 0
    memory_slices: int = 0

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig)

    def profile(self, name: str) -> GpuInstanceProfile | None:
        """The GPU-instance profile of this name (attributes in any order, as mig-parted compares them)."""
        wanted = profile_key(name)
        if wanted is None:
            return None
        return next((p for p in self.profiles if profile_key(p.name) == wanted), None)

    def device_profile(self, name: str) -> tuple[GpuInstanceProfile, ComputeProfile] | None:
        """The GPU-instance and compute-instance profiles a MIG device name (``1c.3g.20gb``, ``3g.20gb``) means."""
        parsed = parse_profile(name)
        if parsed is None:
            return None
        gpu_instance = self.profile(parsed.gpu_instance_name)
        if gpu_instance is None:
            return None
        wanted = parsed.compute if parsed.compute != parsed.gpu else gpu_instance.compute_slices
        for compute in gpu_instance.compute_profiles:
            if compute.slices == wanted:
                return gpu_instance, compute
        return None


# -- MIG profile names -----------------------------------------------------------------------------------------------

_PROFILE = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.(\d+)gb((?:[+-][a-z][a-z0-9.]*)*)$")


@dataclass(frozen=True)
class ParsedProfile:
    compute: int
    gpu: int
    gb: int
    attributes: tuple[str, ...]           # "+attr" parts, sorted
    negative_attributes: tuple[str, ...]  # "-attr" parts, sorted

    @property
    def gpu_instance_name(self) -> str:
        suffix = "".join("+" + a for a in self.attributes) + "".join("-" + a for a in self.negative_attributes)
        return f"{self.gpu}g.{self.gb}gb{suffix}"


def parse_profile(name: str) -> ParsedProfile | None:
    """``[<c>c.]<g>g.<gb>gb[+attr...][-attr...]``: the shape mig-parted gives MIG device names."""
    match = _PROFILE.match(name.strip())
    if match is None:
        return None
    compute, gpu, gb, rest = match.groups()
    positive: list[str] = []
    negative: list[str] = []
    for sign, attribute in re.findall(r"([+-])([a-z][a-z0-9.]*)", rest):
        (positive if sign == "+" else negative).append(attribute)
    g = int(gpu)
    return ParsedProfile(int(compute) if compute else g, g, int(gb), tuple(sorted(positive)), tuple(sorted(negative)))


def profile_key(name: str) -> ParsedProfile | None:
    parsed = parse_profile(name)
    return replace(parsed, compute=parsed.gpu) if parsed is not None else None


# -- loading ----------------------------------------------------------------------------------------------------------

def _capability(text: Any) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _documented(model: dict[str, Any], table: dict[str, Any]) -> tuple[GpuInstanceProfile, ...]:
    memory_slices = int(table["memory_slices"])
    per_slice = int(table["multiprocessors_per_slice"])
    profiles = []
    for item in table["profiles"]:
        compute, memory = int(item["compute"]), int(item["memory"])
        sms = per_slice * compute
        profiles.append(GpuInstanceProfile(
            name=item["name"], instances=int(item["instances"]), compute_slices=compute, memory_slices=memory,
            starts=tuple(int(s) for s in item["starts"]),
            memory_mib=int(model["memory_mib"]) * memory // memory_slices, multiprocessors=sms,
            copy_engines=int(item["copy"]), decoders=int(item["decoders"]), encoders=0,
            jpegs=int(item["jpegs"]), ofas=int(item["ofas"]),
            # The guide lists no smaller compute instances: only the full-size one is known.
            compute_profiles=(ComputeProfile(item["name"], compute, 1, sms),),
        ))
    return tuple(profiles)


def _recorded(table: dict[str, Any]) -> tuple[GpuInstanceProfile, ...]:
    profiles = []
    for item in table["profiles"]:
        placements = item.get("placements") or []
        computes: dict[str, ComputeProfile] = {}
        for compute in item.get("compute_profiles") or []:
            # NVML lists some compute profiles twice (a second revision of the 1-slice one); the name is the device.
            computes.setdefault(compute["name"], ComputeProfile(compute["name"], int(compute["slice_count"]),
                                                                int(compute["instance_count"]),
                                                                int(compute["multiprocessor_count"])))
        profiles.append(GpuInstanceProfile(
            name=item["name"], instances=int(item["instance_count"]), compute_slices=int(item["slice_count"]),
            memory_slices=int(placements[0]["size"]) if placements else 0,
            starts=tuple(int(p["start"]) for p in placements), memory_mib=int(item["memory_mib"]),
            multiprocessors=int(item["multiprocessor_count"]), copy_engines=int(item["copy_engines"]),
            decoders=int(item["decoders"]), encoders=int(item["encoders"]), jpegs=int(item["jpegs"]),
            ofas=int(item["ofas"]), compute_profiles=tuple(computes.values()), recorded=True,
        ))
    return tuple(profiles)


def _model(item: dict[str, Any], tables: dict[str, Any] | None) -> GpuModel:
    mig = item.get("mig") or {}
    model = GpuModel(
        key=item["key"], aliases=tuple(item.get("aliases") or ()), product=item["product"],
        device_id=str(item["pci_device_id"]).upper().replace("0X", "0x"), memory_mib=int(item["memory_mib"]),
        compute_capability=_capability(item["compute_capability"]),
    )
    if "documented" in mig:
        table = mig["documented"]
        return replace(model, mig="documented", profiles=_documented(item, table),
                       compute_slices=int(table["compute_slices"]), memory_slices=int(table["memory_slices"]))
    if "recorded" in mig:
        model = replace(model, mig="recorded", recorded_table=mig["recorded"])
        if tables is None:
            return model
        table = tables.get(mig["recorded"])
        if table is None or not table.get("recorded"):
            raise CatalogueError(f"{DATA_FILE}: {model.key}: mig-oracle has no recorded table {mig['recorded']!r}")
        if table["pci_device_id"].upper() != model.device_id.upper():
            raise CatalogueError(f"{DATA_FILE}: {model.key}: PCI id {model.device_id} differs from the recorded "
                                 f"table's {table['pci_device_id']}")
        profiles = _recorded(table)
        whole = max(profiles, key=lambda p: p.compute_slices)
        return replace(model, profiles=profiles, compute_slices=whole.compute_slices,
                       memory_slices=whole.memory_slices, memory_mib=int(table["memory_mib"]))
    return model


@cache
def _data() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(DATA_FILE.read_text())["models"])


@dataclass(frozen=True)
class Catalogue:
    models: tuple[GpuModel, ...]
    _index: dict[str, GpuModel] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for model in self.models:
            for name in (model.key, *model.aliases):
                self._index[name.upper()] = model

    @classmethod
    def load(cls, tables: dict[str, Any] | None) -> Catalogue:
        """Every model; recorded MIG tables come from ``tables`` (mig-oracle's ``tables()``). Without
        them, recorded models have no profiles yet (enough to validate names)."""
        return cls(tuple(_model(item, tables) for item in _data()))

    def find(self, name: str) -> GpuModel | None:
        return self._index.get(name.strip().upper())

    def get(self, key: str) -> GpuModel:
        model = self.find(key)
        if model is None:
            raise CatalogueError(f"unknown GPU model {key!r}")
        return model

    def keys(self) -> list[str]:
        return [model.key for model in self.models]


def described() -> Catalogue:
    """The models of the data file, without recorded tables (no NVIDIA build needed)."""
    return _described()


@cache
def _described() -> Catalogue:
    return Catalogue.load(None)


_shared_lock = threading.Lock()
_shared: dict[str, Any] = {}


def shared_oracle() -> Any:
    """The process's one mig-oracle helper (started on first use; NVIDIA's components must be built)."""
    from simcluster import upstream  # imported here: upstream pulls in the build machinery

    with _shared_lock:
        if "oracle" not in _shared:
            _shared["oracle"] = upstream.MigOracle()
        return _shared["oracle"]


def catalogue() -> Catalogue:
    """Every model with its MIG tables, the recorded ones read through the shared mig-oracle."""
    with _shared_lock:
        found = _shared.get("catalogue")
    if found is None:
        found = Catalogue.load(shared_oracle().tables())
        with _shared_lock:
            _shared["catalogue"] = found
    return found
