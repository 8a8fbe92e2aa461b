"""Eviction policy as plain data: no models, no bus."""

from voxbus.manager.admission import Resident, plan_load

MB = 1 << 20


def r(id, ram, prio=50, used=0.0, **kw):
    return Resident(id=id, ram=ram * MB, vram=0, priority=prio, last_used=used, **kw)


def test_fits_without_eviction():
    plan = plan_load(100 * MB, 0, [r("a", 100)], 300 * MB, 0)
    assert plan.admit and plan.evict == ()


def test_evicts_least_recently_used_first():
    plan = plan_load(100 * MB, 0, [r("old", 100, used=1), r("new", 100, used=5)], 250 * MB, 0)
    assert plan.admit and plan.evict == ("old",)


def test_lower_priority_goes_before_recency():
    plan = plan_load(100 * MB, 0, [r("low-recent", 100, prio=10, used=9), r("high-old", 100, prio=90, used=1)], 250 * MB, 0)
    assert plan.evict == ("low-recent",)


def test_pinned_and_busy_are_never_evicted():
    residents = [r("pinned", 100, used=0, pinned=True), r("busy", 100, used=1, busy=True), r("free", 100, used=2)]
    plan = plan_load(100 * MB, 0, residents, 300 * MB, 0)
    assert plan.admit and plan.evict == ("free",)
    plan = plan_load(200 * MB, 0, residents, 300 * MB, 0)
    assert not plan.admit and "pinned" in plan.reason and "busy" in plan.reason


def test_larger_than_budget_is_refused_outright():
    plan = plan_load(500 * MB, 0, [], 300 * MB, 0)
    assert not plan.admit and "more than the whole RAM budget" in plan.reason


def test_evicts_as_many_as_needed():
    residents = [r("a", 100, used=1), r("b", 100, used=2), r("c", 100, used=3)]
    plan = plan_load(200 * MB, 0, residents, 300 * MB, 0)
    assert plan.evict == ("a", "b")


def test_vram_shortage_only_evicts_gpu_models():
    cpu = Resident("cpu", ram=100 * MB, vram=0, priority=0, last_used=0)
    gpu = Resident("gpu", ram=10 * MB, vram=500 * MB, priority=50, last_used=5)
    plan = plan_load(10 * MB, 600 * MB, [cpu, gpu], 1000 * MB, 1000 * MB)
    assert plan.admit and plan.evict == ("gpu",)
