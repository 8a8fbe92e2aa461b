"""Admission and eviction policy, as plain functions (tested without models).

A load is admitted when the model's expected footprint fits the budget next to what is
loaded. If it does not, victims are chosen lowest priority first, then least recently used;
pinned models and models serving a request are never chosen. If even evicting every candidate
would not make room, the load is refused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resident:
    """A loaded model, as the policy sees it."""

    id: str
    ram: int
    vram: int
    priority: int
    last_used: float
    pinned: bool = False
    busy: bool = False


@dataclass(frozen=True)
class Plan:
    admit: bool
    evict: tuple[str, ...] = ()
    reason: str = ""


def plan_load(
    need_ram: int, need_vram: int, residents: list[Resident], ram_budget: int, vram_budget: int,
) -> Plan:
    if need_ram > ram_budget:
        return Plan(False, reason=f"needs {_mib(need_ram)} RAM, more than the whole RAM budget ({_mib(ram_budget)})")
    if need_vram > vram_budget:
        return Plan(False, reason=f"needs {_mib(need_vram)} VRAM, more than the whole VRAM budget ({_mib(vram_budget)})")
    used_ram = sum(r.ram for r in residents)
    used_vram = sum(r.vram for r in residents)

    def fits() -> bool:
        return used_ram + need_ram <= ram_budget and used_vram + need_vram <= vram_budget

    if fits():
        return Plan(True)
    candidates = sorted((r for r in residents if not r.pinned and not r.busy), key=lambda r: (r.priority, r.last_used))
    chosen: list[str] = []
    for victim in candidates:
        # Only evict models that free the kind of memory that is short.
        short_ram = used_ram + need_ram > ram_budget
        short_vram = used_vram + need_vram > vram_budget
        if not ((short_ram and victim.ram) or (short_vram and victim.vram)):
            continue
        chosen.append(victim.id)
        used_ram -= victim.ram
        used_vram -= victim.vram
        if fits():
            return Plan(True, tuple(chosen))
    held = [r.id for r in residents if r.pinned or r.busy]
    return Plan(False, reason=(
        f"needs {_mib(need_ram)} RAM / {_mib(need_vram)} VRAM; budget {_mib(ram_budget)} / {_mib(vram_budget)} "
        f"cannot be freed (pinned or busy: {', '.join(held) or 'none'})"
    ))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"
